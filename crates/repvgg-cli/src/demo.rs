//! `repvgg demo`: generate a small image set, train a small RepVGG on it with the ImageNet code
//! path on the CPU, convert it and time both forms, printing each step. The README's first
//! command: nothing to download.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, anyhow};
use burn::tensor::{Device, Distribution, Tensor};
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::timing::images_per_second;
use repvgg_deploy::{ArchSource, DeployModel, load_checkpoint};
use repvgg_model::RepVggConfig;
use repvgg_train::{
    AugmentationConfig, LoaderConfig, RecipeConfig, TrainReport, TrainingConfig, train,
};

use crate::report::print_report;

/// The small architecture the demo trains: RepVGG-A's layout at a quarter of A0's depth and
/// half its width, one output per synthetic class.
pub fn demo_network() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5, 0.5, 0.5, 0.5])
        .with_num_classes(SYNTHETIC_CLASSES.len())
}

/// The demo's run: [`demo_network`] for `epochs` epochs on 32x32 crops, batch 64, one epoch of
/// warmup.
pub fn demo_training_config(epochs: usize) -> TrainingConfig {
    TrainingConfig::new(demo_network())
        .with_recipe(
            RecipeConfig::new()
                .with_epochs(epochs)
                .with_batch_size(64)
                .with_lr(0.4)
                .with_warmup_epochs(1),
        )
        .with_augmentation(
            AugmentationConfig::new()
                .with_image_size(32)
                .with_min_crop_scale(0.35),
        )
}

/// Generate a small image set, train a small RepVGG on it on the CPU, convert it, and compare
/// the speed of both forms (a minute once built; nothing to download).
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Working directory: the generated images go to DIR/data, the run to DIR/run (replaced).
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Training images generated per class (10 classes).
    #[arg(long, default_value_t = 200)]
    pub train_per_class: usize,
    /// Validation images generated per class.
    #[arg(long, default_value_t = 50)]
    pub val_per_class: usize,
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Runs the demonstration and prints what it measured.
pub fn run(args: &DemoArgs) -> Result<()> {
    let data = args.output.join("data");
    let run = args.output.join("run");
    let started = Instant::now();
    if !data.join("val").is_dir() {
        println!(
            "generating {} + {} images of {} classes in {}",
            args.train_per_class * SYNTHETIC_CLASSES.len(),
            args.val_per_class * SYNTHETIC_CLASSES.len(),
            SYNTHETIC_CLASSES.len(),
            data.display()
        );
        write_synthetic_set(&data, args.train_per_class, args.val_per_class, 7)?;
    }
    if run.exists() {
        fs::remove_dir_all(&run)
            .map_err(|err| anyhow!("cannot replace {}: {err}", run.display()))?;
    }
    let config = demo_training_config(args.epochs)
        .with_loader(LoaderConfig::new().with_workers(args.workers));
    let report = train(&config, &data, &[Device::flex()], &run)?;
    print_report(&report);
    println!(
        "chance is {:.0}%: the model reaches {:.1}% top-1 on images it never saw",
        100.0 / SYNTHETIC_CLASSES.len() as f64,
        100.0 * report.deploy_validation.top1()
    );
    compare_speed(&report)?;
    println!("demo finished in {:.1?}", started.elapsed());
    Ok(())
}

/// Times the saved training-time and deploy-time models, read back from their files as a user
/// would, on the CPU: the deploy model through Burn's generic operations and through
/// `DeployModel`'s CPU engine.
fn compare_speed(report: &TrainReport) -> Result<()> {
    let device = Device::flex();
    let batch = 32;
    let size = report.config.augmentation.image_size as usize;
    let training = load_checkpoint(&report.model_path, &ArchSource::Auto, &device)?;
    let deploy = DeployModel::load(&report.deploy_path, &ArchSource::Auto, &device)?;
    let images = Tensor::<4>::random([batch, 3, size, size], Distribution::Default, &device);
    let speed = |forward: &dyn Fn(Tensor<4>) -> Tensor<2>| {
        images_per_second(batch, 7, || {
            forward(images.clone()).into_data();
        })
    };
    let training_speed = speed(&|images| training.forward(images));
    let deploy_speed = speed(&|images| deploy.model().forward(images));
    let fast_speed = speed(&|images| deploy.forward(images));
    println!(
        "CPU inference at batch {batch}, {size}x{size}: training-time {training_speed:.0} img/s, \
         deploy {deploy_speed:.0} img/s ({:.2}x), deploy on the CPU engine \
         {fast_speed:.0} img/s ({:.2}x)",
        deploy_speed / training_speed,
        fast_speed / training_speed,
    );
    Ok(())
}
