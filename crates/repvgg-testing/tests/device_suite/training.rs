//! Whole training runs on the CPU on a tiny synthetic set: the loss falls, the model is
//! converted and agrees, resuming continues the same schedule, bad input is refused.

use std::f64::consts::PI;
use std::fs;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::config::Config;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::{Form, read_checkpoint};
use repvgg_model::{PlusLayout, RepVggConfig};
use repvgg_testing::{copy_dir, scratch, small_network, test_device};
use repvgg_train::checkpoint::{checkpoint_path, last_checkpoint};
use repvgg_train::{
    AugmentationConfig, LoaderConfig, RecipeConfig, TrainError, TrainReport, TrainingConfig,
    resume, train,
};
use tempfile::TempDir;

/// Burn's CPU backend draws initial weights from one process-wide generator: runs that overlap
/// would draw each other's numbers, so the tests train one at a time, each from its own seed.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TRAINING: Mutex<()> = Mutex::new(());
    TRAINING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh directory with a synthetic data set (`data/`), removed when the returned guard is
/// dropped.
fn workspace(name: &str, train_per_class: usize) -> TempDir {
    let val_per_class = 6;
    let root = scratch(&format!("training-{name}"));
    write_synthetic_set(&root.path().join("data"), train_per_class, val_per_class, 5).unwrap();
    root
}

/// The demo's small architecture on 32x32 crops, batches of 16, two loader threads; `recipe`
/// adjusts the rest of the recipe.
fn config(recipe: impl FnOnce(RecipeConfig) -> RecipeConfig) -> TrainingConfig {
    TrainingConfig::new(small_network(SYNTHETIC_CLASSES.len()))
        .with_recipe(recipe(RecipeConfig::new().with_batch_size(16).with_lr(0.4)))
        .with_augmentation(
            AugmentationConfig::new()
                .with_image_size(32)
                .with_min_crop_scale(0.35),
        )
        .with_loader(LoaderConfig::new().with_workers(Some(2)))
}

/// Trains `config` on the workspace's data into `root/run`, on the CPU.
fn train_in(root: &Path, run: &str, config: &TrainingConfig) -> Result<TrainReport, TrainError> {
    train(
        config,
        &root.join("data"),
        &[test_device()],
        &root.join(run),
    )
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
    let _serial = one_at_a_time();
    let workspace = workspace("learns", 80);
    let root = workspace.path();
    let config = config(|recipe| {
        recipe
            .with_epochs(10)
            .with_warmup_epochs(1)
            .with_batch_size(64)
    });
    let report = train_in(root, "run", &config).unwrap();
    let output = root.join("run");

    let first = mean(&logged(&output, "train", 1, "Loss"));
    let last = mean(&logged(&output, "train", 10, "Loss"));
    assert!(last < 0.6 * first, "training loss {first} -> {last}");
    assert_eq!(report.validation.images, 6 * SYNTHETIC_CLASSES.len());
    // Ten classes: chance is 10%, and 60 images put 30% far out of its reach (a short run on
    // the small set measures 35-58% across seeds).
    assert!(
        report.validation.top1() >= 0.3,
        "top-1 {} is not well above chance (10%)",
        report.validation.top1()
    );
    assert_eq!(
        report.validation.predictions,
        report.deploy_validation.predictions
    );
    assert_eq!(report.disagreements, 0);
    assert!(report.max_relative_logit_difference < 1e-4);
    assert_eq!(report.config, config);
    assert_eq!(report.resumed_after, None);
    assert!(report.ema.is_none());

    let saved = read_checkpoint(&report.model_path).unwrap();
    assert_eq!(saved.form, Form::Training);
    assert_eq!(saved.config.as_ref(), Some(&config.model));
    assert_eq!(saved.classes.as_deref(), Some(&report.classes[..]));
    let deploy = read_checkpoint(&report.deploy_path).unwrap();
    assert_eq!(deploy.form, Form::Deploy);
    assert_eq!(deploy.classes, saved.classes);
    let classes = fs::read_to_string(output.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().collect::<Vec<_>>(), SYNTHETIC_CLASSES);
    assert_eq!(
        RepVggConfig::load(output.join("config.json")).unwrap(),
        config.model
    );
    // The run directory keeps the config it ran with.
    assert_eq!(
        TrainingConfig::load(output.join("training.json")).unwrap(),
        config
    );
}

/// QARepVGG's blocks train (every branch and both batch norms receive gradients) and convert:
/// the deploy model predicts as the training-time one, and the files record the block design.
#[test]
fn a_qarepvgg_run_learns_and_converts() {
    let _serial = one_at_a_time();
    let workspace = workspace("qarepvgg", 16);
    let root = workspace.path();
    let mut config = config(|recipe| recipe.with_epochs(3).with_batch_size(32));
    config.model = config.model.quantization_aware();
    let report = train_in(root, "run", &config).unwrap();
    let output = root.join("run");

    let first = mean(&logged(&output, "train", 1, "Loss"));
    let last = mean(&logged(&output, "train", 3, "Loss"));
    assert!(last < first, "training loss {first} -> {last}");
    assert_eq!(report.disagreements, 0);
    assert!(report.max_relative_logit_difference < 1e-4);
    let saved = read_checkpoint(&report.model_path).unwrap();
    assert!(saved.config.unwrap().is_quantization_aware());
    assert!(saved.weights.get("stage2.1.bn.gamma").is_some());
    assert!(saved.weights.get("stage2.1.rbr_identity.gamma").is_none());
    assert_eq!(
        read_checkpoint(&report.deploy_path).unwrap().form,
        Form::Deploy
    );
}

#[test]
fn resuming_continues_the_same_schedule_and_counters() {
    let _serial = one_at_a_time();
    let workspace = workspace("resume", 4);
    let root = workspace.path();
    let config = config(|recipe| {
        recipe
            .with_epochs(3)
            .with_warmup_epochs(1)
            .with_ema_decay(Some(0.9))
    });
    let finished = train_in(root, "straight", &config).unwrap();
    let straight = root.join("straight");

    // A run killed during its third epoch: a copy of the finished run without anything the
    // third epoch wrote (checkpoints are written at the end of an epoch).
    let killed = root.join("killed");
    copy_dir(&straight, &killed);
    for part in ["model", "optim", "scheduler", "ema"] {
        fs::remove_file(killed.join(format!("checkpoint/{part}-3.bpk"))).unwrap();
    }
    for split in ["train", "valid"] {
        fs::remove_dir_all(killed.join(split).join("epoch-3")).unwrap();
    }
    for model in [
        "model.bpk",
        "model-deploy.bpk",
        "model-ema.bpk",
        "model-ema-deploy.bpk",
    ] {
        fs::remove_file(killed.join(model)).unwrap();
    }
    assert_eq!(
        last_checkpoint(&killed.join("checkpoint")).unwrap(),
        Some(2)
    );

    // Nothing but the run directory: the config comes from its training.json.
    let resumed = resume(&killed, &root.join("data"), &[test_device()]).unwrap();
    assert_eq!(resumed.resumed_after, Some(2));
    assert_eq!(resumed.config, config);
    assert_eq!(
        last_checkpoint(&killed.join("checkpoint")).unwrap(),
        Some(3)
    );
    for epoch in 1..=3 {
        let expected = logged(&straight, "train", epoch, "Learning_Rate");
        assert_eq!(
            expected.len(),
            3,
            "40 images in batches of 16, one step each"
        );
        assert_eq!(
            logged(&killed, "train", epoch, "Learning_Rate"),
            expected,
            "epoch {epoch}"
        );
    }
    // The schedule reached its end: the last of 9 steps (3 of warmup) runs at the cosine's
    // value 5/6 of the way down.
    let last_rate = *logged(&killed, "train", 3, "Learning_Rate").last().unwrap();
    let peak = 0.4 * 16.0 / 256.0;
    let expected = 0.5 * peak * (1.0 + (PI * 5.0 / 6.0).cos());
    assert!(
        (last_rate - expected).abs() < 1e-9,
        "{last_rate} vs {expected}"
    );
    // Same data order, same augmentation, same weights: the resumed epoch is the same epoch.
    assert_eq!(
        logged(&killed, "train", 3, "Loss"),
        logged(&straight, "train", 3, "Loss")
    );
    assert_eq!(
        resumed.deploy_validation.images,
        6 * SYNTHETIC_CLASSES.len()
    );
    // The EMA was saved with the checkpoints and continued: the same average.
    assert!(killed.join("checkpoint/ema-2.bpk").is_file());
    assert!(!killed.join("checkpoint/ema-1.bpk").exists());
    let (finished_average, resumed_average) = (finished.ema.unwrap(), resumed.ema.unwrap());
    assert_eq!(finished_average.updates, resumed_average.updates);
    assert_eq!(
        finished_average.validation.predictions,
        resumed_average.validation.predictions
    );
    assert_eq!(
        read_checkpoint(&straight.join("model-ema.bpk"))
            .unwrap()
            .weights,
        read_checkpoint(&killed.join("model-ema.bpk"))
            .unwrap()
            .weights
    );
    // And it was evaluated every epoch beside the model.
    assert!(!logged(&killed, "valid", 3, "EMA_Accuracy").is_empty());
}

#[test]
fn a_repvggplus_run_trains_its_auxiliary_heads_converts_and_resumes() {
    let _serial = one_at_a_time();
    let workspace = workspace("plus", 4);
    let root = workspace.path();
    let model = RepVggConfig::new(vec![1, 1, 2, 1], vec![0.125; 4])
        .with_se_reduction(4)
        .with_num_classes(SYNTHETIC_CLASSES.len())
        .with_plus(Some(PlusLayout::new()));
    let mut config = config(|recipe| {
        recipe
            .with_epochs(2)
            .with_label_smoothing(0.1)
            .with_mixup_alpha(Some(0.2))
            .with_ema_decay(Some(0.9))
    });
    config.model = model.clone();
    let finished = train_in(root, "straight", &config).unwrap();
    assert_eq!(finished.disagreements, 0);
    assert!(finished.max_relative_logit_difference < 1e-4);
    let straight = root.join("straight");
    // Checkpoints, the final model and the EMA carry the auxiliary heads; the
    // deploy forms do not.
    let aux = "stage1_aux.conv_bn.conv.weight";
    for file in ["checkpoint/model-2.bpk", "checkpoint/ema-2.bpk"] {
        let names = burn_store::burn_pack::Reader::from_file(straight.join(file))
            .unwrap()
            .into_tensors()
            .unwrap();
        assert!(names.iter().any(|t| t.name.ends_with(aux)), "{file}");
    }
    for (path, form, has_aux) in [
        (&finished.model_path, Form::Training, true),
        (&finished.deploy_path, Form::Deploy, false),
        (
            &finished.ema.as_ref().unwrap().model_path,
            Form::Training,
            true,
        ),
        (
            &finished.ema.as_ref().unwrap().deploy_path,
            Form::Deploy,
            false,
        ),
    ] {
        let saved = read_checkpoint(path).unwrap();
        assert_eq!(saved.form, form, "{}", path.display());
        assert_eq!(
            saved.weights.get(aux).is_some(),
            has_aux,
            "{}",
            path.display()
        );
        assert_eq!(saved.config.as_ref(), Some(&model));
    }

    // Killed during its second epoch, resumed: the same epoch again.
    let killed = root.join("killed");
    copy_dir(&straight, &killed);
    for part in ["model", "optim", "scheduler", "ema"] {
        fs::remove_file(killed.join(format!("checkpoint/{part}-2.bpk"))).unwrap();
    }
    fs::remove_dir_all(killed.join("train/epoch-2")).unwrap();
    fs::remove_dir_all(killed.join("valid/epoch-2")).unwrap();
    let resumed = resume(&killed, &root.join("data"), &[test_device()]).unwrap();
    assert_eq!(resumed.resumed_after, Some(1));
    assert_eq!(
        logged(&killed, "train", 2, "Loss"),
        logged(&straight, "train", 2, "Loss")
    );
}

#[test]
fn a_problem_of_fewer_than_five_classes_trains() {
    let _serial = one_at_a_time();
    let workspace = workspace("three-classes", 2);
    let root = workspace.path();
    for class in &SYNTHETIC_CLASSES[3..] {
        for split in ["train", "val"] {
            fs::remove_dir_all(root.join("data").join(split).join(class)).unwrap();
        }
    }
    let mut config = config(|recipe| recipe.with_epochs(1));
    config.model = config.model.with_num_classes(3);
    // Top-5 accuracy of three classes is top-3 (burn-train's metric would panic on k > classes).
    let report = train_in(root, "run", &config).unwrap();
    assert_eq!(report.classes.len(), 3);
    assert_eq!(report.validation.images, 3 * 6);
}

#[test]
fn bad_runs_are_refused_with_a_reason() {
    let _serial = one_at_a_time();
    let workspace = workspace("refused", 1);
    let root = workspace.path();
    let data = root.join("data");
    let one_epoch = config(|recipe| recipe.with_epochs(1));
    let message = |result: Result<TrainReport, TrainError>| result.unwrap_err().to_string();

    let error = message(train(
        &one_epoch,
        &root.join("no-such-dir"),
        &[test_device()],
        &root.join("missing"),
    ));
    assert!(error.contains("no-such-dir"), "{error}");
    assert!(
        !root.join("missing").exists(),
        "a refused run leaves nothing"
    );

    let error = message(resume(&root.join("nowhere"), &data, &[test_device()]));
    assert!(error.contains("no training.json"), "{error}");
    fs::create_dir_all(root.join("unstarted")).unwrap();
    one_epoch
        .save(root.join("unstarted/training.json"))
        .unwrap();
    let error = message(resume(&root.join("unstarted"), &data, &[test_device()]));
    assert!(error.contains("no checkpoint to resume"), "{error}");

    let error = message(train_in(root, "zero", &config(|r| r.with_epochs(0))));
    assert!(error.contains("recipe.epochs is 0"), "{error}");

    let narrow = TrainingConfig {
        model: small_network(3),
        ..one_epoch.clone()
    };
    let error = message(train_in(root, "classes", &narrow));
    assert!(
        error.contains("smaller than the 10 class folders"),
        "{error}"
    );

    let error = message(train(&one_epoch, &data, &[], &root.join("nowhere")));
    assert!(error.contains("no device"), "{error}");

    fs::create_dir_all(data.join("val/extra-class")).unwrap();
    let error = message(train_in(root, "mismatch", &one_epoch));
    assert!(error.contains("different class folders"), "{error}");
    assert!(error.contains("only in the second: extra-class"), "{error}");
    fs::remove_dir_all(data.join("val/extra-class")).unwrap();

    train_in(root, "existing", &one_epoch).unwrap();
    let error = train_in(root, "existing", &one_epoch).unwrap_err();
    assert!(
        matches!(error, TrainError::OutputInUse { epoch: 1, .. }),
        "{error}"
    );
}

#[test]
fn failed_and_damaged_checkpoints_lose_nothing() {
    let _serial = one_at_a_time();
    let workspace = workspace("faults", 1);
    let root = workspace.path();
    let (run, data) = (root.join("run"), root.join("data"));
    let dir = run.join("checkpoint");
    let config = config(|recipe| recipe.with_epochs(2).with_ema_decay(Some(0.9)));
    let resume_run = || resume(&run, &data, &[test_device()]);

    // Epoch 2's model checkpoint cannot be written (a directory stands where it goes): the run
    // stops with an error naming the file, epoch 1's checkpoint is intact, and no scratch file
    // is left behind.
    fs::create_dir_all(dir.join("model-2.bpk")).unwrap();
    let error = train_in(root, "run", &config).unwrap_err().to_string();
    assert!(error.contains("model-2.bpk"), "{error}");
    assert_eq!(last_checkpoint(&dir).unwrap(), Some(1));
    assert_eq!(scratch_files(&dir), Vec::<String>::new());

    // Cleared, the run resumes from epoch 1 and finishes.
    fs::remove_dir(dir.join("model-2.bpk")).unwrap();
    let resumed = resume_run().unwrap();
    assert_eq!(resumed.resumed_after, Some(1));
    assert!(resumed.unusable_checkpoints.is_empty());

    // A process killed while writing leaves a scratch file beside the checkpoints; a newest
    // checkpoint damaged on disk is passed over, saying why, for the one before.
    fs::write(dir.join("model-2.bpk.4242-0.tmp"), b"half a container").unwrap();
    let model = checkpoint_path(&dir, "model", 2);
    let bytes = fs::read(&model).unwrap();
    fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let resumed = resume_run().unwrap();
    assert_eq!(resumed.resumed_after, Some(1));
    let [unusable] = resumed.unusable_checkpoints.as_slice() else {
        panic!("{:?}", resumed.unusable_checkpoints);
    };
    assert_eq!(unusable.epoch, 2);
    assert!(
        unusable.reason.contains("model-2.bpk"),
        "{}",
        unusable.reason
    );
    assert!(read_checkpoint(&run.join("model-deploy.bpk")).is_ok());

    // With no usable checkpoint left, the error names each one's problem.
    for epoch in [1, 2] {
        fs::write(
            checkpoint_path(&dir, "optim", epoch),
            b"not a burnpack file",
        )
        .unwrap();
    }
    let error = resume_run().unwrap_err();
    assert!(
        matches!(&error, TrainError::NoUsableCheckpoint { unusable, .. } if unusable.len() == 2),
        "{error}"
    );
    let error = error.to_string();
    assert!(
        error.contains("optim-1.bpk") && error.contains("optim-2.bpk"),
        "{error}"
    );
}

/// Files in `dir` that are neither checkpoints nor a killed writer's scratch files we placed.
fn scratch_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[test]
fn every_recipe_option_trains_together() {
    let _serial = one_at_a_time();
    let workspace = workspace("options", 4);
    let root = workspace.path();
    let config = config(|recipe| {
        recipe
            .with_epochs(2)
            .with_accumulation(2)
            .with_mixup_alpha(Some(0.2))
            .with_label_smoothing(0.1)
            .with_custom_l2(true)
            .with_nesterov(true)
            .with_ema_decay(Some(0.99))
            .with_warmup_epochs(1)
    });
    let report = train_in(root, "run", &config).unwrap();
    let output = root.join("run");
    for epoch in 1..=2 {
        let losses = logged(&output, "train", epoch, "Loss");
        // 40 images in batches of 16: three batches per epoch, every one logged.
        assert_eq!(losses.len(), 3, "epoch {epoch}");
        assert!(losses.iter().all(|loss| loss.is_finite()), "{losses:?}");
    }
    // Two optimizer steps per epoch (batches 1+2, then 3), four over the run: the schedule's
    // warmup (two steps) then the cosine reaches 0.5 * peak * (1 + cos(pi / 2)) at its 4th step.
    let rates = logged(&output, "train", 2, "Learning_Rate");
    let peak = 0.4 * 16.0 * 2.0 / 256.0;
    let last = *rates.last().unwrap();
    assert!(
        (last - 0.5 * peak * (1.0 + (PI / 2.0).cos())).abs() < 1e-9,
        "{rates:?}"
    );
    let average = report.ema.expect("the recipe keeps an EMA");
    assert!(average.model_path.is_file() && average.deploy_path.is_file());
    assert_eq!(
        report.validation.predictions,
        report.deploy_validation.predictions
    );
}
