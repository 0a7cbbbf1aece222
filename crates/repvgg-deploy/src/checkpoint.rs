//! Reading and writing checkpoints: our burnpack files, PyTorch `.pth` files of the reference
//! implementation, timm safetensors, and safetensors in the reference's naming.
//!
//! Whatever the source, weights come out named by Burn module path (reference key names, BN
//! `gamma`/`beta`, linear weight `[d_in, d_out]`).

use std::fs;
use std::path::{Path, PathBuf};

use burn::config::{Config, config_to_json};
use burn::tensor::TensorData;
use burn_store::burn_pack;
use burn_store::pytorch_reader::PytorchReader;
use burn_store::{KeyRemapper, ModuleStore, SafetensorsStore, bridge};
use repvgg_model::{RepVggConfig, Weights};

use crate::error::{BoxedError, DeployError};

/// Burnpack metadata key holding the architecture config as JSON.
const CONFIG_KEY: &str = "repvgg.config";
/// Burnpack metadata key of the class names, one per line.
const CLASSES_KEY: &str = "repvgg.classes";

/// Which form of the network a set of weights belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Three branches per block (`rbr_dense`, `rbr_1x1`, `rbr_identity`).
    Training,
    /// One fused 3x3 convolution per block (`rbr_reparam`).
    Deploy,
}

impl Form {
    /// The form whose tensors these are.
    pub fn of(weights: &Weights) -> Self {
        match weights.names().any(|name| name.contains(".rbr_reparam.")) {
            true => Form::Deploy,
            false => Form::Training,
        }
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::Training => "training-time",
            Form::Deploy => "deploy-time",
        })
    }
}

/// File formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.pth` / `.pt`: a PyTorch pickle (reference naming, possibly wrapped or prefixed).
    Pytorch,
    /// `.safetensors`: timm or reference naming, PyTorch layout.
    Safetensors,
    /// `.bpk`: burnpack, Burn naming, with the config in its metadata.
    Burnpack,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self, DeployError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("pth" | "pt") => Ok(Format::Pytorch),
            Some("safetensors") => Ok(Format::Safetensors),
            Some("bpk") => Ok(Format::Burnpack),
            _ => Err(DeployError::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Pytorch => "PyTorch",
            Format::Safetensors => "safetensors",
            Format::Burnpack => "burnpack",
        }
    }
}

/// The contents of a checkpoint file.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Weights named by Burn module path.
    pub weights: Weights,
    pub form: Form,
    /// The architecture, when the file records it (our burnpack files do).
    pub config: Option<RepVggConfig>,
    /// The class names, index by index, when the file records them (burnpack files written by
    /// training do).
    pub classes: Option<Vec<String>>,
}

/// Reads a checkpoint in any supported format (see [`Format`]).
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, DeployError> {
    let format = Format::of(path)?;
    let metadata = fs::metadata(path).map_err(|source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let unreadable = |source: BoxedError| DeployError::Unreadable {
        path: path.to_path_buf(),
        format: format.name(),
        source,
    };
    if !metadata.is_file() {
        return Err(unreadable("not a file".into()));
    }
    if metadata.len() == 0 {
        return Err(unreadable("the file is empty".into()));
    }
    let (tensors, config, classes) = match format {
        Format::Pytorch => (read_pytorch(path).map_err(unreadable)?, None, None),
        Format::Safetensors => (read_safetensors(path).map_err(unreadable)?, None, None),
        Format::Burnpack => read_burnpack(path).map_err(unreadable)?,
    };
    let weights = match format {
        Format::Burnpack => tensors.into_iter().collect(),
        Format::Pytorch | Format::Safetensors => from_pytorch_naming(tensors)?,
    };
    if weights.is_empty() {
        return Err(unreadable("it holds no RepVGG tensors".into()));
    }
    if let Some(name) = weights.first_non_finite() {
        return Err(unreadable(
            format!(
                "tensor `{name}` holds NaN or infinite values (a diverged run?); refusing to use it"
            )
            .into(),
        ));
    }
    Ok(Checkpoint {
        form: Form::of(&weights),
        weights,
        config,
        classes,
    })
}

type NamedData = Vec<(String, TensorData)>;

fn read_pytorch(path: &Path) -> Result<NamedData, BoxedError> {
    let reader = PytorchReader::new(path)?;
    let packs = reader
        .into_tensors()
        .into_values()
        .map(bridge::from_pytorch);
    let (packs, _) = pytorch_to_burn().remap(packs.collect());
    packs
        .into_iter()
        .map(|pack| {
            let name = pack.name.clone();
            bridge::into_data(pack)
                .map(|data| (name.clone(), data))
                .map_err(|err| -> BoxedError { format!("tensor {name}: {err}").into() })
        })
        .collect()
}

fn read_safetensors(path: &Path) -> Result<NamedData, BoxedError> {
    let mut store = SafetensorsStore::from_file(path).remap(pytorch_to_burn());
    let tensors = store.get_all_tensors()?;
    tensors
        .iter()
        .map(|(name, tensor)| {
            bridge::to_data(tensor)
                .map(|data| (name.clone(), data))
                .map_err(|err| -> BoxedError { format!("tensor {name}: {err}").into() })
        })
        .collect()
}

/// timm's names to the reference's, and the reference's to Burn's module paths, as burn-store
/// remapping patterns applied in order to every key of a PyTorch or safetensors file. `(^|\.)`
/// lets a wrapper (`module.`, `state_dict.` ...) stand before a root name.
const PYTORCH_TO_BURN: [(&str, &str); 17] = [
    // timm: `stem` and `stages.{N-1}` are the reference's stage0 and stageN.
    (r"(^|\.)stem\.", "${1}stage0."),
    (r"(^|\.)stages\.0\.", "${1}stage1."),
    (r"(^|\.)stages\.1\.", "${1}stage2."),
    (r"(^|\.)stages\.2\.", "${1}stage3."),
    (r"(^|\.)stages\.3\.", "${1}stage4."),
    (r"\.conv_kxk\.", ".rbr_dense."),
    (r"\.conv_1x1\.", ".rbr_1x1."),
    (r"\.identity\.", ".rbr_identity."),
    (r"\.attn\.fc1\.", ".se.down."),
    (r"\.attn\.fc2\.", ".se.up."),
    (r"\.reparam_conv\.", ".rbr_reparam."),
    (r"(^|\.)head\.fc\.", "${1}linear."),
    // QARepVGG (YOLOv6's keys): the 1x1 branch is a bare convolution.
    (r"\.rbr_1x1\.weight$", ".rbr_1x1.conv.weight"),
    // RepVGGplus's auxiliary heads: the reference numbers their layers, our modules name them.
    (r"_aux\.0\.", "_aux.conv_bn."),
    (r"_aux\.3\.", "_aux.linear."),
    // A batch norm's `weight` and `bias` are Burn's `gamma` and `beta`.
    (r"(\.bn|\.rbr_identity)\.weight$", "${1}.gamma"),
    (r"(\.bn|\.rbr_identity)\.bias$", "${1}.beta"),
];

/// The remapper of [`PYTORCH_TO_BURN`].
fn pytorch_to_burn() -> KeyRemapper {
    KeyRemapper::from_patterns(PYTORCH_TO_BURN.to_vec()).expect("the patterns are valid regexes")
}

type BurnpackContents = (NamedData, Option<RepVggConfig>, Option<Vec<String>>);

fn read_burnpack(path: &Path) -> Result<BurnpackContents, BoxedError> {
    let reader = burn_pack::Reader::from_file(path)?;
    let config = match reader.metadata().get(CONFIG_KEY) {
        Some(json) => Some(
            RepVggConfig::load_binary(json.as_bytes())
                .map_err(|err| format!("its {CONFIG_KEY} metadata: {err}"))
                .and_then(|config| {
                    config
                        .validate()
                        .map(|()| config)
                        .map_err(|err| format!("its recorded config: {err}"))
                })?,
        ),
        None => None,
    };
    let classes = reader
        .metadata()
        .get(CLASSES_KEY)
        .map(|lines| lines.lines().map(str::to_string).collect());
    let tensors = reader
        .into_tensors()?
        .into_iter()
        .map(|tensor| {
            let name = tensor.name.clone();
            bridge::into_data(tensor)
                .map(|data| (name.clone(), data))
                .map_err(|err| -> BoxedError { format!("tensor {name}: {err}").into() })
        })
        .collect::<Result<_, _>>()?;
    Ok((tensors, config, classes))
}

/// Tensors in PyTorch layout, named as Burn's modules by [`PYTORCH_TO_BURN`], to Burn's layout.
/// Wrappers (`state_dict.`, `model.`, `module.` ...) are stripped, `num_batches_tracked`
/// dropped.
fn from_pytorch_naming(tensors: NamedData) -> Result<Weights, DeployError> {
    // The outermost model found, e.g. `state_dict.` rather than a nested `ema.state_dict.`.
    let prefix = tensors
        .iter()
        .filter_map(|(name, _)| model_prefix(name))
        .min_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
        .unwrap_or_default();
    let mut weights = Weights::default();
    for (name, data) in tensors {
        let Some(name) = name.strip_prefix(&prefix) else {
            continue; // Other entries of a wrapping dict, e.g. optimizer state.
        };
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let name = name.to_string();
        let data = match is_linear_weight(&name) {
            true => transpose(data, &name)?,
            false => data,
        };
        weights.insert(name, data);
    }
    Ok(weights)
}

/// What stands before the model's own keys in `name` (`""`, `"module."`,
/// `"state_dict.module."` ...), if `name` is a model key.
fn model_prefix(name: &str) -> Option<String> {
    let at = name.find("stage0.")?;
    (at == 0 || name[..at].ends_with('.')).then(|| name[..at].to_string())
}

/// RepVGGplus's auxiliary heads named as the reference numbers their layers
/// (`stage1_aux.conv_bn.` to `stage1_aux.0.`, `stage1_aux.linear.` to `stage1_aux.3.`); other
/// names are returned unchanged. The inverse of the `_aux` patterns of [`PYTORCH_TO_BURN`].
fn reference_aux_head_name(name: &str) -> String {
    const LAYERS: [(&str, &str); 2] = [("conv_bn.", "0."), ("linear.", "3.")];
    let Some((head, rest)) = name.split_once("_aux.") else {
        return name.to_string();
    };
    LAYERS
        .iter()
        .find_map(|(named, numbered)| {
            rest.strip_prefix(named)
                .map(|tail| format!("{head}_aux.{numbered}{tail}"))
        })
        .unwrap_or_else(|| name.to_string())
}

/// Whether `name` is a linear layer's weight, stored `[d_out, d_in]` by PyTorch and
/// `[d_in, d_out]` by Burn: the classifier's or an auxiliary head's.
fn is_linear_weight(name: &str) -> bool {
    name == "linear.weight" || (name.contains("_aux.") && name.ends_with(".linear.weight"))
}

/// Burn BN names back to PyTorch's.
fn pytorch_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((module, "gamma")) => format!("{module}.weight"),
        Some((module, "beta")) => format!("{module}.bias"),
        _ => name.to_string(),
    }
}

fn transpose(data: TensorData, name: &str) -> Result<TensorData, DeployError> {
    let [rows, cols] = data.shape().as_slice() else {
        return Err(DeployError::TensorShape {
            name: name.into(),
            shape: data.shape().to_vec(),
            expected: "2 dimensions".into(),
        });
    };
    let (rows, cols) = (*rows, *cols);
    let values: Vec<f32> = data.convert::<f32>().iter::<f32>().collect();
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    Ok(TensorData::new(out, [cols, rows]))
}

/// Writes weights to `path` in the format its extension names, atomically (a temporary file
/// in the same directory, then a rename). Burnpack keeps Burn naming and records `config`;
/// safetensors uses the reference's naming and PyTorch layout, loadable with `strict=True`.
/// `classes` (the name of each output, as training saw them) is recorded in burnpack files.
pub fn write_checkpoint(
    weights: &Weights,
    config: &RepVggConfig,
    classes: Option<&[String]>,
    path: &Path,
) -> Result<(), DeployError> {
    let format = Format::of(path)?;
    write_atomically(path, |temporary| match format {
        Format::Burnpack => write_burnpack(weights, config, classes, temporary),
        Format::Safetensors => write_safetensors(weights, config, temporary),
        Format::Pytorch => Err(DeployError::PthOutput {
            path: path.to_path_buf(),
        }),
    })
}

/// Writes `path` through `write`, which is given a temporary path in the same directory: the
/// file appears complete under its name (a rename) or not at all (the temporary file is removed
/// on failure).
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), DeployError>,
) -> Result<(), DeployError> {
    let io_error = |source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    };
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !directory.is_dir() {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the directory {} does not exist", directory.display()),
        )));
    }
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let temporary = directory.join(format!(".{file_name}.{}.tmp", std::process::id()));
    match write(&temporary).and_then(|()| fs::rename(&temporary, path).map_err(io_error)) {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = fs::remove_file(&temporary);
            Err(err)
        }
    }
}

fn write_burnpack(
    weights: &Weights,
    config: &RepVggConfig,
    classes: Option<&[String]>,
    path: &Path,
) -> Result<(), DeployError> {
    let tensors = weights
        .iter()
        .map(|(name, data)| bridge::from_data(data.clone(), name.to_string(), None))
        .collect();
    let mut writer =
        burn_pack::Writer::new(tensors).with_metadata(CONFIG_KEY, &config_to_json(config));
    if let Some(classes) = classes {
        if let Some(bad) = classes.iter().find(|name| name.contains(['\n', '\r'])) {
            return Err(DeployError::ClassName { name: bad.clone() });
        }
        writer = writer.with_metadata(CLASSES_KEY, &classes.join("\n"));
    }
    writer
        .overwrite(true)
        .write_to_file(path)
        .map_err(|err| write_error(path, err))
}

fn write_safetensors(
    weights: &Weights,
    config: &RepVggConfig,
    path: &Path,
) -> Result<(), DeployError> {
    let mut tensors = Vec::with_capacity(weights.len());
    for (name, data) in weights.iter() {
        let data = match is_linear_weight(name) {
            true => transpose(data.clone(), name)?,
            false => data.clone(),
        };
        let shape = data.shape().to_vec();
        let bytes = data.into_bytes().to_vec();
        let mut name = reference_aux_head_name(&pytorch_name(name));
        if config.is_quantization_aware() {
            // QARepVGG's 1x1 branch is a bare convolution in YOLOv6's keys.
            name = name.replace(".rbr_1x1.conv.weight", ".rbr_1x1.weight");
        }
        tensors.push((name, shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| write_error(path, err))?;
    safetensors::serialize_to_file(views, None, path).map_err(|err| write_error(path, err))?;
    // The crate writes through a private (0600) temporary file; a model file is for others to
    // read, as the other formats' files are.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .map_err(|err| write_error(path, err))?;
    }
    Ok(())
}

fn write_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> DeployError {
    DeployError::Write {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}
