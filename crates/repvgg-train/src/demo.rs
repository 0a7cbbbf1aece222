//! The end-to-end demonstration behind the README's first command: generate a small image set,
//! train a small RepVGG on it with the ImageNet code path, convert it and time both forms.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{DeployModel, read_checkpoint};
use repvgg_model::RepVggConfig;

use crate::data::{SYNTHETIC_CLASSES, write_synthetic_set};
use crate::run::{TrainArgs, TrainReport, train};

/// Options of `repvgg-train demo`.
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

/// The small architecture the demo trains: RepVGG-A's layout at a quarter of A0's depth and
/// half its width.
pub fn demo_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5, 0.5, 0.5, 0.5])
        .with_num_classes(SYNTHETIC_CLASSES.len())
}

/// The `train` options the demo uses, spelled as command-line flags so that they go through the
/// same parser as a real run.
pub fn demo_train_args(args: &DemoArgs, data: &str, config: &str, run: &str) -> TrainArgs {
    let epochs = args.epochs.to_string();
    let mut flags = vec![
        "--data",
        data,
        "--config",
        config,
        "--output",
        run,
        "--image-size",
        "32",
        "--min-crop-scale",
        "0.35",
        "--epochs",
        &epochs,
        "--batch-size",
        "64",
        "--lr",
        "0.4",
        "--warmup-epochs",
        "1",
        "--device",
        "cpu",
    ];
    let workers = args.workers.map(|w| w.to_string());
    if let Some(workers) = &workers {
        flags.extend(["--workers", workers]);
    }
    TrainArgs::from_flags(flags).expect("the demo's flags are valid")
}

/// Runs the demonstration and prints what it measured.
pub fn demo(args: &DemoArgs) -> Result<TrainReport> {
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
        fs::remove_dir_all(&run).with_context(|| format!("cannot replace {}", run.display()))?;
    }
    fs::create_dir_all(&args.output)?;
    let config_path = args.output.join("demo-config.json");
    demo_config()
        .save(&config_path)
        .context("writing the demo config")?;
    let as_str = |path: &PathBuf| path.to_string_lossy().into_owned();
    let train_args = demo_train_args(args, &as_str(&data), &as_str(&config_path), &as_str(&run));
    let report = train(&train_args)?;
    println!(
        "chance is {:.0}%: the model reaches {:.1}% top-1 on images it never saw",
        100.0 / SYNTHETIC_CLASSES.len() as f64,
        100.0 * report.deploy_validation.top1()
    );
    compare_speed(&report, train_args.image_size as usize)?;
    println!("demo finished in {:.1?}", started.elapsed());
    Ok(report)
}

/// Times the saved training-time and deploy-time models, read back from their files as a user
/// would, on the CPU.
fn compare_speed(report: &TrainReport, size: usize) -> Result<()> {
    let device = Device::flex();
    let batch = 32;
    let train_weights = read_checkpoint(&report.model_path)?.weights;
    let deploy_weights = read_checkpoint(&report.deploy_path)?.weights;
    let training = train_weights.load_into(report.config.init(&device), "training-time model")?;
    let deploy = deploy_weights.load_into(report.config.init_deploy(&device), "deploy model")?;
    let fast = DeployModel::new(deploy.clone());
    let images = Tensor::<4>::random([batch, 3, size, size], Distribution::Default, &device);
    let time = |forward: &dyn Fn() -> Tensor<2>| {
        forward().into_data();
        let mut runs: Vec<f64> = (0..7)
            .map(|_| {
                let started = Instant::now();
                forward().into_data();
                started.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        batch as f64 / runs[runs.len() / 2]
    };
    let training_speed = time(&|| training.forward(images.clone()));
    let deploy_speed = time(&|| deploy.forward(images.clone()));
    let fast_speed = time(&|| fast.forward(images.clone()));
    println!(
        "CPU inference at batch {batch}, {size}x{size}: training-time {training_speed:.0} img/s, \
         deploy {deploy_speed:.0} img/s ({:.2}x), deploy through DeployModel's CPU path \
         {fast_speed:.0} img/s ({:.2}x)",
        deploy_speed / training_speed,
        fast_speed / training_speed,
    );
    Ok(())
}
