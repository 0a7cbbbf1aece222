//! Builds a RepVGG architecture in both forms, runs a forward pass on random images and prints
//! the feature shapes, parameter and compute counts, and the time each form takes.
//!
//! ```text
//! cargo run -p forward-pass -- --arch A0 --batch 1 --size 224
//! ```

use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::tensor::{Distribution, Tensor};
use clap::Parser;
use repvgg_deploy::timing::median_millis;
use repvgg_model::{DeviceChoice, ImageSize, RepVggArch, RepVggConfig, RepVggNetwork};

/// Build a RepVGG architecture (random weights), run its training-time and deploy-time forms on
/// random images, and print shapes, parameter counts, MACs and timings.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Reference architecture: A0, A1, A2, B0, B1, B1g2, B1g4, B2, B2g2, B2g4, B3, B3g2, B3g4,
    /// D2se (case-insensitive, `RepVGG-` prefix allowed).
    #[arg(long, default_value = "A0")]
    arch: RepVggArch,

    /// A JSON architecture config (as written by `RepVggConfig::save`); overrides `--arch`.
    #[arg(long)]
    config: Option<std::path::PathBuf>,

    /// Images per batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,

    /// Input size: `224` (square) or WIDTHxHEIGHT (`320x256`), each at least 32.
    #[arg(long, default_value = "224")]
    size: ImageSize,

    /// Timed forward passes per form (after one warm-up pass); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,

    /// Where to run: cpu, wgpu (a GPU through Vulkan, Metal or DX12; on by default) or cuda
    /// (`--features cuda`).
    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let (name, config) = match &args.config {
        Some(path) => {
            let config = RepVggConfig::load(path)
                .map_err(|err| anyhow::anyhow!("{err}"))
                .with_context(|| format!("cannot read the config {}", path.display()))?;
            config.validate()?;
            (path.display().to_string(), config)
        }
        None => (args.arch.to_string(), args.arch.config()),
    };
    let device = args.device.device()?;
    let ImageSize { width, height } = args.size;
    let batch = usize::from(args.batch);

    println!(
        "{name} on {}, input {batch}x3x{height}x{width}",
        args.device.description()
    );
    let params = config.num_params();
    println!(
        "parameters: {:.3}M training-time, {:.3}M deploy ({:.1}% fewer)",
        params.training as f64 / 1e6,
        params.deploy as f64 / 1e6,
        100.0 * (1.0 - params.deploy as f64 / params.training as f64)
    );
    let macs = config.macs(height, width);
    println!(
        "compute per image: {} training-time, {} deploy",
        format_macs(macs.training),
        format_macs(macs.deploy)
    );

    let images = Tensor::<4>::random(
        [batch, 3, height, width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let model = config.init(&device);
    let features = model.forward_features(images.clone());
    println!("features (stride, shape):");
    for (stage, feature) in features.iter().enumerate() {
        println!("  stage{stage}  /{:<3} {:?}", 2 << stage, feature.dims());
    }
    println!("logits: {:?}", model.forward(images.clone()).dims());

    let training_time = time_forward(&model, &images, args.runs);
    let deploy_time = time_forward(&config.init_deploy(&device), &images, args.runs);
    println!(
        "forward, median of {} runs: training-time {}, deploy {} ({:.2}x faster; deploy weights \
         are random here, fused ones come from conversion)",
        args.runs,
        per_batch(training_time, batch),
        per_batch(deploy_time, batch),
        training_time / deploy_time
    );
    Ok(())
}

/// Median wall time in ms of `runs` forward passes, after a warm-up pass (reading the logits
/// back waits for the device to finish).
fn time_forward<B: repvgg_model::Block>(
    model: &RepVggNetwork<B>,
    images: &Tensor<4>,
    runs: u16,
) -> f64 {
    median_millis(1, runs.into(), || {
        model.forward(images.clone()).into_data();
    })
}

fn per_batch(millis: f64, batch: usize) -> String {
    format!("{millis:.1} ms ({:.1} img/s)", batch as f64 * 1e3 / millis)
}

/// Multiply-accumulates in G or M units, whichever reads better.
fn format_macs(macs: u64) -> String {
    match macs as f64 {
        m if m >= 1e8 => format!("{:.3} GMACs", m / 1e9),
        m => format!("{:.2} MMACs", m / 1e6),
    }
}
