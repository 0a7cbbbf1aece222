//! RepVGG deployment: re-parameterization of training-time weights into the plain deploy-time
//! network, as a transform on named tensors (no network needs to be built or trained),
//! checkpoint interop with the PyTorch reference implementation and timm, and [`DeployModel`],
//! the deploy network for inference with a fast path on the CPU ([`CpuDeploy`]).
//!
//! ```
//! use burn::tensor::Device;
//! use repvgg_deploy::{Weights, reparameterize};
//! use repvgg_model::RepVggConfig;
//!
//! let device = Device::flex();
//! let config = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(3);
//! let training = Weights::from_module(&config.init(&device))?;
//! let deploy = reparameterize(&training, &config, &device)?;
//! let plain = deploy.load_into(config.init_deploy(&device), "the deploy network")?;
//! let model = repvgg_deploy::DeployModel::new(plain); // `model.forward(images)`: logits
//! # Ok::<(), repvgg_deploy::DeployError>(())
//! ```

mod checkpoint;
mod compare;
mod cpu;
mod deploy_model;
mod error;
mod fuse;
mod infer;
#[cfg(feature = "pretrained")]
mod pretrained;
mod weights;

pub use checkpoint::{Checkpoint, Form, Format, read_checkpoint, write_checkpoint};
pub use compare::{LogitDifference, logit_difference};
pub use cpu::CpuDeploy;
pub use deploy_model::DeployModel;
pub use error::DeployError;
pub use fuse::{reparameterize, reparameterize_model};
pub use infer::{InferredLayout, infer_arch};
#[cfg(feature = "pretrained")]
pub use pretrained::{
    DEFAULT_PRETRAINED_URL, PRETRAINED_ARCHS, Pretrained, PretrainedOptions, download_pretrained,
    pretrained, pretrained_with,
};
pub use weights::Weights;
