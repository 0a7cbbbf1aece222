//! RepVGG deployment: reading checkpoints of every kind users have (our burnpack files, the
//! PyTorch reference's `.pth`, RepVGGplus's `main.py` checkpoints, timm's safetensors) into a
//! ready network ([`TrainingNetwork`] or [`DeployNetwork`], RepVGG or RepVGGplus) with its
//! architecture resolved, writing deploy checkpoints the reference loads and ONNX graphs for the deployment
//! engines ([`onnx`], default feature `onnx`), and [`DeployModel`], the deploy
//! network for inference with a fast path on the CPU ([`CpuDeploy`], default feature
//! `cpu-path`). The re-parameterization itself lives with the networks, in `repvgg-model`.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use repvgg_deploy::DeployModel;
//! use repvgg_model::RepVggConfig;
//!
//! let device = Device::flex();
//! let trained = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(3).init(&device);
//! let model = DeployModel::from_training(&trained)?; // one call: fused and prepared
//! let images = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device);
//! assert_eq!(model.forward(images).dims(), [1, 3]);
//! # Ok::<(), repvgg_deploy::DeployError>(())
//! ```

mod checkpoint;
#[cfg(feature = "cpu-path")]
mod cpu;
mod deploy_model;
mod detect;
mod error;
mod load;
mod network;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "pretrained")]
mod pretrained;
mod timing;

pub use checkpoint::{Checkpoint, Form, Format, read_checkpoint, write_checkpoint};
#[cfg(feature = "cpu-path")]
pub use cpu::{ConvAlgorithm, CpuDeploy, CpuOptions, CpuPrecision, LayerTime, WinogradTile};
pub use deploy_model::DeployModel;
pub use detect::{DetectedLayout, detect_arch};
pub use error::{BoxedError, DeployError};
pub use load::{
    ArchSource, LoadedModel, ResolvedCheckpoint, load_checkpoint, resolve_architecture,
};
pub use network::{DeployNetwork, TrainingNetwork};
#[cfg(feature = "pretrained")]
pub use pretrained::{
    DEFAULT_PRETRAINED_URL, PRETRAINED_ARCHS, PretrainedOptions, download_pretrained, pretrained,
    pretrained_with,
};
pub use timing::{images_per_second, median_millis};
