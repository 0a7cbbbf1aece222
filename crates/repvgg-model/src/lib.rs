//! RepVGG for Burn: every reference architecture (and RepVGGplus-L2pse, with its auxiliary
//! heads: [`RepVggPlus`]), in its training-time (multi-branch) and
//! deploy-time (plain 3x3 convolution) forms, on whichever backend the caller's `Device` picks,
//! and the re-parameterization that turns one into the other: on a module
//! ([`Reparameterize::reparameterize`]), on named tensors ([`reparameterize`]), or for a RepVGG
//! nested in a bigger module ([`reparameterize_nested`]).
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use repvgg_model::RepVggArch;
//!
//! let device = Device::flex();
//! let config = RepVggArch::from_name("RepVGG-A0")?.config().with_num_classes(10);
//! let model = config.init(&device);
//! let images = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
//! assert_eq!(model.forward(images.clone()).dims(), [1, 10]);
//! let features = model.forward_features(images);
//! assert_eq!(features.len(), 5);
//! assert_eq!(features[4].dims(), [1, 1280, 2, 2]);
//!
//! let backbone = RepVggArch::A0.config().with_num_classes(0).init(&device); // no classifier
//! assert!(backbone.linear.is_none());
//! # Ok::<(), repvgg_model::UnknownArch>(())
//! ```
//!
//! Module paths equal the reference implementation's state-dict keys
//! (`stage1.0.rbr_dense.conv.weight`, `stage0.rbr_reparam.bias`, `linear.weight`, ...).

mod block;
mod compare;
mod complexity;
mod config;
mod device;
mod error;
mod family;
mod inspect;
mod network;
mod plus;
mod reparam;
mod se;
mod size;
mod weights;

pub use block::{Block, ConvBn, RepVggBlock, RepVggDeployBlock};
pub use compare::{LogitDifference, logit_difference};
pub use complexity::{MacCounts, ParamCounts};
pub use config::{
    BlockDesign, BlockSpec, IN_CHANNELS, InvalidConfig, MAX_BLOCKS_PER_STAGE, MAX_CHANNELS,
    MAX_CLASSES, MAX_PARAMS, PlusLayout, RepVggArch, RepVggConfig, UnknownArch,
};
pub use device::{DeviceChoice, DeviceError};
pub use error::{WeightsError, list_names};
pub use family::{DeployNetwork, TrainingNetwork};
pub use inspect::{TensorInfo, deploy_layout, num_trainable_params, tensor_infos, training_layout};
pub use network::{RepVgg, RepVggDeploy, RepVggNetwork, global_average_pool};
pub use plus::{AuxHead, PlusOutput, PlusStage, RepVggPlus, RepVggPlusDeploy, RepVggPlusNetwork};
pub use reparam::{
    Reparameterize, bn_scale, reparameterize, reparameterize_at, reparameterize_nested,
};
pub use se::SqueezeExcite;
pub use size::{ImageSize, MIN_IMAGE_SIDE};
pub use weights::Weights;
