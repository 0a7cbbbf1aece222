//! Re-parameterization: training-time weights in, deploy-time weights out.
//!
//! Per block, each branch becomes a 3x3 kernel and a bias (`../shared/REPVGG.md`):
//! conv + BN fuse to `W * gamma / std` and `beta - mean * gamma / std` with
//! `std = sqrt(running_var + eps)`; the 1x1 kernel is zero-padded to 3x3; the identity branch is
//! the (grouped) 3x3 kernel with a single 1 at the centre tap of each channel, fused with its BN.
//! The three kernels and biases are summed. QARepVGG's block has no batch norm on its 1x1 and
//! identity branches (their kernels are taken as they are) and one on the sum, which scales the
//! summed kernel and shifts its bias the same way. SE (before or after the ReLU) and the head pass
//! through unchanged; RepVGGplus's auxiliary heads are dropped. Only running
//! statistics are used, never batch statistics.
//!
//! Three entry points, all on the same transform: [`Reparameterize::reparameterize`] on a
//! training-time module, [`reparameterize`] on named tensors (a checkpoint, no network built),
//! and [`reparameterize_nested`] for a RepVGG inside a bigger module (a detector's backbone).

use burn::module::Module;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{BlockDesign, BlockSpec, RepVggConfig};
use crate::error::WeightsError;
use crate::inspect::training_layout;
use crate::network::{RepVgg, RepVggDeploy};
use crate::plus::{RepVggPlus, RepVggPlusDeploy};
use crate::weights::Weights;

/// A training-time module that has a deploy-time equivalent computing the same function (in
/// eval mode, with running BN statistics).
pub trait Reparameterize {
    /// The deploy-time module.
    type Deploy;

    /// The deploy-time equivalent, on the module's device.
    fn reparameterize(&self) -> Result<Self::Deploy, WeightsError>;
}

impl Reparameterize for RepVgg {
    type Deploy = RepVggDeploy;

    /// ```
    /// use burn::tensor::{Device, Distribution, Tensor};
    /// use repvgg_model::{RepVggConfig, Reparameterize};
    ///
    /// let device = Device::flex();
    /// let training = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init(&device);
    /// let deploy = training.reparameterize()?;
    /// let images = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device);
    /// let difference = (training.forward(images.clone()) - deploy.forward(images)).abs().max();
    /// assert!(difference.into_scalar::<f32>() < 1e-4);
    /// # Ok::<(), repvgg_model::WeightsError>(())
    /// ```
    fn reparameterize(&self) -> Result<RepVggDeploy, WeightsError> {
        reparameterize_module(self, self.config(), RepVggConfig::init_deploy)
    }
}

impl Reparameterize for RepVggPlus {
    type Deploy = RepVggPlusDeploy;

    /// The deploy form: fused blocks, post-SE and head carried over, auxiliary heads dropped.
    fn reparameterize(&self) -> Result<RepVggPlusDeploy, WeightsError> {
        reparameterize_module(self, self.config(), RepVggPlusDeploy::new)
    }
}

/// The training-time network `training` (of `config`) re-parameterized on its own device into
/// the deploy-time network that `init_deploy` builds there.
fn reparameterize_module<M: Module, D: Module>(
    training: &M,
    config: &RepVggConfig,
    init_deploy: impl FnOnce(&RepVggConfig, &Device) -> D,
) -> Result<D, WeightsError> {
    let device =
        training
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| WeightsError::NoTensorsUnder {
                prefix: "stage0".into(),
            })?;
    let deploy = reparameterize(&Weights::from_module(training)?, config, &device)?;
    deploy.load_into(
        init_deploy(config, &device),
        "the deploy-time network of this configuration",
    )
}

/// Converts a module holding a training-time RepVGG at module path `path` (e.g. `"backbone"`)
/// into `deploy`, the same module type with [`RepVggDeploy`] in its place: the RepVGG's tensors
/// are re-parameterized, every other tensor (neck, heads) is copied as it is. `deploy` is a
/// freshly initialised target; its tensors must be exactly the result (checked). This is the
/// reference's `whole_model_convert`, without mutating the input.
pub fn reparameterize_nested<M: Module, D: Module>(
    model: &M,
    path: &str,
    config: &RepVggConfig,
    deploy: D,
) -> Result<D, WeightsError> {
    let device =
        model
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| WeightsError::NoTensorsUnder {
                prefix: path.to_string(),
            })?;
    let weights = reparameterize_at(&Weights::from_module(model)?, path, config, &device)?;
    weights.load_into(
        deploy,
        &format!("the deploy-time module (RepVGG at `{path}`)"),
    )
}

/// [`reparameterize`] applied to the tensors under module path `path` (`"backbone"` covers
/// `backbone.stage0...`); every other tensor passes through unchanged.
pub fn reparameterize_at(
    weights: &Weights,
    path: &str,
    config: &RepVggConfig,
    device: &Device,
) -> Result<Weights, WeightsError> {
    let prefix = format!("{path}.");
    let (inside, outside): (Vec<_>, Vec<_>) = weights
        .iter()
        .partition(|(name, _)| name.starts_with(&prefix));
    if inside.is_empty() {
        return Err(WeightsError::NoTensorsUnder {
            prefix: path.to_string(),
        });
    }
    let training: Weights = inside
        .into_iter()
        .map(|(name, data)| (name[prefix.len()..].to_string(), data.clone()))
        .collect();
    let deploy = reparameterize(&training, config, device)?;
    Ok(outside
        .into_iter()
        .map(|(name, data)| (name.to_string(), data.clone()))
        .chain(
            deploy
                .iter()
                .map(|(name, data)| (format!("{prefix}{name}"), data.clone())),
        )
        .collect())
}

/// Maps training-time weights to deploy-time weights, doing the tensor math on `device`.
///
/// The input must be exactly the training-time tensors of `config` (checked by name and shape,
/// without materialising a network); the output is exactly the deploy-time network's tensors,
/// ready for [`Weights::load_into`] a [`RepVggDeploy`] (a [`RepVggPlusDeploy`] for RepVGGplus,
/// whose auxiliary heads are dropped).
pub fn reparameterize(
    training: &Weights,
    config: &RepVggConfig,
    device: &Device,
) -> Result<Weights, WeightsError> {
    config.validate()?;
    // Parameters are lazy: this lists paths and shapes without allocating the weights.
    let layout = training_layout(config, device);
    training.check_layout(&layout, "the training-time network of this configuration")?;

    let mut deploy = Weights::default();
    let fuse = match config.block_design() {
        BlockDesign::RepVgg => fuse_block,
        BlockDesign::QaRepVgg => fuse_qa_block,
    };
    for spec in config.block_specs() {
        let (kernel, bias) = fuse(training, &spec, config.bn_epsilon, device)?;
        deploy.insert(format!("{}.rbr_reparam.weight", spec.path), kernel);
        deploy.insert(format!("{}.rbr_reparam.bias", spec.path), bias);
    }
    for (name, data) in training.iter() {
        if name.starts_with("linear.") || name.contains(".se.") || name.contains(".post_se.") {
            deploy.insert(name, data.clone());
        }
    }
    Ok(deploy)
}

/// The fused 3x3 kernel and bias of one block.
fn fuse_block(
    weights: &Weights,
    spec: &BlockSpec,
    epsilon: f64,
    device: &Device,
) -> Result<(TensorData, TensorData), WeightsError> {
    let path = &spec.path;
    let branch = |name: &str| fuse_conv_bn(weights, &format!("{path}.{name}"), epsilon, device);
    let (dense_kernel, dense_bias) = branch("rbr_dense")?;
    let (pointwise_kernel, pointwise_bias) = branch("rbr_1x1")?;
    let mut kernel = dense_kernel + pointwise_kernel.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let mut bias = dense_bias + pointwise_bias;
    if spec.has_identity {
        let bn = BnStats::read(weights, &format!("{path}.rbr_identity"), device)?;
        let (identity_kernel, identity_bias) = bn.fuse(identity_kernel(spec, device), epsilon);
        kernel = kernel + identity_kernel;
        bias = bias + identity_bias;
    }
    Ok((kernel.into_data(), bias.into_data()))
}

/// The fused 3x3 kernel and bias of one QARepVGG block: `BN(BN(conv3x3) + conv1x1 + identity)`.
fn fuse_qa_block(
    weights: &Weights,
    spec: &BlockSpec,
    epsilon: f64,
    device: &Device,
) -> Result<(TensorData, TensorData), WeightsError> {
    let path = &spec.path;
    let (mut kernel, bias) = fuse_conv_bn(weights, &format!("{path}.rbr_dense"), epsilon, device)?;
    let pointwise = tensor::<4>(weights, &format!("{path}.rbr_1x1.conv.weight"), device)?;
    kernel = kernel + pointwise.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    if spec.has_identity {
        kernel = kernel + identity_kernel(spec, device);
    }
    let sum_bn = BnStats::read(weights, &format!("{path}.bn"), device)?;
    let (kernel, bias) = sum_bn.fuse_biased(kernel, bias, epsilon);
    Ok((kernel.into_data(), bias.into_data()))
}

/// The conv + BN branch at `prefix` (`{prefix}.conv.weight`, `{prefix}.bn.*`) as one
/// convolution: its kernel and bias.
fn fuse_conv_bn(
    weights: &Weights,
    prefix: &str,
    epsilon: f64,
    device: &Device,
) -> Result<(Tensor<4>, Tensor<1>), WeightsError> {
    let kernel = tensor::<4>(weights, &format!("{prefix}.conv.weight"), device)?;
    let bn = BnStats::read(weights, &format!("{prefix}.bn"), device)?;
    Ok(bn.fuse(kernel, epsilon))
}

/// A batch norm's affine parameters and running statistics.
struct BnStats {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
}

impl BnStats {
    fn read(weights: &Weights, prefix: &str, device: &Device) -> Result<Self, WeightsError> {
        let read = |name: &str| tensor::<1>(weights, &format!("{prefix}.{name}"), device);
        Ok(Self {
            gamma: read("gamma")?,
            beta: read("beta")?,
            mean: read("running_mean")?,
            var: read("running_var")?,
        })
    }

    /// `BN(conv(x, kernel))` as one convolution: the scaled kernel and the bias.
    fn fuse(self, kernel: Tensor<4>, epsilon: f64) -> (Tensor<4>, Tensor<1>) {
        let bias = Tensor::zeros(self.beta.dims(), &self.beta.device());
        self.fuse_biased(kernel, bias, epsilon)
    }

    /// `BN(conv(x, kernel) + bias)` as one convolution: the scaled kernel and the new bias.
    fn fuse_biased(
        self,
        kernel: Tensor<4>,
        bias: Tensor<1>,
        epsilon: f64,
    ) -> (Tensor<4>, Tensor<1>) {
        let scale = bn_scale(self.gamma, self.var, epsilon);
        let [channels] = scale.dims();
        let bias = self.beta + (bias - self.mean) * scale.clone();
        (kernel * scale.reshape([channels, 1, 1, 1]), bias)
    }
}

/// A batch norm in eval mode as a per-channel scale: `gamma / sqrt(running_var + epsilon)`.
/// The fusion above and the reference's custom L2 (which weighs each branch by it) both use this
/// one definition.
pub fn bn_scale(gamma: Tensor<1>, running_var: Tensor<1>, epsilon: f64) -> Tensor<1> {
    gamma / running_var.add_scalar(epsilon).sqrt()
}

/// The identity as a grouped 3x3 convolution: `K[i, i % (C / groups), 1, 1] = 1`.
fn identity_kernel(spec: &BlockSpec, device: &Device) -> Tensor<4> {
    let channels = spec.out_channels;
    let per_group = spec.in_channels / spec.groups;
    let mut values = vec![0f32; channels * per_group * 9];
    for i in 0..channels {
        values[(i * per_group + i % per_group) * 9 + 4] = 1.0;
    }
    Tensor::from_data(TensorData::new(values, [channels, per_group, 3, 3]), device)
}

fn tensor<const D: usize>(
    weights: &Weights,
    name: &str,
    device: &Device,
) -> Result<Tensor<D>, WeightsError> {
    Ok(Tensor::from_data(
        weights.require(name, "the training-time weights")?.clone(),
        device,
    ))
}
