//! What can stop a training run: each error names the file, field or device concerned and
//! carries its cause.

use std::path::PathBuf;
use std::sync::Arc;

use burn::data::dataset::DatasetError;
use burn::store::RecordError;
use repvgg_data::DataError;
use repvgg_deploy::DeployError;
use repvgg_model::WeightsError;

use crate::checkpoint::UnusableCheckpoint;
use crate::config::InvalidTrainingConfig;

/// An error of [`train`](crate::run::train) or [`resume`](crate::run::resume).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config cannot be trained.
    #[error("invalid training config: {0}")]
    Config(#[from] InvalidTrainingConfig),
    /// A `TrainingConfig` JSON file that cannot be read.
    #[error("{}: not a readable TrainingConfig JSON file: {source}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: burn::config::ConfigError,
    },
    /// The data set cannot be indexed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The training and validation folders name different classes.
    #[error(
        "{} and {} hold different class folders (only in the first: {}; only in the second: {})",
        train.display(),
        val.display(),
        list(only_train),
        list(only_val)
    )]
    ClassMismatch {
        /// The training folder.
        train: PathBuf,
        /// The validation folder.
        val: PathBuf,
        /// Classes of the training folder that the validation folder lacks.
        only_train: Vec<String>,
        /// Classes of the validation folder that the training folder lacks.
        only_val: Vec<String>,
    },
    /// The network has fewer outputs than the data set has classes.
    #[error("model.num_classes {num_classes} is smaller than the {found} class folders of {}", data.display())]
    TooFewOutputs {
        /// The network's outputs.
        num_classes: usize,
        /// The class folders found.
        found: usize,
        /// The training folder.
        data: PathBuf,
    },
    /// No device was given.
    #[error("no device to train on")]
    NoDevices,
    /// The global batch does not divide among the devices.
    #[error("the batch size {batch_size} does not split evenly over {devices} devices")]
    BatchSplit {
        /// `recipe.batch_size`.
        batch_size: usize,
        /// The number of devices.
        devices: usize,
    },
    /// The device cannot compute in the config's precision.
    #[error("{device} does not compute in bf16; train in f32")]
    PrecisionUnsupported {
        /// The device, as Burn names it.
        device: String,
    },
    /// bf16-mixed asked for on another device than the CPU's.
    #[error(
        "bf16-mixed runs on the CPU device (flex) with the project's training ops, not on \
         {device}; train in f32, or in bf16 where the device computes in it"
    )]
    MixedPrecisionDevice {
        /// The device, as Burn names it.
        device: String,
    },
    /// bf16-mixed asked for on a CPU without bf16 products.
    #[error(
        "bf16-mixed needs a CPU with AVX512_BF16 (AMD Zen 4 or later, Intel Cooper Lake or \
         Sapphire Rapids or later), which this one lacks; train in f32"
    )]
    MixedPrecisionCpu,
    /// The device's precision could not be set (it was already in use).
    #[error("cannot switch {device} to bf16: {source}")]
    PrecisionSetup {
        /// The device, as Burn names it.
        device: String,
        /// Burn's error.
        source: burn::tensor::DeviceError,
    },
    /// Reading or writing a file of the run directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image loader's threads could not be started.
    #[error("cannot start the image loader's threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// A new run in a directory that holds another run's checkpoints.
    #[error(
        "{} already holds checkpoints (up to epoch {epoch}): resume that run, or choose another \
         output directory",
        path.display()
    )]
    OutputInUse {
        /// The run directory.
        path: PathBuf,
        /// Its last checkpoint.
        epoch: usize,
    },
    /// Resuming a directory that no run wrote.
    #[error("{}: no training.json: not the directory of a training run", path.display())]
    NotARun {
        /// The directory.
        path: PathBuf,
    },
    /// Resuming a run that has not finished an epoch yet.
    #[error("{} holds no checkpoint to resume from", path.display())]
    NothingToResume {
        /// The run directory.
        path: PathBuf,
    },
    /// Every complete checkpoint of the run failed to read back.
    #[error(
        "no usable checkpoint in {}: {}",
        path.display(),
        unusable.iter().map(|c| format!("epoch {}: {}", c.epoch, c.reason)).collect::<Vec<_>>().join("; ")
    )]
    NoUsableCheckpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// Each checkpoint, newest first, and why it cannot be used.
        unusable: Vec<UnusableCheckpoint>,
    },
    /// A checkpoint past the end of the run's schedule.
    #[error("{} holds a checkpoint of epoch {epoch}, beyond the run's {epochs} epochs", path.display())]
    CheckpointBeyondEnd {
        /// The run directory.
        path: PathBuf,
        /// The checkpoint's epoch.
        epoch: usize,
        /// `recipe.epochs`.
        epochs: usize,
    },
    /// The saved EMA cannot be read.
    #[error("reading the EMA of epoch {epoch}: {source}")]
    AverageCheckpoint {
        /// The epoch whose average was read.
        epoch: usize,
        /// Burn's error.
        source: RecordError,
    },
    /// burn-train stopped on an error (data, checkpoint, a failed worker).
    #[error("training failed: {0}")]
    Failed(#[source] Arc<burn::train::TrainingError>),
    /// Training was stopped before its last epoch; the checkpoints let it resume.
    #[error(
        "training interrupted{}; resume the run to continue",
        reason.as_ref().map(|reason| format!(" ({reason})")).unwrap_or_default()
    )]
    Interrupted {
        /// Why, if the interrupter said.
        reason: Option<String>,
    },
    /// A validation batch could not be loaded during the final evaluation.
    #[error("evaluating on the validation set: {0}")]
    Evaluation(#[source] DatasetError),
    /// Converting the trained network or writing a checkpoint failed (boxed, as the next: the
    /// errors of the conversion are large values).
    #[error(transparent)]
    Deploy(Box<DeployError>),
    /// Reading the trained network's tensors failed.
    #[error(transparent)]
    Weights(Box<WeightsError>),
    /// The initial weights (`init`) could not be read or do not fit the run's network.
    #[error("initial weights {init}: {source}")]
    InitialWeights {
        /// The source as configured (`pretrained:a0`, a path).
        init: String,
        /// What went wrong, in conversion's words.
        source: Box<DeployError>,
    },
    /// The initial weights are the re-parameterized network, which has no branches to train.
    #[error(
        "initial weights {}: a deploy-time (re-parameterized) checkpoint has no branches to \
         train; fine-tune from the training-time checkpoint (a run's model.bpk, not \
         model-deploy.bpk)",
        path.display()
    )]
    DeployFormInit {
        /// The file.
        path: PathBuf,
    },
    /// `init` names pretrained weights in a build without the download.
    #[error("initial weights {init}: this build has no pretrained weights (feature `pretrained`)")]
    PretrainedUnavailable {
        /// The source as configured.
        init: String,
    },
}

impl From<DeployError> for TrainError {
    fn from(error: DeployError) -> Self {
        Self::Deploy(Box::new(error))
    }
}

impl From<WeightsError> for TrainError {
    fn from(error: WeightsError) -> Self {
        Self::Weights(Box::new(error))
    }
}

/// Class names for a message: at most ten, "none" for none.
fn list(classes: &[String]) -> String {
    match classes.len() {
        0 => "none".to_string(),
        1..=10 => classes.join(", "),
        n => format!("{} and {} more", classes[..10].join(", "), n - 10),
    }
}

impl TrainError {
    /// An I/O error on `path`, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
