//! The engine: a deploy-time network's layers prepared once, and the forward pass that runs
//! them with channels-last activations kept from layer to layer.

use std::sync::Mutex;
use std::time::Instant;

use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use half::bf16;
use repvgg_model::{DeployNetwork, RepVggDeploy, RepVggDeployBlock, RepVggPlusDeploy};

use crate::kernel::to_bf16_rows;
use crate::layer::Layer;
use crate::ops::{MatMut, average_pool, to_channels_first, to_channels_last, values};
use crate::options::{CpuError, CpuOptions, CpuPrecision};
use crate::product::{PackedWeights, Rows};
use crate::winograd::WinogradScratch;

/// The layers of a deploy-time network of either family, borrowed: what a [`CpuEngine`] is
/// prepared from. Made from a `&RepVggDeploy`, a `&RepVggPlusDeploy` or a `&DeployNetwork`.
#[derive(Clone, Debug)]
pub struct NetworkLayers<'a> {
    stem: &'a RepVggDeployBlock,
    /// The stages after the stem, in order (RepVGGplus: stage 3's two halves as one stage, as
    /// its `forward_features` gives them).
    stages: Vec<Vec<&'a RepVggDeployBlock>>,
    linear: Option<&'a Linear>,
}

impl<'a> From<&'a RepVggDeploy> for NetworkLayers<'a> {
    fn from(network: &'a RepVggDeploy) -> Self {
        Self {
            stem: &network.stage0,
            stages: network
                .stages()
                .map(|stage| stage.iter().collect())
                .collect(),
            linear: network.linear.as_ref(),
        }
    }
}

impl<'a> From<&'a RepVggPlusDeploy> for NetworkLayers<'a> {
    fn from(network: &'a RepVggPlusDeploy) -> Self {
        Self {
            stem: &network.stage0,
            stages: network.stages().into(),
            linear: network.linear.as_ref(),
        }
    }
}

impl<'a> From<&'a DeployNetwork> for NetworkLayers<'a> {
    fn from(network: &'a DeployNetwork) -> Self {
        match network {
            DeployNetwork::RepVgg(network) => network.as_ref().into(),
            DeployNetwork::Plus(network) => network.as_ref().into(),
        }
    }
}

/// A deploy-time network prepared for the CPU: computes what the network's `forward` and
/// `forward_features` compute ([`RepVggDeploy::forward`](repvgg_model::RepVggNetwork::forward)),
/// faster. Calls may run concurrently; each layer's weights are prepared for an algorithm the
/// first time a call needs it.
#[derive(Debug)]
pub struct CpuEngine {
    layers: Vec<Layer>,
    /// How many layers each stage has, the stem first (empty stages left out, as
    /// `RepVggNetwork::stages` does).
    stage_lengths: Vec<usize>,
    /// The linear classifier, if the network has one.
    head: Option<Head>,
    /// Activation and Winograd buffers kept between calls: allocating them afresh costs page
    /// faults on every layer (tens of MB at batch 8).
    scratch: Mutex<Scratch>,
    options: CpuOptions,
}

/// The linear classifier: its weight `[features, classes]` prepared for the products (packed
/// once: at batch 1 a general product would repack all of it on every call), and its bias.
#[derive(Debug)]
struct Head {
    weights: PackedWeights,
    bias: Vec<f32>,
}

impl Head {
    fn new(linear: &Linear, precision: CpuPrecision) -> Self {
        let [features, classes] = linear.weight.dims();
        let weight = values(linear.weight.val());
        Self {
            weights: PackedWeights::new(precision, features, classes, |k, c| {
                weight[k * classes + c]
            }),
            bias: linear
                .bias
                .as_ref()
                .map_or_else(|| vec![0.0; classes], |bias| values(bias.val())),
        }
    }

    /// Logits `[batch, classes]` of pooled features `[batch, features]`.
    fn forward(&self, pooled: &[f32], batch: usize, features: usize) -> Vec<f32> {
        let classes = self.bias.len();
        let mut logits = vec![0f32; batch * classes];
        let rounded: Vec<bf16>;
        let rows = if self.weights.takes_bf16() {
            let padded = self.weights.row_length();
            let mut values = vec![bf16::ZERO; batch * padded];
            to_bf16_rows(pooled, features, &mut values, padded);
            rounded = values;
            Rows::Bf16 {
                data: &rounded,
                stride: padded,
            }
        } else {
            Rows::F32 {
                data: pooled,
                stride: features,
            }
        };
        self.weights.multiply(
            MatMut::new(&mut logits, batch, classes, classes),
            rows,
            Some(&self.bias),
            false,
            rayon::current_num_threads(),
        );
        logits
    }
}

#[derive(Debug, Default)]
struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
    winograd: WinogradScratch,
}

impl CpuEngine {
    /// Reads a deploy-time network's weights (from any device) and prepares them for the CPU,
    /// in f32: a [`RepVggDeploy`], a [`RepVggPlusDeploy`] or a [`DeployNetwork`].
    pub fn new<'a>(network: impl Into<NetworkLayers<'a>>) -> Self {
        Self::prepare(network.into(), CpuOptions::default())
    }

    /// [`new`](Self::new) with a choice of precision and algorithm; an error if this CPU cannot
    /// run them (bf16 without AVX512_BF16).
    pub fn with_options<'a>(
        network: impl Into<NetworkLayers<'a>>,
        options: CpuOptions,
    ) -> Result<Self, CpuError> {
        options.check()?;
        Ok(Self::prepare(network.into(), options))
    }

    /// The precision and algorithm it runs with.
    pub fn options(&self) -> CpuOptions {
        self.options
    }

    /// The bytes of its prepared weights (transformed and packed convolutions, SE, head).
    pub fn prepared_bytes(&self) -> usize {
        let head = self
            .head
            .as_ref()
            .map_or(0, |head| head.weights.bytes() + head.bias.len() * 4);
        self.layers.iter().map(Layer::bytes).sum::<usize>() + head
    }

    fn prepare(network: NetworkLayers<'_>, options: CpuOptions) -> Self {
        let NetworkLayers {
            stem,
            stages,
            linear,
        } = network;
        let stages: Vec<Vec<&RepVggDeployBlock>> = stages
            .into_iter()
            .filter(|stage| !stage.is_empty())
            .collect();
        let layers = std::iter::once(stem)
            .chain(stages.iter().flatten().copied())
            .enumerate()
            .map(|(index, block)| Layer::new(block, &options, index == 0))
            .collect();
        let stage_lengths = std::iter::once(1)
            .chain(stages.iter().map(Vec::len))
            .collect();
        Self {
            layers,
            stage_lengths,
            head: linear.map(|linear| Head::new(linear, options.precision)),
            scratch: Mutex::default(),
            options,
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
        let mut logits = Vec::new();
        self.run(
            images,
            |_, _| {},
            |last, [_, height, width, features]| {
                let pooled = average_pool(last, batch, height * width, features);
                logits = head.forward(&pooled, batch, features);
            },
        );
        let classes = head.bias.len();
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
        stage_end: impl FnMut(&[f32], [usize; 4]) + Send,
        last: impl FnOnce(&[f32], [usize; 4]) + Send,
    ) {
        self.run_timed(images, |_, _| {}, stage_end, last);
    }

    /// Each layer's share of a forward pass of `images`: the median of `runs` timed passes
    /// (after one untimed), with the layer's shapes and algorithm. What a choice of
    /// [`CpuOptions`] changes, layer by layer.
    ///
    /// # Panics
    /// If `runs` is 0, or as [`forward`](Self::forward) does.
    pub fn layer_times(&self, images: Tensor<4>, runs: usize) -> Vec<LayerTime> {
        assert!(runs > 0, "at least one timed run");
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); self.layers.len()];
        let mut shapes = vec![([0; 4], [0; 4], ""); self.layers.len()];
        for run in 0..=runs {
            self.run_timed(
                images.clone(),
                |index, timing: LayerRun| {
                    shapes[index] = (timing.input, timing.output, timing.algorithm);
                    if run > 0 {
                        times[index].push(timing.seconds * 1e3);
                    }
                },
                |_, _| {},
                |_, _| {},
            );
        }
        times
            .into_iter()
            .zip(shapes)
            .enumerate()
            .map(|(index, (mut millis, (input, output, algorithm)))| {
                millis.sort_by(f64::total_cmp);
                LayerTime {
                    index,
                    input,
                    output,
                    algorithm,
                    millis: millis[millis.len() / 2],
                }
            })
            .collect()
    }

    /// [`run`](Self::run), handing each layer's shapes and time to `on_layer`.
    fn run_timed(
        &self,
        images: Tensor<4>,
        on_layer: impl FnMut(usize, LayerRun) + Send,
        stage_end: impl FnMut(&[f32], [usize; 4]) + Send,
        last: impl FnOnce(&[f32], [usize; 4]) + Send,
    ) {
        // The whole pass runs on a thread of the pool: each layer's parallel phases then fork
        // and join between the pool's threads, instead of this thread handing every phase to
        // the pool and sleeping until it is woken (two thread wake-ups per phase, several
        // phases per layer: a tenth of the time at batch 1).
        // Each layer is prepared for this input's algorithm here first: prepared inside the pool,
        // its parallel preparation could wait on a thread that is itself waiting for it.
        let [batch, _, mut height, mut width] = images.dims();
        for layer in &self.layers {
            layer.prepared(layer.algorithm_for([batch, height, width]));
            (height, width) = (height.div_ceil(layer.stride), width.div_ceil(layer.stride));
        }
        rayon::scope(|_| self.run_layers(images, on_layer, stage_end, last));
    }

    /// [`run_timed`](Self::run_timed)'s pass, on whichever thread calls it.
    fn run_layers(
        &self,
        images: Tensor<4>,
        mut on_layer: impl FnMut(usize, LayerRun),
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
        let images = values(images);
        // The stem reads its windows in place, within a zero border.
        let border = usize::from(self.layers.first().is_some_and(Layer::runs_as_stem));
        to_channels_last(&images, [batch, channels, height, width], border, input);
        let mut layers = self.layers.iter().enumerate();
        let mut out_channels = channels;
        for &length in &self.stage_lengths {
            for (index, layer) in layers.by_ref().take(length) {
                let started = Instant::now();
                let shape_in = [batch, height, width, out_channels];
                let algorithm = layer.algorithm_for([batch, height, width]).name();
                (height, width) = layer.forward(input, batch, height, width, winograd, output);
                out_channels = layer.out_channels();
                std::mem::swap(input, output);
                let run = LayerRun {
                    input: shape_in,
                    output: [batch, height, width, out_channels],
                    algorithm,
                    seconds: started.elapsed().as_secs_f64(),
                };
                on_layer(index, run);
            }
            stage_end(input, [batch, height, width, out_channels]);
        }
        last(input, [batch, height, width, out_channels]);
    }
}

/// One layer of one pass: its `[batch, height, width, channels]` in and out and its time.
struct LayerRun {
    input: [usize; 4],
    output: [usize; 4],
    algorithm: &'static str,
    seconds: f64,
}

/// One layer's time in a forward pass ([`CpuEngine::layer_times`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTime {
    /// The layer's place: 0 is the stem.
    pub index: usize,
    /// `[batch, height, width, channels]` of its input and of its output.
    pub input: [usize; 4],
    pub output: [usize; 4],
    /// How it was computed: `winograd F(4x4)`, `winograd F(2x2)`, `im2col` or `in place`
    /// (the stem).
    pub algorithm: &'static str,
    /// Median milliseconds.
    pub millis: f64,
}
