//! A CPU inference path for the deploy model. The plain stack of 3x3 convolutions runs with
//! channels-last activations kept from layer to layer (none of the per-layer layout conversions
//! of a general-purpose backend): stride-1 layers by Winograd F(4x4, 3x3) or F(2x2, 3x3)
//! ([`winograd`]) or im2col, chosen per layer and call ([`ConvAlgorithm::Auto`]), the strided
//! ones as blocked im2col + matrix product ([`direct`]) but for the stem, which reads the padded
//! images in place ([`stem`]), bias and ReLU applied as each layer's
//! output is written. Weights are rearranged (Winograd-transformed, packed for the matrix kernels
//! of [`kernel`]) once per form, the first time a call needs it.

mod direct;
mod kernel;
mod ops;
mod product;
mod stem;
mod winograd;

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use repvgg_model::{RepVggDeploy, RepVggDeployBlock, RepVggPlusDeploy};

use crate::DeployError;
use direct::DirectConv;
use half::bf16;
use kernel::to_bf16_rows;
use ops::{Excitation, MatMut, average_pool, relu, to_channels_first, to_channels_last, values};
use product::{Rows, Weights};
use stem::StemConv;
pub use winograd::WinogradTile;
use winograd::{WinogradConv, WinogradScratch};

/// The precision of the CPU path's matrix products (the convolutions; everything else is f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuPrecision {
    /// f32 throughout.
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 for the products, accumulated in f32: twice
    /// f32's multiply rate on CPUs with AVX512_BF16 (and half the weight traffic); measured
    /// relative logit differences from f32 of 4e-4 (random-weight A0, B0) to 7e-3 (a trained
    /// model). Refused on CPUs without AVX512_BF16.
    Bf16,
}

impl CpuPrecision {
    /// The name used on command lines and in reports: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// Whether this CPU can compute in it (bf16: AVX-512 with AVX512_BF16).
    pub fn is_supported(self) -> bool {
        match self {
            Self::F32 => true,
            Self::Bf16 => kernel::supported(kernel::Element::Bf16),
        }
    }
}

impl std::fmt::Display for CpuPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CpuPrecision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown precision {name:?}: f32 or bf16")),
        }
    }
}

/// How the stride-1 layers are computed (the strided ones always by im2col, but for the stem,
/// which reads the images in place where the CPU has the f32 kernels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// Chosen per layer from its shape and the call's batch and image size: im2col under 64
    /// input channels per group, Winograd F(2x2) where F(4x4) would have fewer than 32 tiles,
    /// F(4x4) elsewhere (the choices `cargo xtask bench-layers` measured fastest).
    #[default]
    Auto,
    /// Winograd with the given output tile.
    Winograd(WinogradTile),
    /// im2col + matrix product, as the strided layers.
    Im2col,
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Winograd(WinogradTile::F4x4) => "winograd4",
            Self::Winograd(WinogradTile::F2x2) => "winograd2",
            Self::Im2col => "im2col",
        })
    }
}

impl std::str::FromStr for ConvAlgorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "winograd4" => Ok(Self::Winograd(WinogradTile::F4x4)),
            "winograd2" => Ok(Self::Winograd(WinogradTile::F2x2)),
            "im2col" => Ok(Self::Im2col),
            _ => Err(format!(
                "unknown algorithm {name:?}: auto, winograd4, winograd2 or im2col"
            )),
        }
    }
}

/// How [`CpuDeploy`] computes: precision and algorithm.
///
/// ```
/// use repvgg_deploy::{CpuOptions, CpuPrecision};
///
/// let options = CpuOptions::default().with_precision(CpuPrecision::Bf16);
/// assert_eq!(options.precision, CpuPrecision::Bf16);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuOptions {
    pub precision: CpuPrecision,
    pub algorithm: ConvAlgorithm,
}

impl CpuOptions {
    pub fn with_precision(self, precision: CpuPrecision) -> Self {
        Self { precision, ..self }
    }

    pub fn with_algorithm(self, algorithm: ConvAlgorithm) -> Self {
        Self { algorithm, ..self }
    }

    /// An error naming why this CPU cannot run these options, if it cannot.
    pub fn check(&self) -> Result<(), DeployError> {
        if self.precision.is_supported() {
            return Ok(());
        }
        Err(DeployError::UnsupportedPrecision {
            precision: self.precision.name(),
            reason: "this CPU lacks AVX512_BF16 (bf16 products with f32 accumulation); \
                     use f32"
                .into(),
        })
    }
}

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
    options: CpuOptions,
}

/// The linear classifier: its weight `[features, classes]` prepared for the products (packed
/// once: at batch 1 a general product would repack all of it on every call), and its bias.
#[derive(Debug)]
struct Head {
    weights: Weights,
    bias: Vec<f32>,
}

impl Head {
    fn new(linear: &Linear, precision: CpuPrecision) -> Self {
        let [features, classes] = linear.weight.dims();
        let weight = values(linear.weight.val());
        Self {
            weights: Weights::new(precision, features, classes, |k, c| weight[k * classes + c]),
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

/// One deploy block: its convolution, prepared for the algorithm that suits its stride, and its
/// squeeze-excitation if any, before the ReLU (RepVGG-D2se) or after it (RepVGGplus).
#[derive(Clone, Debug)]
struct Layer {
    /// The convolution as the model holds it: PyTorch's `[out, in / groups, 3, 3]`, row-major,
    /// and its bias.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// `[out, in / groups, groups]`.
    shape: [usize; 3],
    stride: usize,
    options: CpuOptions,
    /// The convolution prepared for each algorithm, made the first time a call takes it (the
    /// choice depends on the batch and image size: [`Layer::algorithm_for`]).
    winograd2: OnceLock<WinogradConv>,
    winograd4: OnceLock<WinogradConv>,
    im2col: OnceLock<DirectConv>,
    /// Whether the layer is the network's first, on the images (the one that can run as a
    /// [`StemConv`], reading them padded).
    takes_images: bool,
    stem: OnceLock<StemConv>,
    se: Option<Excitation>,
    post_se: Option<Excitation>,
}

/// How a layer's convolution is computed for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// On the padded images, in place ([`stem`]).
    Stem,
    Winograd(WinogradTile),
    Im2col,
}

impl Form {
    /// The name [`LayerTime::algorithm`] gives it.
    fn name(self) -> &'static str {
        match self {
            Self::Stem => "in place",
            Self::Winograd(WinogradTile::F2x2) => "winograd F(2x2)",
            Self::Winograd(WinogradTile::F4x4) => "winograd F(4x4)",
            Self::Im2col => "im2col",
        }
    }
}

/// A layer's convolution, prepared for its form.
enum Conv<'a> {
    Stem(&'a StemConv),
    Winograd(&'a WinogradConv),
    Im2col(&'a DirectConv),
}

impl CpuDeploy {
    /// Reads the model's weights (from any device) and prepares them for the CPU path, in f32.
    pub fn new(model: &RepVggDeploy) -> Self {
        let stages = model.stages().map(|stage| stage.iter().collect());
        Self::from_blocks(
            &model.stage0,
            stages,
            model.linear.as_ref(),
            CpuOptions::default(),
        )
    }

    /// [`new`](Self::new) with a choice of precision and algorithm; an error if this CPU cannot
    /// run them (bf16 without AVX512_BF16).
    pub fn with_options(model: &RepVggDeploy, options: CpuOptions) -> Result<Self, DeployError> {
        options.check()?;
        let stages = model.stages().map(|stage| stage.iter().collect());
        Ok(Self::from_blocks(
            &model.stage0,
            stages,
            model.linear.as_ref(),
            options,
        ))
    }

    /// [`new`](Self::new) for RepVGGplus's deploy form (SE after the ReLU; stage 3's two halves
    /// one stage, as its `forward_features` gives them).
    pub fn from_plus(model: &RepVggPlusDeploy) -> Self {
        let options = CpuOptions::default();
        Self::from_blocks(
            &model.stage0,
            model.stages(),
            model.linear.as_ref(),
            options,
        )
    }

    /// [`from_plus`](Self::from_plus) with a choice of precision and algorithm.
    pub fn from_plus_with_options(
        model: &RepVggPlusDeploy,
        options: CpuOptions,
    ) -> Result<Self, DeployError> {
        options.check()?;
        let (stem, linear) = (&model.stage0, model.linear.as_ref());
        Ok(Self::from_blocks(stem, model.stages(), linear, options))
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

    fn from_blocks<'a>(
        stem: &'a RepVggDeployBlock,
        stages: impl IntoIterator<Item = Vec<&'a RepVggDeployBlock>>,
        linear: Option<&Linear>,
        options: CpuOptions,
    ) -> Self {
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
        // Each layer's form for this input is made here first: made inside the pool, a form's
        // parallel preparation could wait on a thread that is itself waiting for that form.
        let [batch, _, mut height, mut width] = images.dims();
        for layer in &self.layers {
            layer.prepared(layer.form_for([batch, height, width]));
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
                let algorithm = layer.form_for([batch, height, width]).name();
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

/// One layer's time in a forward pass ([`CpuDeploy::layer_times`]).
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

impl Layer {
    fn new(block: &RepVggDeployBlock, options: &CpuOptions, takes_images: bool) -> Self {
        let conv = &block.rbr_reparam;
        let weight = conv.weight.val();
        let [out_channels, in_per_group, kh, kw] = weight.dims();
        assert_eq!([kh, kw], [3, 3], "deploy blocks hold 3x3 convolutions");
        let weight = values(weight);
        let bias = conv
            .bias
            .as_ref()
            .map_or(vec![0.0; out_channels], |bias| values(bias.val()));
        Self {
            weight,
            bias,
            shape: [out_channels, in_per_group, conv.groups],
            stride: conv.stride[0],
            options: *options,
            winograd2: OnceLock::new(),
            winograd4: OnceLock::new(),
            im2col: OnceLock::new(),
            takes_images,
            stem: OnceLock::new(),
            se: block.se.as_ref().map(Excitation::new),
            post_se: block.post_se.as_ref().map(Excitation::new),
        }
    }

    /// The form for an input of `[batch, height, width]`: the first layer in place on the
    /// padded images where it [suits](StemConv::suits) a stem (whatever the algorithm option,
    /// which is about the stride-1 layers); im2col for strided layers and for narrow ones (under
    /// 64 input channels per group the Winograd transforms cost more than they save); F(2x2)
    /// where F(4x4) would have fewer than 32 tiles (its 2.25x larger transformed kernels are
    /// then read for too little work: stage 3 of A0 at batch 1); F(4x4) elsewhere. Measured per
    /// layer with `cargo xtask bench-layers`.
    fn form_for(&self, [batch, height, width]: [usize; 3]) -> Form {
        if self.runs_as_stem() {
            return Form::Stem;
        }
        if self.stride != 1 {
            return Form::Im2col;
        }
        match self.options.algorithm {
            ConvAlgorithm::Winograd(tile) => Form::Winograd(tile),
            ConvAlgorithm::Im2col => Form::Im2col,
            ConvAlgorithm::Auto if self.shape[1] < 64 => Form::Im2col,
            ConvAlgorithm::Auto if batch * height.div_ceil(4) * width.div_ceil(4) < 32 => {
                Form::Winograd(WinogradTile::F2x2)
            }
            ConvAlgorithm::Auto => Form::Winograd(WinogradTile::F4x4),
        }
    }

    /// Whether the layer runs as a stem: the first, where it [suits](StemConv::suits) one.
    fn runs_as_stem(&self) -> bool {
        self.takes_images && StemConv::suits(self.shape)
    }

    /// The layer prepared as a stem (made on first use), if it runs as one.
    fn stem(&self) -> Option<&StemConv> {
        self.runs_as_stem().then(|| {
            self.stem.get_or_init(|| {
                StemConv::new(&self.weight, self.bias.clone(), self.shape, self.stride)
            })
        })
    }

    /// The convolution prepared for `form`, made on first use.
    fn prepared(&self, form: Form) -> Conv<'_> {
        let (weight, shape, precision) = (&self.weight, self.shape, self.options.precision);
        let bias = || self.bias.clone();
        match form {
            Form::Stem => Conv::Stem(self.stem().expect("only a stem takes the stem form")),
            Form::Winograd(tile) => {
                let cell = match tile {
                    WinogradTile::F2x2 => &self.winograd2,
                    WinogradTile::F4x4 => &self.winograd4,
                };
                Conv::Winograd(
                    cell.get_or_init(|| WinogradConv::new(weight, bias(), shape, tile, precision)),
                )
            }
            Form::Im2col => Conv::Im2col(
                self.im2col
                    .get_or_init(|| DirectConv::new(weight, bias(), shape, self.stride, precision)),
            ),
        }
    }

    /// Bytes held: the weights, the forms prepared so far, squeeze-excitation.
    fn bytes(&self) -> usize {
        let prepared = [&self.winograd2, &self.winograd4]
            .into_iter()
            .filter_map(OnceLock::get)
            .map(WinogradConv::bytes)
            .chain(self.im2col.get().map(DirectConv::bytes))
            .chain(self.stem.get().map(StemConv::bytes))
            .sum::<usize>();
        let se = [&self.se, &self.post_se]
            .into_iter()
            .flatten()
            .map(Excitation::bytes)
            .sum::<usize>();
        (self.weight.len() + self.bias.len()) * 4 + prepared + se
    }

    fn in_channels(&self) -> usize {
        self.shape[1] * self.shape[2]
    }

    fn out_channels(&self) -> usize {
        self.shape[0]
    }

    /// Convolution + bias (+ SE) + ReLU (+ post-SE) of channels-last `input` `[batch, height, width, in]`
    /// (the stem: within a one-pixel zero border) into `output`; returns the
    /// output's height and width.
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
        let (out_height, out_width) = match self.prepared(self.form_for([batch, height, width])) {
            Conv::Stem(conv) => {
                conv.forward(input, batch, height, width, relu_after, output);
                conv.output_size(height, width)
            }
            Conv::Winograd(conv) => {
                conv.forward(input, batch, height, width, relu_after, winograd, output);
                (height, width)
            }
            Conv::Im2col(conv) => {
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
