//! The quantized deploy network and its reference int8 forward pass: u8 activations times s8
//! weights, accumulated exactly in i32, rescaled to f32 with the bias and ReLU.

use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use repvgg_model::{Block, RepVggDeploy, RepVggDeployBlock};

use super::calibrate::{ActivationScale, CalibrationRule, Observer};
use crate::kernel::{self, Element, Lhs, PackedRhs};
use crate::ops::MatMut;

/// Why a network cannot be quantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A part of the network the int8 path does not cover yet.
    #[error("int8 quantization does not cover {0} yet")]
    Unsupported(&'static str),
    /// Calibration needs images.
    #[error("no calibration images")]
    NoCalibrationImages,
    /// A layer index beyond the network's.
    #[error("layer {index} does not exist: the network has {layers} layers")]
    NoSuchLayer { index: usize, layers: usize },
}

/// One fused 3x3 convolution (padding 1) with bias and ReLU, its weights quantized to s8 per
/// output channel and its input to u8 per tensor; or kept in f32 (`int8` false), as the
/// sensitivity analysis and mixed precision leave the layers that suffer most.
#[derive(Clone, Debug)]
pub struct QuantizedConv {
    shape: ConvShape,
    /// `[out][ky][kx][in / groups]`, symmetric: `real = weight_scale[out] * q`.
    weight: Vec<i8>,
    weight_scale: Vec<f32>,
    /// The f32 weights in the same layout, for the layer in f32.
    float_weight: Vec<f32>,
    bias: Vec<f32>,
    /// The quantization of the layer's input.
    pub input: ActivationScale,
    /// Whether the layer computes in int8 (else in f32).
    pub int8: bool,
    /// Per output channel and tap, the sum of the s8 weights: the zero point's share of the
    /// sums (derived from `weight`, which is why the weights are read-only).
    tap_sums: Vec<i32>,
    /// The weights packed for the u8 x s8 kernels, one product per group (none where the CPU
    /// lacks AVX512_VNNI).
    packed: Vec<PackedRhs>,
}

/// A RepVGG deploy network with its convolutions in int8: calibrated on images, then run by
/// [`forward`](Self::forward) in integer arithmetic (the definition faster kernels must agree
/// with). The pooled features and the classifier stay in f32.
#[derive(Clone, Debug)]
pub struct QuantizedNetwork {
    layers: Vec<QuantizedConv>,
    /// `[in][out]` (Burn's layout) and the bias; `None` for a headless network.
    head: Option<(Vec<f32>, Vec<f32>)>,
}

/// Outputs of a `[channels, height, width]` layer, channels last.
struct Activation {
    values: Vec<f32>,
    height: usize,
    width: usize,
}

impl Activation {
    /// A `[channels, height, width]` image (channels first), laid out channels last.
    fn channels_last(image: &[f32], [channels, height, width]: [usize; 3]) -> Self {
        let mut values = vec![0f32; image.len()];
        for c in 0..channels {
            for p in 0..height * width {
                values[p * channels + c] = image[c * height * width + p];
            }
        }
        Self {
            values,
            height,
            width,
        }
    }
}

impl QuantizedNetwork {
    /// Quantizes `network`: weights per output channel, each layer's input by `rule` over what
    /// `images` (normalized batches, as for inference) produce there in f32.
    pub fn calibrate(
        network: &RepVggDeploy,
        images: impl IntoIterator<Item = Tensor<4>>,
        rule: CalibrationRule,
    ) -> Result<Self, QuantizeError> {
        Self::calibrate_rules(network, images, &[rule]).map(|mut networks| networks.remove(0))
    }

    /// [`calibrate`](Self::calibrate) with several rules from one pass over the images: one
    /// network per rule, in order.
    pub fn calibrate_rules(
        network: &RepVggDeploy,
        images: impl IntoIterator<Item = Tensor<4>>,
        rules: &[CalibrationRule],
    ) -> Result<Vec<Self>, QuantizeError> {
        let blocks: Vec<&RepVggDeployBlock> = network.blocks().collect();
        if blocks.iter().any(|b| b.se.is_some() || b.post_se.is_some()) {
            return Err(QuantizeError::Unsupported("squeeze-excitation (D2se)"));
        }
        let mut observers = vec![Observer::default(); blocks.len()];
        let mut batches = 0;
        for batch in images {
            batches += 1;
            let mut x = batch;
            for (observer, block) in observers.iter_mut().zip(&blocks) {
                let values = x.to_data();
                observer.observe(values.as_slice::<f32>().expect("f32 activations"));
                x = block.forward(x);
            }
        }
        if batches == 0 {
            return Err(QuantizeError::NoCalibrationImages);
        }
        let head = network.linear.as_ref().map(|linear| {
            let bias = linear
                .bias
                .as_ref()
                .map_or_else(Vec::new, |b| floats(b.val()));
            (floats(linear.weight.val()), bias)
        });
        Ok(rules
            .iter()
            .map(|&rule| Self {
                layers: blocks
                    .iter()
                    .zip(&observers)
                    .map(|(block, observer)| {
                        quantize_conv(&block.rbr_reparam, observer.scale(rule))
                    })
                    .collect(),
                head: head.clone(),
            })
            .collect())
    }

    /// A network from its layers (stem first) and its classifier (`[in][out]` weights, as
    /// Burn's `Linear` keeps them, and the bias), as a file keeps them.
    pub fn from_parts(layers: Vec<QuantizedConv>, head: Option<(Vec<f32>, Vec<f32>)>) -> Self {
        Self { layers, head }
    }

    /// The layers, stem first.
    pub fn layers(&self) -> &[QuantizedConv] {
        &self.layers
    }

    /// The classifier's `[in][out]` weights and bias; `None` for a headless network.
    pub fn head(&self) -> Option<(&[f32], &[f32])> {
        self.head
            .as_ref()
            .map(|(w, b)| (w.as_slice(), b.as_slice()))
    }

    /// This network with layer `index` (0: the stem) computing in int8 or f32.
    pub fn with_layer_in_int8(mut self, index: usize, int8: bool) -> Result<Self, QuantizeError> {
        let layers = self.layers.len();
        let layer = self
            .layers
            .get_mut(index)
            .ok_or(QuantizeError::NoSuchLayer { index, layers })?;
        layer.int8 = int8;
        Ok(self)
    }

    /// Logits (or pooled features, headless) of normalized images `[N, 3, H, W]`, on the
    /// images' device; the images run in parallel.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let [batch, channels, height, width] = images.dims();
        let data = images.into_data();
        let pixels = data.as_slice::<f32>().expect("f32 images");
        let outputs: Vec<Vec<f32>> = (0..batch)
            .into_par_iter()
            .map(|index| {
                let image =
                    &pixels[index * channels * height * width..][..channels * height * width];
                self.forward_image(image, channels, height, width)
            })
            .collect();
        let width = outputs.first().map_or(0, Vec::len);
        to_tensor(outputs.concat(), [batch, width], &device)
    }

    fn forward_image(
        &self,
        image: &[f32],
        channels: usize,
        height: usize,
        width: usize,
    ) -> Vec<f32> {
        let mut x = Activation::channels_last(image, [channels, height, width]);
        for layer in &self.layers {
            x = layer.forward(&x);
        }
        let pixels = x.height * x.width;
        let features = self
            .layers
            .last()
            .map_or(channels, |l| l.shape.out_channels);
        let mut pooled = vec![0f32; features];
        for pixel in x.values.chunks_exact(features) {
            for (sum, value) in pooled.iter_mut().zip(pixel) {
                *sum += value;
            }
        }
        pooled.iter_mut().for_each(|sum| *sum /= pixels as f32);
        match &self.head {
            None => pooled,
            Some((weight, bias)) => {
                let outputs = bias.len().max(weight.len() / features.max(1));
                let mut logits = bias.clone();
                logits.resize(outputs, 0.0);
                for (i, feature) in pooled.iter().enumerate() {
                    for (logit, w) in logits.iter_mut().zip(&weight[i * outputs..][..outputs]) {
                        *logit += feature * w;
                    }
                }
                logits
            }
        }
    }
}

impl QuantizedConv {
    /// ReLU(conv(x) + bias), on the AVX512_VNNI kernels where the layer is in int8 and the CPU
    /// has them, else by [`forward_reference`](Self::forward_reference).
    fn forward(&self, x: &Activation) -> Activation {
        match self.int8 && !self.packed.is_empty() {
            true => self.forward_vnni(x),
            false => self.forward_reference(x),
        }
    }

    /// The int8 layer on the u8 x s8 kernels, one output row per task: the input's codes laid
    /// out channels-last with a border of the zero point, read in place by the product where
    /// the layer is ungrouped and its channels come in fours (each output pixel's window: three
    /// runs of `3 x channels` codes, one padded row apart), else through an im2col of the row
    /// per group. The zero point's share of the sums and the bias fold into one bias per
    /// channel.
    fn forward_vnni(&self, x: &Activation) -> Activation {
        let (height, width) = (
            x.height.div_ceil(self.shape.stride),
            x.width.div_ceil(self.shape.stride),
        );
        let channels = self.shape.in_channels;
        let (in_per_group, out_per_group) = (
            channels / self.shape.groups,
            self.shape.out_channels / self.shape.groups,
        );
        let depth = 9 * in_per_group;
        let zero_point = self.input.zero_point;
        let scale: Vec<f32> = self
            .weight_scale
            .iter()
            .map(|w| w * self.input.scale)
            .collect();
        let bias: Vec<f32> = self
            .tap_sums
            .chunks_exact(9)
            .zip(scale.iter().zip(&self.bias))
            .map(|(sums, (scale, bias))| {
                let sum: i32 = sums.iter().sum();
                bias - scale * (f32::from(zero_point) * sum as f32)
            })
            .collect();
        let padded_width = x.width + 2;
        let mut padded = vec![zero_point; (x.height + 2) * padded_width * channels];
        for (row, values) in x.values.chunks_exact(x.width * channels).enumerate() {
            let start = ((row + 1) * padded_width + 1) * channels;
            let codes = &mut padded[start..][..x.width * channels];
            self.input.quantize_into(values, codes);
        }
        let in_place = self.shape.groups == 1 && channels.is_multiple_of(4);
        let row_bytes = padded_width * channels;
        let mut out = vec![0f32; height * width * self.shape.out_channels];
        out.par_chunks_mut(width * self.shape.out_channels)
            .enumerate()
            .for_each(|(oy, out_row)| {
                let window = &padded[oy * self.shape.stride * row_bytes..];
                if in_place {
                    let packed = &self.packed[0];
                    let lhs = Lhs::U8Segments {
                        data: window,
                        stride: self.shape.stride * channels,
                        segment: 3 * channels,
                        pitch: row_bytes,
                    };
                    let dst = MatMut::new(
                        out_row,
                        width,
                        self.shape.out_channels,
                        self.shape.out_channels,
                    );
                    let panels = 0..packed.panels();
                    kernel::multiply_scaled(
                        dst,
                        lhs,
                        packed,
                        panels,
                        Some(&scale),
                        Some(&bias),
                        true,
                    );
                    return;
                }
                let words = depth.next_multiple_of(4);
                let mut columns = vec![0u8; width * words];
                for (group, packed) in self.packed.iter().enumerate() {
                    for ox in 0..width {
                        let row = &mut columns[ox * words..][..depth];
                        for (tap, slot) in row.chunks_exact_mut(in_per_group).enumerate() {
                            let (ky, kx) = (tap / 3, tap % 3);
                            let at = ky * row_bytes
                                + (ox * self.shape.stride + kx) * channels
                                + group * in_per_group;
                            slot.copy_from_slice(&window[at..][..in_per_group]);
                        }
                    }
                    let first = group * out_per_group;
                    let dst = MatMut::new(
                        &mut out_row[first..],
                        width,
                        out_per_group,
                        self.shape.out_channels,
                    );
                    let lhs = Lhs::U8 {
                        data: &columns,
                        stride: words,
                    };
                    kernel::multiply_scaled(
                        dst,
                        lhs,
                        packed,
                        0..packed.panels(),
                        Some(&scale[first..]),
                        Some(&bias[first..]),
                        true,
                    );
                }
            });
        Activation {
            values: out,
            height,
            width,
        }
    }

    /// ReLU(conv(x) + bias) as the int8 definition computes it (the input rounded to u8 codes,
    /// products accumulated in i32, one f32 rescale per output), or in f32.
    fn forward_reference(&self, x: &Activation) -> Activation {
        let (height, width) = (
            x.height.div_ceil(self.shape.stride),
            x.width.div_ceil(self.shape.stride),
        );
        let in_per_group = self.shape.in_channels / self.shape.groups;
        let out_per_group = self.shape.out_channels / self.shape.groups;
        let mut codes = vec![0u8; if self.int8 { x.values.len() } else { 0 }];
        if self.int8 {
            self.input.quantize_into(&x.values, &mut codes);
        }
        let zero_point = i32::from(self.input.zero_point);
        let mut out = vec![0f32; height * width * self.shape.out_channels];
        for oy in 0..height {
            for ox in 0..width {
                let pixel = &mut out[(oy * width + ox) * self.shape.out_channels..]
                    [..self.shape.out_channels];
                for (c, output) in pixel.iter_mut().enumerate() {
                    let first_input = (c / out_per_group) * in_per_group;
                    let (mut integer, mut real) = (0i32, 0f32);
                    for ky in 0..3 {
                        let Some(iy) = (oy * self.shape.stride + ky).checked_sub(1) else {
                            continue;
                        };
                        if iy >= x.height {
                            continue;
                        }
                        for kx in 0..3 {
                            let Some(ix) = (ox * self.shape.stride + kx).checked_sub(1) else {
                                continue;
                            };
                            if ix >= x.width {
                                continue;
                            }
                            let tap = (c * 3 + ky) * 3 + kx;
                            let input = (iy * x.width + ix) * self.shape.in_channels + first_input;
                            if self.int8 {
                                let xs = &codes[input..][..in_per_group];
                                let ws = &self.weight[tap * in_per_group..][..in_per_group];
                                // The zero point's share, where the tap lies inside the image.
                                integer += dot_u8_i8(xs, ws) - zero_point * self.tap_sums[tap];
                            } else {
                                let xs = &x.values[input..][..in_per_group];
                                let ws = &self.float_weight[tap * in_per_group..][..in_per_group];
                                real += xs.iter().zip(ws).map(|(a, b)| a * b).sum::<f32>();
                            }
                        }
                    }
                    if self.int8 {
                        real = integer as f32 * self.input.scale * self.weight_scale[c];
                    }
                    *output = (real + self.bias[c]).max(0.0);
                }
            }
        }
        Activation {
            values: out,
            height,
            width,
        }
    }
}

/// `sum(x * w)` of u8 codes and s8 weights, exactly, in i32.
fn dot_u8_i8(x: &[u8], w: &[i8]) -> i32 {
    x.iter()
        .zip(w)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

/// The fused convolution `conv` with its weights quantized per output channel (symmetric,
/// -127..=127) and its input by `input`.
fn quantize_conv(conv: &Conv2d, input: ActivationScale) -> QuantizedConv {
    let [out_channels, in_per_group, _, _] = conv.weight.dims();
    // [out][in][ky][kx] to [out][ky][kx][in].
    let weights = floats(conv.weight.val());
    let mut float_weight = vec![0f32; weights.len()];
    for c in 0..out_channels {
        for i in 0..in_per_group {
            for tap in 0..9 {
                float_weight[(c * 9 + tap) * in_per_group + i] =
                    weights[(c * in_per_group + i) * 9 + tap];
            }
        }
    }
    let shape = ConvShape {
        in_channels: in_per_group * conv.groups,
        out_channels,
        stride: conv.stride[0],
        groups: conv.groups,
    };
    let bias = conv
        .bias
        .as_ref()
        .map_or_else(|| vec![0.0; out_channels], |b| floats(b.val()));
    QuantizedConv::from_f32(shape, float_weight, bias, input)
}

/// The geometry of one layer: a 3x3 convolution with padding 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub groups: usize,
}

impl ConvShape {
    /// Weights per output channel: `9 * in_channels / groups`.
    pub fn weights_per_channel(&self) -> usize {
        9 * self.in_channels / self.groups
    }
}

impl QuantizedConv {
    /// A layer in int8 from f32 weights `[out][ky][kx][in / groups]`, quantized symmetrically
    /// per output channel.
    ///
    /// # Panics
    /// If the weights or the bias do not have `shape`'s sizes.
    pub fn from_f32(
        shape: ConvShape,
        float_weight: Vec<f32>,
        bias: Vec<f32>,
        input: ActivationScale,
    ) -> Self {
        let per_channel = shape.weights_per_channel();
        assert_eq!(
            float_weight.len(),
            per_channel * shape.out_channels,
            "weights"
        );
        let weight_scale: Vec<f32> = float_weight
            .chunks_exact(per_channel)
            .map(
                |w| match w.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0 {
                    scale if scale > 0.0 => scale,
                    _ => 1.0,
                },
            )
            .collect();
        let weight: Vec<i8> = float_weight
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                (w / weight_scale[i / per_channel])
                    .round()
                    .clamp(-127.0, 127.0) as i8
            })
            .collect();
        Self::assemble(shape, weight, weight_scale, float_weight, bias, input)
    }

    /// A layer in int8 from s8 weights `[out][ky][kx][in / groups]` and their scale per output
    /// channel (as a file keeps them); its f32 weights are their dequantized values.
    ///
    /// # Panics
    /// If the weights, scales or bias do not have `shape`'s sizes.
    pub fn from_s8(
        shape: ConvShape,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias: Vec<f32>,
        input: ActivationScale,
    ) -> Self {
        let per_channel = shape.weights_per_channel();
        assert_eq!(weight.len(), per_channel * shape.out_channels, "weights");
        assert_eq!(
            weight_scale.len(),
            shape.out_channels,
            "a scale per channel"
        );
        let float_weight = weight
            .iter()
            .enumerate()
            .map(|(i, &w)| f32::from(w) * weight_scale[i / per_channel])
            .collect();
        Self::assemble(shape, weight, weight_scale, float_weight, bias, input)
    }

    fn assemble(
        shape: ConvShape,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        float_weight: Vec<f32>,
        bias: Vec<f32>,
        input: ActivationScale,
    ) -> Self {
        assert_eq!(bias.len(), shape.out_channels, "a bias per channel");
        let per_channel = shape.weights_per_channel();
        let out_per_group = shape.out_channels / shape.groups;
        let packed = match kernel::supported(Element::U8S8) {
            true => (0..shape.groups)
                .map(|group| {
                    PackedRhs::new_s8(per_channel, out_per_group, |k, column| {
                        weight[(group * out_per_group + column) * per_channel + k]
                    })
                })
                .collect(),
            false => Vec::new(),
        };
        let tap_sums = weight
            .chunks_exact(per_channel / 9)
            .map(|w| w.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Self {
            shape,
            weight,
            weight_scale,
            float_weight,
            bias,
            input,
            int8: true,
            tap_sums,
            packed,
        }
    }

    /// The layer's geometry.
    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// The s8 weights, `[out][ky][kx][in / groups]`.
    pub fn weight(&self) -> &[i8] {
        &self.weight
    }

    /// The weights' scale per output channel.
    pub fn weight_scale(&self) -> &[f32] {
        &self.weight_scale
    }

    /// The f32 weights in the same layout (the dequantized s8 ones for a layer read from a file).
    pub fn float_weight(&self) -> &[f32] {
        &self.float_weight
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
}

fn floats<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("f32 weights")
}

fn to_tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use repvgg_model::{RepVggConfig, Reparameterize};

    use super::*;

    fn network() -> (RepVggDeploy, Tensor<4>) {
        let device = Device::flex();
        device.seed(3);
        let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.5])
            .with_grouped_layers([(2, 2)].into())
            .with_num_classes(6);
        let deploy = config.init(&device).reparameterize().unwrap();
        let images = Tensor::<4>::random([3, 3, 20, 18], Distribution::Normal(0.0, 1.0), &device);
        (deploy, images)
    }

    /// The first image of a batch, channels last.
    fn first_image(images: Tensor<4>) -> Activation {
        let [_, channels, height, width] = images.dims();
        let data = images.into_data().try_to_vec::<f32>().unwrap();
        Activation::channels_last(
            &data[..channels * height * width],
            [channels, height, width],
        )
    }

    fn max_relative(actual: Tensor<2>, expected: Tensor<2>) -> f32 {
        let scale = expected.clone().abs().max().into_scalar::<f32>();
        (actual - expected).abs().max().into_scalar::<f32>() / scale
    }

    #[test]
    fn in_f32_every_layer_computes_the_deploy_network() {
        let (deploy, images) = network();
        let mut quantized =
            QuantizedNetwork::calibrate(&deploy, [images.clone()], CalibrationRule::MinMax)
                .unwrap();
        for index in 0..quantized.layers().len() {
            quantized = quantized.with_layer_in_int8(index, false).unwrap();
        }
        let difference = max_relative(quantized.forward(images.clone()), deploy.forward(images));
        assert!(difference < 1e-5, "{difference:e}");
    }

    #[test]
    fn in_int8_the_logits_stay_close_to_f32() {
        let (deploy, images) = network();
        for rule in CalibrationRule::ALL {
            let quantized = QuantizedNetwork::calibrate(&deploy, [images.clone()], rule).unwrap();
            let difference = max_relative(
                quantized.forward(images.clone()),
                deploy.forward(images.clone()),
            );
            assert!(difference < 0.05, "{rule}: {difference:e}");
            assert!(quantized.layers().iter().all(|layer| layer.int8));
        }
    }

    /// The integer path computes exactly the f32 convolution of the dequantized weights and
    /// input codes (up to f32 rounding of that product), at stride 1 and 2, grouped, with a
    /// zero point.
    #[test]
    fn the_integer_convolution_is_the_convolution_of_the_dequantized_values() {
        let (deploy, images) = network();
        let quantized =
            QuantizedNetwork::calibrate(&deploy, [images.clone()], CalibrationRule::MinMax)
                .unwrap();
        let mut x = first_image(images);
        assert!(quantized.layers()[0].input.zero_point > 0);
        for layer in quantized.layers() {
            let integer = layer.forward(&x);
            let mut dequantized = layer.clone();
            dequantized.int8 = false;
            for (i, w) in dequantized.float_weight.iter_mut().enumerate() {
                let scale =
                    layer.weight_scale[i / (9 * layer.shape.in_channels / layer.shape.groups)];
                *w = f32::from(layer.weight[i]) * scale;
            }
            let rounded = Activation {
                values: x
                    .values
                    .iter()
                    .map(|&v| layer.input.dequantize(layer.input.quantize(v)))
                    .collect(),
                ..x
            };
            let reference = dequantized.forward(&rounded);
            let scale = reference.values.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (a, b) in integer.values.iter().zip(&reference.values) {
                assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
            }
            x = integer;
        }
    }

    /// The AVX512_VNNI layers compute what the integer definition does: the same i32 sums, the
    /// zero point and bias folded differently in f32.
    #[test]
    fn the_vnni_kernels_agree_with_the_definition() {
        if !kernel::supported(Element::U8S8) {
            eprintln!("skipped: this CPU lacks AVX512_VNNI");
            return;
        }
        let (deploy, images) = network();
        let quantized =
            QuantizedNetwork::calibrate(&deploy, [images.clone()], CalibrationRule::Mse).unwrap();
        let mut x = first_image(images);
        for (index, layer) in quantized.layers().iter().enumerate() {
            assert!(!layer.packed.is_empty());
            let fast = layer.forward_vnni(&x);
            let reference = layer.forward_reference(&x);
            let scale = reference.values.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (a, b) in fast.values.iter().zip(&reference.values) {
                assert!((a - b).abs() <= 1e-5 * scale, "layer {index}: {a} vs {b}");
            }
            x = reference;
        }
    }

    #[test]
    fn squeeze_excitation_and_empty_calibration_are_refused() {
        let device = Device::flex();
        let se = RepVggConfig::new(vec![1], vec![0.25])
            .with_use_se(true)
            .init_deploy(&device);
        let error = QuantizedNetwork::calibrate(&se, [], CalibrationRule::MinMax).unwrap_err();
        assert!(error.to_string().contains("squeeze-excitation"), "{error}");
        let (deploy, _) = network();
        let error = QuantizedNetwork::calibrate(&deploy, [], CalibrationRule::MinMax).unwrap_err();
        assert!(matches!(error, QuantizeError::NoCalibrationImages));
        let error = QuantizedNetwork::calibrate(
            &deploy,
            [Tensor::zeros([1, 3, 8, 8], &device)],
            CalibrationRule::Mse,
        )
        .unwrap()
        .with_layer_in_int8(99, false)
        .unwrap_err();
        assert!(error.to_string().contains("layer 99"), "{error}");
    }
}
