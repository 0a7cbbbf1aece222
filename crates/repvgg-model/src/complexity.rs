//! Parameter and compute counts of an architecture, derived from its block layout without
//! building a network.

use crate::config::{BlockSpec, RepVggConfig};

/// Trainable parameters of both forms of one architecture. BN running statistics are buffers
/// and are not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    /// Training-time network: conv kernels, BN gamma/beta, SE, linear head and (RepVGGplus)
    /// the auxiliary heads.
    pub training: usize,
    /// Deploy-time network: fused kernels and biases, SE, linear head.
    pub deploy: usize,
}

/// Multiply-accumulate operations of one forward pass of one image. The paper's "FLOPs" column
/// counts these; one MAC is two floating-point operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacCounts {
    /// Training-time network in eval mode (3x3 and 1x1 branches; BN and identity are
    /// element-wise and not counted; RepVGGplus's auxiliary heads neither).
    pub training: u64,
    /// Deploy-time network (fused 3x3 convolutions).
    pub deploy: u64,
}

impl RepVggConfig {
    /// Trainable parameters of the training-time and deploy-time networks.
    pub fn num_params(&self) -> ParamCounts {
        self.count_params(&self.block_specs())
    }

    /// [`num_params`](Self::num_params) of these blocks (which validation checks before the
    /// config is known to be valid).
    pub(crate) fn count_params(&self, specs: &[BlockSpec]) -> ParamCounts {
        let head = match self.has_head() {
            true => self.feature_width() * self.num_classes + self.num_classes,
            false => 0,
        };
        let aux_heads: usize = self
            .aux_head_widths()
            .into_iter()
            .map(|width| {
                9 * width * width + 2 * width + width * self.num_classes + self.num_classes
            })
            .sum();
        let mut counts = ParamCounts {
            training: head + aux_heads,
            deploy: head,
        };
        let quantization_aware = self.is_quantization_aware();
        for spec in specs {
            let kernel_3x3 = kernel_params(spec, 3);
            let bn = 2 * spec.out_channels;
            // RepVGG: BN on the 3x3, 1x1 and identity branches; QARepVGG: on the 3x3 branch
            // and on the sum.
            let norms = match (quantization_aware, spec.has_identity) {
                (true, _) => 2 * bn,
                (false, true) => 3 * bn,
                (false, false) => 2 * bn,
            };
            let se = se_params(spec);
            counts.training += kernel_3x3 + kernel_params(spec, 1) + norms + se;
            counts.deploy += kernel_3x3 + spec.out_channels + se;
        }
        counts
    }

    /// Multiply-accumulates per image at an input of `height x width` pixels.
    pub fn macs(&self, height: usize, width: usize) -> MacCounts {
        let (mut height, mut width) = (height, width);
        let head = match self.has_head() {
            true => (self.feature_width() * self.num_classes) as u64,
            false => 0,
        };
        let mut counts = MacCounts {
            training: head,
            deploy: head,
        };
        for spec in self.block_specs() {
            // A 3x3 kernel with padding 1 and a 1x1 kernel with padding 0 give the same output
            // size at the same stride: ceil(size / stride).
            height = height.div_ceil(spec.stride);
            width = width.div_ceil(spec.stride);
            let positions = (height * width) as u64;
            let se = se_params(&spec) as u64;
            let kernel_3x3 = positions * kernel_params(&spec, 3) as u64;
            let kernel_1x1 = positions * kernel_params(&spec, 1) as u64;
            counts.training += kernel_3x3 + kernel_1x1 + se;
            counts.deploy += kernel_3x3 + se;
        }
        counts
    }
}

/// Weights of a bias-free `kernel x kernel` convolution of the block.
fn kernel_params(spec: &BlockSpec, kernel: usize) -> usize {
    spec.out_channels * (spec.in_channels / spec.groups) * kernel * kernel
}

/// Weights and biases of the block's two SE 1x1 convolutions, if it has them.
fn se_params(spec: &BlockSpec) -> usize {
    spec.se_channels.map_or(0, |hidden| {
        2 * spec.out_channels * hidden + hidden + spec.out_channels
    })
}
