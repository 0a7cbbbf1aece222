//! Fine-tuning: a network trained on half of a data set's classes starts a run on the other
//! half from those weights (a fresh classifier, the stem and the first stage frozen; a lower
//! learning rate for the rest of the backbone with `--backbone-lr-scale`), and the same run
//! from random weights shows what the start is worth. `--init` fine-tunes any checkpoint instead of the first half's:
//! ours, the reference's `.pth`, or timm's safetensors of the same architecture.
//!
//! ```sh
//! cargo run --release -p finetune                    # generated shapes and textures, 5 + 5 classes
//! cargo run --release -p finetune -- --data DIR      # an ImageFolder of yours (train/ and val/)
//! cargo run --release -p finetune -- --data DIR --arch A0 --init RepVGG-A0-train.pth
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Parser;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_model::{RepVggArch, RepVggConfig};
use repvgg_train::{
    AugmentationConfig, LoaderConfig, RecipeConfig, TrainReport, TrainingConfig, WeightsInit, train,
};

#[derive(Parser)]
struct Args {
    /// An ImageFolder data set (train/CLASS/, val/CLASS/); default: a generated one.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The architecture (default: the demo's small RepVGG, A0's layout at half width).
    #[arg(long)]
    arch: Option<RepVggArch>,
    /// Fine-tune this checkpoint instead of training one on the first half of the classes.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Epochs of the pretraining on the first half of the classes.
    #[arg(long, default_value_t = 12)]
    pretrain_epochs: usize,
    /// Epochs of the fine-tuning and of the run from random weights.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// stage0 (the stem) through this stage keep the starting weights (default: stage1; `none`
    /// trains them all).
    #[arg(long, value_name = "STAGE|none", default_value = "1")]
    freeze_stages: LastFrozen,
    /// The backbone's learning rate as a fraction of the classifier's.
    #[arg(long, default_value_t = 1.0)]
    backbone_lr_scale: f64,
    /// Training crop size.
    #[arg(long, default_value_t = 32)]
    image_size: u32,
    /// Working directory: the class halves and the three runs go here (replaced).
    #[arg(long, value_name = "DIR", default_value = "runs/finetune")]
    output: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = match &args.data {
        Some(data) => data.clone(),
        None => {
            let data = args.output.join("generated");
            if !data.join("val").is_dir() {
                println!(
                    "generating {} classes in {}",
                    SYNTHETIC_CLASSES.len(),
                    data.display()
                );
                write_synthetic_set(&data, 200, 50, 7)?;
            }
            data
        }
    };
    let classes = class_folders(&data.join("train"))?;
    if classes.len() < 4 {
        bail!(
            "{} has {} classes: it takes at least 4, to split in two",
            data.display(),
            classes.len()
        );
    }
    let (first, second) = classes.split_at(classes.len() / 2);
    let (source, target) = (
        args.output.join("first-half"),
        args.output.join("second-half"),
    );
    copy_classes(&data, first, &source)?;
    copy_classes(&data, second, &target)?;
    println!("classes {} | {}", first.join(" "), second.join(" "));

    let network = |classes: usize| match args.arch {
        Some(arch) => arch.config().with_num_classes(classes),
        None => RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5; 4]).with_num_classes(classes),
    };
    let init = match &args.init {
        Some(path) => path.clone(),
        None => {
            let config = run_config(network(first.len()), args.pretrain_epochs, args.image_size);
            let report = run(
                "pretraining on the first half",
                &config,
                &source,
                &args.output,
            )?;
            report.model_path
        }
    };

    let scratch = run_config(network(second.len()), args.epochs, args.image_size);
    let source = WeightsInit::Checkpoint(init);
    let mut finetuned = scratch.clone().with_init(Some(source.clone()));
    finetuned.recipe = finetuned
        .recipe
        .with_freeze_stages(args.freeze_stages.0)
        .with_backbone_lr_scale(Some(args.backbone_lr_scale));
    let tuned = run(
        "fine-tuning on the second half",
        &finetuned,
        &target,
        &args.output,
    )?;
    if let Some(replaced) = tuned
        .initial_weights
        .as_ref()
        .and_then(|w| w.replaced_head.as_ref())
    {
        println!("  from {source}: {replaced}");
    }
    let fresh = run(
        "the second half from random weights",
        &scratch,
        &target,
        &args.output,
    )?;
    println!(
        "after {} epochs on the second half: fine-tuned {:.1}% top-1 ({}, backbone at {}x the \
         rate), from random weights {:.1}%",
        args.epochs,
        100.0 * tuned.deploy_validation.top1(),
        match args.freeze_stages.0 {
            Some(0) => "the stem frozen".to_string(),
            Some(last) => format!("the stem to stage{last} frozen"),
            None => "nothing frozen".to_string(),
        },
        args.backbone_lr_scale,
        100.0 * fresh.deploy_validation.top1(),
    );
    Ok(())
}

/// The demo's recipe (batch 64, learning rate 0.4 after one warmup epoch) for `epochs` at
/// `image_size`.
fn run_config(network: RepVggConfig, epochs: usize, image_size: u32) -> TrainingConfig {
    TrainingConfig::new(network)
        .with_recipe(
            RecipeConfig::new()
                .with_epochs(epochs)
                .with_batch_size(64)
                .with_lr(0.4)
                .with_warmup_epochs(1),
        )
        .with_augmentation(
            AugmentationConfig::new()
                .with_image_size(image_size)
                .with_min_crop_scale(0.35),
        )
        .with_loader(LoaderConfig::new())
}

/// Trains `config` on `data` into a fresh directory below `output` named after the step.
fn run(step: &str, config: &TrainingConfig, data: &Path, output: &Path) -> Result<TrainReport> {
    let directory = output.join(step.replace(' ', "-"));
    if directory.exists() {
        fs::remove_dir_all(&directory)
            .with_context(|| format!("cannot replace {}", directory.display()))?;
    }
    println!("{step}: {} epochs", config.recipe.epochs);
    let started = Instant::now();
    let report = train(config, data, &[Device::flex()], &directory)?;
    println!(
        "{step}: {:.1}% top-1 ({:.1}% deploy) in {:.0?}",
        100.0 * report.validation.top1(),
        100.0 * report.deploy_validation.top1(),
        started.elapsed()
    );
    Ok(report)
}

/// `--freeze-stages`: the last frozen stage, or `none`.
#[derive(Clone, Copy, Debug)]
struct LastFrozen(Option<usize>);

impl FromStr for LastFrozen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self(None)),
            stage => stage
                .parse()
                .map(|stage| Self(Some(stage)))
                .map_err(|_| format!("{stage}: a stage number (0 to 4) or none")),
        }
    }
}

/// The class folders of an ImageFolder split, sorted.
fn class_folders(split: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for entry in fs::read_dir(split).with_context(|| format!("cannot read {}", split.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    Ok(classes)
}

/// A copy of `data` holding only `classes` (both splits), at `to` (replaced).
fn copy_classes(data: &Path, classes: &[String], to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("cannot replace {}", to.display()))?;
    }
    for split in ["train", "val"] {
        for class in classes {
            let (from, into) = (data.join(split).join(class), to.join(split).join(class));
            fs::create_dir_all(&into)?;
            for file in
                fs::read_dir(&from).with_context(|| format!("cannot read {}", from.display()))?
            {
                let file = file?;
                fs::copy(file.path(), into.join(file.file_name()))
                    .with_context(|| format!("cannot copy {}", file.path().display()))?;
            }
        }
    }
    Ok(())
}
