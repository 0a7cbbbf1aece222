//! Int8 model files: written and read back to the same network (logits identical), with layers
//! kept in f32, and damaged files refused naming the tensor.

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::int8::{CalibrationRule, QuantizedNetwork};
use repvgg_deploy::{Int8Model, is_int8_file, read_int8, write_checkpoint, write_int8};
use repvgg_model::{RepVggConfig, Reparameterize, Weights};
use repvgg_testing::scratch;

#[path = "common/tract.rs"]
mod tract;
use tract::run_tract;

fn model() -> (Int8Model, Tensor<4>) {
    let device = Device::flex();
    device.seed(11);
    let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.5])
        .with_grouped_layers([(2, 2)].into())
        .with_num_classes(4);
    let deploy = config.init(&device).reparameterize().unwrap();
    let images = Tensor::<4>::random([2, 3, 24, 20], Distribution::Normal(0.0, 1.0), &device);
    let network =
        QuantizedNetwork::calibrate(&deploy, [images.clone()], CalibrationRule::Mse).unwrap();
    let model = Int8Model {
        network: network.with_layer_in_int8(1, false).unwrap(),
        config,
        classes: Some(["a", "b", "c", "d"].map(String::from).to_vec()),
        calibration: "mse, 2 images".into(),
    };
    (model, images)
}

#[test]
fn a_written_model_reads_back_the_same() {
    let (model, images) = model();
    let dir = scratch("int8-file");
    let path = dir.path().join("model-int8.safetensors");
    write_int8(&model, &path).unwrap();
    assert!(is_int8_file(&path));
    let read = read_int8(&path).unwrap();
    assert_eq!(read.config, model.config);
    assert_eq!(read.classes, model.classes);
    assert_eq!(read.calibration, "mse, 2 images");
    let layers: Vec<bool> = read.network.layers().iter().map(|l| l.int8).collect();
    assert_eq!(layers, [true, false, true, true, true]);
    let expected = model.network.forward(images.clone()).into_data();
    assert_eq!(read.network.forward(images).into_data(), expected);
    // About a quarter of the f32 weights' bytes.
    let f32_bytes: usize = model
        .network
        .layers()
        .iter()
        .map(|l| 4 * l.float_weight().len())
        .sum();
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        size < f32_bytes / 2,
        "{size} bytes for {f32_bytes} bytes of f32 weights"
    );
}

#[test]
fn other_and_damaged_files_are_refused_naming_the_problem() {
    let (model, _) = model();
    let dir = scratch("int8-damaged");
    let path = dir.path().join("model-int8.safetensors");
    write_int8(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    // An ordinary checkpoint is no int8 model.
    let float = dir.path().join("float.safetensors");
    let device = Device::flex();
    let weights = Weights::from_module(&model.config.init(&device)).unwrap();
    write_checkpoint(&weights, &model.config, None, &float).unwrap();
    assert!(!is_int8_file(&float));
    let message = read_int8(&float).unwrap_err().to_string();
    assert!(message.contains("not an int8 model file"), "{message}");

    // Truncated.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let message = read_int8(&cut).unwrap_err().to_string();
    assert!(message.contains("cut.safetensors"), "{message}");

    // A tensor renamed: the one missing is named.
    let renamed = dir.path().join("renamed.safetensors");
    let text = bytes
        .windows(15)
        .position(|w| w == b"\"layer2.weight\"")
        .expect("the tensor's name in the header");
    let mut damaged = bytes.clone();
    damaged[text + 6] = b'9';
    std::fs::write(&renamed, &damaged).unwrap();
    let message = read_int8(&renamed).unwrap_err().to_string();
    assert!(message.contains("`layer2.weight` is missing"), "{message}");
    let message = read_int8("/nonexistent/model.safetensors".as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("/nonexistent/model.safetensors"),
        "{message}"
    );
}

/// The QDQ ONNX export, run by tract (a Rust ONNX runtime), computes the int8 network: the same
/// quantization of every int8 layer's input and weights, so the logits agree but for rounding
/// ties (ONNX rounds them to even, the int8 definition up).
#[test]
fn the_qdq_onnx_export_computes_the_int8_network() {
    let (model, images) = model();
    let bytes = repvgg_deploy::onnx::int8_to_onnx(&model).unwrap();
    let actual: Vec<f32> = run_tract(&bytes, &images.to_data())[0]
        .iter::<f32>()
        .collect();
    let expected: Vec<f32> = model
        .network
        .forward(images)
        .into_data()
        .iter::<f32>()
        .collect();
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let difference = actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    eprintln!("QDQ ONNX in tract vs the int8 network: {difference:.1e} of the largest logit");
    assert!(difference < 1e-3, "{difference:e}");
}
