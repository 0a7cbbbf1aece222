//! Int8 model files: a [`QuantizedNetwork`] as safetensors, s8 weights with their scales, each
//! layer's input quantization, the classifier in f32, and the architecture and class names in
//! the metadata, so that the file alone rebuilds the network.
//!
//! Tensors, for layer `i` (stem first): `layer{i}.weight` (s8, `[out, 3, 3, in / groups]`) and
//! `layer{i}.weight_scale` (f32, `[out]`) for a layer in int8, `layer{i}.float_weight` (f32,
//! same shape) for one kept in f32; `layer{i}.bias` (f32, `[out]`) and `layer{i}.input`
//! (f32, `[scale, zero point]`); `linear.weight` (`[in, out]`) and `linear.bias`.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::config::{Config, config_to_json};
use repvgg_cpu::int8::{ActivationScale, ConvShape, QuantizedConv, QuantizedNetwork};
use repvgg_model::{BlockSpec, RepVggConfig};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::write_atomically;
use crate::error::DeployError;

/// The metadata that marks a file as an int8 model, and its value.
const FORMAT_KEY: &str = "repvgg.format";
const FORMAT: &str = "int8";
const CONFIG_KEY: &str = "repvgg.config";
const CLASSES_KEY: &str = "repvgg.classes";
const CALIBRATION_KEY: &str = "repvgg.calibration";

/// An int8 model file's contents.
#[derive(Clone, Debug)]
pub struct Int8Model {
    pub network: QuantizedNetwork,
    pub config: RepVggConfig,
    pub classes: Option<Vec<String>>,
    /// How the activations were calibrated, in words (`mse, 256 images`).
    pub calibration: String,
}

/// Writes `model` to `path` (`.safetensors`), atomically.
pub fn write_int8(model: &Int8Model, path: &Path) -> Result<(), DeployError> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let floats = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (i, layer) in model.network.layers().iter().enumerate() {
        let shape = layer.shape();
        let weight_shape = vec![shape.out_channels, 3, 3, shape.in_channels / shape.groups];
        match layer.int8 {
            true => {
                let bytes = layer.weight().iter().map(|&w| w as u8).collect();
                tensors.push((format!("layer{i}.weight"), Dtype::I8, weight_shape, bytes));
                let scales = floats(layer.weight_scale());
                tensors.push((
                    format!("layer{i}.weight_scale"),
                    Dtype::F32,
                    vec![shape.out_channels],
                    scales,
                ));
            }
            false => tensors.push((
                format!("layer{i}.float_weight"),
                Dtype::F32,
                weight_shape,
                floats(layer.float_weight()),
            )),
        }
        tensors.push((
            format!("layer{i}.bias"),
            Dtype::F32,
            vec![shape.out_channels],
            floats(layer.bias()),
        ));
        let input = [layer.input.scale, f32::from(layer.input.zero_point)];
        tensors.push((
            format!("layer{i}.input"),
            Dtype::F32,
            vec![2],
            floats(&input),
        ));
    }
    if let Some((weight, bias)) = model.network.head() {
        let outputs = bias.len();
        tensors.push((
            "linear.weight".into(),
            Dtype::F32,
            vec![weight.len() / outputs.max(1), outputs],
            floats(weight),
        ));
        tensors.push((
            "linear.bias".into(),
            Dtype::F32,
            vec![outputs],
            floats(bias),
        ));
    }
    let mut metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (CONFIG_KEY.to_string(), config_to_json(&model.config)),
        (CALIBRATION_KEY.to_string(), model.calibration.clone()),
    ]);
    if let Some(classes) = &model.classes {
        metadata.insert(CLASSES_KEY.to_string(), classes.join("\n"));
    }
    write_atomically(path, |temporary| {
        let failed = |source: safetensors::SafeTensorError| DeployError::Write {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        safetensors::serialize_to_file(views, Some(metadata), temporary).map_err(failed)?;
        // The crate writes a private (0600) file; a model file is for others to read too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(temporary, fs::Permissions::from_mode(0o644)).map_err(
                |source| DeployError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
        }
        Ok(())
    })
}

/// Whether `path` is an int8 model file: a safetensors file whose header's metadata says so.
/// Only the header is read (a checkpoint of any size is answered at once); any other file,
/// readable or not, is not one.
pub fn is_int8_file(path: &Path) -> bool {
    header(path).is_some_and(|header| header["__metadata__"][FORMAT_KEY].as_str() == Some(FORMAT))
}

/// The JSON header of the safetensors file at `path`, when it has one.
fn header(path: &Path) -> Option<serde_json::Value> {
    /// Larger headers are refused, as the safetensors crate refuses them.
    const MAX_HEADER: u64 = 100_000_000;
    let mut file = fs::File::open(path).ok()?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).ok()?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER {
        return None;
    }
    let mut bytes = vec![0u8; length as usize];
    file.read_exact(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads an int8 model file, checking every tensor against the architecture it records.
pub fn read_int8(path: &Path) -> Result<Int8Model, DeployError> {
    let bytes = fs::read(path).map_err(|source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let unreadable = |message: String| DeployError::Unreadable {
        path: path.to_path_buf(),
        format: "int8 safetensors",
        source: message.into(),
    };
    let (_, metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|err| unreadable(err.to_string()))?;
    let metadata = metadata.metadata().clone().unwrap_or_default();
    if metadata.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
        return Err(unreadable(format!(
            "no `{FORMAT_KEY}: {FORMAT}` metadata (not an int8 model file)"
        )));
    }
    let config_json = metadata
        .get(CONFIG_KEY)
        .ok_or_else(|| unreadable(format!("no `{CONFIG_KEY}` metadata")))?;
    let config = RepVggConfig::load_binary(config_json.as_bytes())
        .map_err(|err| unreadable(format!("its `{CONFIG_KEY}` metadata: {err}")))?;
    config
        .validate()
        .map_err(|err| unreadable(format!("its recorded config: {err}")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|err| unreadable(err.to_string()))?;
    let reader = Reader {
        file: &file,
        path: path.to_path_buf(),
    };
    let layers = config
        .block_specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| reader.layer(i, spec))
        .collect::<Result<Vec<_>, _>>()?;
    let head = match config.has_head() {
        true => {
            let classes = config.num_classes;
            let weight = reader.floats("linear.weight", &[config.feature_width(), classes])?;
            Some((weight, reader.floats("linear.bias", &[classes])?))
        }
        false => None,
    };
    Ok(Int8Model {
        network: QuantizedNetwork::from_parts(layers, head),
        config,
        classes: metadata
            .get(CLASSES_KEY)
            .map(|lines| lines.lines().map(str::to_string).collect()),
        calibration: metadata.get(CALIBRATION_KEY).cloned().unwrap_or_default(),
    })
}

/// Reads tensors of one file, each checked for its type and shape.
struct Reader<'a> {
    file: &'a SafeTensors<'a>,
    path: PathBuf,
}

impl Reader<'_> {
    fn tensor(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8], DeployError> {
        let unreadable = |message: String| DeployError::Unreadable {
            path: self.path.clone(),
            format: "int8 safetensors",
            source: message.into(),
        };
        let view = self
            .file
            .tensor(name)
            .map_err(|_| unreadable(format!("tensor `{name}` is missing")))?;
        if view.dtype() != dtype || view.shape() != shape {
            return Err(unreadable(format!(
                "tensor `{name}` is {:?} {:?} where {dtype:?} {shape:?} was expected",
                view.dtype(),
                view.shape()
            )));
        }
        Ok(view.data())
    }

    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DeployError> {
        let data = self.tensor(name, Dtype::F32, shape)?;
        Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn layer(&self, i: usize, spec: &BlockSpec) -> Result<QuantizedConv, DeployError> {
        let shape = ConvShape {
            in_channels: spec.in_channels,
            out_channels: spec.out_channels,
            stride: spec.stride,
            groups: spec.groups,
        };
        let weight_shape = [spec.out_channels, 3, 3, spec.in_channels / spec.groups];
        let bias = self.floats(&format!("layer{i}.bias"), &[spec.out_channels])?;
        let input = match self.floats(&format!("layer{i}.input"), &[2])?[..] {
            [scale, zero_point]
                if scale > 0.0 && scale.is_finite() && (0.0..=255.0).contains(&zero_point) =>
            {
                ActivationScale {
                    scale,
                    zero_point: zero_point as u8,
                }
            }
            _ => {
                return Err(DeployError::Unreadable {
                    path: self.path.clone(),
                    format: "int8 safetensors",
                    source: format!("tensor `layer{i}.input` is no scale and zero point").into(),
                });
            }
        };
        let float_name = format!("layer{i}.float_weight");
        if self.file.tensor(&float_name).is_ok() {
            let weight = self.floats(&float_name, &weight_shape)?;
            let mut layer = QuantizedConv::from_f32(shape, weight, bias, input);
            layer.int8 = false;
            return Ok(layer);
        }
        let weight = self
            .tensor(&format!("layer{i}.weight"), Dtype::I8, &weight_shape)?
            .iter()
            .map(|&b| b as i8)
            .collect();
        let scales = self.floats(&format!("layer{i}.weight_scale"), &[spec.out_channels])?;
        Ok(QuantizedConv::from_s8(shape, weight, scales, bias, input))
    }
}
