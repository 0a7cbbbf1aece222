//! ONNX export of the deploy-time network: the plain graph RepVGG is made for, which ONNX
//! Runtime, OpenVINO, TensorRT and the mobile toolchains take as it is.
//!
//! Each block is one `Conv` (3x3, with bias) and a `Relu`; an SE block puts
//! `GlobalAveragePool`, `Conv`, `Relu`, `Conv`, `Sigmoid`, `Mul` between them; the head is
//! `GlobalAveragePool`, `Flatten`, `Gemm`. Opset 17, f32 weights as initializers, the input
//! `images` of shape `[batch, 3, height, width]` with all but the channels symbolic, the output
//! `logits` (`[batch, classes]`), or `features` (`[batch, channels]`, the pooled last map) without
//! the head; optionally every stage's feature map as further outputs `stage0` ... `stage4`.
//!
//! An int8 model ([`int8_to_onnx`]) is written as QDQ: each int8 convolution's input passes
//! through `QuantizeLinear`/`DequantizeLinear` with its calibrated scale and zero point, and its
//! s8 weights through `DequantizeLinear` with their scales per output channel, which ONNX
//! Runtime and OpenVINO run as int8 convolutions.

mod proto;
#[cfg(feature = "cpu")]
mod qdq;

#[cfg(feature = "cpu")]
pub use qdq::{int8_to_onnx, write_int8_onnx};

use std::path::Path;

use burn::config::config_to_json;
use burn::tensor::{DType, TensorData};
use prost::Message;
use repvgg_model::{BlockSpec, DeployNetwork, IN_CHANNELS, RepVggConfig, Weights};

use crate::checkpoint::write_atomically;
use crate::error::DeployError;
use proto::{
    ATTRIBUTE_INT, ATTRIBUTE_INTS, AttributeProto, Dimension, DimensionValue, FLOAT, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The operator set the graph is written against.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 (the one of opsets 17 and 18).
const IR_VERSION: i64 = 8;
/// Protobuf's limit on one message: larger models would need ONNX's external data.
const MAX_FILE_SIZE: usize = (1 << 31) - 1;

/// What the exported graph outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Leave the classifier out: the output is `features`, the globally pooled last map
    /// (`[batch, channels]`), as the headless network's `forward` gives. A network without a
    /// head (`num_classes: 0`) is exported so whatever this says.
    pub without_head: bool,
    /// Add the output of the stem and of every stage (`stage0` ... `stage4`, `[batch, channels,
    /// height / stride, width / stride]`) as outputs, for detection and segmentation necks.
    pub stage_outputs: bool,
}

/// The ONNX model (the bytes of a `.onnx` file) of a deploy-time network, RepVGG or RepVGGplus.
pub fn network_to_onnx(net: &DeployNetwork, options: &OnnxOptions) -> Result<Vec<u8>, DeployError> {
    to_onnx(&net.weights()?, net.config(), options)
}

/// The ONNX model of the deploy-time weights `weights` (Burn naming, as
/// [`ResolvedCheckpoint::deploy_weights`](crate::ResolvedCheckpoint::deploy_weights) gives them)
/// of the network `config` describes. Every tensor the graph needs must be there with its shape.
pub fn to_onnx(
    weights: &Weights,
    config: &RepVggConfig,
    options: &OnnxOptions,
) -> Result<Vec<u8>, DeployError> {
    config.validate()?;
    let mut graph = Graph::new(weights);
    let mut x = "images".to_string();
    let mut outputs = Vec::new();
    let specs = config.block_specs();
    for (i, spec) in specs.iter().enumerate() {
        x = graph.block(spec, &x)?;
        let last_of_stage = specs.get(i + 1).is_none_or(|next| next.stage != spec.stage);
        if options.stage_outputs && last_of_stage {
            let name = format!("stage{}", spec.stage);
            graph.rename_output(&x, &name);
            outputs.push(feature_map(&name, spec.out_channels));
            x = name;
        }
    }
    let pooled = graph.node("GlobalAveragePool", "head.pool", &[&x], vec![]);
    let flat = graph.node("Flatten", "head.flatten", &[&pooled], vec![int("axis", 1)]);
    let width = specs.last().map_or(0, |spec| spec.out_channels);
    let final_output = match config.has_head() && !options.without_head {
        true => {
            let weight = graph.initializer("linear.weight", &[width, config.num_classes])?;
            let bias = graph.initializer("linear.bias", &[config.num_classes])?;
            let logits = graph.node("Gemm", "linear", &[&flat, &weight, &bias], vec![]);
            graph.rename_output(&logits, "logits");
            vector("logits", config.num_classes)
        }
        false => {
            graph.rename_output(&flat, "features");
            vector("features", width)
        }
    };
    outputs.insert(0, final_output);

    encode_model(
        "RepVGG, re-parameterized into a plain stack of 3x3 convolutions and ReLU",
        "repvgg",
        graph.nodes,
        graph.initializers,
        outputs,
        config,
    )
}

/// The bytes of the model whose graph `name` has `nodes` and `initializers`, the input
/// `images` (`[batch, 3, height, width]`) and `outputs`, with `config` in its metadata.
fn encode_model(
    doc: &str,
    name: &str,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    outputs: Vec<ValueInfoProto>,
    config: &RepVggConfig,
) -> Result<Vec<u8>, DeployError> {
    let images = vec![
        symbolic("batch"),
        fixed(IN_CHANNELS),
        symbolic("height"),
        symbolic("width"),
    ];
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "repvgg-burn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(GraphProto {
            node: nodes,
            name: name.into(),
            initializer: initializers,
            input: vec![value_info("images", images)],
            output: outputs,
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![StringStringEntryProto {
            key: "repvgg.config".into(),
            value: config_to_json(config),
        }],
    };
    within_protobuf_limit(model.encoded_len())?;
    Ok(model.encode_to_vec())
}

/// `Ok` for an encoded model of `bytes` that one protobuf message can hold.
fn within_protobuf_limit(bytes: usize) -> Result<(), DeployError> {
    match bytes <= MAX_FILE_SIZE {
        true => Ok(()),
        false => Err(DeployError::OnnxTooLarge { bytes }),
    }
}

/// Writes [`to_onnx`]'s model to `path`, atomically.
pub fn write_onnx(
    weights: &Weights,
    config: &RepVggConfig,
    options: &OnnxOptions,
    path: &Path,
) -> Result<(), DeployError> {
    let bytes = to_onnx(weights, config, options)?;
    write_atomically(path, |temporary| {
        std::fs::write(temporary, &bytes).map_err(|source| DeployError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// The graph being built: its nodes in order and the weights they use.
struct Graph<'a> {
    weights: &'a Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl<'a> Graph<'a> {
    fn new(weights: &'a Weights) -> Self {
        Self {
            weights,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// One deploy block applied to `x`: fused convolution, then ReLU with an optional SE before
    /// it (`se`) or after it (`post_se`). Returns the name of its output.
    fn block(&mut self, spec: &BlockSpec, x: &str) -> Result<String, DeployError> {
        let path = &spec.path;
        let conv = format!("{path}.rbr_reparam");
        let in_per_group = spec.in_channels / spec.groups;
        let weight = self.initializer(
            &format!("{conv}.weight"),
            &[spec.out_channels, in_per_group, 3, 3],
        )?;
        let bias = self.initializer(&format!("{conv}.bias"), &[spec.out_channels])?;
        let attributes = conv3x3_attributes(spec.stride, spec.groups);
        let mut y = self.node("Conv", &conv, &[x, &weight, &bias], attributes);
        match spec.se_channels {
            Some(hidden) if spec.se_after_relu => {
                y = self.node("Relu", &format!("{path}.relu"), &[&y], vec![]);
                let post_se = format!("{path}.post_se");
                self.squeeze_excite(&post_se, &y, spec.out_channels, hidden)
            }
            Some(hidden) => {
                y = self.squeeze_excite(&format!("{path}.se"), &y, spec.out_channels, hidden)?;
                Ok(self.node("Relu", &format!("{path}.relu"), &[&y], vec![]))
            }
            None => Ok(self.node("Relu", &format!("{path}.relu"), &[&y], vec![])),
        }
    }

    /// `x * sigmoid(up(relu(down(mean_hw(x)))))`.
    fn squeeze_excite(
        &mut self,
        se: &str,
        x: &str,
        channels: usize,
        hidden: usize,
    ) -> Result<String, DeployError> {
        let pooled = self.node("GlobalAveragePool", &format!("{se}.pool"), &[x], vec![]);
        let conv = |this: &mut Self, name: &str, input: &str, from: usize, to: usize| {
            let layer = format!("{se}.{name}");
            let weight = this.initializer(&format!("{layer}.weight"), &[to, from, 1, 1])?;
            let bias = this.initializer(&format!("{layer}.bias"), &[to])?;
            let kernel = ints("kernel_shape", &[1, 1]);
            Ok::<_, DeployError>(this.node("Conv", &layer, &[input, &weight, &bias], vec![kernel]))
        };
        let down = conv(self, "down", &pooled, channels, hidden)?;
        let hidden_out = self.node("Relu", &format!("{se}.relu"), &[&down], vec![]);
        let up = conv(self, "up", &hidden_out, hidden, channels)?;
        let gate = self.node("Sigmoid", &format!("{se}.sigmoid"), &[&up], vec![]);
        Ok(self.node("Mul", &format!("{se}.mul"), &[x, &gate], vec![]))
    }

    /// Adds a node named `name` whose single output is `name` too; returns the output's name.
    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        push_node(&mut self.nodes, op_type, name, inputs, attribute)
    }

    /// Gives the value `from` (the output of the last node) the graph output name `to`.
    fn rename_output(&mut self, from: &str, to: &str) {
        let last = self.nodes.last_mut().expect("a node produced the value");
        debug_assert_eq!(last.output[0], from);
        last.output = vec![to.to_string()];
    }

    /// Adds the weight tensor `name`, which must have `shape`; returns its name.
    fn initializer(&mut self, name: &str, shape: &[usize]) -> Result<String, DeployError> {
        let data = self.weights.require(name, "the deploy-time network")?;
        if data.shape().as_slice() != shape {
            return Err(DeployError::TensorShape {
                name: name.to_string(),
                shape: data.shape().to_vec(),
                expected: format!("{shape:?} in the ONNX graph"),
            });
        }
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.to_string(),
            raw_data: little_endian_f32(data),
        });
        Ok(name.to_string())
    }
}

/// Appends a node named `name` whose single output is `name` too; returns the output's name.
fn push_node(
    nodes: &mut Vec<NodeProto>,
    op_type: &str,
    name: &str,
    inputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> String {
    nodes.push(NodeProto {
        input: inputs.iter().map(|input| input.to_string()).collect(),
        output: vec![name.to_string()],
        name: name.to_string(),
        op_type: op_type.to_string(),
        attribute,
    });
    name.to_string()
}

/// The attributes of a block's 3x3 convolution: padding 1, `stride`, `groups`.
fn conv3x3_attributes(stride: usize, groups: usize) -> Vec<AttributeProto> {
    let stride = stride as i64;
    vec![
        ints("kernel_shape", &[3, 3]),
        ints("pads", &[1, 1, 1, 1]),
        ints("strides", &[stride, stride]),
        ints("dilations", &[1, 1]),
        int("group", groups as i64),
    ]
}

/// The values of `data` as little-endian f32 bytes (ONNX's `raw_data`): its own bytes where they
/// already are, converted otherwise.
fn little_endian_f32(data: &TensorData) -> Vec<u8> {
    match data.dtype() == DType::F32 && cfg!(target_endian = "little") {
        true => data.as_bytes().to_vec(),
        false => data.iter::<f32>().flat_map(f32::to_le_bytes).collect(),
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTRIBUTE_INT,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTRIBUTE_INTS,
        ..Default::default()
    }
}

fn fixed(size: usize) -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimValue(size as i64)),
    }
}

fn symbolic(name: &str) -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimParam(name.into())),
    }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    }
}

/// An output `[batch, size]`.
fn vector(name: &str, size: usize) -> ValueInfoProto {
    value_info(name, vec![symbolic("batch"), fixed(size)])
}

/// A stage's output `[batch, channels, h, w]`, its spatial size symbolic.
fn feature_map(name: &str, channels: usize) -> ValueInfoProto {
    value_info(
        name,
        vec![
            symbolic("batch"),
            fixed(channels),
            symbolic(&format!("{name}_height")),
            symbolic(&format!("{name}_width")),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_beyond_two_gibibytes_are_refused_with_a_message() {
        assert!(within_protobuf_limit(MAX_FILE_SIZE).is_ok());
        let err = within_protobuf_limit(MAX_FILE_SIZE + 1).unwrap_err();
        assert!(
            err.to_string().contains("beyond protobuf's 2 GiB limit"),
            "{err}"
        );
    }
}
