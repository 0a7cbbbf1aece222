//! `cargo xtask bench-memory` (hidden): one configuration's peak memory, measured in a fresh
//! process so that no earlier measurement's allocations hide it.

use std::process::Command;

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use clap::Args;
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel};
use repvgg_model::RepVggArch;

use super::resnet::ResNet;
use super::{machine, random_images, training};

/// Runs `cargo xtask bench-memory` for one configuration in a fresh process, so that no earlier
/// measurement's allocations hide this one's.
pub(super) fn peak_memory_of(
    model: &str,
    form: &str,
    batch: usize,
    size: u32,
) -> Option<(f64, f64)> {
    let output = Command::new(std::env::current_exe().ok()?)
        .args(["bench-memory", "--model", model, "--form", form])
        .args(["--batch", &batch.to_string(), "--size", &size.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .split_whitespace()
        .filter_map(|word| word.parse::<f64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Options of the hidden `bench-memory` command (one configuration, CPU).
#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    form: String,
    #[arg(long)]
    batch: usize,
    #[arg(long)]
    size: usize,
    /// Two training steps (`bench-train`) instead of two forward passes.
    #[arg(long)]
    train: bool,
}

/// Builds one model on the CPU, runs it twice and prints `PEAK_MB INFERENCE_MB`: the
/// process's peak resident memory, and how far it rose above the loaded model and input.
pub fn run_memory(args: MemoryArgs) -> Result<()> {
    if args.train {
        let memory = machine::PeakMemory::start().context("/proc/self is not available")?;
        training::two_steps(RepVggArch::from_name(&args.model)?, args.batch, args.size);
        println!("{:.1} {:.1}", memory.peak_mb(), memory.growth_mb());
        return Ok(());
    }
    let device = Device::flex();
    let images = random_images(args.batch, args.size, &device);
    // Parameters are created lazily: touch them all, so that the weights count as the model's.
    fn loaded<M: Module>(net: M) -> M {
        net.visit(&mut Touch);
        net
    }
    let forward: Box<dyn Fn() -> Tensor<2>> = match (args.model.as_str(), args.form.as_str()) {
        ("ResNet-18", _) => {
            let net = loaded(ResNet::resnet18(&device));
            Box::new(move || net.forward(images.clone()))
        }
        ("ResNet-50", _) => {
            let net = loaded(ResNet::resnet50(&device));
            Box::new(move || net.forward(images.clone()))
        }
        (name, "training") => {
            let config = RepVggArch::from_name(name)?.config();
            let net = loaded(config.init(&device));
            Box::new(move || net.forward(images.clone()))
        }
        (name, form @ ("deploy-cpu" | "deploy-cpu-bf16")) => {
            let config = RepVggArch::from_name(name)?.config();
            let precision = if form == "deploy-cpu" {
                CpuPrecision::F32
            } else {
                CpuPrecision::Bf16
            };
            let options = CpuOptions::default().with_precision(precision);
            let net = DeployModel::with_options(config.init_deploy(&device), options)?;
            Box::new(move || net.forward(images.clone()))
        }
        (name, _) => {
            let config = RepVggArch::from_name(name)?.config();
            let net = loaded(config.init_deploy(&device));
            Box::new(move || net.forward(images.clone()))
        }
    };
    let memory = machine::PeakMemory::start().context("/proc/self is not available")?;
    for _ in 0..2 {
        forward().into_data();
    }
    println!("{:.1} {:.1}", memory.peak_mb(), memory.growth_mb());
    Ok(())
}

/// Reads every float tensor of a module (initializing lazy parameters), copying nothing.
struct Touch;

impl ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}
