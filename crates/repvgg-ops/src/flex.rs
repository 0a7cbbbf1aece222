//! The convolution on Burn's CPU backend: the tensors' f32 values read in place (copied only
//! when not contiguous) and the results handed over without a copy.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Shape, TensorData};

use crate::TrainingOps;
use crate::block::{self, BlockGeometry, BlockInputs, BlockSaved};
use crate::kernels::{self, Geometry, Order};
use crate::norm::{self, Planes};
use crate::profile::{Phase, Timer};
use crate::sgd::{self, Sgd};

impl TrainingOps for Flex {
    fn repvgg_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FlexTensor {
        let _op = Timer::start(Phase::ConvForward);
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
        let _op = Timer::start(Phase::ConvBackward);
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
        let _op = Timer::start(Phase::ConvBackward);
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
        let _op = Timer::start(Phase::NormForward);
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
        let _op = Timer::start(Phase::NormBackward);
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

    fn repvgg_block_train(
        x: FlexTensor,
        dense_weight: FlexTensor,
        pointwise_weight: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stride: usize,
        groups: usize,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let _op = Timer::start(Phase::BlockForwardOp);
        let shape = block_geometry(&x, &dense_weight, &gamma, stride, groups);
        let block = BlockValues::of(&x, &dense_weight, &pointwise_weight, &gamma);
        let beta = values(&beta);
        let result = block::forward(&block.inputs(&beta, epsilon), &shape);
        let g = shape.conv;
        let rows = [g.out_channels, g.batch * g.pixels()];
        let statistics = [shape.branches(), g.out_channels];
        (
            channels_first(result.output, output_shape(&g)),
            tensor(result.dense, rows),
            tensor(result.pointwise, rows),
            tensor(result.mean, statistics),
            tensor(result.variance, statistics),
        )
    }

    fn repvgg_block_train_backward(
        x: FlexTensor,
        dense_weight: FlexTensor,
        pointwise_weight: FlexTensor,
        gamma: FlexTensor,
        output: FlexTensor,
        dense: FlexTensor,
        pointwise: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        output_grad: FlexTensor,
        stride: usize,
        groups: usize,
        epsilon: f64,
        input_grad: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let _op = Timer::start(Phase::BlockBackwardOp);
        let shape = block_geometry(&x, &dense_weight, &gamma, stride, groups);
        let block = BlockValues::of(&x, &dense_weight, &pointwise_weight, &gamma);
        let inputs = block.inputs(&[], epsilon);
        // The forward pass's own output: CNHW, which for one image is also contiguous.
        let (output, output_order) = plane_values(&output);
        assert!(
            output_order == Order::Cnhw || shape.conv.batch == 1,
            "the block's saved output lies channel after channel"
        );
        let (output_grad, grad_order) = plane_values(&output_grad);
        let saved = BlockSaved {
            output: &output,
            dense: &values(&dense),
            pointwise: &values(&pointwise),
            mean: &values(&mean),
            variance: &values(&variance),
            output_grad: &output_grad,
            order: grad_order,
        };
        let grads = block::backward(&inputs, &saved, &shape, input_grad);
        let g = shape.conv;
        let statistics = [shape.branches(), g.out_channels];
        let x_grad = match grads.x {
            Some(x) => channels_first(x, [g.batch, g.in_channels, g.height, g.width]),
            None => tensor(Vec::new(), [0]),
        };
        (
            x_grad,
            tensor(grads.dense, dense_weight.shape().dims::<4>()),
            tensor(grads.pointwise, pointwise_weight.shape().dims::<4>()),
            tensor(grads.gamma, statistics),
            tensor(grads.beta, statistics),
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
        let _op = Timer::start(Phase::Sgd);
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

/// A block's input and parameters as f32 values (borrowed where they lie contiguously).
struct BlockValues<'a> {
    x: Cow<'a, [f32]>,
    order: Order,
    dense: Cow<'a, [f32]>,
    pointwise: Cow<'a, [f32]>,
    gamma: Cow<'a, [f32]>,
}

impl<'a> BlockValues<'a> {
    fn of(
        x: &'a FlexTensor,
        dense_weight: &'a FlexTensor,
        pointwise_weight: &'a FlexTensor,
        gamma: &'a FlexTensor,
    ) -> Self {
        let (x, order) = plane_values(x);
        Self {
            x,
            order,
            dense: values(dense_weight),
            pointwise: values(pointwise_weight),
            gamma: values(gamma),
        }
    }

    fn inputs<'b>(&'b self, beta: &'b [f32], epsilon: f64) -> BlockInputs<'b> {
        BlockInputs {
            x: &self.x,
            order: self.order,
            dense: &self.dense,
            pointwise: &self.pointwise,
            gamma: &self.gamma,
            beta,
            epsilon,
        }
    }
}

/// A block's geometry from its input, 3x3 weight and `gamma [branches, out]`.
fn block_geometry(
    x: &FlexTensor,
    dense_weight: &FlexTensor,
    gamma: &FlexTensor,
    stride: usize,
    groups: usize,
) -> BlockGeometry {
    let [branches, _] = gamma.shape().dims();
    BlockGeometry {
        conv: geometry(&x.shape().dims(), dense_weight, stride, 1, groups),
        identity: branches == 3,
    }
}

/// A `[batch, channels, height, width]` tensor's f32 values and the order of its planes: as they
/// lie when the tensor is contiguous (NCHW) or has the CNHW strides that [`channels_first`]
/// gives, else copied into NCHW.
fn plane_values(tensor: &FlexTensor) -> (Cow<'_, [f32]>, Order) {
    let [batch, _, height, width] = tensor.shape().dims();
    let plane = (height * width) as isize;
    let layout = tensor.layout();
    let channels_first = [plane, batch as isize * plane, width as isize, 1];
    if !layout.is_contiguous()
        && layout.strides() == channels_first
        && layout.start_offset() == 0
        && tensor.dtype() == DType::F32
    {
        let values = tensor.storage::<f32>();
        if values.len() == tensor.shape().num_elements() {
            return (values.into(), Order::Cnhw);
        }
    }
    (values(tensor), Order::Nchw)
}

/// CNHW values as a `[batch, channels, height, width]` tensor (strides permuted, no copy).
fn channels_first(values: Vec<f32>, [batch, channels, height, width]: [usize; 4]) -> FlexTensor {
    tensor(values, [channels, batch, height, width]).permute(&[1, 0, 2, 3])
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
fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
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
