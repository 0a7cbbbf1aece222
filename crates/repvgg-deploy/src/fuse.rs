//! Re-parameterization: training-time weights in, deploy-time weights out.
//!
//! Per block, each branch becomes a 3x3 kernel and a bias (`../shared/REPVGG.md`):
//! conv + BN fuse to `W * gamma / std` and `beta - mean * gamma / std` with
//! `std = sqrt(running_var + eps)`; the 1x1 kernel is zero-padded to 3x3; the identity branch is
//! the (grouped) 3x3 kernel with a single 1 at the centre tap of each channel, fused with its BN.
//! The three kernels and biases are summed. SE and the head pass through unchanged. Only running
//! statistics are used, never batch statistics.

use burn::module::Module;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};
use repvgg_model::{BlockSpec, RepVgg, RepVggConfig, RepVggDeploy, tensor_infos};

use crate::error::DeployError;
use crate::weights::Weights;

/// Maps training-time weights to deploy-time weights, doing the tensor math on `device`.
///
/// The input must be exactly the training-time tensors of `config` (checked by name and shape,
/// without materialising a network); the output is exactly the deploy-time network's tensors,
/// ready for [`Weights::load_into`] a [`RepVggDeploy`].
pub fn reparameterize(
    training: &Weights,
    config: &RepVggConfig,
    device: &Device,
) -> Result<Weights, DeployError> {
    config.validate()?;
    // Parameters are lazy: this lists paths and shapes without allocating the weights.
    let layout = tensor_infos(&config.init(device));
    training.check_layout(&layout, "the training-time network of this configuration")?;

    let mut deploy = Weights::default();
    for spec in config.block_specs() {
        let (kernel, bias) = fuse_block(training, &spec, config.bn_epsilon, device)?;
        deploy.insert(format!("{}.rbr_reparam.weight", spec.path), kernel);
        deploy.insert(format!("{}.rbr_reparam.bias", spec.path), bias);
    }
    for (name, data) in training.iter() {
        if name.starts_with("linear.") || name.contains(".se.") {
            deploy.insert(name, data.clone());
        }
    }
    Ok(deploy)
}

/// Re-parameterizes a training-time module into a deploy-time one on the same device.
pub fn reparameterize_model(
    model: &RepVgg,
    config: &RepVggConfig,
) -> Result<RepVggDeploy, DeployError> {
    let device = model
        .devices()
        .into_iter()
        .next()
        .expect("a RepVGG network has tensors on a device");
    let deploy = reparameterize(&Weights::from_module(model)?, config, &device)?;
    deploy.load_into(
        config.init_deploy(&device),
        "the deploy-time network of this configuration",
    )
}

/// The fused 3x3 kernel and bias of one block.
fn fuse_block(
    weights: &Weights,
    spec: &BlockSpec,
    epsilon: f64,
    device: &Device,
) -> Result<(TensorData, TensorData), DeployError> {
    let path = &spec.path;
    let branch = |name: &str| -> Result<(Tensor<4>, Tensor<1>), DeployError> {
        let kernel = tensor::<4>(weights, &format!("{path}.{name}.conv.weight"), device)?;
        let bn = BnStats::read(weights, &format!("{path}.{name}.bn"), device)?;
        Ok(bn.fuse(kernel, epsilon))
    };
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

/// A batch norm's affine parameters and running statistics.
struct BnStats {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
}

impl BnStats {
    fn read(weights: &Weights, prefix: &str, device: &Device) -> Result<Self, DeployError> {
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
        let scale = self.gamma / self.var.add_scalar(epsilon).sqrt();
        let [channels] = scale.dims();
        let bias = self.beta - self.mean * scale.clone();
        (kernel * scale.reshape([channels, 1, 1, 1]), bias)
    }
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
) -> Result<Tensor<D>, DeployError> {
    Ok(Tensor::from_data(
        weights.require(name, "the training-time weights")?.clone(),
        device,
    ))
}
