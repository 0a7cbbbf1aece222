//! The training-time RepVGG block as one op, on f32 slices:
//! `ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x)])`, each batch norm with the batch's
//! statistics, forward and backward.
//!
//! Both convolutions read the same im2col columns (the 1x1's input is their centre tap), and
//! every intermediate lies channel after channel (CNHW), so the products write it in place and
//! each channel's statistics are one contiguous run. The output is CNHW too; the next block
//! reads it as it is, and Burn's ops see it as an NCHW tensor with permuted strides.

use half::bf16;
use rayon::prelude::*;
use repvgg_kernels::{Element, PackedRhs};

use crate::kernels::{
    Geometry, Mat, MatRef, Order, Scratch, col2im_pixel_major, im2col, im2col_pixel_major, matmul,
    sized,
};
use crate::mixed::{Products, bf16_rows, even, product, products, transposed};
use crate::norm::{ChannelGrad, grad_sums, moments, scale_shift};
use crate::profile::{Phase, Timer};

/// A block's convolution geometry (3x3, padding 1; the 1x1 shares stride and groups) and
/// whether it has the identity branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockGeometry {
    pub conv: Geometry,
    pub identity: bool,
}

impl BlockGeometry {
    /// Batch-normalized branches: 3 with the identity, else 2.
    pub fn branches(&self) -> usize {
        2 + self.identity as usize
    }

    /// Values of a CNHW output (or of one branch's convolution).
    fn output_len(&self) -> usize {
        self.conv.output_len()
    }

    /// Values per output channel: the batch's pixels.
    fn per_channel(&self) -> usize {
        self.conv.batch * self.conv.pixels()
    }
}

/// The input and the parameters: `x` with its planes in `order`, the 3x3 weight
/// `[out, in / groups, 3, 3]`, the 1x1 weight `[out, in / groups]`, and `gamma`, `beta`
/// `[branches x out]` (3x3, 1x1, identity; the backward pass does not read `beta`).
pub struct BlockInputs<'a> {
    pub x: &'a [f32],
    pub order: Order,
    pub dense: &'a [f32],
    pub pointwise: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub epsilon: f64,
}

/// The forward pass's results: the output (CNHW), what the backward pass needs (the two
/// convolutions' outputs, CNHW), and each branch's batch statistics `[branches x out]`.
pub struct BlockOutputs {
    pub output: Vec<f32>,
    pub dense: Vec<f32>,
    pub pointwise: Vec<f32>,
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// The block's forward pass.
pub fn forward(inputs: &BlockInputs<'_>, b: &BlockGeometry) -> BlockOutputs {
    let g = &b.conv;
    check(inputs, b);
    assert_eq!(
        inputs.beta.len(),
        inputs.gamma.len(),
        "beta for every gamma"
    );
    let (dense, pointwise) = convolve(inputs, g, products());
    let channels = g.out_channels;
    let per_channel = b.per_channel();
    let branches = b.branches();
    // Per channel, in one task while its values are in cache: each branch's statistics, then
    // the output.
    let mut output = vec![0.0; b.output_len()];
    let norm = Timer::start(Phase::BlockNorm);
    let statistics: Vec<[(f32, f32); 3]> = output
        .par_chunks_mut(per_channel)
        .enumerate()
        .map(|(c, out)| {
            let dense = row(&dense, c, per_channel);
            let pointwise = row(&pointwise, c, per_channel);
            let moments = [
                moments(std::iter::once(dense), per_channel),
                moments(std::iter::once(pointwise), per_channel),
                match b.identity {
                    true => moments(input_planes(inputs.x, inputs.order, g, c), per_channel),
                    false => (0.0, 1.0),
                },
            ];
            let ([dense_scale, pointwise_scale, identity_scale], shift) =
                affine(inputs, &moments[..branches], c, channels);
            for ((out, &dense), &pointwise) in out.iter_mut().zip(dense).zip(pointwise) {
                *out = dense * dense_scale + pointwise * pointwise_scale + shift;
            }
            if b.identity {
                let planes = input_planes(inputs.x, inputs.order, g, c);
                for (out, plane) in out.chunks_exact_mut(g.pixels()).zip(planes) {
                    for (out, &value) in out.iter_mut().zip(plane) {
                        *out += value * identity_scale;
                    }
                }
            }
            for out in out.iter_mut() {
                *out = out.max(0.0);
            }
            moments
        })
        .collect();
    drop(norm);
    let mut mean = vec![0.0; branches * channels];
    let mut variance = vec![0.0; branches * channels];
    for (c, moments) in statistics.iter().enumerate() {
        for (branch, &(m, v)) in moments.iter().enumerate().take(branches) {
            mean[branch * channels + c] = m;
            variance[branch * channels + c] = v;
        }
    }
    BlockOutputs {
        output,
        dense,
        pointwise,
        mean,
        variance,
    }
}

/// The two convolutions of `x`, CNHW, with products in `precision`: one im2col per block of
/// images and group, the 1x1 reading its centre rows.
fn convolve(inputs: &BlockInputs<'_>, g: &Geometry, precision: Products) -> (Vec<f32>, Vec<f32>) {
    let (depth, in_per_group, out_per_group) = (g.depth(), g.in_per_group(), g.out_per_group());
    let row = g.batch * g.pixels();
    let mut dense = vec![0.0; g.output_len()];
    let mut pointwise = vec![0.0; g.output_len()];
    let bf16_weights = (precision == Products::Bf16).then(|| Bf16Weights::of(inputs, g));
    Scratch::with(|scratch| {
        for (first, images) in g.blocks() {
            let width = images * g.pixels();
            for group in 0..g.groups {
                let im2col_time = Timer::start(Phase::BlockIm2col);
                im2col(inputs.x, inputs.order, g, [first, images, group], scratch);
                drop(im2col_time);
                let _products = Timer::start(Phase::BlockProducts);
                let columns = &scratch.columns[..depth * width];
                let start = group * out_per_group * row + first * g.pixels();
                if let Some(weights) = &bf16_weights {
                    // The same products, each right-hand side rounded to bf16 as it is packed.
                    let rhs = PackedRhs::from_rows(Element::Bf16, depth, width, columns, width);
                    let (dense_rows, pointwise_rows) = weights.group(group, out_per_group);
                    let dense_out = &mut dense[start..];
                    product(dense_out, row, dense_rows, even(depth), out_per_group, &rhs);
                    let centre = &columns[4 * width..];
                    let rhs =
                        PackedRhs::from_rows(Element::Bf16, in_per_group, width, centre, 9 * width);
                    let pointwise_out = &mut pointwise[start..];
                    let stride = even(in_per_group);
                    product(
                        pointwise_out,
                        row,
                        pointwise_rows,
                        stride,
                        out_per_group,
                        &rhs,
                    );
                    continue;
                }
                let dense_weight = &inputs.dense[group * out_per_group * depth..];
                matmul(
                    Mat::new(&mut dense[start..], row, 1),
                    MatRef::new(dense_weight, depth, 1),
                    MatRef::new(columns, width, 1),
                    [out_per_group, width, depth],
                    false,
                );
                let pointwise_weight = &inputs.pointwise[group * out_per_group * in_per_group..];
                matmul(
                    Mat::new(&mut pointwise[start..], row, 1),
                    MatRef::new(pointwise_weight, in_per_group, 1),
                    centre_rows(columns, width),
                    [out_per_group, width, in_per_group],
                    false,
                );
            }
        }
    });
    (dense, pointwise)
}

/// A block's weights as bf16 rows (the left-hand sides of the forward products): the 3x3's
/// `[out][in / groups x 3 x 3]` and the 1x1's `[out][in / groups]`, each row's length made even.
struct Bf16Weights {
    dense: Vec<bf16>,
    pointwise: Vec<bf16>,
    dense_len: usize,
    pointwise_len: usize,
}

impl Bf16Weights {
    fn of(inputs: &BlockInputs<'_>, g: &Geometry) -> Self {
        let (depth, in_per_group) = (g.depth(), g.in_per_group());
        let (mut dense, mut pointwise) = (Vec::new(), Vec::new());
        bf16_rows(inputs.dense, g.out_channels, depth, depth, &mut dense);
        let len = in_per_group;
        bf16_rows(inputs.pointwise, g.out_channels, len, len, &mut pointwise);
        Self {
            dense,
            pointwise,
            dense_len: even(depth),
            pointwise_len: even(in_per_group),
        }
    }

    /// The rows of `group`'s output channels: `(3x3, 1x1)`.
    fn group(&self, group: usize, out_per_group: usize) -> (&[bf16], &[bf16]) {
        let rows = group * out_per_group;
        (
            &self.dense[rows * self.dense_len..],
            &self.pointwise[rows * self.pointwise_len..],
        )
    }
}

/// The centre tap's rows of 3x3 im2col columns `width` wide: the input of the 1x1 convolution
/// with the same stride, as rows `[in_per_group x width]`.
fn centre_rows(columns: &[f32], width: usize) -> MatRef<'_> {
    MatRef::new(&columns[4 * width..], 9 * width, 1)
}

/// Channel `c`'s row of CNHW values, `len` long.
fn row(values: &[f32], c: usize, len: usize) -> &[f32] {
    &values[c * len..][..len]
}

/// Input channel `channel`'s planes, image after image.
fn input_planes<'a>(
    x: &'a [f32],
    order: Order,
    g: &Geometry,
    channel: usize,
) -> impl Iterator<Item = &'a [f32]> {
    let plane = g.height * g.width;
    (0..g.batch).map(move |image| {
        let index = order.plane(image, channel, g.batch, g.in_channels);
        &x[index * plane..][..plane]
    })
}

/// Channel `c`'s batch norms, from each branch's `(mean, variance)`, as one affine map: each
/// branch's scale (zero for a missing identity) and the sum of their shifts.
fn affine(
    inputs: &BlockInputs<'_>,
    moments: &[(f32, f32)],
    c: usize,
    channels: usize,
) -> ([f32; 3], f32) {
    let (mut scale, mut shift) = ([0.0; 3], 0.0f64);
    for (branch, (scale, &moments)) in scale.iter_mut().zip(moments).enumerate() {
        let i = branch * channels + c;
        let (s, t) = scale_shift(inputs.gamma[i], inputs.beta[i], moments, inputs.epsilon);
        *scale = s as f32;
        shift += t;
    }
    (scale, shift as f32)
}

/// What the backward pass reads beside the forward pass's inputs: the forward pass's results
/// (output, convolutions and statistics) and the output's gradient with its planes in `order`.
pub struct BlockSaved<'a> {
    pub output: &'a [f32],
    pub dense: &'a [f32],
    pub pointwise: &'a [f32],
    pub mean: &'a [f32],
    pub variance: &'a [f32],
    pub output_grad: &'a [f32],
    pub order: Order,
}

/// The gradients: of the input (CNHW; `None` when not asked for), of both weights, and of
/// `gamma` and `beta` `[branches x out]`.
pub struct BlockGradients {
    pub x: Option<Vec<f32>>,
    pub dense: Vec<f32>,
    pub pointwise: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// The block's backward pass.
pub fn backward(
    inputs: &BlockInputs<'_>,
    saved: &BlockSaved<'_>,
    b: &BlockGeometry,
    input_grad: bool,
) -> BlockGradients {
    let g = &b.conv;
    check(inputs, b);
    let (channels, per_channel, pixels) = (g.out_channels, b.per_channel(), g.pixels());
    assert_eq!(
        saved.output_grad.len(),
        b.output_len(),
        "the output's gradient"
    );
    let branches = b.branches();
    let samples = per_channel as f64;
    // Per channel, in one task while its values are in cache: the gradient through the ReLU,
    // each branch's sums `(sum g, sum g (z - mean))`, and from them the convolutions' output
    // gradients.
    let mut relu_grad = vec![0.0; b.output_len()];
    let mut dense_grad = vec![0.0; b.output_len()];
    let mut pointwise_grad = vec![0.0; b.output_len()];
    let norm = Timer::start(Phase::BlockNormBackward);
    let per_channel_grads: Vec<[ChannelGrad; 3]> = relu_grad
        .par_chunks_mut(per_channel)
        .zip(dense_grad.par_chunks_mut(per_channel))
        .zip(pointwise_grad.par_chunks_mut(per_channel))
        .enumerate()
        .map(|(c, ((relu_grad, dense_grad), pointwise_grad))| {
            let output = row(saved.output, c, per_channel);
            for (image, relu_grad) in relu_grad.chunks_exact_mut(pixels).enumerate() {
                let index = saved.order.plane(image, c, g.batch, channels);
                let output_grad = &saved.output_grad[index * pixels..][..pixels];
                let output = &output[image * pixels..][..pixels];
                for ((grad, &dy), &y) in relu_grad.iter_mut().zip(output_grad).zip(output) {
                    *grad = if y > 0.0 { dy } else { 0.0 };
                }
            }
            let relu_grad = &*relu_grad;
            let (dense, pointwise) = (
                row(saved.dense, c, per_channel),
                row(saved.pointwise, c, per_channel),
            );
            let mean = |branch: usize| saved.mean[branch * channels + c];
            let sums = [
                grad_sums(std::iter::once((relu_grad, dense)), mean(0)),
                grad_sums(std::iter::once((relu_grad, pointwise)), mean(1)),
                match b.identity {
                    true => {
                        let planes = input_planes(inputs.x, inputs.order, g, c);
                        grad_sums(relu_grad.chunks_exact(pixels).zip(planes), mean(2))
                    }
                    false => (0.0, 0.0),
                },
            ];
            let mut grads = [ChannelGrad::default(); 3];
            for (branch, (grad, &sums)) in grads.iter_mut().zip(&sums).enumerate().take(branches) {
                let i = branch * channels + c;
                let moments = (saved.mean[i], saved.variance[i]);
                *grad = ChannelGrad::new(sums, inputs.gamma[i], moments, inputs.epsilon, samples);
            }
            for (out, z, grad) in [
                (dense_grad, dense, grads[0]),
                (pointwise_grad, pointwise, grads[1]),
            ] {
                for ((out, &dy), &z) in out.iter_mut().zip(relu_grad).zip(z) {
                    *out = grad.input(dy, z);
                }
            }
            grads
        })
        .collect();
    drop(norm);
    let mut gamma_grad = vec![0.0; branches * channels];
    let mut beta_grad = vec![0.0; branches * channels];
    for (c, grads) in per_channel_grads.iter().enumerate() {
        for (branch, grad) in grads.iter().enumerate().take(branches) {
            gamma_grad[branch * channels + c] = grad.gamma;
            beta_grad[branch * channels + c] = grad.beta;
        }
    }
    let (dense, pointwise, mut x) = convolution_grads(
        inputs,
        g,
        [&dense_grad, &pointwise_grad],
        input_grad,
        products(),
    );
    if let Some(x) = x.as_mut().filter(|_| b.identity) {
        let _identity = Timer::start(Phase::BlockIdentityGrad);
        let plane = g.height * g.width;
        x.par_chunks_mut(g.batch * plane)
            .enumerate()
            .for_each(|(c, x_grad)| {
                let identity = per_channel_grads[c][2];
                let dy = row(&relu_grad, c, per_channel);
                let planes = input_planes(inputs.x, inputs.order, g, c);
                for ((x_grad, dy), x) in x_grad
                    .chunks_exact_mut(plane)
                    .zip(dy.chunks(plane))
                    .zip(planes)
                {
                    for ((grad, &dy), &x) in x_grad.iter_mut().zip(dy).zip(x) {
                        *grad += identity.input(dy, x);
                    }
                }
            });
    }
    BlockGradients {
        x,
        dense,
        pointwise,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}

/// The gradients of both weights and (when asked) of the input (CNHW) from the convolutions'
/// output gradients (CNHW): per block of images and group, one pixel-major im2col shared by
/// both weight gradients, and one column gradient into which the 1x1's adds its centre rows;
/// products in `precision`.
fn convolution_grads(
    inputs: &BlockInputs<'_>,
    g: &Geometry,
    [dense_grad, pointwise_grad]: [&[f32]; 2],
    input_grad: bool,
    precision: Products,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (depth, in_per_group, out_per_group) = (g.depth(), g.in_per_group(), g.out_per_group());
    let row = g.batch * g.pixels();
    let taps = g.kernel * g.kernel;
    let mut dense = vec![0.0; g.weight_len()];
    let mut pointwise = vec![0.0; g.out_channels * in_per_group];
    let mut x = input_grad.then(|| vec![0.0; g.input_len()]);
    Scratch::with(|scratch| {
        // The 3x3 weight and its gradient with their depth in the columns' `(ky, kx,
        // channel)` order.
        // (Taken out of `scratch` for the loop, which lends the rest of it to im2col.)
        let (mut weight_buffer, mut grad_buffer) = (
            std::mem::take(&mut scratch.weight),
            std::mem::take(&mut scratch.weight_grad),
        );
        let dense_by_tap_weight = sized(&mut weight_buffer, g.weight_len());
        if input_grad {
            by_tap(inputs.dense, dense_by_tap_weight, in_per_group, taps);
        }
        let dense_by_tap_weight = &*dense_by_tap_weight;
        let dense_by_tap = sized(&mut grad_buffer, g.weight_len());
        dense_by_tap.fill(0.0);
        // bf16 products: each group's weights packed once, as the column gradients'
        // right-hand sides.
        let bf16_packed = (precision == Products::Bf16).then(|| {
            (0..g.groups)
                .map(|group| {
                    let dense = &dense_by_tap_weight[group * out_per_group * depth..];
                    let pointwise = &inputs.pointwise[group * out_per_group * in_per_group..];
                    let len = in_per_group;
                    [
                        PackedRhs::from_rows(Element::Bf16, out_per_group, depth, dense, depth),
                        PackedRhs::from_rows(Element::Bf16, out_per_group, len, pointwise, len),
                    ]
                })
                .collect::<Vec<_>>()
        });
        for (block, (first, images)) in g.blocks().enumerate() {
            let width = images * g.pixels();
            for group in 0..g.groups {
                let im2col_time = Timer::start(Phase::BlockIm2colBackward);
                im2col_pixel_major(inputs.x, inputs.order, g, [first, images, group], scratch);
                drop(im2col_time);
                let start = group * out_per_group * row + first * g.pixels();
                let dense_weight =
                    group * out_per_group * depth..(group + 1) * out_per_group * depth;
                let pointwise_weight = group * out_per_group * in_per_group
                    ..(group + 1) * out_per_group * in_per_group;
                // The 1x1 reads the centre tap's channels: `(1, 1, channel)`.
                let centre = (g.kernel / 2 * g.kernel + g.kernel / 2) * in_per_group;
                if let Some(packed) = &bf16_packed {
                    let grads = BlockGrads {
                        dense: &dense_grad[start..],
                        pointwise: &pointwise_grad[start..],
                        row,
                    };
                    let weights = [
                        &mut dense_by_tap[dense_weight],
                        &mut pointwise[pointwise_weight],
                    ];
                    let shape = [width, out_per_group, in_per_group, centre];
                    let x = x.as_mut().map(|x| (x, [first, images, group]));
                    bf16_grads(g, grads, &packed[group], weights, x, shape, scratch);
                    continue;
                }
                let weight_grads = Timer::start(Phase::BlockWeightGrads);
                let columns = &scratch.columns[..depth * width];
                // dW^T [depth x out_per_group] (+)= columns^T [depth x width] . rows^T, each
                // operand read where it lies: dW^T and the columns^T are column-major.
                matmul(
                    Mat::new(&mut dense_by_tap[dense_weight.clone()], 1, depth),
                    MatRef::new(columns, 1, depth),
                    MatRef::new(&dense_grad[start..], 1, row),
                    [depth, out_per_group, width],
                    block > 0,
                );
                matmul(
                    Mat::new(&mut pointwise[pointwise_weight.clone()], 1, in_per_group),
                    MatRef::new(&columns[centre..], 1, depth),
                    MatRef::new(&pointwise_grad[start..], 1, row),
                    [in_per_group, out_per_group, width],
                    block > 0,
                );
                drop(weight_grads);
                let Some(x) = x.as_mut() else { continue };
                let column_grads = Timer::start(Phase::BlockColumnGrads);
                // The pixel-major columns' gradient [width x depth] = rows^T [width x
                // out_per_group] . W [out_per_group x depth], and the 1x1's on the centre tap.
                let column_grad = &mut scratch.product;
                column_grad.resize(depth * width, 0.0);
                matmul(
                    Mat::new(column_grad, depth, 1),
                    MatRef::new(&dense_grad[start..], 1, row),
                    MatRef::new(&dense_by_tap_weight[dense_weight], depth, 1),
                    [width, depth, out_per_group],
                    false,
                );
                matmul(
                    Mat::new(&mut column_grad[centre..], depth, 1),
                    MatRef::new(&pointwise_grad[start..], 1, row),
                    MatRef::new(&inputs.pointwise[pointwise_weight], in_per_group, 1),
                    [width, in_per_group, out_per_group],
                    true,
                );
                drop(column_grads);
                let _col2im = Timer::start(Phase::BlockCol2im);
                let place = [first, images, group];
                col2im_pixel_major(column_grad, g, place, x, &mut scratch.padded);
            }
        }
        by_channel(dense_by_tap, &mut dense, in_per_group, taps);
        (scratch.weight, scratch.weight_grad) = (weight_buffer, grad_buffer);
    });
    (dense, pointwise, x)
}

/// One block of images' and group's output gradients: rows `row` apart, the block's first pixel
/// at the start of each slice.
struct BlockGrads<'a> {
    dense: &'a [f32],
    pointwise: &'a [f32],
    row: usize,
}

/// [`convolution_grads`]' products for one block of images and group in bf16 with f32 sums,
/// from the pixel-major columns in `scratch.columns`: the weight gradients added to `weights`
/// (`[3x3 by tap, 1x1]` of the group), and with `x` the column gradients folded into the
/// input's gradient. `shape`: `[width (pixels), out_per_group, in_per_group, centre tap]`;
/// `packed`: the group's `[3x3 by tap, 1x1]` weights packed as right-hand sides.
fn bf16_grads(
    g: &Geometry,
    grads: BlockGrads<'_>,
    packed: &[PackedRhs; 2],
    weights: [&mut [f32]; 2],
    x: Option<(&mut Vec<f32>, [usize; 3])>,
    [width, out_per_group, in_per_group, centre]: [usize; 4],
    scratch: &mut Scratch,
) {
    let depth = g.depth();
    let weight_grads = Timer::start(Phase::BlockWeightGrads);
    let columns = &scratch.columns[..depth * width];
    let [dense_rows, pointwise_rows] = &mut scratch.bf16_rows;
    bf16_rows(grads.dense, out_per_group, width, grads.row, dense_rows);
    bf16_rows(
        grads.pointwise,
        out_per_group,
        width,
        grads.row,
        pointwise_rows,
    );
    // dW [out_per_group x depth] += rows [out_per_group x width] . columns [width x depth],
    // and the 1x1's from the centre tap's columns.
    let [dense_weight, pointwise_weight] = weights;
    for (rows, weight, (offset, len)) in [
        (&*dense_rows, dense_weight, (0, depth)),
        (&*pointwise_rows, pointwise_weight, (centre, in_per_group)),
    ] {
        let rhs = PackedRhs::from_rows(Element::Bf16, width, len, &columns[offset..], depth);
        let sums = sized(&mut scratch.product, out_per_group * len);
        product(sums, len, rows, even(width), out_per_group, &rhs);
        for (weight, sum) in weight.iter_mut().zip(&*sums) {
            *weight += sum;
        }
    }
    drop(weight_grads);
    let Some((x, place)) = x else { return };
    let column_grads = Timer::start(Phase::BlockColumnGrads);
    // The pixel-major columns' gradient [width x depth] = rows^T [width x out_per_group] . W,
    // and the 1x1's added on the centre tap.
    let [dense_t, pointwise_t] = &mut scratch.bf16_transposed;
    transposed(dense_rows, out_per_group, width, even(width), dense_t);
    transposed(
        pointwise_rows,
        out_per_group,
        width,
        even(width),
        pointwise_t,
    );
    let column_grad = sized(&mut scratch.product, width * depth);
    product(
        column_grad,
        depth,
        dense_t,
        even(out_per_group),
        width,
        &packed[0],
    );
    let pointwise_sums = sized(&mut scratch.weight_grad_pointwise, width * in_per_group);
    let len = in_per_group;
    product(
        pointwise_sums,
        len,
        pointwise_t,
        even(out_per_group),
        width,
        &packed[1],
    );
    column_grad
        .par_chunks_exact_mut(depth)
        .zip(pointwise_sums.par_chunks_exact(len))
        .for_each(|(window, sums)| {
            for (value, sum) in window[centre..][..len].iter_mut().zip(sums) {
                *value += sum;
            }
        });
    drop(column_grads);
    let _col2im = Timer::start(Phase::BlockCol2im);
    col2im_pixel_major(column_grad, g, place, x, &mut scratch.padded);
}

/// Weights `[out][channel][tap]` as `[out][tap][channel]`, the pixel-major columns' order.
fn by_tap(weight: &[f32], by_tap: &mut [f32], channels: usize, taps: usize) {
    let depth = channels * taps;
    for (out, weight) in by_tap
        .chunks_exact_mut(depth)
        .zip(weight.chunks_exact(depth))
    {
        for (channel, values) in weight.chunks_exact(taps).enumerate() {
            for (tap, &value) in values.iter().enumerate() {
                out[tap * channels + channel] = value;
            }
        }
    }
}

/// The inverse of [`by_tap`].
fn by_channel(by_tap: &[f32], weight: &mut [f32], channels: usize, taps: usize) {
    let depth = channels * taps;
    for (out, by_tap) in weight
        .chunks_exact_mut(depth)
        .zip(by_tap.chunks_exact(depth))
    {
        for (tap, values) in by_tap.chunks_exact(channels).enumerate() {
            for (channel, &value) in values.iter().enumerate() {
                out[channel * taps + tap] = value;
            }
        }
    }
}

fn check(inputs: &BlockInputs<'_>, b: &BlockGeometry) {
    let g = &b.conv;
    assert!(
        g.kernel == 3 && g.padding == 1,
        "a block's dense convolution is 3x3 with padding 1"
    );
    assert_eq!(inputs.x.len(), g.input_len(), "input of {g:?}");
    assert_eq!(inputs.dense.len(), g.weight_len(), "3x3 weight of {g:?}");
    assert_eq!(
        inputs.pointwise.len(),
        g.out_channels * g.in_per_group(),
        "1x1 weight of {g:?}"
    );
    assert_eq!(
        inputs.gamma.len(),
        b.branches() * g.out_channels,
        "gamma for {} branches of {} channels",
        b.branches(),
        g.out_channels
    );
    assert!(
        !b.identity || (g.in_channels == g.out_channels && g.stride == 1),
        "the identity branch keeps the shape"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixed::bf16_products_supported;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Largest difference relative to the largest magnitude of `expected`.
    fn relative(actual: &[f32], expected: &[f32]) -> f32 {
        assert_eq!(actual.len(), expected.len());
        let scale = expected.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let worst = actual
            .iter()
            .zip(expected)
            .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
        worst / scale
    }

    /// The convolutions and their gradients with bf16 products equal the f32 ones within bf16's
    /// rounding (operands to 8 significant bits, sums in f32): odd sizes, stride 2, groups,
    /// batch 1, the 3-channel stem, and images taken in several blocks.
    #[test]
    fn bf16_products_equal_f32_products_within_rounding() {
        if !bf16_products_supported() {
            eprintln!("skipped: this CPU lacks AVX512_BF16");
            return;
        }
        let base = Geometry {
            batch: 2,
            in_channels: 6,
            height: 9,
            width: 7,
            out_channels: 10,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        for g in [
            base,
            Geometry { stride: 2, ..base },
            Geometry {
                groups: 2,
                out_channels: 8,
                ..base
            },
            Geometry {
                batch: 1,
                in_channels: 3,
                out_channels: 16,
                height: 33,
                width: 31,
                stride: 2,
                ..base
            },
            Geometry {
                batch: 64,
                in_channels: 12,
                out_channels: 12,
                height: 2,
                width: 2,
                ..base
            },
            Geometry {
                batch: 3,
                in_channels: 16,
                out_channels: 16,
                height: 128,
                width: 128,
                ..base
            },
        ] {
            let in_per_group = g.in_per_group();
            let (x, dense, pointwise) = (
                values(g.input_len(), 1),
                values(g.weight_len(), 2),
                values(g.out_channels * in_per_group, 3),
            );
            let inputs = BlockInputs {
                x: &x,
                order: Order::Nchw,
                dense: &dense,
                pointwise: &pointwise,
                gamma: &[],
                beta: &[],
                epsilon: 1e-5,
            };
            let [exact, rounded] =
                [Products::F32, Products::Bf16].map(|p| convolve(&inputs, &g, p));
            assert!(relative(&rounded.0, &exact.0) < 1e-2, "{g:?}: 3x3 output");
            assert!(relative(&rounded.1, &exact.1) < 1e-2, "{g:?}: 1x1 output");
            let (dense_grad, pointwise_grad) =
                (values(g.output_len(), 4), values(g.output_len(), 5));
            let grads = [&dense_grad[..], &pointwise_grad[..]];
            let [exact, rounded] = [Products::F32, Products::Bf16]
                .map(|p| convolution_grads(&inputs, &g, grads, true, p));
            assert!(
                relative(&rounded.0, &exact.0) < 1e-2,
                "{g:?}: 3x3 weight gradient"
            );
            assert!(
                relative(&rounded.1, &exact.1) < 1e-2,
                "{g:?}: 1x1 weight gradient"
            );
            let (rounded_x, exact_x) = (rounded.2.unwrap(), exact.2.unwrap());
            assert!(
                relative(&rounded_x, &exact_x) < 1e-2,
                "{g:?}: input gradient"
            );
            // bf16 did round.
            assert!(relative(&rounded_x, &exact_x) > 1e-5, "{g:?}: not rounded");
        }
    }
}
