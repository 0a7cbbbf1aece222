//! `repvgg eval`: top-1 / top-5 of any weights file, or of timm's pretrained weights, on an
//! ImageFolder validation set.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail, ensure};
use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use repvgg_data::{EvalTransform, Evaluation, evaluate};
use repvgg_deploy::{ArchSource, CpuPrecision, LoadedModel, ResolvedCheckpoint};
use repvgg_model::{DeviceChoice, RepVggArch, logit_difference};

use crate::{ArchArgs, CropArgs, deploy_model, evaluation_loader, open_split};

/// Evaluate weights on an ImageFolder validation set: top-1 and top-5 accuracy.
///
/// Reads every format `convert` reads, training-time or deploy-time: our .bpk files, the
/// reference's .pth and timm's .safetensors. Images go through the evaluation transform of
/// training (resize the shorter side to size/0.875, centre crop, ImageNet normalisation), or
/// for `--pretrained` as timm evaluates those weights; class `i` is the `i`-th class folder in
/// sorted order, as torchvision numbers them.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Weights to evaluate (.bpk, .pth, .pt, .safetensors).
    #[arg(long, required_unless_present = "pretrained")]
    pub weights: Option<PathBuf>,

    /// timm's pretrained ImageNet weights of this architecture (a0, b1g4, d2se, ...) from the
    /// Hugging Face cache (downloaded there once), evaluated as timm evaluates them unless
    /// --image-size / --crop-pct say otherwise.
    #[arg(long, conflicts_with_all = ["weights", "arch", "config"])]
    pub pretrained: Option<RepVggArch>,

    /// ImageFolder root: DIR/CLASS/IMAGE, or DIR/val/CLASS/IMAGE.
    #[arg(long)]
    pub data: PathBuf,

    #[command(flatten)]
    pub arch: ArchArgs,

    #[command(flatten)]
    pub crop: CropArgs,

    /// Where the network runs: cpu, wgpu or cuda.
    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,

    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Precision of the CPU deploy path: f32, or bf16 (weights and activations rounded to
    /// bfloat16, f32 accumulation: about twice as fast on CPUs with AVX512_BF16, refused
    /// elsewhere; a training-time checkpoint is converted first).
    #[arg(long, default_value_t = CpuPrecision::F32)]
    pub precision: CpuPrecision,

    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Evaluates as `args` say and prints the accuracies.
pub fn run(args: EvalArgs) -> Result<()> {
    let evaluation = evaluate_file(&args, true)?;
    println!(
        "top-1 {:.2}%  top-5 {:.2}%  ({} images, {:.1} images/s)",
        100.0 * evaluation.top1(),
        100.0 * evaluation.top5(),
        evaluation.images,
        evaluation.images_per_second()
    );
    Ok(())
}

/// Loads the weights and evaluates them; `progress` draws a progress bar on stderr.
pub fn evaluate_file(args: &EvalArgs, progress: bool) -> Result<Evaluation> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let (weights, source, transform) = weights(args)?;
    if repvgg_deploy::is_int8_file(&weights) {
        return evaluate_int8(args, &weights, transform, progress);
    }
    let resolved = ResolvedCheckpoint::read(&weights, &source)?;
    let config = resolved.config.clone();
    ensure!(
        config.has_head(),
        "{} holds a headless network (no classifier): nothing to evaluate",
        weights.display()
    );
    let folder = open_split(&args.data, "val")?;
    ensure!(
        folder.classes.len() <= config.num_classes,
        "{} has {} class folders but the network has {} outputs",
        folder.root.display(),
        folder.classes.len(),
        config.num_classes
    );
    let device = args.device.device()?;
    let loader = evaluation_loader(&folder, &transform, args.batch_size, args.workers, &device)?;
    let what = format!("{}, {} form", resolved.description, resolved.form());
    let bar = progress_bar(progress, loader.num_items());
    let on_batch = |evaluation: &Evaluation, _: &_| {
        bar.set_position(evaluation.images as u64);
        bar.set_message(format!(
            "top-1 {:.2}%, {:.1} img/s",
            100.0 * evaluation.top1(),
            evaluation.images_per_second()
        ));
    };
    if progress {
        eprintln!(
            "evaluating {what} on {} images of {} classes from {} ({}), at {} px from a {} px \
             resize",
            folder.len(),
            folder.classes.len(),
            folder.root.display(),
            args.device.description(),
            transform.size,
            transform.resize
        );
    }
    let evaluation = match (resolved.into_model(&device)?, args.precision) {
        (LoadedModel::Training(net), CpuPrecision::F32) => {
            evaluate(&loader, |images| net.forward(images), on_batch)?
        }
        (loaded, precision) => {
            // On the CPU backend this runs the CPU deploy path.
            let net = deploy_model(loaded.into_deploy()?, precision)?;
            evaluate(&loader, |images| net.forward(images), on_batch)?
        }
    };
    bar.finish_and_clear();
    let skipped = loader.skipped().list();
    if progress && !skipped.is_empty() {
        eprintln!("skipped {} unreadable images (not counted):", skipped.len());
        for (path, reason) in skipped.iter().take(10) {
            eprintln!("  {}: {reason}", path.display());
        }
    }
    Ok(evaluation)
}

/// Evaluates an int8 model file (`repvgg quantize`'s) on the CPU's AVX512_VNNI kernels.
fn evaluate_int8(
    args: &EvalArgs,
    path: &Path,
    transform: EvalTransform,
    progress: bool,
) -> Result<Evaluation> {
    ensure!(
        args.device == DeviceChoice::Cpu,
        "{} is an int8 model, which runs on the CPU: use --device cpu",
        path.display()
    );
    ensure!(
        repvgg_deploy::int8::vnni_supported(),
        "{} is an int8 model, and this CPU lacks AVX512_VNNI, which its layers run on",
        path.display()
    );
    let model = repvgg_deploy::read_int8(path)?;
    let folder = open_split(&args.data, "val")?;
    ensure!(
        folder.classes.len() <= model.config.num_classes,
        "{} has {} class folders but the network has {} outputs",
        folder.root.display(),
        folder.classes.len(),
        model.config.num_classes
    );
    let device = Device::flex();
    let loader = evaluation_loader(&folder, &transform, args.batch_size, args.workers, &device)?;
    let bar = progress_bar(progress, loader.num_items());
    if progress {
        eprintln!(
            "evaluating the int8 model {} (calibrated: {}) on {} images of {} classes",
            path.display(),
            model.calibration,
            folder.len(),
            folder.classes.len()
        );
    }
    let on_batch = |evaluation: &Evaluation, _: &_| bar.set_position(evaluation.images as u64);
    let evaluation = evaluate(&loader, |images| model.network.forward(images), on_batch)?;
    bar.finish_and_clear();
    Ok(evaluation)
}

/// bf16 beside f32 on one validation set, image by image: the CPU deploy path in both
/// precisions on the same batches.
#[derive(Clone, Debug)]
pub struct PrecisionAgreement {
    pub f32: Evaluation,
    pub bf16: Evaluation,
    /// The largest `max |bf16 - f32| / max |f32|` of a batch's logits.
    pub max_relative: f32,
    /// Images whose top-1 class differs between the precisions.
    pub top1_disagreements: usize,
}

/// Evaluates the weights of `args` (on the CPU) in f32 and in bf16 and compares them.
pub fn compare_precisions(args: &EvalArgs) -> Result<PrecisionAgreement> {
    ensure!(
        args.device == DeviceChoice::Cpu,
        "bf16 is the CPU deploy path's: compare on --device cpu"
    );
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let (weights, source, transform) = weights(args)?;
    let resolved = ResolvedCheckpoint::read(&weights, &source)?;
    let folder = open_split(&args.data, "val")?;
    let device = Device::flex();
    let net = resolved.into_model(&device)?.into_deploy()?;
    let full = deploy_model(net.clone(), CpuPrecision::F32)?;
    let reduced = deploy_model(net, CpuPrecision::Bf16)?;
    let loader = evaluation_loader(&folder, &transform, args.batch_size, args.workers, &device)?;
    let (mut f32_eval, mut bf16_eval) = (Evaluation::default(), Evaluation::default());
    let mut max_relative = 0f32;
    for batch in loader.iter() {
        let batch = batch?;
        let full_logits = full.forward(batch.images.clone());
        let reduced_logits = reduced.forward(batch.images);
        let difference = logit_difference(
            &reduced_logits.clone().into_data(),
            &full_logits.clone().into_data(),
        );
        max_relative = max_relative.max(difference.relative);
        f32_eval.add(full_logits, batch.targets.clone());
        bf16_eval.add(reduced_logits, batch.targets);
    }
    let top1_disagreements = f32_eval
        .predictions
        .iter()
        .zip(&bf16_eval.predictions)
        .filter(|(a, b)| a != b)
        .count();
    Ok(PrecisionAgreement {
        f32: f32_eval,
        bf16: bf16_eval,
        max_relative,
        top1_disagreements,
    })
}

/// The weights file `args` name, how to resolve its architecture, and the evaluation transform:
/// `--weights` with the flags' crop, or `--pretrained`'s file in the Hugging Face cache
/// (downloaded there first) with timm's evaluation setup where the flags leave it open.
fn weights(args: &EvalArgs) -> Result<(PathBuf, ArchSource, EvalTransform)> {
    match (&args.weights, args.pretrained) {
        (Some(path), _) => Ok((path.clone(), args.arch.source(), args.crop.transform())),
        (None, Some(arch)) => pretrained_weights(arch, args),
        (None, None) => bail!("give --weights FILE or --pretrained NAME"),
    }
}

#[cfg(feature = "pretrained")]
fn pretrained_weights(
    arch: RepVggArch,
    args: &EvalArgs,
) -> Result<(PathBuf, ArchSource, EvalTransform)> {
    let options = repvgg_deploy::PretrainedOptions::from_env();
    let path = repvgg_deploy::download_pretrained(arch, &options)?;
    let setup = repvgg_deploy::PretrainedEval::of(arch)?;
    let transform = args.crop.transform_or(setup.input_size, setup.crop_pct);
    Ok((path, ArchSource::Preset(arch), transform))
}

#[cfg(not(feature = "pretrained"))]
fn pretrained_weights(_: RepVggArch, _: &EvalArgs) -> Result<(PathBuf, ArchSource, EvalTransform)> {
    bail!("give --weights FILE (this build has no pretrained weights)")
}

fn progress_bar(visible: bool, total: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {msg}  [{elapsed} < {eta}]")
            .expect("the template is valid"),
    );
    bar
}
