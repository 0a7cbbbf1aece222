//! `repvgg quantize` end to end: a model to an int8 file with an accuracy report and a layer
//! left in f32, the file evaluated by `repvgg eval`, and bad flags refused.

use std::process::{Command, Output};

use burn::tensor::Device;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::write_checkpoint;
use repvgg_model::{RepVggConfig, Weights};
use repvgg_testing::{random_training_model, scratch};

fn repvgg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_model_becomes_an_int8_file_that_eval_runs() {
    let scratch = scratch("cli-quantize");
    let dir = scratch.path();
    write_synthetic_set(&dir.join("data"), 4, 2, 3).unwrap();
    let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.5])
        .with_num_classes(SYNTHETIC_CLASSES.len());
    let weights = Weights::from_module(&random_training_model(&config, &Device::flex())).unwrap();
    let model = dir.join("model.bpk");
    write_checkpoint(&weights, &config, None, &model).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (model, data, output) = (
        path("model.bpk"),
        path("data"),
        path("model-int8.safetensors"),
    );
    let onnx = path("model-int8.onnx");
    let flags = [
        "quantize",
        "--weights",
        &model,
        "--calibration",
        &data,
        "--output",
        &output,
        "--data",
        &data,
        "--float-layers",
        "1",
        "--images",
        "16",
        "--image-size",
        "32",
        "--onnx",
        &onnx,
    ];
    let quantized = repvgg(&flags);
    if !repvgg_deploy::int8::vnni_supported() {
        assert_eq!(quantized.status.code(), Some(1), "{}", text(&quantized));
        assert!(
            text(&quantized).contains("AVX512_VNNI"),
            "{}",
            text(&quantized)
        );
        return;
    }
    let report = text(&quantized);
    assert!(quantized.status.success(), "{report}");
    assert!(report.contains("on 16 images"), "{report}");
    assert!(report.contains("layer sensitivity"), "{report}");
    assert!(report.contains("left in f32: layers ["), "{report}");
    assert!(report.contains("in int8 ("), "{report}");
    assert!(
        report.contains("wrote") && report.contains("(4 of 5 layers in int8)"),
        "{report}"
    );

    let evaluated = repvgg(&[
        "eval",
        "--weights",
        &output,
        "--data",
        &data,
        "--image-size",
        "32",
    ]);
    let report = text(&evaluated);
    assert!(evaluated.status.success(), "{report}");
    assert!(report.contains("the int8 model"), "{report}");
    assert!(report.contains("top-1 "), "{report}");
    let refused = repvgg(&[
        "eval",
        "--weights",
        &output,
        "--data",
        &data,
        "--device",
        "wgpu",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("runs on the CPU"),
        "{}",
        text(&refused)
    );

    // A missing calibration folder, and more layers left in f32 than the network has: named,
    // exit 1, no panic.
    let missing = path("no-images");
    let flags_with = |calibration: &str, float_layers: &str| {
        [
            "quantize",
            "--weights",
            &model,
            "--calibration",
            calibration,
            "--output",
            &output,
            "--data",
            &data,
            "--float-layers",
            float_layers,
            "--image-size",
            "32",
        ]
        .map(String::from)
    };
    let no_images = repvgg(&flags_with(&missing, "1").each_ref().map(String::as_str));
    assert_eq!(no_images.status.code(), Some(1), "{}", text(&no_images));
    assert!(
        text(&no_images).contains("no-images"),
        "{}",
        text(&no_images)
    );
    let too_many = repvgg(&flags_with(&data, "5").each_ref().map(String::as_str));
    assert_eq!(too_many.status.code(), Some(1), "{}", text(&too_many));
    assert!(
        text(&too_many).contains("--float-layers 5: the network has 5 layers"),
        "{}",
        text(&too_many)
    );
    assert!(!text(&too_many).contains("panicked"));
}

#[test]
fn bad_flags_are_refused() {
    let scratch = scratch("cli-quantize-bad");
    let dir = scratch.path();
    let missing = dir.join("missing").to_str().unwrap().to_string();
    let out = dir.join("out.safetensors").to_str().unwrap().to_string();
    // --float-layers needs --data: a usage error.
    let usage = repvgg(&[
        "quantize",
        "--weights",
        &missing,
        "--calibration",
        &missing,
        "--output",
        &out,
        "--float-layers",
        "2",
    ]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    let rule = repvgg(&[
        "quantize",
        "--weights",
        &missing,
        "--calibration",
        &missing,
        "--output",
        &out,
        "--rule",
        "max",
    ]);
    assert_eq!(rule.status.code(), Some(2), "{}", text(&rule));
    assert!(
        text(&rule).contains("minmax, mse, percentile"),
        "{}",
        text(&rule)
    );
    // A missing model: named, exit 1, nothing written.
    let absent = repvgg(&[
        "quantize",
        "--weights",
        &missing,
        "--calibration",
        &missing,
        "--output",
        &out,
    ]);
    assert_eq!(absent.status.code(), Some(1), "{}", text(&absent));
    assert!(text(&absent).contains("missing"), "{}", text(&absent));
    assert!(!text(&absent).contains("panicked"));
    assert!(!std::path::Path::new(&out).exists());
}
