//! `cargo xtask bench-train`: the speed of full training steps, what training spends its time
//! on, beside PyTorch eager doing the same steps on the same machine in the same run.
//!
//! A step is what `repvgg-train` runs for every batch: the training-time network forward in
//! training mode (BN statistics updated), the recipe's loss, backward, and SGD with momentum 0.9
//! and weight decay 1e-4 (the paper's optimizer, `repvgg_train::recipe::sgd`), on a synthetic
//! batch already on the device.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, FloatDType, Int, Tensor};
use burn::train::TrainStep;
use clap::Args;
use repvgg_data::ImageBatch;
use repvgg_model::{DeviceChoice, RepVggArch};
use repvgg_ops::profile::{self, PhaseTime};
use repvgg_train::classifier::{Classifier, Objective, TrainableNetwork};
use repvgg_train::recipe::{DecayRule, scaled_lr, sgd};
use repvgg_train::{Precision, RecipeConfig};

use super::machine;
use super::python::run_bench_script;

/// Time training steps of RepVGG on synthetic batches, beside PyTorch eager on the same device
/// (CPU or CUDA), and write the report to --output.
#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Architectures, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "A0,B0")]
    arch: Vec<RepVggArch>,

    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,

    /// Square input size.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    size: u32,

    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,

    /// f32; bf16 where the device computes in it (weights and activations, as `repvgg-train
    /// --precision` trains; PyTorch's model and batch are cast to it too); or bf16-mixed on the
    /// CPU (bf16 products, f32 tensors; PyTorch under CPU autocast to bf16).
    #[arg(long, default_value = "f32")]
    precision: Precision,

    /// Timed steps per measurement (their mean, and the median of each part, are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,

    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,

    /// Python with torch and timm for the PyTorch column (CPU and CUDA); "none" skips it.
    #[arg(long, env = "REPVGG_PYTHON", default_value = "python3")]
    python: String,

    /// Where the report goes.
    #[arg(long, default_value = "benchmarks/training.md")]
    output: PathBuf,

    /// Also time --runs more steps with repvgg-ops' phase timers on (CPU), and report where
    /// forward, backward and the optimizer spend their time: im2col, products, batch norms,
    /// col2im, SGD, and what lies outside those ops (Burn's other ops, the autodiff graph,
    /// allocation).
    #[arg(long)]
    profile: bool,
}

/// Median milliseconds of one step and of its parts.
#[derive(Clone, Copy, Debug, Default)]
struct StepTimes {
    step: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// One architecture's training steps, in Burn and (when measured) in PyTorch.
struct Row {
    model: String,
    burn: StepTimes,
    torch: Option<StepTimes>,
    /// Peak resident memory of a fresh process running two steps (CPU).
    peak_mb: Option<f64>,
    /// Where the parts of a step spend their time (`--profile`).
    profile: Option<StepProfile>,
}

/// Milliseconds per step of each part and of repvgg-ops' phases within it.
struct StepProfile {
    /// `(part, its ms per step, its phases)` for forward, backward and optimizer.
    parts: Vec<(&'static str, f64, Vec<PhaseTime>)>,
}

pub fn run(args: TrainBenchArgs) -> Result<()> {
    ensure!(
        args.runs > 0 && args.batch > 0,
        "--runs and --batch must be positive"
    );
    super::ensure_repvgg(&args.arch)?;
    let mut device = args.device.device()?;
    if args.precision == Precision::Bf16Mixed {
        ensure!(
            args.device == DeviceChoice::Cpu,
            "bf16-mixed runs on the CPU device"
        );
        repvgg_ops::set_products(repvgg_ops::Products::Bf16)?;
    }
    if args.precision == Precision::Bf16 {
        ensure!(
            device.supports_dtype(FloatDType::BF16),
            "{} does not compute in bf16",
            args.device.description()
        );
        device
            .configure(FloatDType::BF16)
            .context("cannot switch the device to bf16")?;
    }
    let mut rows = Vec::new();
    for &arch in &args.arch {
        eprintln!(
            "{arch}: {} + {} training steps of {}",
            args.warmup, args.runs, args.batch
        );
        let burn = time_steps(arch, args.batch, args.size as usize, &device, &args)?;
        let profile = (args.profile && args.device == DeviceChoice::Cpu)
            .then(|| profile_steps(arch, args.batch, args.size as usize, &args));
        // The fresh process that measures memory trains in f32.
        let peak_mb = (args.device == DeviceChoice::Cpu && args.precision == Precision::F32)
            .then(|| peak_memory_of(arch, args.batch, args.size))
            .flatten();
        rows.push(Row {
            model: arch.to_string(),
            burn,
            torch: None,
            peak_mb,
            profile,
        });
    }
    let torch = match (args.device, args.python.as_str()) {
        (DeviceChoice::Cpu | DeviceChoice::Cuda, python) if python != "none" => {
            match run_torch(&args) {
                Ok(torch) => Some(torch),
                Err(err) => {
                    eprintln!("warning: no PyTorch figures: {err:#}");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some((_, figures)) = &torch {
        for row in &mut rows {
            row.torch = figures
                .iter()
                .find(|(model, _)| *model == row.model)
                .map(|(_, times)| *times);
        }
    }
    let report = report(
        &args,
        &rows,
        torch.as_ref().map(|(version, _)| version.as_str()),
    );
    println!("{report}");
    std::fs::write(&args.output, &report)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// A synthetic batch on `device`: normal images and random labels of the network's classes.
fn synthetic_batch(batch: usize, size: usize, classes: usize, device: &Device) -> ImageBatch {
    ImageBatch {
        images: Tensor::random(
            [batch, 3, size, size],
            Distribution::Normal(0.0, 1.0),
            device,
        ),
        targets: Tensor::<1, Int>::random(
            [batch],
            Distribution::Uniform(0.0, classes as f64),
            device,
        ),
        mixup: None,
    }
}

/// Times `args.runs` training steps of `arch` after `args.warmup`: whole steps (the device
/// synchronised once, at the end), then each part separately (synchronised after each part).
fn time_steps(
    arch: RepVggArch,
    batch: usize,
    size: usize,
    device: &Device,
    args: &TrainBenchArgs,
) -> Result<StepTimes> {
    let device = device.clone().autodiff();
    let recipe = RecipeConfig::new();
    let config = arch.config();
    let data = synthetic_batch(batch, size, config.num_classes, &device);
    let mut model = Classifier::new(config.init(&device), Objective::of(&recipe));
    let mut optimizer = sgd(&recipe, DecayRule::of(&recipe, &config));
    let lr = scaled_lr(recipe.lr, batch);
    for _ in 0..args.warmup {
        let output = TrainStep::step(&model, data.clone());
        model = optimizer.step(lr, model, output.grads);
    }
    let started = Instant::now();
    for _ in 0..args.runs {
        let output = TrainStep::step(&model, data.clone());
        model = optimizer.step(lr, model, output.grads);
    }
    sync(&model);
    let step = started.elapsed().as_secs_f64() * 1e3 / args.runs as f64;

    let (mut forward, mut backward, mut update) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let started = Instant::now();
        let loss = model.loss(&model.net.forward_with_aux(data.images.clone()), &data);
        let _ = loss.clone().into_data();
        forward.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        backward.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        model = optimizer.step(lr, model, grads);
        sync(&model);
        update.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(StepTimes {
        step,
        forward: median(forward),
        backward: median(backward),
        optimizer: median(update),
    })
}

/// Times `args.runs` steps of `arch` on the CPU part by part, with repvgg-ops' phase timers on.
fn profile_steps(
    arch: RepVggArch,
    batch: usize,
    size: usize,
    args: &TrainBenchArgs,
) -> StepProfile {
    let device = Device::flex().autodiff();
    let recipe = RecipeConfig::new();
    let config = arch.config();
    let data = synthetic_batch(batch, size, config.num_classes, &device);
    let mut model = Classifier::new(config.init(&device), Objective::of(&recipe));
    let mut optimizer = sgd(&recipe, DecayRule::of(&recipe, &config));
    let lr = scaled_lr(recipe.lr, batch);
    for _ in 0..args.warmup.max(1) {
        let output = TrainStep::step(&model, data.clone());
        model = optimizer.step(lr, model, output.grads);
    }
    let mut totals = [0.0f64; 3];
    let mut phases: [Vec<PhaseTime>; 3] = Default::default();
    let mut add = |part: usize, started: Instant| {
        totals[part] += started.elapsed().as_secs_f64();
        let taken = profile::take();
        if phases[part].is_empty() {
            phases[part] = taken;
        } else {
            for (sum, time) in phases[part].iter_mut().zip(taken) {
                sum.seconds += time.seconds;
                sum.calls += time.calls;
            }
        }
    };
    profile::take();
    profile::enable(true);
    for _ in 0..args.runs {
        let started = Instant::now();
        let loss = model.loss(&model.net.forward_with_aux(data.images.clone()), &data);
        let _ = loss.clone().into_data();
        add(0, started);
        let started = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        add(1, started);
        let started = Instant::now();
        model = optimizer.step(lr, model, grads);
        sync(&model);
        add(2, started);
    }
    profile::enable(false);
    let per_step = |seconds: f64| seconds * 1e3 / args.runs as f64;
    let parts = ["forward", "backward", "optimizer"]
        .into_iter()
        .zip(totals)
        .zip(phases)
        .map(|((part, total), mut phases)| {
            phases.retain(|time| time.calls > 0);
            for time in &mut phases {
                time.seconds = per_step(time.seconds);
            }
            (part, per_step(total), phases)
        })
        .collect();
    StepProfile { parts }
}

/// Waits for the device: reads one value of the network's last weights.
fn sync(model: &Classifier) {
    if let Some(linear) = &model.net.linear {
        let _ = linear.bias.as_ref().map(|bias| bias.val().into_data());
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `cargo xtask bench-memory --train` for one architecture in a fresh process.
fn peak_memory_of(arch: RepVggArch, batch: usize, size: u32) -> Option<f64> {
    let output = Command::new(std::env::current_exe().ok()?)
        .args([
            "bench-memory",
            "--train",
            "--model",
            arch.name(),
            "--form",
            "training",
        ])
        .args(["--batch", &batch.to_string(), "--size", &size.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Two training steps of `arch` on the CPU, for `bench-memory --train`.
pub fn two_steps(arch: RepVggArch, batch: usize, size: usize) {
    let device = Device::flex().autodiff();
    let recipe = RecipeConfig::new();
    let config = arch.config();
    let data = synthetic_batch(batch, size, config.num_classes, &device);
    let mut model = Classifier::new(config.init(&device), Objective::of(&recipe));
    let mut optimizer = sgd(&recipe, DecayRule::of(&recipe, &config));
    for _ in 0..2 {
        let output = TrainStep::step(&model, data.clone());
        model = optimizer.step(0.1, model, output.grads);
    }
    sync(&model);
}

/// PyTorch's version and its step times per architecture ("RepVGG-A0").
fn run_torch(args: &TrainBenchArgs) -> Result<(String, Vec<(String, StepTimes)>)> {
    let archs: Vec<&str> = args.arch.iter().map(|a| a.name()).collect();
    eprintln!("PyTorch ({} scripts/bench_torch.py --train)", args.python);
    let json = run_bench_script(
        &args.python,
        &[
            "--train".into(),
            "--archs".into(),
            archs.join(","),
            "--batches".into(),
            args.batch.to_string(),
            "--size".into(),
            args.size.to_string(),
            "--runs".into(),
            args.runs.to_string(),
            "--warmup".into(),
            args.warmup.to_string(),
            "--precision".into(),
            args.precision.name().into(),
        ],
        args.device,
    )?;
    let version = json["torch"]
        .as_str()
        .context("no PyTorch in this Python")?
        .to_string();
    let steps = json["training"]
        .as_object()
        .context("no training figures")?
        .iter()
        .filter_map(|(arch, times)| {
            let get = |key: &str| times[key].as_f64();
            Some((
                format!("RepVGG-{arch}"),
                StepTimes {
                    step: get("step_ms")?,
                    forward: get("forward_ms")?,
                    backward: get("backward_ms")?,
                    optimizer: get("optimizer_ms")?,
                },
            ))
        })
        .collect();
    Ok((version, steps))
}

fn report(args: &TrainBenchArgs, rows: &[Row], torch: Option<&str>) -> String {
    let mut out = String::new();
    let archs: Vec<&str> = args.arch.iter().map(|a| a.name()).collect();
    let _ = writeln!(out, "# Training benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `cargo xtask bench-train --arch {} --batch {} --size {} --device {} \
         --precision {} --runs {}`.\n",
        archs.join(","),
        args.batch,
        args.size,
        format!("{:?}", args.device).to_lowercase(),
        args.precision.name(),
        args.runs
    );
    let _ = writeln!(out, "{}\n", machine::describe(args.device.description()));
    let _ = writeln!(
        out,
        "A step: the training-time network forward in training mode (BN statistics updated), \
         cross-entropy, backward, SGD (momentum 0.9, weight decay 1e-4 on conv and linear \
         weights), on a synthetic batch of {} images of {}x{} already on the device; {}. \
         \"step\" is the mean of {} steps after {} warm-up (the device synchronised at the \
         end); the parts are the medians of separate steps, each part synchronised.{}\n",
        args.batch,
        args.size,
        args.size,
        args.precision.name(),
        args.runs,
        args.warmup,
        torch.map_or(String::new(), |version| format!(
            " PyTorch {version} eager runs the same steps on timm's RepVGG in the same run \
             (`scripts/bench_torch.py --train`)."
        ))
    );
    let _ = writeln!(
        out,
        "| model | batch | burn img/s | burn ms/step | forward / backward / optimizer ms | PyTorch img/s | PyTorch forward / backward / optimizer ms | burn / PyTorch | peak MB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---|---:|---:|");
    let per_second = |ms: f64| args.batch as f64 * 1000.0 / ms;
    let parts =
        |t: &StepTimes| format!("{:.0} / {:.0} / {:.0}", t.forward, t.backward, t.optimizer);
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {} | {} |",
            row.model,
            args.batch,
            per_second(row.burn.step),
            row.burn.step,
            parts(&row.burn),
            row.torch
                .map_or("-".into(), |t| format!("{:.1}", per_second(t.step))),
            row.torch.as_ref().map_or("-".into(), parts),
            row.torch
                .map_or("-".into(), |t| format!("{:.2}", t.step / row.burn.step)),
            row.peak_mb.map_or("-".into(), |mb| format!("{mb:.0}")),
        );
    }
    for row in rows {
        if let Some(profile) = &row.profile {
            write_profile(&mut out, &row.model, profile, args.runs);
        }
    }
    out
}

/// A row's `--profile` table: each part's milliseconds per step, repvgg-ops' phases within it,
/// and the rest of the part, outside those ops.
fn write_profile(out: &mut String, model: &str, profile: &StepProfile, runs: usize) {
    let _ = writeln!(
        out,
        "\n### {model}: where a step goes\n\nms per step over {runs} steps, each part \
         synchronised, repvgg-ops' phase timers on (indented phases are inside the op above \
         them; an op's time less its phases is its copies and allocation). \"outside these ops\" \
         is the part's time less its ops: Burn's other ops, the autodiff graph, allocation.\n"
    );
    let _ = writeln!(out, "| part / phase | ms per step | calls per step |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (part, total, phases) in &profile.parts {
        let _ = writeln!(out, "| **{part}** | **{total:.1}** | |");
        for time in phases {
            let _ = writeln!(
                out,
                "| {}{} | {:.1} | {} |",
                if time.phase.is_part() {
                    "&nbsp;&nbsp;"
                } else {
                    ""
                },
                time.phase.name().trim(),
                time.seconds,
                time.calls / runs as u64
            );
        }
        let ops: f64 = phases
            .iter()
            .filter(|time| !time.phase.is_part())
            .map(|time| time.seconds)
            .sum();
        let _ = writeln!(out, "| outside these ops | {:.1} | |", total - ops);
    }
}
