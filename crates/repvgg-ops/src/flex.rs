//! The convolution on Burn's CPU backend: the tensors' f32 values read in place (copied only
//! when not contiguous) and the results handed over without a copy.

use burn::backend::TensorMetadata;
use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Shape, TensorData};

use crate::TrainingOps;
use crate::kernels::{self, Geometry};
use crate::norm::{self, Planes};
use crate::sgd::{self, Sgd};

impl TrainingOps for Flex {
    fn repvgg_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FlexTensor {
        let geometry = geometry(&x.shape().dims(), &weight, stride, padding, groups);
        let output = kernels::forward(&values(&x), &values(&weight), &geometry);
        tensor(output, output_shape(&geometry))
    }

    fn repvgg_conv2d_input_grad(
        weight: FlexTensor,
        output_grad: FlexTensor,
        height: usize,
        width: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FlexTensor {
        let [batch, _, _, _] = output_grad.shape().dims();
        let [_, in_per_group, _, _] = weight.shape().dims();
        let input = [batch, in_per_group * groups, height, width];
        let geometry = geometry(&input, &weight, stride, padding, groups);
        let grad = kernels::input_grad(&values(&weight), &values(&output_grad), &geometry);
        tensor(grad, input)
    }

    fn repvgg_conv2d_weight_grad(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FlexTensor {
        let geometry = geometry(&x.shape().dims(), &weight, stride, padding, groups);
        let grad = kernels::weight_grad(&values(&x), &values(&output_grad), &geometry);
        tensor(grad, weight.shape().dims::<4>())
    }

    fn repvgg_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape();
        let planes = planes(&shape);
        let result = norm::forward(
            &values(&x),
            &values(&gamma),
            &values(&beta),
            epsilon,
            &planes,
        );
        (
            FlexTensor::from_data(TensorData::new(result.output, shape)),
            tensor(result.mean, [planes.channels]),
            tensor(result.variance, [planes.channels]),
        )
    }

    fn repvgg_batch_norm_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape();
        let planes = planes(&shape);
        let grads = norm::backward(
            &values(&x),
            &values(&gamma),
            &values(&mean),
            &values(&variance),
            epsilon,
            &values(&output_grad),
            &planes,
        );
        (
            FlexTensor::from_data(TensorData::new(grads.x, shape)),
            tensor(grads.gamma, [planes.channels]),
            tensor(grads.beta, [planes.channels]),
        )
    }

    fn repvgg_sgd_step(
        mut param: FlexTensor,
        grad: FlexTensor,
        velocity: FlexTensor,
        first: bool,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    ) -> (FlexTensor, FlexTensor) {
        let sgd = Sgd {
            lr,
            momentum,
            weight_decay,
            nesterov,
        };
        let mut velocity = contiguous(velocity);
        param = contiguous(param);
        sgd::step(
            param.storage_mut::<f32>(),
            velocity.storage_mut::<f32>(),
            &values(&grad),
            first,
            &sgd,
        );
        (param, velocity)
    }
}

/// `tensor` with its values in row-major order over its whole storage (copied only when not so
/// already). The copy-free case returns a second handle to the values, which is the only one once
/// `tensor` is dropped here.
fn contiguous(tensor: FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

/// A `[batch, channels, ..]` shape as batch-normalization planes.
fn planes(shape: &Shape) -> Planes {
    Planes {
        batch: shape[0],
        channels: shape[1],
        pixels: shape.iter().skip(2).product(),
    }
}

/// The convolution of an input of `[batch, channels, height, width]` by `weight`.
fn geometry(
    &[batch, in_channels, height, width]: &[usize; 4],
    weight: &FlexTensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Geometry {
    let [out_channels, in_per_group, kernel, kernel_width] = weight.shape().dims();
    assert_eq!(kernel, kernel_width, "a square kernel");
    assert_eq!(
        in_per_group * groups,
        in_channels,
        "the weight's input channels times the groups are the input's channels"
    );
    Geometry {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
    }
}

fn output_shape(g: &Geometry) -> [usize; 4] {
    [g.batch, g.out_channels, g.out_height(), g.out_width()]
}

/// The tensor's f32 values in row-major order, borrowed where they lie contiguously.
fn values(tensor: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(
        tensor.dtype(),
        DType::F32,
        "the convolution computes in f32"
    );
    match tensor.as_slice::<f32>() {
        Some(values) => values.into(),
        None => tensor
            .to_contiguous()
            .as_slice::<f32>()
            .expect("contiguous")
            .to_vec()
            .into(),
    }
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
