//! `repvgg convert` end to end: real conversions, and every kind
//! of bad input failing with a clear message and a non-zero exit (never a panic).

use std::path::Path;
use std::process::{Command, Output};

use burn::config::Config;
use burn::tensor::{Device, TensorData};
use repvgg_deploy::{read_checkpoint, write_checkpoint};
use repvgg_model::Weights;
use repvgg_model::{RepVggArch, RepVggConfig};
use repvgg_testing::{fixture, scratch};

fn convert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .arg("convert")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a clean failure (exit code 1, or 2 for a flag clap rejects) whose message contains
/// every one of `expected`.
fn assert_fails(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(1 | 2)),
        "exit {:?}, stderr: {stderr}",
        output.status.code()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "`{text}` not in: {stderr}");
    }
}

fn assert_succeeds(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

#[test]
fn converts_a_reference_checkpoint_and_verifies_it() {
    let scratch = scratch("reference");
    let dir = scratch.path();
    for output in ["narrow.safetensors", "narrow.bpk"] {
        let out = dir.join(output);
        let stdout = assert_succeeds(&convert(&[
            "--input",
            path(&fixture("narrow_train_wrapped.pth")),
            "--config",
            path(&fixture("narrow.json")),
            "--output",
            path(&out),
            "--verify",
            "--verify-size",
            "64",
        ]));
        assert!(stdout.contains("training-time"), "{stdout}");
        assert!(stdout.contains("relative"), "{stdout}");
        assert!(out.is_file());
    }
    // A deploy-time input is re-saved; our burnpack carries its config, so none is needed.
    let stdout = assert_succeeds(&convert(&[
        "--input",
        path(&dir.join("narrow.bpk")),
        "--output",
        path(&dir.join("again.safetensors")),
        "--verify",
        "--verify-size",
        "32",
    ]));
    assert!(stdout.contains("already deploy-time"), "{stdout}");
}

#[test]
fn writes_onnx_from_a_training_checkpoint() {
    let scratch = scratch("onnx");
    let dir = scratch.path();
    let input = fixture("narrow_train_wrapped.pth");
    let config = fixture("narrow.json");
    let out = dir.join("narrow.onnx");
    let args = |extra: &[&str]| {
        let mut args = vec!["--input", path(&input), "--config", path(&config)];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let args = args(extra);
        convert(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let stdout = assert_succeeds(&run(&[
        "--output",
        path(&out),
        "--verify",
        "--verify-size",
        "32",
    ]));
    assert!(
        stdout.contains(
            "ONNX opset 17: input images [batch, 3, height, width] (f32, ImageNet-normalised); \
             outputs logits [batch, 10]"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the deploy weights in the graph"),
        "{stdout}"
    );
    let bytes = std::fs::read(&out).unwrap();
    let contains = |text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(contains("stage3.1.rbr_reparam.weight") && contains("repvgg.config"));

    let stdout = assert_succeeds(&run(&[
        "--output",
        path(&out),
        "--without-head",
        "--stage-outputs",
    ]));
    assert!(
        stdout.contains(
            "outputs features [batch, 64], stage0 [batch, 16, height/2, width/2], stage1 \
             [batch, 16, height/4, width/4], stage2 [batch, 32, height/8, width/8], stage3 \
             [batch, 64, height/16, width/16]"
        ),
        "{stdout}"
    );

    let bpk = dir.join("narrow.bpk");
    assert_fails(
        &run(&["--output", path(&bpk), "--stage-outputs"]),
        &["shape an ONNX graph"],
    );
    assert!(!bpk.exists());
}

#[test]
fn detects_a_reference_architecture() {
    let scratch = scratch("detect");
    let dir = scratch.path();
    let device = Device::flex();
    let config = RepVggArch::A0.config().with_num_classes(5);
    let weights = Weights::from_module(&config.init(&device)).unwrap();
    let input = dir.join("a0_train.safetensors");
    write_checkpoint(&weights, &config, None, &input).unwrap();
    let stdout = assert_succeeds(&convert(&[
        "--input",
        path(&input),
        "--output",
        path(&dir.join("a0.bpk")),
        "--verify",
        "--verify-size",
        "64",
    ]));
    assert!(stdout.contains("RepVGG-A0 (detected"), "{stdout}");
    assert!(stdout.contains("7,834,373 -> 7,034,789"), "{stdout}");
}

#[test]
fn missing_input_files_are_reported() {
    let scratch = scratch("missing");
    let dir = scratch.path();
    let out = dir.join("out.bpk");
    assert_fails(
        &convert(&["--input", "/no/such/file.pth", "--output", path(&out)]),
        &["cannot read the input /no/such/file.pth"],
    );
    let empty = dir.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    assert_fails(
        &convert(&["--input", path(&empty), "--output", path(&out)]),
        &["empty.pth", "the file is empty"],
    );
    let folder = dir.join("folder.pth");
    std::fs::create_dir(&folder).unwrap();
    assert_fails(
        &convert(&["--input", path(&folder), "--output", path(&out)]),
        &["folder.pth", "not a file"],
    );
    // A well-formed safetensors file that holds no tensor at all.
    let no_tensors = dir.join("no_tensors.safetensors");
    std::fs::write(&no_tensors, [&2u64.to_le_bytes()[..], b"{}"].concat()).unwrap();
    assert_fails(
        &convert(&["--input", path(&no_tensors), "--output", path(&out)]),
        &["no_tensors.safetensors", "it holds no RepVGG tensors"],
    );
}

#[test]
fn corrupt_files_are_reported() {
    let scratch = scratch("corrupt");
    let dir = scratch.path();
    let out = dir.join("out.bpk");
    let bytes = std::fs::read(fixture("narrow_train.pth")).unwrap();
    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(
        &convert(&["--input", path(&truncated), "--output", path(&out)]),
        &["truncated.pth: not a readable PyTorch checkpoint"],
    );
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for (name, format) in [
        ("noise.pth", "PyTorch"),
        ("noise.safetensors", "safetensors"),
        ("noise.bpk", "burnpack"),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, &noise).unwrap();
        assert_fails(
            &convert(&["--input", path(&file), "--output", path(&out)]),
            &[&format!("{name}: not a readable {format} checkpoint")],
        );
    }
    let text = dir.join("weights.txt");
    std::fs::write(&text, "hello").unwrap();
    assert_fails(
        &convert(&["--input", path(&text), "--output", path(&out)]),
        &["unsupported file extension"],
    );
}

#[test]
fn a_checkpoint_of_another_architecture_is_rejected() {
    let scratch = scratch("other-arch");
    let dir = scratch.path();
    assert_fails(
        &convert(&[
            "--input",
            path(&fixture("narrow_train.pth")),
            "--arch",
            "A0",
            "--output",
            path(&dir.join("out.bpk")),
        ]),
        &["weights do not match", "missing", "with the wrong shape"],
    );
    assert_fails(
        &convert(&[
            "--input",
            path(&fixture("grouped_train.pth")),
            "--output",
            path(&dir.join("out.bpk")),
        ]),
        &[
            "cannot detect the architecture",
            "give the architecture as a config file",
        ],
    );
    assert_fails(
        &convert(&[
            "--input",
            path(&fixture("narrow_train.pth")),
            "--arch",
            "A9",
            "--output",
            "x.bpk",
        ]),
        &["unknown RepVGG architecture `A9`"],
    );

    // An A0 checkpoint given as B0: the mismatch, and what the file is instead.
    let a0 = RepVggArch::A0.config().with_num_classes(10);
    let weights = Weights::from_module(&a0.init(&Device::flex())).unwrap();
    let file = dir.join("a0.safetensors");
    write_checkpoint(&weights, &a0, None, &file).unwrap();
    assert_fails(
        &convert(&[
            "--input",
            path(&file),
            "--arch",
            "B0",
            "--output",
            path(&dir.join("out.bpk")),
        ]),
        &[
            "weights do not match",
            "(the checkpoint looks like RepVGG-A0)",
        ],
    );
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let scratch = scratch("tensors");
    let dir = scratch.path();
    let config = RepVggConfig::load(fixture("narrow.json")).unwrap();
    let weights = read_checkpoint(&fixture("narrow_train.pth"))
        .unwrap()
        .weights;
    let without: Weights = weights
        .iter()
        .filter(|(name, _)| *name != "stage2.1.rbr_1x1.bn.running_var")
        .map(|(name, data)| (name.to_string(), data.clone()))
        .collect();
    let mut with_extra = weights.clone();
    with_extra.insert(
        "stage2.1.rbr_extra.weight",
        weights.get("linear.bias").unwrap().clone(),
    );
    for (file, weights, expected) in [
        (
            "missing.safetensors",
            without,
            "1 missing (stage2.1.rbr_1x1.bn.running_var)",
        ),
        (
            "extra.bpk",
            with_extra,
            "1 unexpected (stage2.1.rbr_extra.weight)",
        ),
    ] {
        let input = dir.join(file);
        write_checkpoint(&weights, &config, None, &input).unwrap();
        assert_fails(
            &convert(&[
                "--input",
                path(&input),
                "--config",
                path(&fixture("narrow.json")),
                "--output",
                path(&dir.join("out.bpk")),
            ]),
            &[expected],
        );
    }
}

#[test]
fn bad_output_paths_are_refused() {
    let scratch = scratch("outputs");
    let dir = scratch.path();
    let input = dir.join("narrow_train.pth");
    std::fs::copy(fixture("narrow_train.pth"), &input).unwrap();
    let args = |output: &str| {
        convert(&[
            "--input",
            path(&input),
            "--config",
            path(&fixture("narrow.json")),
            "--output",
            output,
        ])
    };
    assert_fails(
        &args("/no/such/dir/out.bpk"),
        &["the output directory /no/such/dir does not exist"],
    );
    assert_fails(&args(path(&input)), &["is the input"]);
    let same_via_dot = dir.join(".").join("narrow_train.pth");
    assert_fails(&args(path(&same_via_dot)), &["is the input"]);
    assert_fails(
        &args(path(&dir.join("out.pth"))),
        &["writing .pth is not supported"],
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(fixture("narrow_train.pth")).unwrap()
    );
    // Nothing was left behind by the failed writes.
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn diverged_weights_and_invalid_recorded_configs_are_refused() {
    let scratch = scratch("refused");
    let dir = scratch.path();
    let device = Device::flex();
    let config = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(3);
    let weights = Weights::from_module(&config.init(&device)).unwrap();
    let output = dir.join("out.bpk");

    // A diverged run: one NaN in a BN statistic.
    let mut diverged = weights.clone();
    let name = "stage1.0.rbr_dense.bn.running_var";
    let mut values: Vec<f32> = diverged.get(name).unwrap().iter::<f32>().collect();
    values[1] = f32::NAN;
    diverged.insert(name, TensorData::new(values.clone(), [values.len()]));
    let file = dir.join("diverged.safetensors");
    write_checkpoint(&diverged, &config, None, &file).unwrap();
    let args = ["--input", path(&file), "--output", path(&output)];
    assert_fails(&convert(&args), &[name, "NaN or infinite"]);

    // A burnpack whose recorded config describes no network (no stages).
    let invalid = RepVggConfig::new(vec![], vec![]);
    let file = dir.join("invalid.bpk");
    write_checkpoint(&weights, &invalid, None, &file).unwrap();
    assert_fails(
        &convert(&["--input", path(&file), "--output", path(&output)]),
        &["its recorded config", "1 to 4 stages"],
    );
    assert!(!output.exists(), "nothing is written for refused input");
}

#[test]
fn a_backend_the_build_lacks_is_named() {
    let scratch = scratch("device");
    let dir = scratch.path();
    let output = dir.join("out.bpk");
    let input = fixture("narrow_train.pth");
    let config = fixture("narrow.json");
    let args = [
        "--input",
        path(&input),
        "--config",
        path(&config),
        "--output",
        path(&output),
        "--device",
        "cuda",
    ];
    if !cfg!(feature = "cuda") {
        assert_fails(&convert(&args), &["no cuda backend", "--features cuda"]);
    }
    let args = [
        "--input",
        path(&input),
        "--output",
        path(&output),
        "--device",
        "tpu",
    ];
    assert_fails(
        &convert(&args),
        &["unknown device `tpu`", "cpu, wgpu or cuda"],
    );
}
