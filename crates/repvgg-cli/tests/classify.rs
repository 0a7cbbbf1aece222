//! `repvgg classify` on a model whose file records its class names, on a missing image, and
//! with pretrained weights that offline mode cannot find.

use std::process::Command;

use burn::tensor::Device;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::write_checkpoint;
use repvgg_model::{RepVggConfig, Weights};

#[test]
fn prints_the_top_five_recorded_classes() {
    let scratch = tempfile::Builder::new()
        .prefix("repvgg-classify-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    write_synthetic_set(dir, 0, 1, 3).unwrap();
    let config = small_config();
    let weights = Weights::from_module(&config.init(&Device::flex())).unwrap();
    let classes: Vec<String> = SYNTHETIC_CLASSES.iter().map(|c| c.to_string()).collect();
    let model = dir.join("model.bpk");
    write_checkpoint(&weights, &config, Some(&classes), &model).unwrap();
    let image = dir.join("val/circle/circle-0000.jpg");

    let output = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args([
            "classify",
            image.to_str().unwrap(),
            "--weights",
            model.to_str().unwrap(),
        ])
        .args(["--image-size", "32"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    let total: f32 = lines
        .iter()
        .map(|line| {
            line.trim()
                .split('%')
                .next()
                .unwrap()
                .trim()
                .parse::<f32>()
                .unwrap()
        })
        .sum();
    assert!(total <= 100.01, "{stdout}");
    for line in lines {
        assert!(
            SYNTHETIC_CLASSES.iter().any(|c| line.ends_with(c)),
            "{line}"
        );
    }

    let output = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args([
            "classify",
            dir.join("missing.jpg").to_str().unwrap(),
            "--weights",
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.jpg"), "{stderr}");
}

#[test]
fn offline_pretrained_weights_missing_from_the_cache_are_an_error_naming_the_variable() {
    let scratch = tempfile::Builder::new()
        .prefix("repvgg-classify-offline-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    write_synthetic_set(dir, 0, 1, 1).unwrap();
    let image = dir.join("val/circle/circle-0000.jpg");
    let output = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args(["classify", image.to_str().unwrap(), "--pretrained", "a0"])
        .env("HF_HUB_CACHE", dir.join("hf-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for expected in [
        "HF_HUB_OFFLINE",
        "timm/repvgg_a0.rvgg_in1k",
        "model.safetensors",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// A small network for the ten synthetic classes (the training demo's layout).
fn small_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5, 0.5, 0.5, 0.5]).with_num_classes(10)
}
