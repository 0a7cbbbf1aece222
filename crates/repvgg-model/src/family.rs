//! A network of either family, RepVGG or RepVGGplus, chosen at run time: what a configuration
//! read from a file or a checkpoint builds, whichever family it describes.

use crate::config::RepVggConfig;
use crate::error::WeightsError;
use crate::network::{RepVgg, RepVggDeploy};
use crate::plus::{RepVggPlus, RepVggPlusDeploy};
use crate::reparam::Reparameterize;
use crate::weights::Weights;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

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

            /// `weights` loaded strictly into this form's network of `config`'s family on
            /// `device`; `what` names it in errors.
            pub fn load(
                weights: &Weights,
                config: &RepVggConfig,
                device: &Device,
                what: &str,
            ) -> Result<Self, WeightsError> {
                Ok(match Self::new(config, device) {
                    Self::RepVgg(net) => weights.load_into(*net, what)?.into(),
                    Self::Plus(net) => weights.load_into(*net, what)?.into(),
                })
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
    /// The training-time network of whichever family `config` describes, with fresh weights on
    /// `device`.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`RepVggConfig::validate`]).
    pub fn new(config: &RepVggConfig, device: &Device) -> Self {
        match config.is_plus() {
            true => RepVggPlus::new(config, device).into(),
            false => RepVgg::new(config, device).into(),
        }
    }
}

impl Reparameterize for TrainingNetwork {
    type Deploy = DeployNetwork;

    /// The deploy-time equivalent (RepVGGplus: without its auxiliary heads).
    fn reparameterize(&self) -> Result<DeployNetwork, WeightsError> {
        Ok(match self {
            Self::RepVgg(net) => net.reparameterize()?.into(),
            Self::Plus(net) => net.reparameterize()?.into(),
        })
    }
}

impl DeployNetwork {
    /// The deploy-time network of whichever family `config` describes, with fresh weights on
    /// `device` (load fused ones into it).
    ///
    /// # Panics
    /// If the configuration is invalid (see [`RepVggConfig::validate`]).
    pub fn new(config: &RepVggConfig, device: &Device) -> Self {
        match config.is_plus() {
            true => RepVggPlusDeploy::new(config, device).into(),
            false => RepVggDeploy::new(config, device).into(),
        }
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
