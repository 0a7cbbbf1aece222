//! `cargo xtask eval`: top-1 / top-5 of any weights file on an ImageFolder validation set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use repvgg_deploy::{DeployModel, Form, read_checkpoint};
use repvgg_model::RepVggArch;
use repvgg_train::data::{Augmentation, EvalTransform, ImageFolder, ImageLoader, LoaderOptions};
use repvgg_train::evaluate::{Evaluation, evaluate};

use crate::weights_file::{Backend, architecture, explain_mismatch, parse_arch};

/// Evaluate weights on an ImageFolder validation set: top-1 and top-5 accuracy.
///
/// Reads every format `convert` reads, training-time or deploy-time: our .bpk files, the
/// reference's .pth and timm's .safetensors. Images go through the evaluation transform of
/// training (resize the shorter side to size/0.875, centre crop, ImageNet normalisation); class
/// `i` is the `i`-th class folder in sorted order, as torchvision numbers them.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Weights to evaluate (.bpk, .pth, .pt, .safetensors).
    #[arg(long)]
    pub weights: PathBuf,

    /// ImageFolder root: DIR/CLASS/IMAGE, or DIR/val/CLASS/IMAGE.
    #[arg(long)]
    pub data: PathBuf,

    /// Architecture (A0 ... D2se); by default recorded in the file or inferred from its shapes.
    #[arg(long, value_parser = parse_arch, conflicts_with = "config")]
    pub arch: Option<RepVggArch>,

    /// Architecture config JSON, for custom networks.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Centre crop size (the network's input size).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    pub image_size: u32,

    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub device: Backend,

    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

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
    let checkpoint = read_checkpoint(&args.weights)?;
    let (name, config) = architecture(
        args.arch,
        args.config.as_deref(),
        &checkpoint.weights,
        checkpoint.config,
    )?;
    let folder = open_folder(&args.data)?;
    ensure!(
        folder.classes.len() <= config.num_classes,
        "{} has {} class folders but the network has {} outputs",
        folder.root.display(),
        folder.classes.len(),
        config.num_classes
    );
    let device = args.device.device()?;
    let loader = loader(args, &folder, &device)?;
    let weights = &checkpoint.weights;
    let what = format!("{name}, {} form", checkpoint.form);
    let bar = progress_bar(progress, loader.num_items());
    let on_batch = |evaluation: &Evaluation, _: &_| {
        bar.set_position(evaluation.images as u64);
        bar.set_message(format!(
            "top-1 {:.2}%, {:.1} img/s",
            100.0 * evaluation.top1(),
            evaluation.images_per_second()
        ));
    };
    eprintln!(
        "evaluating {what} on {} images of {} classes from {} ({})",
        folder.len(),
        folder.classes.len(),
        folder.root.display(),
        args.device.name()
    );
    let evaluation = match checkpoint.form {
        Form::Training => {
            let net = weights
                .load_into(config.init(&device), &what)
                .map_err(|err| explain_mismatch(err, weights))?;
            evaluate(&loader, |images| net.forward(images), on_batch)?
        }
        Form::Deploy => {
            // On the CPU backend this runs the CPU deploy path.
            let net = DeployModel::new(
                weights
                    .load_into(config.init_deploy(&device), &what)
                    .map_err(|err| explain_mismatch(err, weights))?,
            );
            evaluate(&loader, |images| net.forward(images), on_batch)?
        }
    };
    bar.finish_and_clear();
    let skipped = loader.skipped().list();
    if !skipped.is_empty() {
        eprintln!("skipped {} unreadable images (not counted):", skipped.len());
        for (path, reason) in skipped.iter().take(10) {
            eprintln!("  {}: {reason}", path.display());
        }
    }
    Ok(evaluation)
}

/// `dir/val` when it exists (a data set root), else `dir` itself.
fn open_folder(dir: &Path) -> Result<ImageFolder> {
    let val = dir.join("val");
    let root = if val.is_dir() { val } else { dir.to_path_buf() };
    ImageFolder::open(&root)
        .with_context(|| format!("cannot use {} as a validation set", root.display()))
}

fn loader(args: &EvalArgs, folder: &ImageFolder, device: &Device) -> Result<ImageLoader> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    ensure!(workers > 0, "--workers must be at least 1");
    Ok(ImageLoader::new(
        folder.samples.clone(),
        Augmentation::Eval(EvalTransform::new(args.image_size)),
        LoaderOptions {
            batch_size: args.batch_size,
            workers,
            seed: 0,
            shuffle: false,
            mixup_alpha: None,
            prefetch: 2,
        },
        device,
    )?)
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
