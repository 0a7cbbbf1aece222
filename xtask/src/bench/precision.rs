//! `cargo xtask bench-precision`: what the CPU engine's bf16 mode costs in accuracy, against its
//! f32 mode: on random-weight networks with random images, and on a trained model's validation
//! set (the demo's, or any `eval` takes).

use std::path::PathBuf;

use anyhow::{Result, ensure};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use repvgg_cli::eval::{EvalArgs, compare_precisions};
use repvgg_cli::{ArchArgs, CropArgs};
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel};
use repvgg_model::{DeviceChoice, RepVggArch, logit_difference};

use super::ensure_repvgg;

/// Compare the CPU engine's bf16 logits with its f32 ones: the largest relative logit difference
/// and the top-1 disagreements, on random-weight --arch networks (random images of --size) and,
/// given --weights and --data, on that model's validation set.
#[derive(Args, Debug)]
pub struct PrecisionBenchArgs {
    #[arg(long, value_delimiter = ',', default_value = "A0,B0")]
    arch: Vec<RepVggArch>,

    /// Random images per architecture (in batches of 8).
    #[arg(long, default_value_t = 32)]
    images: usize,

    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    size: u32,

    /// A trained model (any file `eval` reads) ...
    #[arg(long, requires = "data")]
    weights: Option<PathBuf>,

    /// ... and its validation set (ImageFolder; DIR/val is used when present).
    #[arg(long, requires = "weights")]
    data: Option<PathBuf>,

    #[command(flatten)]
    crop: CropArgs,
}

pub fn run(args: PrecisionBenchArgs) -> Result<()> {
    ensure_repvgg(&args.arch)?;
    ensure!(args.images > 0, "--images must be at least 1");
    ensure!(
        CpuPrecision::Bf16.is_supported(),
        "this CPU lacks AVX512_BF16: the CPU engine has no bf16 mode to compare"
    );
    println!(
        "| model | images | max relative logit difference | top-1 disagreements | top-1 f32 | top-1 bf16 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let device = Device::flex();
    let bf16 = CpuOptions::default().with_precision(CpuPrecision::Bf16);
    for &arch in &args.arch {
        let net = arch.config().init_deploy(&device);
        let (full, reduced) = (
            DeployModel::new(net.clone()),
            DeployModel::with_options(net, bf16)?,
        );
        let (mut max_relative, mut disagreements) = (0f32, 0);
        for first in (0..args.images).step_by(8) {
            let batch = 8.min(args.images - first);
            let size = args.size as usize;
            let images = Tensor::<4>::random(
                [batch, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let (a, b) = (full.forward(images.clone()), reduced.forward(images));
            let difference = logit_difference(&b.clone().into_data(), &a.clone().into_data());
            max_relative = max_relative.max(difference.relative);
            let (top_a, top_b) = (a.argmax(1).into_data(), b.argmax(1).into_data());
            disagreements += top_a
                .iter::<i64>()
                .zip(top_b.iter::<i64>())
                .filter(|(x, y)| x != y)
                .count();
        }
        println!(
            "| {arch} (random weights) | {} | {max_relative:.2e} | {disagreements} | - | - |",
            args.images
        );
    }
    if let (Some(weights), Some(data)) = (args.weights, args.data) {
        let eval = EvalArgs {
            weights: Some(weights.clone()),
            pretrained: None,
            data,
            arch: ArchArgs::default(),
            crop: args.crop,
            device: DeviceChoice::Cpu,
            batch_size: 50,
            precision: CpuPrecision::F32,
            workers: None,
        };
        let agreement = compare_precisions(&eval)?;
        println!(
            "| {} | {} | {:.2e} | {} | {:.2}% | {:.2}% |",
            weights.display(),
            agreement.f32.images,
            agreement.max_relative,
            agreement.top1_disagreements,
            100.0 * agreement.f32.top1(),
            100.0 * agreement.bf16.top1()
        );
    }
    Ok(())
}
