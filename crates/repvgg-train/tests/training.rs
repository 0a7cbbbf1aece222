//! Whole training runs on the CPU on a tiny synthetic set: the loss falls, the model is
//! converted and agrees, resuming continues the same schedule, bad input is refused.

use std::f64::consts::PI;
use std::fs;
use std::path::Path;

use burn::config::Config;
use clap::Parser;
use repvgg_deploy::{Form, read_checkpoint};
use repvgg_model::RepVggConfig;
use repvgg_train::data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_train::demo::demo_config;
use repvgg_train::run::{TrainArgs, last_checkpoint, train};
use tempfile::TempDir;

/// The command line, with later flags overriding earlier ones (the defaults below).
#[derive(Parser)]
#[command(args_override_self = true)]
struct Flags {
    #[command(flatten)]
    train: TrainArgs,
}

/// A fresh directory with a synthetic data set (`data/`) and the demo's small architecture
/// (`config.json`), removed when the returned guard is dropped.
fn workspace(name: &str, train_per_class: usize) -> TempDir {
    let val_per_class = 6;
    let root = tempfile::Builder::new()
        .prefix(&format!("repvgg-training-{name}-"))
        .tempdir()
        .unwrap();
    write_synthetic_set(&root.path().join("data"), train_per_class, val_per_class, 5).unwrap();
    demo_config().save(root.path().join("config.json")).unwrap();
    root
}

fn args(root: &Path, run: &str, extra: &[&str]) -> TrainArgs {
    let data = root.join("data");
    let config = root.join("config.json");
    let output = root.join(run);
    let mut flags = vec![
        "repvgg-train".to_string(),
        format!("--data={}", data.display()),
        format!("--config={}", config.display()),
        format!("--output={}", output.display()),
        "--image-size=32".into(),
        "--min-crop-scale=0.35".into(),
        "--batch-size=16".into(),
        "--lr=0.4".into(),
        "--workers=2".into(),
        "--device=cpu".into(),
    ];
    flags.extend(extra.iter().map(|flag| flag.to_string()));
    Flags::parse_from(flags).train
}

/// The per-iteration values burn-train logged for `metric` in `epoch` of `split`.
fn logged(run: &Path, split: &str, epoch: usize, metric: &str) -> Vec<f64> {
    let path = run
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{metric}.log"));
    fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .lines()
        // One line per iteration (`value,weight`) and the epoch's summary (`value,final`).
        .filter_map(|line| line.rsplit_once(','))
        .filter(|(_, weight)| *weight != "final")
        .map(|(value, _)| value.parse().unwrap())
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn a_short_run_learns_and_converts() {
    let workspace = workspace("learns", 80);
    let root = workspace.path();
    let args = args(
        root,
        "run",
        &["--epochs=10", "--warmup-epochs=1", "--batch-size=64"],
    );
    let report = train(&args).unwrap();

    let first = mean(&logged(&args.output, "train", 1, "Loss"));
    let last = mean(&logged(&args.output, "train", 10, "Loss"));
    assert!(last < 0.6 * first, "training loss {first} -> {last}");
    assert_eq!(report.validation.images, 6 * SYNTHETIC_CLASSES.len());
    assert!(
        report.validation.top1() > 0.4,
        "top-1 {} is not above chance",
        report.validation.top1()
    );
    assert_eq!(
        report.validation.predictions,
        report.deploy_validation.predictions
    );
    assert!(report.max_relative_logit_difference < 1e-4);

    let saved = read_checkpoint(&report.model_path).unwrap();
    assert_eq!(saved.form, Form::Training);
    assert_eq!(saved.config.as_ref(), Some(&report.config));
    assert_eq!(saved.classes.as_deref(), Some(&report.classes[..]));
    let deploy = read_checkpoint(&report.deploy_path).unwrap();
    assert_eq!(deploy.form, Form::Deploy);
    assert_eq!(deploy.classes, saved.classes);
    let classes = fs::read_to_string(args.output.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().collect::<Vec<_>>(), SYNTHETIC_CLASSES);
    assert_eq!(
        RepVggConfig::load(args.output.join("config.json")).unwrap(),
        report.config
    );
}

#[test]
fn resuming_continues_the_same_schedule_and_counters() {
    let workspace = workspace("resume", 4);
    let root = workspace.path();
    let straight = args(
        root,
        "straight",
        &["--epochs=3", "--warmup-epochs=1", "--ema=0.9"],
    );
    let finished = train(&straight).unwrap();

    // A run killed during its third epoch: a copy of the finished run without anything the
    // third epoch wrote (checkpoints are written at the end of an epoch).
    let killed = args(
        root,
        "killed",
        &["--epochs=3", "--warmup-epochs=1", "--ema=0.9", "--resume"],
    );
    copy_dir(&straight.output, &killed.output);
    for part in ["model", "optim", "scheduler", "ema"] {
        fs::remove_file(killed.output.join(format!("checkpoint/{part}-3.bpk"))).unwrap();
    }
    for split in ["train", "valid"] {
        fs::remove_dir_all(killed.output.join(split).join("epoch-3")).unwrap();
    }
    for model in [
        "model.bpk",
        "model-deploy.bpk",
        "model-ema.bpk",
        "model-ema-deploy.bpk",
    ] {
        fs::remove_file(killed.output.join(model)).unwrap();
    }
    assert_eq!(
        last_checkpoint(&killed.output.join("checkpoint")).unwrap(),
        Some(2)
    );

    let resumed = train(&killed).unwrap();
    assert_eq!(
        last_checkpoint(&killed.output.join("checkpoint")).unwrap(),
        Some(3)
    );
    for epoch in 1..=3 {
        let expected = logged(&straight.output, "train", epoch, "Learning_Rate");
        assert_eq!(
            expected.len(),
            3,
            "40 images in batches of 16, one step each"
        );
        assert_eq!(
            logged(&killed.output, "train", epoch, "Learning_Rate"),
            expected,
            "epoch {epoch}"
        );
    }
    // The schedule reached its end: the last of 9 steps (3 of warmup) runs at the cosine's
    // value 5/6 of the way down.
    let last_rate = *logged(&killed.output, "train", 3, "Learning_Rate")
        .last()
        .unwrap();
    let peak = 0.4 * 16.0 / 256.0;
    let expected = 0.5 * peak * (1.0 + (PI * 5.0 / 6.0).cos());
    assert!(
        (last_rate - expected).abs() < 1e-9,
        "{last_rate} vs {expected}"
    );
    // Same data order, same augmentation, same weights: the resumed epoch is the same epoch.
    assert_eq!(
        logged(&killed.output, "train", 3, "Loss"),
        logged(&straight.output, "train", 3, "Loss")
    );
    assert_eq!(
        resumed.deploy_validation.images,
        6 * SYNTHETIC_CLASSES.len()
    );
    // The weight average was saved with the checkpoints and continued: the same average.
    assert!(killed.output.join("checkpoint/ema-2.bpk").is_file());
    assert!(!killed.output.join("checkpoint/ema-1.bpk").exists());
    let (finished_average, resumed_average) = (
        finished.average_validation.unwrap(),
        resumed.average_validation.unwrap(),
    );
    assert_eq!(finished_average.predictions, resumed_average.predictions);
    assert_eq!(
        read_checkpoint(&straight.output.join("model-ema.bpk"))
            .unwrap()
            .weights,
        read_checkpoint(&killed.output.join("model-ema.bpk"))
            .unwrap()
            .weights
    );
    // And it was evaluated every epoch beside the model.
    assert!(!logged(&killed.output, "valid", 3, "EMA_Accuracy").is_empty());
}

#[test]
fn bad_runs_are_refused_with_a_reason() {
    let workspace = workspace("refused", 1);
    let root = workspace.path();
    let message = |args: TrainArgs| format!("{:#}", train(&args).unwrap_err());

    let mut missing = args(root, "missing", &["--epochs=1"]);
    missing.data = root.join("no-such-dir");
    let error = message(missing);
    assert!(error.contains("no-such-dir"), "{error}");

    let error = message(args(root, "resume", &["--epochs=1", "--resume"]));
    assert!(error.contains("no checkpoint to resume"), "{error}");

    let error = message(args(root, "zero", &["--epochs=0"]));
    assert!(error.contains("--epochs"), "{error}");

    let error = message(args(root, "classes", &["--epochs=1", "--num-classes=3"]));
    assert!(
        error.contains("smaller than the 10 class folders"),
        "{error}"
    );

    fs::create_dir_all(root.join("data/val/extra-class")).unwrap();
    let error = message(args(root, "mismatch", &["--epochs=1"]));
    assert!(error.contains("different class folders"), "{error}");
    fs::remove_dir_all(root.join("data/val/extra-class")).unwrap();

    let existing = args(root, "existing", &["--epochs=1"]);
    train(&existing).unwrap();
    let error = message(existing);
    assert!(error.contains("pass --resume"), "{error}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_recipe_option_trains_together() {
    let workspace = workspace("options", 4);
    let root = workspace.path();
    let args = args(
        root,
        "run",
        &[
            "--epochs=2",
            "--accumulation=2",
            "--mixup=0.2",
            "--label-smoothing=0.1",
            "--custom-l2",
            "--nesterov",
            "--ema=0.99",
            "--warmup-epochs=1",
        ],
    );
    let report = train(&args).unwrap();
    for epoch in 1..=2 {
        let losses = logged(&args.output, "train", epoch, "Loss");
        // 40 images in batches of 16: three batches per epoch, every one logged.
        assert_eq!(losses.len(), 3, "epoch {epoch}");
        assert!(losses.iter().all(|loss| loss.is_finite()), "{losses:?}");
    }
    // Two optimizer steps per epoch (batches 1+2, then 3), four over the run: the schedule's
    // warmup (two steps) then the cosine reaches 0.5 * peak * (1 + cos(pi / 2)) at its 4th step.
    let rates = logged(&args.output, "train", 2, "Learning_Rate");
    let peak = 0.4 * 16.0 * 2.0 / 256.0;
    let last = *rates.last().unwrap();
    assert!(
        (last - 0.5 * peak * (1.0 + (PI / 2.0).cos())).abs() < 1e-9,
        "{rates:?}"
    );
    assert!(report.average_validation.is_some());
    assert_eq!(
        report.validation.predictions,
        report.deploy_validation.predictions
    );
}
