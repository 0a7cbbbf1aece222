//! Deploying RepVGG: checkpoints of every kind users have (our burnpack files, the PyTorch
//! reference's `.pth`, RepVGGplus's `main.py` checkpoints, timm's safetensors) read into a ready
//! network with its architecture resolved, deploy checkpoints written in the reference's naming,
//! ONNX graphs for the deployment engines, and [`DeployModel`]: the deploy-time network for
//! inference, on the CPU engine of `repvgg-cpu` where the model lives on Burn's CPU backend.
//! The re-parameterization itself lives with the networks, in `repvgg-model`.
//!
//! - Read: [`load_checkpoint`] (any file, either form, into the network it holds),
//!   [`DeployModel::load`] (straight to the fast deploy model), [`ResolvedCheckpoint::read`]
//!   (the tensors and the architecture, before building anything), [`read_checkpoint`] (the
//!   tensors alone). The architecture comes from one rule: [`ArchSource`].
//! - Write: [`write_checkpoint`] (`.bpk`, or `.safetensors` the reference loads), and [`onnx`].
//! - Pretrained weights (feature `pretrained`): `pretrained(arch, form, device)`.
//!
//! Features: `cpu` (default) the CPU engine, `onnx` (default) the ONNX export, `pretrained` the
//! download of timm's ImageNet weights.
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
mod deploy_model;
mod detect;
mod error;
#[cfg(feature = "cpu")]
mod int8_file;
mod load;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "pretrained")]
mod pretrained;
pub mod timing;

pub use checkpoint::{Checkpoint, Form, Format, read_checkpoint, write_checkpoint};
pub use deploy_model::DeployModel;
pub use detect::detect_arch;
pub use error::{BoxedError, DeployError};
#[cfg(feature = "cpu")]
pub use int8_file::{Int8Model, is_int8_file, read_int8, write_int8};
pub use load::{ArchSource, LoadedModel, ResolvedCheckpoint, load_checkpoint};
#[cfg(feature = "pretrained")]
pub use pretrained::{
    DEFAULT_ENDPOINT, PRETRAINED_ARCHS, PretrainedEval, PretrainedOptions, WEIGHTS_FILE,
    download_pretrained, pretrained, pretrained_with,
};
/// Int8 post-training quantization (`repvgg-cpu`'s): calibration and the int8 network.
#[cfg(feature = "cpu")]
pub use repvgg_cpu::int8;
#[cfg(feature = "cpu")]
pub use repvgg_cpu::{ConvAlgorithm, CpuEngine, CpuOptions, CpuPrecision, WinogradTile};
