//! What can go wrong while reading, converting, loading and writing checkpoints.

use std::path::PathBuf;

use repvgg_model::{InvalidConfig, UnknownArch, WeightsError};

/// The source of an [`DeployError::Unreadable`] or [`DeployError::Write`]: the reader's or
/// writer's own error (`burn-store`, `safetensors`, the config parser) or a sentence.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// An error of the deploy crate; each names the file, tensor or architecture concerned.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists but is not a checkpoint of its format (corrupt, truncated, other data).
    #[error("{path}: not a readable {format} checkpoint: {source}")]
    Unreadable {
        path: PathBuf,
        format: &'static str,
        source: BoxedError,
    },
    #[error(
        "{path}: unsupported file extension; use .pth/.pt (PyTorch), .safetensors or .bpk (burnpack)"
    )]
    UnsupportedFormat { path: PathBuf },
    /// Writing `.pth` files is not supported (burn-store cannot write pickles).
    #[error(
        "{path}: writing .pth is not supported; write .safetensors (PyTorch reads it with \
         safetensors.torch.load_file) or .bpk"
    )]
    PthOutput { path: PathBuf },
    #[error("{path}: cannot write the checkpoint: {source}")]
    Write { path: PathBuf, source: BoxedError },
    /// A class name that a burnpack file cannot record (one name per line).
    #[error("class name {name:?} contains a line break and cannot be recorded")]
    ClassName { name: String },
    /// A tensor whose shape the format or the ONNX graph rules out (e.g. a 3-D linear weight).
    #[error("tensor `{name}` has shape {shape:?}; expected {expected}")]
    TensorShape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    /// The ONNX model is beyond protobuf's 2 GiB limit (ONNX's external data is not written).
    #[error("the ONNX model would take {bytes} bytes, beyond protobuf's 2 GiB limit for one file")]
    OnnxTooLarge { bytes: usize },
    /// The tensors are not the network's, or the transform failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The weights are not the given architecture's, but they are another reference
    /// architecture's.
    #[error("{source}\n(the checkpoint looks like {detected})")]
    LooksLike {
        source: WeightsError,
        detected: String,
    },
    #[error(transparent)]
    UnknownArch(#[from] UnknownArch),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    /// A config file that cannot be read as a `RepVggConfig`.
    #[error("{path}: not a RepVggConfig JSON file: {message}")]
    ConfigFile { path: PathBuf, message: String },
    /// The tensor shapes describe no RepVGG, or no reference architecture.
    #[error("cannot detect the architecture: {0}")]
    Detection(String),
    /// timm publishes no ImageNet weights for this architecture (it has no g2 variants).
    #[error("no pretrained weights for {arch}: timm publishes them for {available}")]
    NoPretrained { arch: String, available: String },
    /// CPU engine options for a model that is not on Burn's CPU backend.
    #[error("the CPU engine cannot run in {precision}: {reason}")]
    UnsupportedPrecision {
        precision: &'static str,
        reason: String,
    },
    /// CPU engine options this CPU cannot run (bf16 without AVX512_BF16).
    #[cfg(feature = "cpu")]
    #[error(transparent)]
    Cpu(#[from] repvgg_cpu::CpuError),
    /// Downloading pretrained weights failed: bad HTTP status, network error, interrupted
    /// transfer or a file that is not the expected checkpoint.
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
}
