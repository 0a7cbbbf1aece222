//! A network of either family (RepVGG or RepVGGplus) in either form, as a checkpoint holds it:
//! what loading gives and [`DeployModel`](crate::DeployModel) serves, whichever the file was.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use repvgg_model::{
    RepVgg, RepVggConfig, RepVggDeploy, RepVggPlus, RepVggPlusDeploy, Reparameterize, Weights,
    WeightsError,
};

/// A training-time network: [`RepVgg`] or [`RepVggPlus`] (boxed: the modules are large values).
#[derive(Clone, Debug)]
pub enum TrainingNetwork {
    RepVgg(Box<RepVgg>),
    Plus(Box<RepVggPlus>),
}

/// A deploy-time network: [`RepVggDeploy`] or [`RepVggPlusDeploy`] (boxed).
#[derive(Clone, Debug)]
pub enum DeployNetwork {
    RepVgg(Box<RepVggDeploy>),
    Plus(Box<RepVggPlusDeploy>),
}

/// The methods both families share, forwarded to whichever network an enum holds.
macro_rules! forward_to_network {
    ($name:ident) => {
        impl $name {
            /// The architecture.
            pub fn config(&self) -> &RepVggConfig {
                match self {
                    Self::RepVgg(net) => net.config(),
                    Self::Plus(net) => net.config(),
                }
            }

            /// Class logits (RepVGGplus: of the main head), `[N, 3, H, W]` to `[N, classes]`;
            /// for a headless network the pooled features.
            pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
                match self {
                    Self::RepVgg(net) => net.forward(images),
                    Self::Plus(net) => net.forward(images),
                }
            }

            /// The output of the stem and of every stage (strides 2 to 32).
            pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
                match self {
                    Self::RepVgg(net) => net.forward_features(images),
                    Self::Plus(net) => net.forward_features(images),
                }
            }

            /// Trainable parameters (BN running statistics excluded).
            pub fn num_trainable_params(&self) -> usize {
                match self {
                    Self::RepVgg(net) => net.num_trainable_params(),
                    Self::Plus(net) => net.num_trainable_params(),
                }
            }

            /// Every tensor, named by module path.
            pub fn weights(&self) -> Result<Weights, WeightsError> {
                match self {
                    Self::RepVgg(net) => Weights::from_module(net.as_ref()),
                    Self::Plus(net) => Weights::from_module(net.as_ref()),
                }
            }

            /// The device the weights are on.
            pub fn device(&self) -> Option<Device> {
                match self {
                    Self::RepVgg(net) => net.devices().into_iter().next(),
                    Self::Plus(net) => net.devices().into_iter().next(),
                }
            }

            /// The network moved to `device` (see `Module::fork`).
            pub fn fork(self, device: &Device) -> Self {
                match self {
                    Self::RepVgg(net) => Self::RepVgg(Box::new((*net).fork(device))),
                    Self::Plus(net) => Self::Plus(Box::new((*net).fork(device))),
                }
            }
        }
    };
}

forward_to_network!(TrainingNetwork);
forward_to_network!(DeployNetwork);

impl TrainingNetwork {
    /// `weights` loaded strictly into the training-time network of `config`'s family on
    /// `device`; `what` names it in errors.
    pub fn load(
        weights: &Weights,
        config: &RepVggConfig,
        device: &Device,
        what: &str,
    ) -> Result<Self, WeightsError> {
        Ok(match config.is_plus() {
            true => weights.load_into(config.init_plus(device), what)?.into(),
            false => weights.load_into(config.init(device), what)?.into(),
        })
    }

    /// The deploy-time equivalent (RepVGGplus: without its auxiliary heads).
    pub fn reparameterize(&self) -> Result<DeployNetwork, WeightsError> {
        Ok(match self {
            Self::RepVgg(net) => net.reparameterize()?.into(),
            Self::Plus(net) => net.reparameterize()?.into(),
        })
    }
}

impl DeployNetwork {
    /// `weights` loaded strictly into the deploy-time network of `config`'s family on `device`;
    /// `what` names it in errors.
    pub fn load(
        weights: &Weights,
        config: &RepVggConfig,
        device: &Device,
        what: &str,
    ) -> Result<Self, WeightsError> {
        Ok(match config.is_plus() {
            true => weights
                .load_into(config.init_plus_deploy(device), what)?
                .into(),
            false => weights.load_into(config.init_deploy(device), what)?.into(),
        })
    }
}

impl From<RepVgg> for TrainingNetwork {
    fn from(net: RepVgg) -> Self {
        Self::RepVgg(Box::new(net))
    }
}

impl From<RepVggPlus> for TrainingNetwork {
    fn from(net: RepVggPlus) -> Self {
        Self::Plus(Box::new(net))
    }
}

impl From<RepVggDeploy> for DeployNetwork {
    fn from(net: RepVggDeploy) -> Self {
        Self::RepVgg(Box::new(net))
    }
}

impl From<RepVggPlusDeploy> for DeployNetwork {
    fn from(net: RepVggPlusDeploy) -> Self {
        Self::Plus(Box::new(net))
    }
}
