//! `cargo xtask bench-int8`: what int8 post-training quantization costs a trained model in
//! accuracy: top-1 in f32 and in int8 under each calibration rule, agreement with f32, and the
//! per-layer sensitivity (the top-1 cost of quantizing each layer alone), with the layers that
//! suffer most left in f32. With `--speed`: the int8 network's images per second beside the CPU
//! engine's f32 and bf16, on random-weight networks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use burn::data::dataloader::DataLoader;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use repvgg_cli::{ArchArgs, CropArgs, evaluation_loader, open_split};
use repvgg_cpu::int8::{CalibrationRule, QuantizedNetwork};
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel, ResolvedCheckpoint};
use repvgg_model::{DeployNetwork, RepVggArch};

/// Quantize a trained model to int8 (weights per output channel, activations per layer,
/// calibrated on --calibration-images training images) and report its top-1 on the validation
/// set against f32, for every calibration rule, then each layer's sensitivity.
#[derive(Args, Debug)]
pub struct Int8BenchArgs {
    /// A trained model (any file `eval` reads).
    #[arg(long, required_unless_present = "speed")]
    weights: Option<PathBuf>,

    /// An ImageFolder data set: calibration images from DIR/train, accuracy on DIR/val.
    #[arg(long, required_unless_present = "speed")]
    data: Option<PathBuf>,

    /// Time the int8 network beside the CPU engine in f32 and bf16 instead (random weights,
    /// calibrated on random images): --arch, --batch, --size, medians of --rounds.
    #[arg(long)]
    speed: bool,

    #[arg(long, value_delimiter = ',', default_value = "A0,B0")]
    archs: Vec<RepVggArch>,

    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,

    #[arg(long, default_value_t = 224)]
    size: usize,

    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Training images the activations are calibrated on (the first ones, in folder order).
    #[arg(long, default_value_t = 256)]
    calibration_images: usize,

    /// Also measure each layer quantized alone, and the model with its most sensitive layers
    /// left in f32.
    #[arg(long)]
    sensitivity: bool,

    #[command(flatten)]
    arch: ArchArgs,

    #[command(flatten)]
    crop: CropArgs,
}

/// Validation batches: images and their class indices.
type Batches = Vec<(Tensor<4>, Vec<i64>)>;

pub fn run(args: Int8BenchArgs) -> Result<()> {
    if args.speed {
        return speed(&args);
    }
    let (Some(weights), Some(data)) = (&args.weights, &args.data) else {
        bail!("give --weights and --data, or --speed");
    };
    ensure!(
        args.calibration_images > 0,
        "--calibration-images must be at least 1"
    );
    let device = Device::flex();
    let resolved = ResolvedCheckpoint::read(weights, &args.arch.source())?;
    let description = resolved.description.clone();
    let network = match resolved.into_model(&device)?.into_deploy()? {
        DeployNetwork::RepVgg(network) => network,
        DeployNetwork::Plus(_) => bail!("int8 quantization does not cover RepVGGplus yet"),
    };
    let calibration = batches(&args, data, "train", args.calibration_images, &device)?;
    let validation = batches(&args, data, "val", usize::MAX, &device)?;
    let images: usize = validation.iter().map(|(_, targets)| targets.len()).sum();
    println!(
        "{description} from {}: {} layers, calibrated on {} training images, {images} validation \
         images",
        weights.display(),
        network.blocks().count(),
        args.calibration_images
            .min(calibration.iter().map(|(_, t)| t.len()).sum()),
    );
    let f32_predictions = predict(&validation, |images| network.forward(images));
    let f32_top1 = top1(&f32_predictions, &validation);
    println!("\n| precision | calibration | top-1 | change | top-1 disagreements with f32 |");
    println!("|---|---|---:|---:|---:|");
    println!("| f32 | - | {:.2}% | - | - |", 100.0 * f32_top1);
    let rules = CalibrationRule::ALL;
    let calibration_images = calibration.iter().map(|(images, _)| images.clone());
    let networks = QuantizedNetwork::calibrate_rules(&network, calibration_images, &rules)?;
    let mut best: Option<(f64, usize)> = None;
    for (index, (rule, quantized)) in rules.iter().zip(&networks).enumerate() {
        let predictions = predict(&validation, |images| quantized.forward(images));
        let accuracy = top1(&predictions, &validation);
        let disagreements = differing(&predictions, &f32_predictions);
        println!(
            "| int8 | {rule} | {:.2}% | {:+.2} | {disagreements} |",
            100.0 * accuracy,
            100.0 * (accuracy - f32_top1)
        );
        if best.is_none_or(|(top, _)| accuracy > top) {
            best = Some((accuracy, index));
        }
    }
    if args.sensitivity
        && let Some((_, index)) = best
    {
        sensitivity(&networks[index], rules[index], &validation, f32_top1)?;
    }
    Ok(())
}

/// Images per second of the int8 network (AVX512_VNNI kernels where the CPU has them, else the
/// integer definition) beside the CPU engine in f32 and bf16, medians of interleaved rounds.
fn speed(args: &Int8BenchArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let device = Device::flex();
    let bf16 = CpuPrecision::Bf16.is_supported();
    println!("| model | batch | f32 img/s | bf16 img/s | int8 img/s | int8 / best of f32, bf16 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &arch in &args.archs {
        let network = arch.config().init_deploy(&device);
        let calibration = (0..4).map(|_| random_images(8, args.size, &device));
        // The rule does not change the speed; min-max calibrates fastest.
        let int8 = QuantizedNetwork::calibrate(&network, calibration, CalibrationRule::MinMax)?;
        let f32_model = DeployModel::new(network.clone());
        let bf16_model = match bf16 {
            true => Some(DeployModel::with_options(
                network,
                CpuOptions::default().with_precision(CpuPrecision::Bf16),
            )?),
            false => None,
        };
        for &batch in &args.batch {
            let images = random_images(batch, args.size, &device);
            let mut times: [Vec<f64>; 3] = Default::default();
            for _ in 0..args.rounds {
                times[0].push(seconds(|| drop(f32_model.forward(images.clone()))));
                if let Some(model) = &bf16_model {
                    times[1].push(seconds(|| drop(model.forward(images.clone()))));
                }
                times[2].push(seconds(|| drop(int8.forward(images.clone()))));
            }
            let rate = |times: &mut Vec<f64>| {
                times.sort_by(f64::total_cmp);
                times.get(times.len() / 2).map(|t| batch as f64 / t)
            };
            let [f32_rate, bf16_rate, int8_rate] = times.each_mut().map(rate);
            let best = f32_rate.unwrap_or(0.0).max(bf16_rate.unwrap_or(0.0));
            let show = |rate: Option<f64>| rate.map_or("-".to_string(), |r| format!("{r:.1}"));
            println!(
                "| {} | {batch} | {} | {} | {} | {:.2}x |",
                arch.name(),
                show(f32_rate),
                show(bf16_rate),
                show(int8_rate),
                int8_rate.unwrap_or(0.0) / best
            );
        }
    }
    Ok(())
}

fn random_images(batch: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// Seconds `work` takes, after one untimed run.
fn seconds(mut work: impl FnMut()) -> f64 {
    work();
    let start = Instant::now();
    work();
    start.elapsed().as_secs_f64()
}

/// Each layer quantized alone (the others in f32), then the whole network with its 1, 2 and 3
/// most sensitive layers in f32.
fn sensitivity(
    quantized: &QuantizedNetwork,
    rule: CalibrationRule,
    validation: &Batches,
    f32_top1: f64,
) -> Result<()> {
    let layers = quantized.layers().len();
    let all_f32 = (0..layers).try_fold(quantized.clone(), |q, i| q.with_layer_in_int8(i, false))?;
    println!("\nSensitivity ({rule}): top-1 with one layer in int8, the others in f32\n");
    println!("| layer | in -> out channels, stride | top-1 | change |");
    println!("|---|---|---:|---:|");
    let mut costs = Vec::with_capacity(layers);
    for (index, layer) in quantized.layers().iter().enumerate() {
        let alone = all_f32.clone().with_layer_in_int8(index, true)?;
        let accuracy = top1(
            &predict(validation, |images| alone.forward(images)),
            validation,
        );
        let cost = f32_top1 - accuracy;
        println!(
            "| {index} | {} -> {}, {} | {:.2}% | {:+.2} |",
            layer.shape().in_channels,
            layer.shape().out_channels,
            layer.shape().stride,
            100.0 * accuracy,
            100.0 * (accuracy - f32_top1)
        );
        costs.push((cost, index));
    }
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\n| layers left in f32 (most sensitive first) | top-1 |");
    println!("|---|---:|");
    let mut mixed = quantized.clone();
    for (count, &(_, index)) in costs.iter().take(3).enumerate() {
        mixed = mixed.with_layer_in_int8(index, false)?;
        let accuracy = top1(
            &predict(validation, |images| mixed.forward(images)),
            validation,
        );
        let kept: Vec<String> = costs[..=count].iter().map(|(_, i)| i.to_string()).collect();
        println!("| {} | {:.2}% |", kept.join(", "), 100.0 * accuracy);
    }
    Ok(())
}

/// Up to `limit` images of `data`'s `split` (or of `data`), through the evaluation transform,
/// in batches of 32.
fn batches(
    args: &Int8BenchArgs,
    data: &Path,
    split: &str,
    limit: usize,
    device: &Device,
) -> Result<Batches> {
    let folder = open_split(data, split)?;
    let loader = evaluation_loader(&folder, &args.crop.transform(), 32, None, device)?;
    let mut out = Vec::new();
    let mut taken = 0;
    for batch in loader.iter() {
        if taken >= limit {
            break;
        }
        let batch = batch?;
        let targets: Vec<i64> = batch.targets.into_data().iter::<i64>().collect();
        taken += targets.len();
        out.push((batch.images, targets));
    }
    Ok(out)
}

/// The top-1 class of every validation image.
fn predict(batches: &Batches, forward: impl Fn(Tensor<4>) -> Tensor<2>) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|(images, _)| {
            forward(images.clone())
                .argmax(1)
                .into_data()
                .iter::<i64>()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn top1(predictions: &[i64], batches: &Batches) -> f64 {
    let targets = batches.iter().flat_map(|(_, targets)| targets);
    let correct = predictions
        .iter()
        .zip(targets)
        .filter(|(p, t)| p == t)
        .count();
    correct as f64 / predictions.len().max(1) as f64
}

fn differing(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}
