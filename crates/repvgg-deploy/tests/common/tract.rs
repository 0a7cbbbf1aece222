//! ONNX models run by tract (a Rust ONNX runtime), for the tests that check an export against
//! what this project computes.

use burn::tensor::TensorData;
use tract_onnx::prelude::{
    DatumExt, Framework, InferenceModelExt, IntoRunnable, tract_ndarray, tvec,
};

/// Runs the ONNX model `bytes` on `images` with tract; its outputs in graph order.
pub fn run_tract(bytes: &[u8], images: &TensorData) -> Vec<TensorData> {
    let shape: Vec<usize> = images.shape().to_vec();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .with_input_fact(0, f32::fact(&shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let values: Vec<f32> = images.iter::<f32>().collect();
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, values).unwrap();
    let outputs = model
        .run(tvec!(tract_onnx::prelude::Tensor::from(input).into()))
        .unwrap();
    outputs
        .iter()
        .map(|output| {
            let view = output.to_plain_array_view::<f32>().unwrap();
            TensorData::new(
                view.iter().copied().collect::<Vec<f32>>(),
                view.shape().to_vec(),
            )
        })
        .collect()
}
