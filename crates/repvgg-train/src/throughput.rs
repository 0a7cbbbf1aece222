//! How fast the training data pipeline decodes and augments ImageNet-sized JPEGs: images per
//! second for several worker counts, and per worker, with or without RandAugment and random
//! erasing; and, given a Python with torch, torchvision and Pillow, torchvision's pipeline over
//! the same files, for comparison.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::data::dataloader::DataLoader;
use burn::data::dataset::DatasetError;
use burn::tensor::Device;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use repvgg_data::{
    Augmentation, DataError, ImageFolder, ImageLoader, LoaderOptions, RandAugment, RandomErasing,
    TrainTransform,
};

/// Options of `repvgg-train bench-loader`.
#[derive(clap::Args, Clone, Debug)]
pub struct LoaderBenchArgs {
    /// An ImageFolder directory (e.g. DATA/train) to read; by default, ImageNet-sized JPEGs
    /// (500x375, quality 90) are generated in a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Images decoded per measurement.
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    /// Worker counts to measure, comma separated (default: 1 and all cores).
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// RandAugment after the crop and flip, as training's --aa: timm's policy (e.g.
    /// rand-m9-mstd0.5-inc1) or raug15.
    #[arg(long = "aa", visible_alias = "rand-augment", value_name = "POLICY")]
    pub rand_augment: Option<RandAugment>,
    /// Random erasing probability, as training's --reprob.
    #[arg(long = "reprob", value_name = "PROBABILITY", value_parser = erasing_probability)]
    pub random_erasing: Option<f64>,
}

/// A `--reprob` value: a probability.
fn erasing_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(probability) if (0.0..=1.0).contains(&probability) => Ok(probability),
        _ => Err(format!("expected a probability in [0, 1], got {value:?}")),
    }
}

/// Why the loader could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum LoaderBenchError {
    /// Nothing to measure.
    #[error("measure at least one image and one worker")]
    Empty,
    /// The image folder cannot be indexed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing the generated images failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The encoder's or the file system's error.
        source: image::ImageError,
    },
    /// The loader's threads could not be started.
    #[error("cannot start the image loader's threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// A batch could not be loaded.
    #[error("loading a batch: {0}")]
    Batch(#[from] DatasetError),
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct LoaderThroughput {
    /// Decoding threads.
    pub workers: usize,
    /// Images loaded.
    pub images: usize,
    /// Images loaded per second, wall time.
    pub images_per_second: f64,
}

/// torchvision + Pillow's measurements of the same pipeline over the same files.
#[derive(Clone, Debug)]
pub struct TorchvisionThroughput {
    /// The versions measured, e.g. "torchvision 0.29.2, Pillow 13.0.0, torch 2.15.0".
    pub versions: String,
    /// One measurement per worker count, in the order of the loader's.
    pub results: Vec<LoaderThroughput>,
}

/// Why torchvision's pipeline could not be measured (this crate's figures still stand).
#[derive(Debug, thiserror::Error)]
pub enum TorchvisionError {
    /// RandAugment and random erasing are this crate's (timm's); the script has the paper's
    /// pipeline only.
    #[error("torchvision is measured on the paper's pipeline only (no --aa, no --reprob)")]
    Augmented,
    /// The interpreter could not be started.
    #[error("cannot run {python}: {source}")]
    Start {
        python: String,
        source: std::io::Error,
    },
    /// The script failed (a missing package, an unreadable folder): its last line of stderr.
    #[error("the torchvision script failed: {0}")]
    Script(String),
    /// The script printed something else than its JSON object.
    #[error("unexpected output of the torchvision script: {0}")]
    Output(String),
}

/// What `bench-loader` measured: this crate's loader, and torchvision's when asked.
#[derive(Debug)]
pub struct LoaderComparison {
    /// One measurement per worker count.
    pub loader: Vec<LoaderThroughput>,
    /// torchvision + Pillow on the same files and worker counts: `None` when no Python was
    /// given.
    pub torchvision: Option<Result<TorchvisionThroughput, TorchvisionError>>,
}

/// Measures the training loader (decode, RandomResizedCrop, flip, RandAugment and random
/// erasing if asked, normalise, batch of 64) for each worker count, logging each measurement.
pub fn bench_loader(args: &LoaderBenchArgs) -> Result<Vec<LoaderThroughput>, LoaderBenchError> {
    Ok(compare_loaders(args, None)?.loader)
}

/// [`bench_loader`], then, with `python` (an interpreter with torch, torchvision and Pillow),
/// torchvision's pipeline over the same files and worker counts, so that both figures come
/// from one machine at one time.
pub fn compare_loaders(
    args: &LoaderBenchArgs,
    python: Option<&str>,
) -> Result<LoaderComparison, LoaderBenchError> {
    if args.images == 0 || args.workers.contains(&0) {
        return Err(LoaderBenchError::Empty);
    }
    let (root, generated) = match &args.data {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir =
                std::env::temp_dir().join(format!("repvgg-loader-bench-{}", std::process::id()));
            log::info!(
                "writing {} JPEGs of 500x375 to {}",
                args.images,
                dir.display()
            );
            write_imagenet_like(&dir, args.images)?;
            (dir, true)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut worker_counts = args.workers.clone();
    if worker_counts.is_empty() {
        worker_counts = vec![1, cores];
        worker_counts.dedup();
    }
    let loader = measure_loader(args, &root, &worker_counts);
    let torchvision = match (&loader, python) {
        (Ok(_), Some(python)) => Some(measure_torchvision(python, args, &root, &worker_counts)),
        _ => None,
    };
    if generated {
        let _ = fs::remove_dir_all(&root);
    }
    Ok(LoaderComparison {
        loader: loader?,
        torchvision,
    })
}

/// This crate's loader over the first `args.images` images of `root`, once per worker count.
fn measure_loader(
    args: &LoaderBenchArgs,
    root: &Path,
    worker_counts: &[usize],
) -> Result<Vec<LoaderThroughput>, LoaderBenchError> {
    let folder = ImageFolder::open(root)?;
    let samples: Vec<_> = folder.samples.iter().take(args.images).cloned().collect();
    let transform = TrainTransform {
        rand_augment: args.rand_augment.clone(),
        random_erasing: args.random_erasing.map(RandomErasing::new),
        ..TrainTransform::new(args.image_size)
    };
    let mut results = Vec::new();
    for &workers in worker_counts {
        let loader = ImageLoader::new(
            samples.clone(),
            Augmentation::Train(transform.clone()),
            LoaderOptions {
                batch_size: 64,
                workers,
                seed: 0,
                shuffle: true,
                mixup_alpha: None,
                prefetch: 2,
            },
            &Device::flex(),
        )?;
        let started = Instant::now();
        let mut images = 0;
        for batch in loader.iter() {
            images += batch?.targets.dims()[0];
        }
        let images_per_second = images as f64 / started.elapsed().as_secs_f64();
        log::info!("workers {workers}: {images} images at {images_per_second:.1} images/s");
        results.push(LoaderThroughput {
            workers,
            images,
            images_per_second,
        });
    }
    Ok(results)
}

/// torchvision's pipeline (`bench_loader_torchvision.py`, passed to `python -c`) over the first
/// `args.images` images of `root`, once per worker count.
fn measure_torchvision(
    python: &str,
    args: &LoaderBenchArgs,
    root: &Path,
    worker_counts: &[usize],
) -> Result<TorchvisionThroughput, TorchvisionError> {
    if args.rand_augment.is_some() || args.random_erasing.is_some() {
        return Err(TorchvisionError::Augmented);
    }
    let workers: Vec<String> = worker_counts.iter().map(usize::to_string).collect();
    log::info!("measuring torchvision's pipeline with {python}");
    let output = Command::new(python)
        .arg("-c")
        .arg(include_str!("bench_loader_torchvision.py"))
        .arg(root)
        .args(["--images", &args.images.to_string()])
        .args(["--workers", &workers.join(",")])
        .args(["--size", &args.image_size.to_string()])
        .output()
        .map_err(|source| TorchvisionError::Start {
            python: python.to_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no message");
        return Err(TorchvisionError::Script(last.to_string()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_torchvision(&stdout).ok_or_else(|| TorchvisionError::Output(stdout.trim().to_string()))
}

/// The script's JSON object, or `None` if it is not what the script prints.
fn parse_torchvision(stdout: &str) -> Option<TorchvisionThroughput> {
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    let version = |key: &str| json[key].as_str().map(str::to_string);
    let versions = format!(
        "torchvision {}, Pillow {}, torch {}",
        version("torchvision")?,
        version("pillow")?,
        version("torch")?
    );
    let results = json["results"]
        .as_array()?
        .iter()
        .map(|result| {
            let images = result["images"].as_u64()? as usize;
            Some(LoaderThroughput {
                workers: result["workers"].as_u64()? as usize,
                images,
                images_per_second: images as f64 / result["seconds"].as_f64()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(TorchvisionThroughput { versions, results })
}

/// `count` photo-like 500x375 JPEGs (smooth gradients, edges and grain) in two class folders.
fn write_imagenet_like(root: &Path, count: usize) -> Result<(), LoaderBenchError> {
    let mut rng = StdRng::seed_from_u64(1);
    for i in 0..count {
        let dir = root.join(format!("class{}", i % 2));
        fs::create_dir_all(&dir).map_err(|err| LoaderBenchError::Write {
            path: dir.clone(),
            source: err.into(),
        })?;
        let (fx, fy) = (rng.random_range(0.01..0.05), rng.random_range(0.01..0.05));
        let base: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let image = RgbImage::from_fn(500, 375, |x, y| {
            let wave = ((x as f32 * fx).sin() * (y as f32 * fy).cos() + 1.0) * 0.5;
            let edge = if (x / 60 + y / 45) % 3 == 0 {
                0.25
            } else {
                0.0
            };
            Rgb(base.map(|b| {
                let grain = rng.random_range(-0.04..0.04);
                (((b * 0.6 + wave * 0.4 + edge + grain).clamp(0.0, 1.0)) * 255.0) as u8
            }))
        });
        let path = dir.join(format!("{i:05}.JPEG"));
        let written = fs::File::create(&path)
            .map_err(image::ImageError::from)
            .and_then(|file| {
                JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
                    .encode_image(&image)
            });
        written.map_err(|source| LoaderBenchError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torchvision_scripts_output_is_read() {
        let stdout = r#"{"torch": "2.15.0", "torchvision": "0.29.2", "pillow": "13.0.0",
            "results": [{"workers": 1, "images": 256, "seconds": 0.5},
                        {"workers": 2, "images": 256, "seconds": 0.25}]}"#;
        let parsed = parse_torchvision(stdout).unwrap();
        assert_eq!(
            parsed.versions,
            "torchvision 0.29.2, Pillow 13.0.0, torch 2.15.0"
        );
        let figures: Vec<_> = parsed
            .results
            .iter()
            .map(|r| (r.workers, r.images, r.images_per_second))
            .collect();
        assert_eq!(figures, [(1, 256, 512.0), (2, 256, 1024.0)]);
        assert!(parse_torchvision("Traceback (most recent call last):").is_none());
        assert!(parse_torchvision(r#"{"torch": "2.15.0", "results": []}"#).is_none());
    }
}
