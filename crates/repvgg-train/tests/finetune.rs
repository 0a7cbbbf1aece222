//! Fine-tuning end to end: a network trained on one generated set starts a run on another set
//! with half the classes; the classifier is replaced, the frozen stages come out bit for bit as
//! they went in (running statistics included) and keep no optimizer state, the run records its
//! starting point and resumes like any other; a deploy-time checkpoint and another
//! architecture are refused with the reason.

use std::fs;
use std::path::Path;

use burn::tensor::{Bytes, Device};
use burn_store::burn_pack;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::read_checkpoint;
use repvgg_model::{RepVggConfig, Weights};
use repvgg_testing::small_network;
use repvgg_train::{
    AugmentationConfig, InitialWeights, LoaderConfig, RecipeConfig, TrainError, TrainingConfig,
    WeightsInit, resume, train,
};

/// A short run of `model` at 32x32.
fn short_run(model: RepVggConfig, epochs: usize) -> TrainingConfig {
    TrainingConfig::new(model)
        .with_recipe(RecipeConfig::new().with_epochs(epochs).with_batch_size(16))
        .with_augmentation(AugmentationConfig::new().with_image_size(32))
        .with_loader(LoaderConfig::new().with_workers(Some(2)))
}

/// A generated set with only the first `classes` classes.
fn generated_set(root: &Path, classes: usize, seed: u64) {
    write_synthetic_set(root, 2, 2, seed).unwrap();
    for class in &SYNTHETIC_CLASSES[classes..] {
        for split in ["train", "val"] {
            fs::remove_dir_all(root.join(split).join(class)).unwrap();
        }
    }
}

fn weights(path: &Path) -> Weights {
    read_checkpoint(path).unwrap().weights
}

fn in_stages(name: &str, stages: &[&str]) -> bool {
    stages
        .iter()
        .any(|stage| name.starts_with(&format!("{stage}.")))
}

#[test]
fn a_checkpoint_is_fine_tuned_onto_other_classes() {
    let scratch = tempfile::tempdir().unwrap();
    let path = |name: &str| scratch.path().join(name);
    let all = SYNTHETIC_CLASSES.len();
    let half = all / 2;
    write_synthetic_set(&path("source"), 1, 2, 5).unwrap();
    generated_set(&path("target"), half, 6);
    let devices = [Device::flex()];
    train(
        &short_run(small_network(all), 1),
        &path("source"),
        &devices,
        &path("pretrained"),
    )
    .unwrap();
    let init = path("pretrained").join("model.bpk");

    let mut config = short_run(small_network(half), 2)
        .with_init(Some(WeightsInit::Checkpoint(init.clone())))
        .with_seed(3);
    config.recipe = config
        .recipe
        .with_freeze_stages(Some(1))
        .with_backbone_lr_scale(Some(0.1));
    let run = path("finetuned");
    let report = train(&config, &path("target"), &devices, &run).unwrap();

    // Where it started, in the report and in init.json.
    let initial = report.initial_weights.clone().expect("a recorded start");
    assert_eq!(initial.path, init);
    assert_eq!(initial.bytes, fs::metadata(&init).unwrap().len());
    assert_eq!(initial.sha256.len(), 64);
    let reason = initial.replaced_head.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("{all}-class classifier replaced")),
        "{reason}"
    );
    let recorded: InitialWeights =
        serde_json::from_str(&fs::read_to_string(run.join("init.json")).unwrap()).unwrap();
    assert_eq!(recorded, initial);

    // The stem and the first stage, running statistics included, are the checkpoint's; the
    // rest trained; the classifier has the new classes.
    let (before, after) = (weights(&init), weights(&report.model_path));
    let frozen = ["stage0", "stage1"];
    let mut changed_after_them = 0;
    for (name, value) in before.iter() {
        if in_stages(name, &frozen) {
            assert_eq!(after.get(name), Some(value), "{name} is frozen");
        } else if in_stages(name, &["stage2", "stage3", "stage4"]) {
            changed_after_them += usize::from(after.get(name) != Some(value));
        }
    }
    assert!(
        changed_after_them > 10,
        "{changed_after_them} tensors trained"
    );
    let linear = after.get("linear.weight").unwrap().shape().to_vec();
    assert_eq!(linear[1], half);

    // Optimizer state for the parameters that train and none for the frozen ones.
    let trained_parameters = after
        .names()
        .filter(|name| !in_stages(name, &frozen) && !name.contains(".running_"))
        .count();
    let optimizer = fs::read(run.join("checkpoint/optim-2.bpk")).unwrap();
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(optimizer)).unwrap();
    assert_eq!(reader.into_tensors().unwrap().len(), trained_parameters);

    // A fine-tuning run resumes like any other, and still knows where it started.
    let resumed = resume(&run, &path("target"), &devices).unwrap();
    assert_eq!(resumed.resumed_after, Some(2));
    assert_eq!(resumed.initial_weights, Some(initial));
    // A damaged record of the start does not stop a resume: it is left out.
    fs::write(run.join("init.json"), "{\"source\": ").unwrap();
    let resumed = resume(&run, &path("target"), &devices).unwrap();
    assert_eq!(resumed.initial_weights, None);

    // A deploy-time checkpoint has no branches to train.
    let deploy = path("pretrained").join("model-deploy.bpk");
    let refused = config
        .clone()
        .with_init(Some(WeightsInit::Checkpoint(deploy.clone())));
    let error = train(&refused, &path("target"), &devices, &path("deploy-init")).unwrap_err();
    assert!(
        matches!(&error, TrainError::DeployFormInit { path } if *path == deploy),
        "{error}"
    );
    assert!(
        error.to_string().contains("no branches to train"),
        "{error}"
    );

    // Another architecture: conversion's message, naming the tensors that do not fit.
    let wider = RepVggConfig::new(vec![1, 2, 2, 1], vec![0.75; 4]).with_num_classes(half);
    let other = TrainingConfig {
        model: wider,
        ..config.clone()
    };
    let error = train(&other, &path("target"), &devices, &path("wider")).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TrainError::InitialWeights { .. }),
        "{message}"
    );
    assert!(
        message.contains("model.bpk") && message.contains("stage0.rbr_dense.conv.weight"),
        "{message}"
    );

    // A file that is not there.
    let missing = config.with_init(Some(WeightsInit::Checkpoint(path("none.pth"))));
    let error = train(&missing, &path("target"), &devices, &path("missing")).unwrap_err();
    assert!(error.to_string().contains("none.pth"), "{error}");
}
