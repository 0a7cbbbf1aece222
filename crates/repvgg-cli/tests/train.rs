//! `repvgg train` and its alias `repvgg-train` end to end: a short run on a generated set, the
//! alias resuming it, damaged run directories refused with a message and exit code 1 (never a
//! panic), and fine-tuning from cached pretrained weights.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use burn::config::Config;
use burn::tensor::Device;
use repvgg_data::write_synthetic_set;
use repvgg_deploy::write_checkpoint;
use repvgg_model::{RepVggArch, RepVggConfig, Weights};
use repvgg_testing::{copy_dir, place_in_hf_cache, random_training_model, scratch};

/// `binary` run with `args`, without a backtrace in its output.
fn run(binary: &str, args: &[&str], data: &Path, output: &Path) -> Output {
    Command::new(binary)
        .args(args)
        .args(["--device", "cpu", "--output"])
        .arg(output)
        .arg("--data")
        .arg(data)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

#[test]
fn trains_resumes_under_its_alias_and_refuses_damaged_runs() {
    let scratch = scratch("cli-train");
    let (data, run_dir) = (scratch.path().join("data"), scratch.path().join("run"));
    write_synthetic_set(&data, 1, 2, 5).unwrap();
    // A custom network from its JSON file: two narrow stages.
    let network = scratch.path().join("network.json");
    RepVggConfig::new(vec![1, 1], vec![0.25, 0.25])
        .save(&network)
        .unwrap();
    let network = format!("--config={}", network.display());
    let flags = [
        "train",
        &network,
        "--epochs=1",
        "--batch-size=16",
        "--image-size=32",
        "--workers=2",
    ];
    let trained = run(env!("CARGO_BIN_EXE_repvgg"), &flags, &data, &run_dir);
    let stdout = String::from_utf8_lossy(&trained.stdout);
    assert!(
        trained.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert!(stdout.contains("deploy top-1"), "{stdout}");
    assert!(run_dir.join("model-deploy.bpk").is_file());

    // The alias takes the same flags: resuming a finished run retrains nothing and reports it.
    let resumed = run(
        env!("CARGO_BIN_EXE_repvgg-train"),
        &["--resume"],
        &data,
        &run_dir,
    );
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(stdout.contains("resumed after epoch 1"), "{stdout}");

    // A damaged config or model checkpoint is a message naming the file and exit code 1.
    for (file, garbage) in [
        ("training.json", &b"{\"model\": {\"num_blocks\": [1e999"[..]),
        (
            "checkpoint/model-1.bpk",
            &b"BURN\x01\x00\xff\xff\xff\xff"[..],
        ),
    ] {
        let copy = run_dir.with_file_name(format!("damaged-{}", file.replace('/', "-")));
        copy_dir(&run_dir, &copy);
        fs::write(copy.join(file), garbage).unwrap();
        let output = run(
            env!("CARGO_BIN_EXE_repvgg"),
            &["train", "--resume"],
            &data,
            &copy,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        assert!(
            stderr.contains(file.rsplit('/').next().unwrap()),
            "{file}: {stderr}"
        );
    }
}

#[test]
fn fine_tunes_pretrained_weights_and_refuses_a_deploy_checkpoint() {
    let scratch = scratch("cli-finetune");
    let path = |name: &str| scratch.path().join(name);
    write_synthetic_set(&path("data"), 1, 2, 5).unwrap();
    // timm's A0 as the Hugging Face cache holds it once downloaded (random weights: the
    // machines running the tests have no internet).
    let cache = path("hf-cache");
    let a0 = RepVggArch::A0.config();
    let weights = Weights::from_module(&random_training_model(&a0, &Device::flex())).unwrap();
    write_checkpoint(&weights, &a0, None, &path("a0.safetensors")).unwrap();
    let bytes = fs::read(path("a0.safetensors")).unwrap();
    place_in_hf_cache(
        &cache,
        "timm/repvgg_a0.rvgg_in1k",
        "model.safetensors",
        &bytes,
    );

    let flags = [
        "train",
        "--arch=A0",
        "--init=pretrained:a0",
        "--freeze-stages=2",
        "--backbone-lr-scale=0.1",
        "--epochs=1",
        "--batch-size=16",
        "--image-size=32",
        "--workers=2",
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args(flags)
        .args(["--device", "cpu", "--output"])
        .arg(path("run"))
        .arg("--data")
        .arg(path("data"))
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("started from pretrained:a0"), "{stdout}");
    assert!(
        stdout.contains("1000-class classifier replaced"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stage0 (the stem) through stage2"),
        "{stdout}"
    );
    assert!(path("run").join("init.json").is_file());

    // Its deploy model has no branches to train: a message and exit code 1.
    let deploy = path("run").join("model-deploy.bpk");
    let init = format!("--init={}", deploy.display());
    let refused = run(
        env!("CARGO_BIN_EXE_repvgg"),
        &["train", "--arch=A0", &init, "--epochs=1", "--image-size=32"],
        &path("data"),
        &path("refused"),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("no branches to train"), "{stderr}");
}
