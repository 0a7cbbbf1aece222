//! A CPU inference path for the deploy model. The plain stack of 3x3 convolutions runs with
//! channels-last activations kept from layer to layer, each convolution as one im2col pass and
//! one `gemm` call per group whose output starts from the bias, and ReLU applied in place: none
//! of the per-layer layout conversions of a general-purpose backend. Weights are rearranged once,
//! when the path is built.

use std::sync::Mutex;

use burn::tensor::{Tensor, TensorData};
use gemm::Parallelism;
use rayon::prelude::*;
use repvgg_model::{RepVggDeploy, RepVggDeployBlock, SqueezeExcite};

/// The deploy model prepared for the CPU path; computes what
/// [`RepVggDeploy::forward`](repvgg_model::RepVggNetwork::forward) computes.
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use repvgg_deploy::CpuDeploy;
/// use repvgg_model::RepVggConfig;
///
/// let device = Device::flex();
/// let model = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(5).init_deploy(&device);
/// let fast = CpuDeploy::new(&model);
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(fast.forward(images).dims(), [2, 5]);
/// ```
#[derive(Debug)]
pub struct CpuDeploy {
    layers: Vec<Layer>,
    /// Linear head, `[features, classes]` row-major, and its bias.
    head_weight: Vec<f32>,
    head_bias: Vec<f32>,
    /// Activation and im2col buffers kept between calls: allocating them afresh costs page
    /// faults on every layer (tens of MB at batch 8).
    scratch: Mutex<Scratch>,
}

#[derive(Debug, Default)]
struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
    columns: Vec<f32>,
}

#[derive(Clone, Debug)]
struct Layer {
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    groups: usize,
    /// Per group, `[9 * in_per_group, out_per_group]` row-major, rows ordered (ky, kx, ci).
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
    se: Option<Excitation>,
}

/// Squeeze-excitation weights: `down` `[hidden, channels]`, `up` `[channels, hidden]`.
#[derive(Clone, Debug)]
struct Excitation {
    hidden: usize,
    down: Vec<f32>,
    down_bias: Vec<f32>,
    up: Vec<f32>,
    up_bias: Vec<f32>,
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 after conversion")
}

impl CpuDeploy {
    /// Reads the model's weights (from any device) and rearranges them for the CPU path.
    pub fn new(model: &RepVggDeploy) -> Self {
        let layers = std::iter::once(&model.stage0)
            .chain(model.stages().flatten())
            .map(Layer::new)
            .collect();
        Self {
            layers,
            head_weight: values(model.linear.weight.val()),
            head_bias: model
                .linear
                .bias
                .as_ref()
                .map(|bias| values(bias.val()))
                .unwrap_or_default(),
            scratch: Mutex::default(),
        }
    }

    /// Class logits, `[N, 3, H, W]` to `[N, classes]`, on the images' device.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let [batch, channels, mut height, mut width] = images.dims();
        // A concurrent call on the same model works in fresh buffers instead of waiting.
        let mut fresh = Scratch::default();
        let mut guard = self.scratch.try_lock().ok();
        let Scratch {
            input,
            output,
            columns,
        } = guard.as_deref_mut().unwrap_or(&mut fresh);
        to_channels_last(&values(images), channels, height, width, input);
        for layer in &self.layers {
            (height, width) = layer.forward(input, batch, height, width, columns, output);
            std::mem::swap(input, output);
        }
        let features = self.layers.last().map_or(channels, |l| l.out_channels);
        let classes = self.head_bias.len();
        let pooled = average_pool(input, batch, height * width, features);
        let mut logits: Vec<f32> = (0..batch).flat_map(|_| self.head_bias.clone()).collect();
        // SAFETY: the slices hold exactly the shapes passed: pooled [batch, features], head
        // [features, classes], logits [batch, classes], all row-major.
        unsafe {
            matmul_add(
                &mut logits,
                classes,
                &pooled,
                features,
                &self.head_weight,
                classes,
                batch,
                classes,
                features,
            );
        }
        Tensor::from_data(TensorData::new(logits, [batch, classes]), &device)
    }
}

impl Layer {
    fn new(block: &RepVggDeployBlock) -> Self {
        let conv = &block.rbr_reparam;
        let weight = conv.weight.val();
        let [out_channels, in_per_group, kh, kw] = weight.dims();
        assert_eq!([kh, kw], [3, 3], "deploy blocks hold 3x3 convolutions");
        let groups = conv.groups;
        let out_per_group = out_channels / groups;
        let weight = values(weight);
        let weights = (0..groups)
            .map(|g| {
                let mut packed = vec![0f32; 9 * in_per_group * out_per_group];
                for co in 0..out_per_group {
                    for ci in 0..in_per_group {
                        for k in 0..9 {
                            let source = (((g * out_per_group + co) * in_per_group) + ci) * 9 + k;
                            packed[(k * in_per_group + ci) * out_per_group + co] = weight[source];
                        }
                    }
                }
                packed
            })
            .collect();
        let bias = conv
            .bias
            .as_ref()
            .map_or(vec![0.0; out_channels], |bias| values(bias.val()));
        Self {
            in_channels: in_per_group * groups,
            out_channels,
            stride: conv.stride[0],
            groups,
            weights,
            bias,
            se: block.se.as_ref().map(Excitation::new),
        }
    }

    /// Convolution + bias (+ SE) + ReLU of channels-last `input` `[batch, height, width, in]`
    /// into `output`; returns the output's height and width.
    fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        columns: &mut Vec<f32>,
        output: &mut Vec<f32>,
    ) -> (usize, usize) {
        let stride = self.stride;
        let (out_h, out_w) = ((height - 1) / stride + 1, (width - 1) / stride + 1);
        let rows = batch * out_h * out_w;
        let in_per_group = self.in_channels / self.groups;
        let out_per_group = self.out_channels / self.groups;
        let depth = 9 * in_per_group;
        output.resize(rows * self.out_channels, 0.0);
        output
            .par_chunks_mut(self.out_channels)
            .for_each(|row| row.copy_from_slice(&self.bias));
        columns.resize(rows * depth, 0.0);
        for (g, weights) in self.weights.iter().enumerate() {
            let first = g * in_per_group;
            columns
                .par_chunks_mut(depth)
                .enumerate()
                .for_each(|(r, row)| {
                    let (image, pixel) = (r / (out_h * out_w), r % (out_h * out_w));
                    let (oy, ox) = (pixel / out_w, pixel % out_w);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let slot = &mut row[(ky * 3 + kx) * in_per_group..][..in_per_group];
                            let (iy, ix) = (
                                (oy * stride + ky).wrapping_sub(1),
                                (ox * stride + kx).wrapping_sub(1),
                            );
                            if iy < height && ix < width {
                                let start =
                                    ((image * height + iy) * width + ix) * self.in_channels + first;
                                slot.copy_from_slice(&input[start..start + in_per_group]);
                            } else {
                                slot.fill(0.0);
                            }
                        }
                    }
                });
            // SAFETY: columns [rows, depth], weights [depth, out_per_group] and the group's
            // column block of output [rows, out_channels] (offset g * out_per_group) are in bounds.
            unsafe {
                matmul_add(
                    &mut output[g * out_per_group..],
                    self.out_channels,
                    columns,
                    depth,
                    weights,
                    out_per_group,
                    rows,
                    out_per_group,
                    depth,
                );
            }
        }
        if let Some(se) = &self.se {
            se.apply(output, batch, out_h * out_w, self.out_channels);
        }
        output.par_chunks_mut(4096).for_each(|chunk| {
            for value in chunk {
                *value = value.max(0.0);
            }
        });
        (out_h, out_w)
    }
}

impl Excitation {
    fn new(se: &SqueezeExcite) -> Self {
        let hidden = se.down.weight.dims()[0];
        let bias = |conv: &burn::nn::conv::Conv2d| {
            conv.bias
                .as_ref()
                .map(|b| values(b.val()))
                .unwrap_or_default()
        };
        Self {
            hidden,
            down: values(se.down.weight.val()),
            down_bias: bias(&se.down),
            up: values(se.up.weight.val()),
            up_bias: bias(&se.up),
        }
    }

    /// Scales every channel of each image by `sigmoid(up(relu(down(mean))))`.
    fn apply(&self, features: &mut [f32], batch: usize, pixels: usize, channels: usize) {
        let pooled = average_pool(features, batch, pixels, channels);
        features
            .par_chunks_mut(pixels * channels)
            .zip(pooled.par_chunks(channels))
            .for_each(|(image, mean)| {
                let hidden: Vec<f32> = (0..self.hidden)
                    .map(|h| {
                        let row = &self.down[h * channels..][..channels];
                        let sum: f32 = row.iter().zip(mean).map(|(w, x)| w * x).sum();
                        (sum + self.down_bias.get(h).copied().unwrap_or(0.0)).max(0.0)
                    })
                    .collect();
                let scale: Vec<f32> = (0..channels)
                    .map(|c| {
                        let row = &self.up[c * self.hidden..][..self.hidden];
                        let sum: f32 = row.iter().zip(&hidden).map(|(w, x)| w * x).sum();
                        let z = sum + self.up_bias.get(c).copied().unwrap_or(0.0);
                        1.0 / (1.0 + (-z).exp())
                    })
                    .collect();
                for pixel in image.chunks_mut(channels) {
                    for (value, s) in pixel.iter_mut().zip(&scale) {
                        *value *= s;
                    }
                }
            });
    }
}

/// `[N, C, H, W]` to `[N, H, W, C]`, into `out`.
fn to_channels_last(
    data: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    out: &mut Vec<f32>,
) {
    let plane = height * width;
    out.resize(data.len(), 0.0);
    out.par_chunks_mut(plane * channels)
        .enumerate()
        .for_each(|(n, image)| {
            for c in 0..channels {
                let source = &data[(n * channels + c) * plane..][..plane];
                for (p, value) in source.iter().enumerate() {
                    image[p * channels + c] = *value;
                }
            }
        });
}

/// Mean over the pixels of channels-last `[batch, pixels, channels]`: `[batch, channels]`.
fn average_pool(data: &[f32], batch: usize, pixels: usize, channels: usize) -> Vec<f32> {
    let mut pooled = vec![0f32; batch * channels];
    pooled
        .par_chunks_mut(channels)
        .enumerate()
        .for_each(|(n, mean)| {
            for pixel in data[n * pixels * channels..][..pixels * channels].chunks(channels) {
                for (m, v) in mean.iter_mut().zip(pixel) {
                    *m += v;
                }
            }
            for m in mean.iter_mut() {
                *m /= pixels as f32;
            }
        });
    pooled
}

/// `dst[m, n] += lhs[m, k] * rhs[k, n]`, all row-major with the given row strides.
///
/// # Safety
/// Each matrix must lie within its slice: `dst` spans `(m - 1) * dst_stride + n` elements,
/// `lhs` `(m - 1) * lhs_stride + k`, `rhs` `(k - 1) * rhs_stride + n`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_add(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: &[f32],
    lhs_stride: usize,
    rhs: &[f32],
    rhs_stride: usize,
    m: usize,
    n: usize,
    k: usize,
) {
    debug_assert!(m == 0 || dst.len() >= (m - 1) * dst_stride + n);
    debug_assert!(m == 0 || lhs.len() >= (m - 1) * lhs_stride + k);
    debug_assert!(k == 0 || rhs.len() >= (k - 1) * rhs_stride + n);
    let threads = rayon::current_num_threads();
    // SAFETY: the caller guarantees the bounds above; strides are in elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            true,
            lhs.as_ptr(),
            1,
            lhs_stride as isize,
            rhs.as_ptr(),
            1,
            rhs_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(threads),
        );
    }
}
