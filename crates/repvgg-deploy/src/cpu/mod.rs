//! A CPU inference path for the deploy model. The plain stack of 3x3 convolutions runs with
//! channels-last activations kept from layer to layer (none of the per-layer layout conversions
//! of a general-purpose backend): stride-1 layers by Winograd F(4x4, 3x3) ([`winograd`]), the
//! strided ones as blocked im2col + matrix product ([`direct`]), bias and ReLU applied as each
//! layer's output is written. Weights are rearranged (and Winograd-transformed) once, when the
//! path is built.

mod direct;
mod ops;
mod winograd;

use std::sync::Mutex;

use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use repvgg_model::{RepVggDeploy, RepVggDeployBlock, RepVggPlusDeploy};

use direct::DirectConv;
use ops::{
    Excitation, MatMut, MatRef, average_pool, matmul_add, relu, to_channels_first,
    to_channels_last, values,
};
use winograd::{WinogradConv, WinogradScratch};

/// The deploy model prepared for the CPU path; computes what
/// [`RepVggDeploy::forward`](repvgg_model::RepVggNetwork::forward) and
/// [`forward_features`](repvgg_model::RepVggNetwork::forward_features) compute.
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
    /// How many layers each stage has, the stem first (empty stages left out, as
    /// `RepVggNetwork::stages` does).
    stage_lengths: Vec<usize>,
    /// The linear classifier, if the network has one.
    head: Option<Head>,
    /// Activation and Winograd buffers kept between calls: allocating them afresh costs page
    /// faults on every layer (tens of MB at batch 8).
    scratch: Mutex<Scratch>,
}

/// The linear classifier: weight `[features, classes]` row-major, and its bias.
#[derive(Debug)]
struct Head {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

#[derive(Debug, Default)]
struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
    winograd: WinogradScratch,
}

/// One deploy block: its convolution, prepared for the algorithm that suits its stride, and its
/// squeeze-excitation if any, before the ReLU (RepVGG-D2se) or after it (RepVGGplus).
#[derive(Clone, Debug)]
struct Layer {
    conv: Conv,
    se: Option<Excitation>,
    post_se: Option<Excitation>,
}

#[derive(Clone, Debug)]
enum Conv {
    Winograd(WinogradConv),
    Direct(DirectConv),
}

impl CpuDeploy {
    /// Reads the model's weights (from any device) and prepares them for the CPU path.
    pub fn new(model: &RepVggDeploy) -> Self {
        let stages = model.stages().map(|stage| stage.iter().collect());
        Self::from_blocks(&model.stage0, stages, model.linear.as_ref())
    }

    /// [`new`](Self::new) for RepVGGplus's deploy form (SE after the ReLU; stage 3's two halves
    /// one stage, as its `forward_features` gives them).
    pub fn from_plus(model: &RepVggPlusDeploy) -> Self {
        Self::from_blocks(&model.stage0, model.stages(), model.linear.as_ref())
    }

    fn from_blocks<'a>(
        stem: &'a RepVggDeployBlock,
        stages: impl IntoIterator<Item = Vec<&'a RepVggDeployBlock>>,
        linear: Option<&Linear>,
    ) -> Self {
        let stages: Vec<Vec<&RepVggDeployBlock>> = stages
            .into_iter()
            .filter(|stage| !stage.is_empty())
            .collect();
        let layers = std::iter::once(stem)
            .chain(stages.iter().flatten().copied())
            .map(Layer::new)
            .collect();
        let stage_lengths = std::iter::once(1)
            .chain(stages.iter().map(Vec::len))
            .collect();
        Self {
            layers,
            stage_lengths,
            head: linear.map(|linear| Head {
                weight: values(linear.weight.val()),
                bias: linear
                    .bias
                    .as_ref()
                    .map(|bias| values(bias.val()))
                    .unwrap_or_else(|| vec![0.0; linear.weight.dims()[1]]),
            }),
            scratch: Mutex::default(),
        }
    }

    /// Class logits, `[N, 3, H, W]` to `[N, classes]`, on the images' device; for a headless
    /// network the pooled features `[N, features]`.
    ///
    /// # Panics
    /// If the images do not have the channels the model takes (3 for every preset), as Burn's
    /// convolutions do.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let batch = images.dims()[0];
        let Some(head) = &self.head else {
            let mut output = (Vec::new(), 0);
            self.run(
                images,
                |_, _| {},
                |last, [_, height, width, features]| {
                    output = (
                        average_pool(last, batch, height * width, features),
                        features,
                    );
                },
            );
            let (pooled, features) = output;
            return Tensor::from_data(TensorData::new(pooled, [batch, features]), &device);
        };
        let classes = head.bias.len();
        let mut logits: Vec<f32> = (0..batch).flat_map(|_| head.bias.clone()).collect();
        self.run(
            images,
            |_, _| {},
            |last, [_, height, width, features]| {
                let pooled = average_pool(last, batch, height * width, features);
                matmul_add(
                    MatMut::new(&mut logits, batch, classes, classes),
                    MatRef::new(&pooled, batch, features, features),
                    MatRef::new(&head.weight, features, classes, classes),
                    true,
                    rayon::current_num_threads(),
                );
            },
        );
        Tensor::from_data(TensorData::new(logits, [batch, classes]), &device)
    }

    /// The output of the stem and of every stage, `[N, C, H, W]` each, on the images' device.
    pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let device = images.device();
        let mut features = Vec::with_capacity(self.stage_lengths.len());
        let mut keep = |map: &[f32], [batch, height, width, channels]: [usize; 4]| {
            let data = to_channels_first(map, channels, height, width);
            let shape = [batch, channels, height, width];
            features.push(Tensor::from_data(TensorData::new(data, shape), &device));
        };
        self.run(images, &mut keep, |_, _| {});
        features
    }

    /// Runs every layer on `images`, handing each stage's channels-last output and its
    /// `[batch, height, width, channels]` to `stage_end` and the last one also to `last`.
    fn run(
        &self,
        images: Tensor<4>,
        mut stage_end: impl FnMut(&[f32], [usize; 4]),
        last: impl FnOnce(&[f32], [usize; 4]),
    ) {
        let [batch, channels, mut height, mut width] = images.dims();
        let expected = self.layers.first().map_or(channels, Layer::in_channels);
        assert_eq!(
            channels,
            expected,
            "the model takes {expected}-channel images, got [N, C, H, W] = {:?}",
            images.dims()
        );
        // A concurrent call on the same model works in fresh buffers instead of waiting.
        let mut fresh = Scratch::default();
        let mut guard = self.scratch.try_lock().ok();
        let Scratch {
            input,
            output,
            winograd,
        } = guard.as_deref_mut().unwrap_or(&mut fresh);
        to_channels_last(&values(images), channels, height, width, input);
        let mut layers = self.layers.iter();
        let mut out_channels = channels;
        for &length in &self.stage_lengths {
            for layer in layers.by_ref().take(length) {
                (height, width) = layer.forward(input, batch, height, width, winograd, output);
                out_channels = layer.out_channels();
                std::mem::swap(input, output);
            }
            stage_end(input, [batch, height, width, out_channels]);
        }
        last(input, [batch, height, width, out_channels]);
    }
}

impl Layer {
    fn new(block: &RepVggDeployBlock) -> Self {
        let conv = &block.rbr_reparam;
        let weight = conv.weight.val();
        let [out_channels, in_per_group, kh, kw] = weight.dims();
        assert_eq!([kh, kw], [3, 3], "deploy blocks hold 3x3 convolutions");
        let weight = values(weight);
        let bias = conv
            .bias
            .as_ref()
            .map_or(vec![0.0; out_channels], |bias| values(bias.val()));
        let (groups, stride) = (conv.groups, conv.stride[0]);
        let conv = if stride == 1 {
            Conv::Winograd(WinogradConv::new(
                &weight,
                bias,
                out_channels,
                in_per_group,
                groups,
            ))
        } else {
            Conv::Direct(DirectConv::new(
                &weight,
                bias,
                out_channels,
                in_per_group,
                groups,
                stride,
            ))
        };
        Self {
            conv,
            se: block.se.as_ref().map(Excitation::new),
            post_se: block.post_se.as_ref().map(Excitation::new),
        }
    }

    fn in_channels(&self) -> usize {
        match &self.conv {
            Conv::Winograd(conv) => conv.in_channels,
            Conv::Direct(conv) => conv.in_channels,
        }
    }

    fn out_channels(&self) -> usize {
        match &self.conv {
            Conv::Winograd(conv) => conv.out_channels,
            Conv::Direct(conv) => conv.out_channels,
        }
    }

    /// Convolution + bias (+ SE) + ReLU (+ post-SE) of channels-last `input` `[batch, height, width, in]`
    /// into `output`; returns the output's height and width.
    fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        winograd: &mut WinogradScratch,
        output: &mut Vec<f32>,
    ) -> (usize, usize) {
        // Without SE, ReLU is applied as the convolution writes its output.
        let relu_after = self.se.is_none();
        let (out_height, out_width) = match &self.conv {
            Conv::Winograd(conv) => {
                conv.forward(input, batch, height, width, relu_after, winograd, output);
                (height, width)
            }
            Conv::Direct(conv) => {
                conv.forward(input, batch, height, width, relu_after, output);
                conv.output_size(height, width)
            }
        };
        let positions = out_height * out_width;
        if let Some(se) = &self.se {
            se.apply(output, batch, positions, self.out_channels());
            relu(output);
        }
        if let Some(post_se) = &self.post_se {
            post_se.apply(output, batch, positions, self.out_channels());
        }
        (out_height, out_width)
    }
}
