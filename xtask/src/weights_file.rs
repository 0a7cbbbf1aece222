//! What the commands that read a weights file share: the backend flag, and which architecture
//! the file holds.

use std::path::Path;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::tensor::{Device, DeviceKind};
use clap::ValueEnum;
use repvgg_deploy::{DeployError, Weights, infer_arch};
use repvgg_model::{RepVggArch, RepVggConfig};

/// Where tensor math runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (flex).
    Cpu,
    /// A GPU (or software Vulkan) through wgpu.
    Wgpu,
    /// An NVIDIA GPU (build with `--features cuda`).
    Cuda,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "the CPU (flex)",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "CUDA",
        }
    }

    pub fn device(self) -> Result<Device> {
        match self {
            Backend::Cpu => Ok(Device::flex()),
            Backend::Wgpu => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => {
                anyhow::bail!("xtask was built without CUDA: run `cargo xtask --features cuda ...`")
            }
        }
    }
}

pub fn parse_arch(name: &str) -> Result<RepVggArch, String> {
    RepVggArch::from_name(name).map_err(|err| err.to_string())
}

/// The architecture: from `config` (a JSON file), `arch` (with the checkpoint's class count),
/// the file's own record, or the tensor shapes. Returns a description and the config.
pub fn architecture(
    arch: Option<RepVggArch>,
    config: Option<&Path>,
    weights: &Weights,
    recorded: Option<RepVggConfig>,
) -> Result<(String, RepVggConfig)> {
    let num_classes = weights.get("linear.bias").map(|bias| bias.shape()[0]);
    if let Some(path) = config {
        let config = RepVggConfig::load(path)
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        config.validate()?;
        return Ok((format!("the network of {}", path.display()), config));
    }
    if let Some(arch) = arch {
        let config = arch.config();
        let config = match num_classes {
            Some(n) => config.with_num_classes(n),
            None => config,
        };
        return Ok((arch.to_string(), config));
    }
    if let Some(config) = recorded {
        return Ok(("the network recorded in the file".into(), config));
    }
    let (arch, config) = infer_arch(weights)?;
    Ok((format!("{arch} (inferred from the tensor shapes)"), config))
}

/// Adds what the weights look like to a layout mismatch, when they match a known architecture.
pub fn explain_mismatch(err: DeployError, weights: &Weights) -> anyhow::Error {
    match (&err, infer_arch(weights)) {
        (DeployError::Mismatch { .. }, Ok((arch, _))) => {
            anyhow::anyhow!("{err}\n(the checkpoint looks like {arch})")
        }
        _ => err.into(),
    }
}
