//! What can go wrong while reading, converting and writing weights.

use std::path::PathBuf;

use repvgg_model::{InvalidConfig, UnknownArch};

use crate::weights::list_names;

/// An error of the deploy crate; each names the file, tensor or architecture concerned.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable {format} checkpoint: {message}")]
    Unreadable {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error(
        "{path}: unsupported file extension; use .pth/.pt (PyTorch), .safetensors or .bpk (burnpack)"
    )]
    UnsupportedFormat { path: PathBuf },
    #[error("{0}")]
    Format(String),
    #[error(
        "weights do not match {what}: {}",
        describe_mismatch(missing, unexpected, wrong_shape)
    )]
    Mismatch {
        what: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        wrong_shape: Vec<String>,
    },
    #[error(transparent)]
    UnknownArch(#[from] UnknownArch),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error("cannot infer the architecture: {0}")]
    Inference(String),
    /// timm publishes no ImageNet weights for this architecture (it has no g2 variants).
    #[error("no pretrained weights for {arch}: timm publishes them for {available}")]
    NoPretrained { arch: String, available: String },
    /// Downloading pretrained weights failed: bad HTTP status, network error, interrupted
    /// transfer or a file that is not the expected checkpoint.
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
}

impl DeployError {
    pub(crate) fn mismatch(
        what: impl Into<String>,
        missing: Vec<String>,
        unexpected: Vec<String>,
        wrong_shape: Vec<String>,
    ) -> Self {
        Self::Mismatch {
            what: what.into(),
            missing,
            unexpected,
            wrong_shape,
        }
    }
}

fn describe_mismatch(missing: &[String], unexpected: &[String], wrong_shape: &[String]) -> String {
    let mut parts = Vec::new();
    for (names, label) in [
        (missing, "missing"),
        (unexpected, "unexpected"),
        (wrong_shape, "with the wrong shape"),
    ] {
        if !names.is_empty() {
            parts.push(format!("{} {label} ({})", names.len(), list_names(names)));
        }
    }
    parts.join("; ")
}
