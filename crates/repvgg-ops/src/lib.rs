//! The training step of RepVGG on Burn's CPU backend (flex) on this crate's kernels: the
//! training-time block as one op, convolutions forward and both gradients, batch normalization
//! with the batch's statistics forward and backward, and the SGD step.
//!
//! - [`block_train`]: a whole block, `ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))`, as one
//!   op: both convolutions from one im2col (the 1x1 reads its centre rows), intermediates laid
//!   out channel after channel so that each batch norm reads contiguous runs, and the statistics,
//!   sum and ReLU in one pass per channel, forward and backward. Where Burn composes the block
//!   from about a dozen ops and autodiff nodes, each with its own tensor, it is one node here.
//!   `repvgg-model` takes it for every block without SE; [`conv2d`] and [`batch_norm_train`]
//!   serve the rest.
//! - [`conv2d`]: Burn's own CPU convolution runs a matrix product per image (the late stages of
//!   a network at 32x32 have 4 pixels an image, which its matrix kernels run in their narrowest,
//!   one-row form) and takes the weight gradient as a convolution of the input by the output
//!   gradient, whose products are 9 columns wide. Here a product takes a block of images at
//!   once, and the weight gradient is one product per block, as deep as the block's pixels.
//! - [`batch_norm_train`]: one pass for the statistics and one for the output, and the same two
//!   for the gradients, where Burn's generic op takes about ten (several of them layout copies).
//! - [`sgd_step`]: momentum, weight decay and the update in one pass, in place, where Burn's
//!   optimizer makes a new tensor for each of five operations.
//!
//! Each is a Burn backend extension op ([`TrainingOps`]) whose autodiff implementation registers
//! its own backward step. On any other device, or in another precision than f32, each entry
//! takes Burn's generic ops, so the caller's code stays backend-agnostic; so does every device
//! when the environment variable `REPVGG_GENERIC_OPS` is `1`.
//!
//! ```
//! use burn::tensor::module::{BatchNormTrainOutput, conv2d as burn_conv2d};
//! use burn::tensor::ops::ConvOptions;
//! use burn::tensor::{Device, Distribution, Tensor};
//! use repvgg_ops::{Conv, conv2d};
//!
//! let device = Device::flex();
//! let x = Tensor::<4>::random([2, 8, 9, 7], Distribution::Default, &device);
//! let weight = Tensor::<4>::random([16, 8, 3, 3], Distribution::Default, &device);
//! let fast = conv2d(x.clone(), weight.clone(), Conv { stride: 2, padding: 1, groups: 1 });
//! let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
//! let generic = burn_conv2d(x, weight, None, options);
//! assert!((fast - generic).abs().max().into_scalar::<f32>() < 1e-4);
//! ```

mod autodiff;
mod block;
mod flex;
mod kernels;
mod mixed;
mod norm;
pub mod profile;
mod sgd;

pub use mixed::{Bf16Unsupported, Products, bf16_products_supported, products, set_products};
pub use sgd::Sgd;

use std::sync::OnceLock;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, backend_extension};
use burn::tensor::activation::relu;
use burn::tensor::module::{BatchNormTrainOutput, conv2d as burn_conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, s};

/// A square-kernel convolution's stride, zero padding and groups, the same in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// The convolution of `x [N, C, H, W]` by `weight [out, C / groups, k, k]` (no bias): on
/// Burn's CPU backend in f32 by this crate's kernels (differentiable on an autodiff device),
/// elsewhere by Burn's `conv2d`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, conv: Conv) -> Tensor<4> {
    let device = x.device();
    let [_, _, kernel_height, kernel_width] = weight.dims();
    if !runs_here(&device) || x.dtype() != DType::F32 || kernel_height != kernel_width {
        let options = ConvOptions::new([conv.stride; 2], [conv.padding; 2], [1, 1], conv.groups);
        return burn_conv2d(x, weight, None, options);
    }
    let Conv {
        stride,
        padding,
        groups,
    } = conv;
    Tensor::from_dispatch(Dispatch::repvgg_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
        groups,
    ))
}

/// Batch normalization of `x [N, C, ..]` with the batch's own statistics (training mode):
/// the output, and the per-channel mean and biased variance (detached), as Burn's
/// `batch_norm_train` returns them. On Burn's CPU backend in f32 in one pass for the statistics
/// and one for the output, and the same for the gradients; elsewhere Burn's op.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> BatchNormTrainOutput<D> {
    if !runs_here(&x.device()) || x.dtype() != DType::F32 || D < 2 {
        return burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
    }
    let (output, mean, variance) = Dispatch::repvgg_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    BatchNormTrainOutput {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}

/// A training-time RepVGG block's result: the output, and each branch's batch mean and biased
/// variance `[branches, out]` (3x3, 1x1, identity), detached, for the running statistics.
pub struct BlockTrainOutput {
    pub output: Tensor<4>,
    pub mean: Tensor<2>,
    pub variance: Tensor<2>,
}

/// The training-time RepVGG block with batch statistics:
/// `ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))`, the identity branch present when `gamma` and
/// `beta` have three rows. `dense_weight [out, in / groups, 3, 3]` (padding 1),
/// `pointwise_weight [out, in / groups, 1, 1]`, both with `stride` and `groups`; `gamma`, `beta`
/// `[branches, out]`.
///
/// On Burn's CPU backend in f32 it is one op: both convolutions from one im2col, every
/// intermediate laid out channel after channel, the batch norms, the sum and the ReLU in one pass,
/// and the backward the same way. Its output then has CNHW strides (an NCHW tensor to every
/// other op), which the next block reads without a copy. Elsewhere it is Burn's ops.
#[allow(clippy::too_many_arguments)]
pub fn block_train(
    x: Tensor<4>,
    dense_weight: Tensor<4>,
    pointwise_weight: Tensor<4>,
    gamma: Tensor<2>,
    beta: Tensor<2>,
    stride: usize,
    groups: usize,
    epsilon: f64,
) -> BlockTrainOutput {
    let [branches, _] = gamma.dims();
    assert!(
        branches == 2 || branches == 3,
        "a block batch-normalizes 2 or 3 branches, not {branches}"
    );
    if !runs_here(&x.device()) || x.dtype() != DType::F32 {
        let weights = [dense_weight, pointwise_weight];
        return burn_block_train(x, weights, [gamma, beta], stride, groups, epsilon);
    }
    let (output, _, _, mean, variance) = Dispatch::repvgg_block_train(
        x.into_dispatch(),
        dense_weight.into_dispatch(),
        pointwise_weight.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stride,
        groups,
        epsilon,
    );
    BlockTrainOutput {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}

/// [`block_train`] composed of Burn's own ops (`conv2d`, `batch_norm_train`, `relu`), with the
/// weights `[3x3, 1x1]` and the norms' `[gamma, beta]`: its path on other devices and
/// precisions, and the definition its tests hold the one-op form to.
pub fn burn_block_train(
    x: Tensor<4>,
    [dense_weight, pointwise_weight]: [Tensor<4>; 2],
    [gamma, beta]: [Tensor<2>; 2],
    stride: usize,
    groups: usize,
    epsilon: f64,
) -> BlockTrainOutput {
    let [branches, channels] = gamma.dims();
    let convolve = |weight, padding| {
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], groups);
        burn_conv2d(x.clone(), weight, None, options)
    };
    let inputs = [
        convolve(dense_weight, 1),
        convolve(pointwise_weight, 0),
        x.clone(),
    ];
    let (mut sum, mut means, mut variances) = (None, Vec::new(), Vec::new());
    for (branch, input) in inputs.into_iter().enumerate().take(branches) {
        let row = |t: &Tensor<2>| t.clone().slice(s![branch, ..]).reshape([channels]);
        let result =
            burn::tensor::module::batch_norm_train(input, row(&gamma), row(&beta), epsilon);
        sum = Some(match sum {
            Some(sum) => sum + result.output,
            None => result.output,
        });
        means.push(result.mean.detach());
        variances.push(result.variance.detach());
    }
    BlockTrainOutput {
        output: relu(sum.expect("two or three branches")),
        mean: Tensor::stack(means, 0),
        variance: Tensor::stack(variances, 0),
    }
}

/// One SGD step on `param` from `grad`: the new parameter and velocity. `velocity` is `None`
/// on the first step. On Burn's CPU backend in f32 one pass, in place where the values are not
/// shared; elsewhere Burn's tensor operations.
pub fn sgd_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
    sgd: Sgd,
) -> (Tensor<D>, Tensor<D>) {
    if !runs_here(&param.device()) || param.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        let grad = match sgd.weight_decay {
            0.0 => grad,
            decay => grad + param.clone().mul_scalar(decay),
        };
        let velocity = match velocity {
            Some(velocity) => velocity.mul_scalar(sgd.momentum) + grad.clone(),
            None => grad.clone(),
        };
        let update = match sgd.nesterov {
            true => velocity.clone().mul_scalar(sgd.momentum) + grad,
            false => velocity.clone(),
        };
        return (param - update.mul_scalar(sgd.lr), velocity);
    }
    let first = velocity.is_none();
    let velocity = velocity.unwrap_or_else(|| param.zeros_like());
    let (param, velocity) = Dispatch::repvgg_sgd_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        velocity.into_dispatch(),
        first,
        sgd.lr,
        sgd.momentum,
        sgd.weight_decay,
        sgd.nesterov,
    );
    (
        Tensor::from_dispatch(param),
        Tensor::from_dispatch(velocity),
    )
}

/// Whether this crate's kernels run for tensors on `device`: Burn's CPU backend, with or
/// without autodiff, unless the environment variable [`GENERIC_OPS_VAR`] is set to `1` (Burn's
/// own ops everywhere, to compare the two or to rule this crate out).
pub fn runs_here(device: &Device) -> bool {
    static GENERIC: OnceLock<bool> = OnceLock::new();
    let generic = *GENERIC.get_or_init(|| std::env::var(GENERIC_OPS_VAR).is_ok_and(|v| v == "1"));
    !generic && device.clone().inner() == Device::flex()
}

/// The environment variable that, set to `1`, makes every op here take Burn's generic path.
pub const GENERIC_OPS_VAR: &str = "REPVGG_GENERIC_OPS";

/// The convolution as a Burn backend extension: forward and the two gradients, implemented
/// for the flex backend and, with its own backward step, for autodiff over it.
#[backend_extension(Flex, Autodiff)]
pub trait TrainingOps: burn::backend::Backend {
    /// The convolution of `x` by `weight` (no bias).
    fn repvgg_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self>;

    /// The gradient of the input `[N, C, height, width]` from the output's gradient.
    #[allow(clippy::too_many_arguments)]
    fn repvgg_conv2d_input_grad(
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        height: usize,
        width: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self>;

    /// The gradient of the weight from the input and the output's gradient.
    fn repvgg_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self>;

    /// Batch normalization of `x [batch, channels, ..]` with the batch's statistics: the
    /// output, and the per-channel mean and biased variance.
    fn repvgg_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of the input, `gamma` and `beta` of
    /// [`repvgg_batch_norm_train`](Self::repvgg_batch_norm_train), from the output's gradient
    /// and the statistics it returned.
    fn repvgg_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The training-time block (see [`block_train`]): the output, the two convolutions' outputs
    /// (what the backward step reads), and each branch's mean and variance.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn repvgg_block_train(
        x: FloatTensor<Self>,
        dense_weight: FloatTensor<Self>,
        pointwise_weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stride: usize,
        groups: usize,
        epsilon: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// The gradients of [`repvgg_block_train`](Self::repvgg_block_train)'s input (an empty
    /// tensor unless `input_grad`), weights, `gamma` and `beta`, from the output's gradient and
    /// what the forward pass returned.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn repvgg_block_train_backward(
        x: FloatTensor<Self>,
        dense_weight: FloatTensor<Self>,
        pointwise_weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dense: FloatTensor<Self>,
        pointwise: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        stride: usize,
        groups: usize,
        epsilon: f64,
        input_grad: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// One SGD step: the new parameter and velocity (see [`sgd_step`]); `velocity` is ignored
    /// on the `first` step.
    #[allow(clippy::too_many_arguments)]
    fn repvgg_sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        first: bool,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}
