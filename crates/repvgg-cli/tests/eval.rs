//! `repvgg eval` (and so `cargo xtask eval`) end to end on a tiny labelled set: the accuracy line, the same top-1 for
//! the training-time and deploy-time files of one model, and clear errors.

use std::process::{Command, Output};

use burn::tensor::{Device, TensorData};
use repvgg_data::write_synthetic_set;
use repvgg_deploy::{CpuPrecision, write_checkpoint};
use repvgg_model::{RepVggConfig, Weights, reparameterize};
use repvgg_testing::scratch;

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .arg("eval")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// The final line's numbers: "top-1 X%  top-5 Y%  (N images".
fn accuracy_line(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default().to_string();
    assert!(line.starts_with("top-1 "), "{line}");
    line.split(", ").next().unwrap().to_string()
}

#[test]
fn both_forms_of_a_model_score_the_same() {
    let scratch = scratch("forms");
    let dir = scratch.path();
    write_synthetic_set(&dir.join("data"), 0, 4, 9).unwrap();
    let device = Device::flex();
    let config = small_config();
    // Random weights and non-trivial BN statistics: a model with varied predictions.
    let mut weights = Weights::from_module(&config.init(&device)).unwrap();
    let names: Vec<String> = weights.names().map(str::to_string).collect();
    for (i, name) in names.iter().enumerate() {
        if name.ends_with("running_var") || name.ends_with("running_mean") {
            let shape = weights.get(name).unwrap().shape().to_vec();
            let count: usize = shape.iter().product();
            let values: Vec<f32> = (0..count)
                .map(|j| 0.5 + ((i * 13 + j * 7) % 10) as f32 / 10.0)
                .collect();
            weights.insert(name.clone(), TensorData::new(values, shape));
        }
    }
    let training = dir.join("training.bpk");
    let deploy = dir.join("deploy.safetensors");
    write_checkpoint(&weights, &config, None, &training).unwrap();
    let fused = reparameterize(&weights, &config, &device).unwrap();
    write_checkpoint(&fused, &config, None, &deploy).unwrap();

    let data = dir.join("data");
    let common = [
        "--image-size",
        "32",
        "--crop-pct",
        "1.0",
        "--batch-size",
        "7",
        "--workers",
        "2",
    ];
    let from_training = eval(
        &[
            &[
                "--weights",
                training.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
            &common[..],
        ]
        .concat(),
    );
    // The deploy file is safetensors: no recorded config, the demo layout is passed as JSON.
    let config_path = dir.join("config.json");
    burn::config::Config::save(&config, &config_path).unwrap();
    let from_deploy = eval(
        &[
            &[
                "--weights",
                deploy.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
            ],
            &common[..],
        ]
        .concat(),
    );
    let (a, b) = (accuracy_line(&from_training), accuracy_line(&from_deploy));
    assert_eq!(a, b);
    assert!(a.contains("(40 images"), "{a}");

    // bf16: the training checkpoint converted and run in bf16 where the CPU can, else refused
    // with the missing feature named.
    let bf16 = eval(
        &[
            &[
                "--weights",
                training.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--precision",
                "bf16",
            ],
            &common[..],
        ]
        .concat(),
    );
    if CpuPrecision::Bf16.is_supported() {
        assert!(accuracy_line(&bf16).contains("(40 images"));
    } else {
        let stderr = String::from_utf8_lossy(&bf16.stderr);
        assert_eq!(bf16.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("lacks AVX512_BF16"), "{stderr}");
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let scratch = scratch("bad");
    let dir = scratch.path();
    write_synthetic_set(&dir.join("data"), 0, 1, 9).unwrap();
    let device = Device::flex();
    // Three outputs for ten class folders.
    let config = small_config().with_num_classes(3);
    let weights = Weights::from_module(&config.init(&device)).unwrap();
    let file = dir.join("three.bpk");
    write_checkpoint(&weights, &config, None, &file).unwrap();
    let data = dir.join("data");

    let output = eval(&[
        "--weights",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("10 class folders but the network has 3 outputs"),
        "{stderr}"
    );

    let missing = dir.join("nowhere");
    let output = eval(&[
        "--weights",
        file.to_str().unwrap(),
        "--data",
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A headless backbone has no classes to score.
    let config = small_config().with_num_classes(0);
    let weights = Weights::from_module(&config.init(&device)).unwrap();
    let headless = dir.join("headless.bpk");
    write_checkpoint(&weights, &config, None, &headless).unwrap();
    let output = eval(&[
        "--weights",
        headless.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("headless network"), "{stderr}");

    // A crop fraction outside (0, 1] is a usage error naming the rule.
    let output = eval(&[
        "--weights",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--crop-pct",
        "1.5",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("crop_pct must be in (0, 1]"), "{stderr}");

    // So is an unknown precision.
    let output = eval(&[
        "--weights",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--precision",
        "fp8",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown precision \"fp8\": f32 or bf16"),
        "{stderr}"
    );
}

/// A small network for the ten synthetic classes (the training demo's layout).
fn small_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5, 0.5, 0.5, 0.5]).with_num_classes(10)
}

#[test]
fn pretrained_weights_are_evaluated_from_the_hugging_face_cache_as_timm_evaluates_them() {
    let scratch = scratch("eval-pretrained");
    let dir = scratch.path();
    write_synthetic_set(&dir.join("data"), 0, 1, 1).unwrap();
    // timm's A0 as the Hugging Face cache holds it (random weights: no internet here).
    let a0 = repvgg_model::RepVggArch::A0.config();
    let model = repvgg_testing::random_training_model(&a0, &Device::flex());
    let file = dir.join("a0.safetensors");
    write_checkpoint(&Weights::from_module(&model).unwrap(), &a0, None, &file).unwrap();
    let cache = dir.join("hf-cache");
    let bytes = std::fs::read(&file).unwrap();
    repvgg_testing::place_in_hf_cache(
        &cache,
        "timm/repvgg_a0.rvgg_in1k",
        "model.safetensors",
        &bytes,
    );

    let data = dir.join("data");
    let run = |flags: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_repvgg"))
            .args(["eval", "--pretrained", "a0", "--batch-size", "4", "--data"])
            .arg(&data)
            .args(flags)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let output = run(&[]);
    accuracy_line(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("at 224 px from a 256 px resize"),
        "{stderr}"
    );
    let output = run(&["--image-size", "64", "--crop-pct", "1.0"]);
    accuracy_line(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at 64 px from a 64 px resize"), "{stderr}");

    // --weights and --pretrained name the weights twice.
    let output = run(&["--weights", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}
