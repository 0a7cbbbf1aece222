//! Choosing where tensors live: the one device-choice type that every binary, example and test
//! of the workspace maps its `--device` flag (or `REPVGG_DEVICE`) onto.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A Burn backend, by the name users type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// Burn's pure-Rust CPU backend (flex).
    #[default]
    Cpu,
    /// Vulkan, Metal, DX12 or WebGPU through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`).
    Cuda,
}

/// A device that cannot be had: a backend this build left out, or a bad selection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`; use cpu, wgpu or cuda")]
    Unknown(String),
    #[error("this build has no {0} backend: rebuild with `--features {0}`")]
    NotBuilt(&'static str),
    #[error("{0}")]
    Selection(String),
}

impl DeviceChoice {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [DeviceChoice; 3] = [Self::Cpu, Self::Wgpu, Self::Cuda];

    /// The lower-case name (`cpu`, `wgpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// The backend to train on when none is named: CUDA in a build that has it, else the CPU.
    /// wgpu is never the default: builds carry it for any machine, and on one without a GPU its
    /// adapter is missing or a software renderer.
    pub fn training_default() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else {
            Self::Cpu
        }
    }

    /// The choice named by the environment variable `variable` (e.g. `REPVGG_DEVICE`), or the
    /// CPU when it is unset or empty.
    pub fn from_env(variable: &str) -> Result<Self, DeviceError> {
        match std::env::var(variable) {
            Ok(name) if !name.is_empty() => name.parse(),
            _ => Ok(Self::Cpu),
        }
    }

    /// The first device of this backend.
    pub fn device(self) -> Result<Device, DeviceError> {
        self.devices(&[]).map(|mut devices| devices.remove(0))
    }

    /// The devices `indices` select (GPU ordinals; empty for the first). Only CUDA has several.
    pub fn devices(self, indices: &[usize]) -> Result<Vec<Device>, DeviceError> {
        let indices = if indices.is_empty() {
            &[0][..]
        } else {
            indices
        };
        let single = |what: &str| match indices {
            [0] => Ok(()),
            _ => Err(DeviceError::Selection(format!(
                "{what} is one device; several devices need CUDA"
            ))),
        };
        match self {
            Self::Cpu => single("the CPU").map(|()| vec![Device::flex()]),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => single("wgpu's default adapter")
                .map(|()| vec![Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)]),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(DeviceError::NotBuilt("wgpu")),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(indices.iter().map(|&i| Device::cuda(i)).collect()),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err(DeviceError::NotBuilt("cuda")),
        }
    }

    /// How the device is named in messages: "the CPU (flex)", "wgpu", "CUDA".
    pub fn description(self) -> &'static str {
        match self {
            Self::Cpu => "the CPU (flex)",
            Self::Wgpu => "wgpu",
            Self::Cuda => "CUDA",
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|choice| choice.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| DeviceError::Unknown(name.to_string()))
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
