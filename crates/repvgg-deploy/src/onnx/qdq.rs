//! QDQ ONNX export of an int8 model: the graph of [`super::to_onnx`] with every int8
//! convolution's input and weights quantized and dequantized in place.

use std::path::Path;

use repvgg_cpu::int8::QuantizedConv;

use super::proto::{AttributeProto, FLOAT, INT8, NodeProto, TensorProto, UINT8};
use super::{conv3x3_attributes, encode_model, int, push_node, vector};
use crate::checkpoint::write_atomically;
use crate::error::DeployError;
use crate::int8_file::Int8Model;

/// The QDQ ONNX model (the bytes of a `.onnx` file) of an int8 model: input `images`
/// (`[batch, 3, height, width]`), output `logits` (or `features` for a headless network).
pub fn int8_to_onnx(model: &Int8Model) -> Result<Vec<u8>, DeployError> {
    let mut graph = QdqGraph::default();
    let mut x = "images".to_string();
    for (i, layer) in model.network.layers().iter().enumerate() {
        x = graph.layer(i, layer, &x);
    }
    let pooled = graph.node("GlobalAveragePool", "head.pool", &[&x], vec![]);
    let flat = graph.node("Flatten", "head.flatten", &[&pooled], vec![int("axis", 1)]);
    let output = match model.network.head() {
        Some((weight, bias)) => {
            let classes = bias.len();
            let weight = graph.floats("linear.weight", &[weight.len() / classes, classes], weight);
            let bias = graph.floats("linear.bias", &[classes], bias);
            graph.node("Gemm", "logits", &[&flat, &weight, &bias], vec![]);
            vector("logits", classes)
        }
        None => {
            let width = model
                .network
                .layers()
                .last()
                .map_or(0, |l| l.shape().out_channels);
            graph.nodes.last_mut().expect("the flatten node").output = vec!["features".into()];
            vector("features", width)
        }
    };
    let doc = format!("RepVGG in int8 (QDQ), calibrated by {}", model.calibration);
    encode_model(
        &doc,
        "repvgg-int8",
        graph.nodes,
        graph.initializers,
        vec![output],
        &model.config,
    )
}

/// Writes [`int8_to_onnx`]'s model to `path`, atomically.
pub fn write_int8_onnx(model: &Int8Model, path: &Path) -> Result<(), DeployError> {
    let bytes = int8_to_onnx(model)?;
    write_atomically(path, |temporary| {
        std::fs::write(temporary, &bytes).map_err(|source| DeployError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[derive(Default)]
struct QdqGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl QdqGraph {
    /// Layer `i` on `x`: `Relu(Conv(DQ(Q(x)), DQ(w), bias))` in int8, `Relu(Conv(x, w, bias))`
    /// for a layer kept in f32. Returns its output's name.
    fn layer(&mut self, i: usize, layer: &QuantizedConv, x: &str) -> String {
        let name = format!("layer{i}");
        let conv = layer.shape();
        let (out, in_per_group) = (conv.out_channels, conv.in_channels / conv.groups);
        let shape = [out, in_per_group, 3, 3];
        let (input, weight) = match layer.int8 {
            true => {
                let scale = self.floats(&format!("{name}.input_scale"), &[], &[layer.input.scale]);
                let zero_point = self.tensor(
                    &format!("{name}.input_zero_point"),
                    &[],
                    UINT8,
                    vec![layer.input.zero_point],
                );
                let q = self.node(
                    "QuantizeLinear",
                    &format!("{name}.input_q"),
                    &[x, &scale, &zero_point],
                    vec![],
                );
                let input = self.node(
                    "DequantizeLinear",
                    &format!("{name}.input_dq"),
                    &[&q, &scale, &zero_point],
                    vec![],
                );
                // [out][ky][kx][in] to ONNX's [out][in][ky][kx].
                let codes = to_oihw(layer.weight(), out, in_per_group)
                    .into_iter()
                    .map(|w| w as u8)
                    .collect();
                let weight = self.tensor(&format!("{name}.weight"), &shape, INT8, codes);
                let scales = self.floats(
                    &format!("{name}.weight_scale"),
                    &[out],
                    layer.weight_scale(),
                );
                let zeros = self.tensor(
                    &format!("{name}.weight_zero_point"),
                    &[out],
                    INT8,
                    vec![0; out],
                );
                let weight = self.node(
                    "DequantizeLinear",
                    &format!("{name}.weight_dq"),
                    &[&weight, &scales, &zeros],
                    vec![int("axis", 0)],
                );
                (input, weight)
            }
            false => {
                let weights = to_oihw(layer.float_weight(), out, in_per_group);
                (
                    x.to_string(),
                    self.floats(&format!("{name}.weight"), &shape, &weights),
                )
            }
        };
        let bias = self.floats(&format!("{name}.bias"), &[out], layer.bias());
        let attributes = conv3x3_attributes(conv.stride, conv.groups);
        let conv = self.node(
            "Conv",
            &format!("{name}.conv"),
            &[&input, &weight, &bias],
            attributes,
        );
        self.node("Relu", &format!("{name}.relu"), &[&conv], vec![])
    }

    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        push_node(&mut self.nodes, op_type, name, inputs, attribute)
    }

    fn tensor(&mut self, name: &str, shape: &[usize], data_type: i32, raw_data: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.to_string(),
            raw_data,
        });
        name.to_string()
    }

    fn floats(&mut self, name: &str, shape: &[usize], values: &[f32]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, shape, FLOAT, bytes)
    }
}

/// Weights `[out][ky][kx][in]` as `[out][in][ky][kx]`.
fn to_oihw<T: Copy + Default>(weights: &[T], out: usize, inputs: usize) -> Vec<T> {
    let mut oihw = vec![T::default(); weights.len()];
    for o in 0..out {
        for tap in 0..9 {
            for i in 0..inputs {
                oihw[(o * inputs + i) * 9 + tap] = weights[(o * 9 + tap) * inputs + i];
            }
        }
    }
    oihw
}
