//! Squeeze-and-excitation, as used by RepVGG-D2se (before the ReLU) and RepVGGplus (after it).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

use crate::config::BlockSpec;

/// Channel attention: `x * sigmoid(up(relu(down(mean_hw(x)))))`, with `down` and `up` 1x1
/// convolutions with bias. The pool is a true global average, so any input shape works.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// `channels -> channels / reduction`.
    pub down: Conv2d,
    /// `channels / reduction -> channels`.
    pub up: Conv2d,
}

impl SqueezeExcite {
    /// The SE layers of a block, `(before the ReLU, after it)`: at most one of them exists.
    pub fn for_block(spec: &BlockSpec, device: &Device) -> (Option<Self>, Option<Self>) {
        let se = spec
            .se_channels
            .map(|hidden| Self::new(spec.out_channels, hidden, device));
        match spec.se_after_relu {
            true => (None, se),
            false => (se, None),
        }
    }

    /// An SE layer over `channels` with a `hidden`-wide bottleneck.
    pub fn new(channels: usize, hidden: usize, device: &Device) -> Self {
        Self {
            down: Conv2dConfig::new([channels, hidden], [1, 1]).init(device),
            up: Conv2dConfig::new([hidden, channels], [1, 1]).init(device),
        }
    }

    /// `[N, C, H, W]` to the same shape, each channel scaled by its attention weight.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pooled = input.clone().mean_dim(2).mean_dim(3);
        let weights = sigmoid(self.up.forward(relu(self.down.forward(pooled))));
        input * weights
    }
}
