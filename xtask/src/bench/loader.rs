//! `cargo xtask bench-loader`: how fast the training data pipeline decodes and augments
//! ImageNet-sized JPEGs, in images per second for several worker counts and per worker, with or
//! without RandAugment and random erasing; and, given a Python with torch, torchvision and
//! Pillow, torchvision's pipeline over the same files (`scripts/bench_loader.py`), measured in
//! the same run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use repvgg_data::{
    Augmentation, ImageFolder, ImageLoader, LoaderOptions, RandAugment, RandomErasing,
    TrainTransform,
};

use super::workspace_root;

/// Options of `cargo xtask bench-loader`.
#[derive(clap::Args, Clone, Debug)]
pub struct LoaderBenchArgs {
    /// An ImageFolder directory (e.g. DATA/train) to read; by default, ImageNet-sized JPEGs
    /// (500x375, quality 90) are generated in a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Images decoded per measurement.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub images: u32,
    /// Worker counts to measure, comma separated (default: 1 and all cores).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Vec<u32>,
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// RandAugment after the crop and flip, as training's --aa: timm's policy (e.g.
    /// rand-m9-mstd0.5-inc1) or raug15.
    #[arg(long = "aa", visible_alias = "rand-augment", value_name = "POLICY")]
    pub rand_augment: Option<RandAugment>,
    /// Random erasing probability, as training's --reprob.
    #[arg(long = "reprob", value_name = "PROBABILITY", value_parser = erasing_probability)]
    pub random_erasing: Option<f64>,
    /// A Python with torch, torchvision and Pillow: also time torchvision's RandomResizedCrop,
    /// flip and normalisation over the same files and worker counts ("none": don't).
    #[arg(long, env = "REPVGG_PYTHON", value_name = "PYTHON")]
    pub python: Option<String>,
}

/// A `--reprob` value: a probability.
fn erasing_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(probability) if (0.0..=1.0).contains(&probability) => Ok(probability),
        _ => Err(format!("expected a probability in [0, 1], got {value:?}")),
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Throughput {
    pub workers: usize,
    pub images: usize,
    pub images_per_second: f64,
}

/// torchvision + Pillow's measurements of the same pipeline over the same files.
#[derive(Clone, Debug)]
struct Torchvision {
    /// The versions measured, e.g. "torchvision 0.29.2, Pillow 13.0.0, torch 2.15.0".
    versions: String,
    /// One measurement per worker count, in the order of ours.
    results: Vec<Throughput>,
}

/// The loader on one worker over `images` generated JPEGs: `bench`'s data-pipeline line.
pub(super) fn on_one_core(images: usize) -> Result<Throughput> {
    let dir = std::env::temp_dir().join(format!("repvgg-loader-bench-{}", std::process::id()));
    write_imagenet_like(&dir, images)?;
    let args = LoaderBenchArgs {
        data: None,
        images: images as u32,
        workers: vec![1],
        image_size: 224,
        rand_augment: None,
        random_erasing: None,
        python: None,
    };
    let measured = measure_loader(&args, &dir, &[1]);
    let _ = fs::remove_dir_all(&dir);
    Ok(measured?.remove(0))
}

/// Measures, then prints a markdown table, with torchvision's figures beside when a Python is
/// given.
pub fn run(args: LoaderBenchArgs) -> Result<()> {
    let (root, generated) = match &args.data {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir =
                std::env::temp_dir().join(format!("repvgg-loader-bench-{}", std::process::id()));
            eprintln!(
                "writing {} JPEGs of 500x375 to {}",
                args.images,
                dir.display()
            );
            write_imagenet_like(&dir, args.images as usize)?;
            (dir, true)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut workers: Vec<usize> = args.workers.iter().map(|&w| w as usize).collect();
    if workers.is_empty() {
        workers = vec![1, cores];
        workers.dedup();
    }
    let ours = measure_loader(&args, &root, &workers);
    let python = args.python.as_deref().filter(|python| *python != "none");
    let torchvision = match (&ours, python) {
        (Ok(_), Some(python)) => match measure_torchvision(python, &args, &root, &workers) {
            Ok(torchvision) => Some(torchvision),
            Err(err) => {
                eprintln!("warning: torchvision not measured: {err:#}");
                None
            }
        },
        _ => None,
    };
    if generated {
        let _ = fs::remove_dir_all(&root);
    }
    print!("{}", table(&ours?, torchvision.as_ref()));
    Ok(())
}

/// The markdown table of the measurements, torchvision's beside ours when there are some.
fn table(ours: &[Throughput], torchvision: Option<&Torchvision>) -> String {
    let mut out = String::new();
    match torchvision {
        None => out
            .push_str("| workers | images | images/s | images/s per worker |\n|---|---|---|---|\n"),
        Some(_) => out.push_str(
            "| workers | images | images/s | images/s per worker | torchvision images/s | ours / \
             torchvision |\n|---|---|---|---|---|---|\n",
        ),
    }
    for (i, result) in ours.iter().enumerate() {
        let rate = result.images_per_second;
        out.push_str(&format!(
            "| {} | {} | {rate:.1} | {:.1} |",
            result.workers,
            result.images,
            rate / result.workers as f64
        ));
        match torchvision.map(|t| t.results.get(i)) {
            Some(Some(theirs)) => out.push_str(&format!(
                " {:.1} | {:.2}x |\n",
                theirs.images_per_second,
                rate / theirs.images_per_second
            )),
            Some(None) => out.push_str(" - | - |\n"),
            None => out.push('\n'),
        }
    }
    if let Some(torchvision) = torchvision {
        out.push_str(&format!(
            "\ntorchvision: {} (one worker: the main process, one thread; N: N DataLoader \
             processes)\n",
            torchvision.versions
        ));
    }
    out
}

/// Our loader (decode, RandomResizedCrop, flip, RandAugment and random erasing if asked,
/// normalise, batches of 64) over the first `args.images` images of `root`, once per worker
/// count.
fn measure_loader(
    args: &LoaderBenchArgs,
    root: &Path,
    workers: &[usize],
) -> Result<Vec<Throughput>> {
    let folder = ImageFolder::open(root)?;
    let samples: Vec<_> = folder
        .samples
        .iter()
        .take(args.images as usize)
        .cloned()
        .collect();
    let transform = TrainTransform {
        rand_augment: args.rand_augment.clone(),
        random_erasing: args.random_erasing.map(RandomErasing::new),
        ..TrainTransform::new(args.image_size)
    };
    let mut results = Vec::new();
    for &workers in workers {
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
        )
        .context("cannot start the image loader's threads")?;
        let started = Instant::now();
        let mut images = 0;
        for batch in loader.iter() {
            images += batch.context("loading a batch")?.targets.dims()[0];
        }
        let images_per_second = images as f64 / started.elapsed().as_secs_f64();
        eprintln!("workers {workers}: {images} images at {images_per_second:.1} images/s");
        results.push(Throughput {
            workers,
            images,
            images_per_second,
        });
    }
    Ok(results)
}

/// torchvision's pipeline (`scripts/bench_loader.py`) over the first `args.images` images of
/// `root`, once per worker count.
fn measure_torchvision(
    python: &str,
    args: &LoaderBenchArgs,
    root: &Path,
    workers: &[usize],
) -> Result<Torchvision> {
    if args.rand_augment.is_some() || args.random_erasing.is_some() {
        bail!("torchvision is measured on the paper's pipeline only (no --aa, no --reprob)");
    }
    let workers: Vec<String> = workers.iter().map(usize::to_string).collect();
    eprintln!("measuring torchvision's pipeline with {python}");
    let output = Command::new(python)
        .arg(workspace_root().join("scripts/bench_loader.py"))
        .arg(root)
        .args(["--images", &args.images.to_string()])
        .args(["--workers", &workers.join(",")])
        .args(["--size", &args.image_size.to_string()])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "the torchvision script failed: {}",
            stderr.lines().last().unwrap_or("no message")
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_torchvision(&stdout).with_context(|| {
        format!(
            "unexpected output of the torchvision script: {}",
            stdout.trim()
        )
    })
}

/// The script's JSON object, or `None` if it is not what the script prints.
fn parse_torchvision(stdout: &str) -> Option<Torchvision> {
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
            Some(Throughput {
                workers: result["workers"].as_u64()? as usize,
                images,
                images_per_second: images as f64 / result["seconds"].as_f64()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Torchvision { versions, results })
}

/// `count` photo-like 500x375 JPEGs (smooth gradients, edges and grain) in two class folders.
fn write_imagenet_like(root: &Path, count: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    for i in 0..count {
        let dir = root.join(format!("class{}", i % 2));
        fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
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
        let file = fs::File::create(&path).with_context(|| path.display().to_string())?;
        JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
            .encode_image(&image)
            .with_context(|| path.display().to_string())?;
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

    #[test]
    fn the_table_puts_torchvision_beside_ours() {
        let ours = [Throughput {
            workers: 2,
            images: 64,
            images_per_second: 400.0,
        }];
        let torchvision = Torchvision {
            versions: "torchvision 0.29.2".into(),
            results: vec![Throughput {
                workers: 2,
                images: 64,
                images_per_second: 200.0,
            }],
        };
        let table = table(&ours, Some(&torchvision));
        assert!(
            table.contains("| 2 | 64 | 400.0 | 200.0 | 200.0 | 2.00x |"),
            "{table}"
        );
        assert!(!super::table(&ours, None).contains("torchvision"));
    }
}
