//! What can go wrong with a set of named tensors: a layout that is not the network's, a tensor
//! that cannot be read or written.

use crate::config::InvalidConfig;

/// How many names an error message lists before summarising the rest.
const LISTED: usize = 5;

/// An error of the weights and of the re-parameterization; each names the tensors concerned.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The tensors are not exactly the module's: some are missing, left over or misshapen.
    #[error(
        "weights do not match {what}: {}",
        describe_mismatch(missing, unexpected, wrong_shape)
    )]
    Mismatch {
        /// The module the weights were checked against, e.g. "the RepVGG-A0 deploy network".
        what: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        wrong_shape: Vec<String>,
    },
    /// A tensor's bytes could not be turned into values (or back).
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        source: burn_store::burn_pack::Error,
    },
    /// Burn refused to load a tensor into the module.
    #[error("loading into {what}: {source} ({count} errors in all)")]
    Apply {
        what: String,
        count: usize,
        source: Box<burn_store::ApplyError>,
    },
    /// A nested network was looked for under a module path that holds no tensors.
    #[error("no tensors under the module path `{prefix}`")]
    NoTensorsUnder { prefix: String },
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
}

impl WeightsError {
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

/// `names` as `a, b, c and 4 more`.
pub fn list_names(names: &[String]) -> String {
    let shown = names[..names.len().min(LISTED)].join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}
