//! One call from a checkpoint file to a ready network, with the architecture resolved by one
//! rule: an explicit config, else an explicit preset, else the config the file records, else
//! the tensor shapes.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::tensor::{Device, Tensor};
use repvgg_model::{
    DeployNetwork, RepVggArch, RepVggConfig, Reparameterize, TrainingNetwork, Weights,
    WeightsError, deploy_layout,
};

use crate::checkpoint::{Checkpoint, Form, read_checkpoint};
use crate::detect::detect_arch;
use crate::error::DeployError;

/// Where the architecture of a checkpoint comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ArchSource {
    /// The config the file records (our burnpack files), else detection from the tensor shapes.
    #[default]
    Auto,
    /// A reference preset; the number of classes (and whether there is a head) is taken from
    /// the file.
    Preset(RepVggArch),
    /// An explicit configuration (custom networks).
    Config(RepVggConfig),
    /// A `RepVggConfig` JSON file, as `RepVggConfig::save` writes it.
    ConfigFile(PathBuf),
}

/// A checkpoint whose architecture is known.
#[derive(Clone, Debug)]
pub struct ResolvedCheckpoint {
    /// What was read.
    pub checkpoint: Checkpoint,
    /// The architecture the weights are checked and loaded against.
    pub config: RepVggConfig,
    /// Where `config` came from, for messages: "RepVGG-A0 (detected from the tensor shapes)".
    pub description: String,
}

impl ResolvedCheckpoint {
    /// Reads `path` and resolves its architecture from `source`.
    pub fn read(path: &Path, source: &ArchSource) -> Result<Self, DeployError> {
        let checkpoint = read_checkpoint(path)?;
        let (config, description) = resolve_architecture(source, &checkpoint)?;
        Ok(Self {
            checkpoint,
            config,
            description,
        })
    }

    /// Which form the weights are in.
    pub fn form(&self) -> Form {
        self.checkpoint.form
    }

    /// The network the file holds, in its own form, on `device` (strictly loaded).
    pub fn into_model(self, device: &Device) -> Result<LoadedModel, DeployError> {
        let weights = &self.checkpoint.weights;
        let what = format!("{}, {} form", self.description, self.checkpoint.form);
        let explain = |err: WeightsError| explain_mismatch(err, weights);
        Ok(match self.checkpoint.form {
            Form::Training => LoadedModel::Training(
                TrainingNetwork::load(weights, &self.config, device, &what).map_err(explain)?,
            ),
            Form::Deploy => LoadedModel::Deploy(
                DeployNetwork::load(weights, &self.config, device, &what).map_err(explain)?,
            ),
        })
    }

    /// The deploy-time weights: re-parameterized on `device` when the file is training-time,
    /// the file's own (checked against the deploy layout, not copied) when it already is
    /// deploy-time.
    pub fn deploy_weights(&self, device: &Device) -> Result<Cow<'_, Weights>, DeployError> {
        let weights = &self.checkpoint.weights;
        let explain = |err: WeightsError| explain_mismatch(err, weights);
        match self.checkpoint.form {
            Form::Training => repvgg_model::reparameterize(weights, &self.config, device)
                .map(Cow::Owned)
                .map_err(explain),
            Form::Deploy => {
                let layout = deploy_layout(&self.config, device);
                let what = format!("{}, deploy form", self.description);
                weights.check_layout(&layout, &what).map_err(explain)?;
                Ok(Cow::Borrowed(weights))
            }
        }
    }
}

/// A network of either form, as a checkpoint or the pretrained weights give it.
#[derive(Debug)]
pub enum LoadedModel {
    /// The three-branch training-time network (to fine-tune or evaluate it as trained).
    Training(TrainingNetwork),
    /// The plain deploy-time network.
    Deploy(DeployNetwork),
}

impl LoadedModel {
    /// Which form this is.
    pub fn form(&self) -> Form {
        match self {
            Self::Training(_) => Form::Training,
            Self::Deploy(_) => Form::Deploy,
        }
    }

    /// Logits (or pooled features of a headless network), `[N, 3, H, W]` to `[N, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Training(model) => model.forward(images),
            Self::Deploy(model) => model.forward(images),
        }
    }

    /// The training-time network, if this is one.
    pub fn into_training(self) -> Option<TrainingNetwork> {
        match self {
            Self::Training(model) => Some(model),
            Self::Deploy(_) => None,
        }
    }

    /// The deploy-time network: re-parameterized if this is the training-time one.
    pub fn into_deploy(self) -> Result<DeployNetwork, DeployError> {
        match self {
            Self::Training(model) => Ok(model.reparameterize()?),
            Self::Deploy(model) => Ok(model),
        }
    }
}

/// Reads a checkpoint of any supported format (see [`crate::Format`]) into the network it holds,
/// in its own form, on `device`.
///
/// ```no_run
/// use burn::tensor::Device;
/// use repvgg_deploy::{ArchSource, load_checkpoint};
///
/// let model = load_checkpoint("repvgg_a0.pth".as_ref(), &ArchSource::Auto, &Device::flex())?;
/// let deploy = model.into_deploy()?; // re-parameterized if the file was training-time
/// # Ok::<(), repvgg_deploy::DeployError>(())
/// ```
pub fn load_checkpoint(
    path: &Path,
    source: &ArchSource,
    device: &Device,
) -> Result<LoadedModel, DeployError> {
    ResolvedCheckpoint::read(path, source)?.into_model(device)
}

/// The architecture of `checkpoint`, by the one rule (see [`ArchSource`]), with a description.
fn resolve_architecture(
    source: &ArchSource,
    checkpoint: &Checkpoint,
) -> Result<(RepVggConfig, String), DeployError> {
    let weights = &checkpoint.weights;
    let (config, description) = match source {
        ArchSource::Config(config) => (config.clone(), "the given network".to_string()),
        ArchSource::ConfigFile(path) => {
            let config = RepVggConfig::load(path).map_err(|err| DeployError::ConfigFile {
                path: path.clone(),
                message: err.to_string(),
            })?;
            (config, format!("the network of {}", path.display()))
        }
        ArchSource::Preset(arch) => {
            let config = match weights.num_classes() {
                Some(classes) => arch.config().with_num_classes(classes),
                None => arch.config(),
            };
            with_blocks_of(weights, config, arch.to_string())
        }
        ArchSource::Auto => match &checkpoint.config {
            Some(config) => (config.clone(), "the network recorded in the file".into()),
            None => {
                let (arch, config) = detect_arch(weights)?;
                let description = format!("{arch} (detected from the tensor shapes)");
                with_blocks_of(weights, config, description)
            }
        },
    };
    config.validate()?;
    Ok((config, description))
}

/// A reference architecture's `config` with QARepVGG's blocks when `weights` are a QARepVGG's
/// training-time tensors (its stem has the batch norm of the branch sum, `stage0.bn`), which the
/// preset's name alone does not say.
fn with_blocks_of(
    weights: &Weights,
    config: RepVggConfig,
    description: String,
) -> (RepVggConfig, String) {
    match weights.get("stage0.bn.gamma") {
        Some(_) => (
            config.quantization_aware(),
            format!("{description} with QARepVGG blocks"),
        ),
        None => (config, description),
    }
}

/// Adds what the weights look like to a layout mismatch, when they match a reference
/// architecture.
fn explain_mismatch(err: WeightsError, weights: &Weights) -> DeployError {
    match (&err, detect_arch(weights)) {
        (WeightsError::Mismatch { .. }, Ok((arch, _))) => DeployError::LooksLike {
            source: err,
            detected: arch.to_string(),
        },
        _ => err.into(),
    }
}
