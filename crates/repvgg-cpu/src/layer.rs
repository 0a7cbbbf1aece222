//! One layer of the engine: a deploy block's 3x3 convolution, prepared for whichever algorithm
//! a call needs, with its bias, ReLU and squeeze-excitation.

use std::sync::OnceLock;

use repvgg_model::RepVggDeployBlock;

use crate::im2col::Im2colConv;
use crate::ops::{Excitation, relu, values};
use crate::options::{ConvAlgorithm, CpuOptions};
use crate::stem::StemConv;
use crate::winograd::{WinogradConv, WinogradScratch, WinogradTile};

/// One deploy block: its convolution, prepared for the algorithm that suits its stride, and its
/// squeeze-excitation if any, before the ReLU (RepVGG-D2se) or after it (RepVGGplus).
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    /// The convolution as the model holds it: PyTorch's `[out, in / groups, 3, 3]`, row-major,
    /// and its bias.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// `[out, in / groups, groups]`.
    shape: [usize; 3],
    pub(crate) stride: usize,
    options: CpuOptions,
    /// The convolution prepared for each algorithm, made the first time a call takes it (the
    /// choice depends on the batch and image size: [`Layer::algorithm_for`]).
    winograd2: OnceLock<WinogradConv>,
    winograd4: OnceLock<WinogradConv>,
    im2col: OnceLock<Im2colConv>,
    /// Whether the layer is the network's first, on the images (the one that can run as a
    /// [`StemConv`], reading them padded).
    takes_images: bool,
    stem: OnceLock<StemConv>,
    se: Option<Excitation>,
    post_se: Option<Excitation>,
}

/// How a layer's convolution is computed for one call: what [`ConvAlgorithm`] resolves to
/// for the layer's shape and the call's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// On the padded images, in place ([`stem`]).
    Stem,
    Winograd(WinogradTile),
    Im2col,
}

impl Algorithm {
    /// The name [`LayerTime::algorithm`] gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Stem => "in place",
            Self::Winograd(WinogradTile::F2x2) => "winograd F(2x2)",
            Self::Winograd(WinogradTile::F4x4) => "winograd F(4x4)",
            Self::Im2col => "im2col",
        }
    }
}

/// A layer's convolution, prepared for its algorithm.
pub(crate) enum Conv<'a> {
    Stem(&'a StemConv),
    Winograd(&'a WinogradConv),
    Im2col(&'a Im2colConv),
}

impl Layer {
    pub(crate) fn new(block: &RepVggDeployBlock, options: &CpuOptions, takes_images: bool) -> Self {
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

    /// The algorithm for an input of `[batch, height, width]`: the first layer in place on the
    /// padded images where it [suits](StemConv::suits) a stem (whatever the algorithm option,
    /// which is about the stride-1 layers); im2col for strided layers and for narrow ones (under
    /// 64 input channels per group the Winograd transforms cost more than they save); F(2x2)
    /// where F(4x4) would have fewer than 32 tiles (its 2.25x larger transformed kernels are
    /// then read for too little work: stage 3 of A0 at batch 1); F(4x4) elsewhere. Measured per
    /// layer with `cargo xtask bench-layers`.
    pub(crate) fn algorithm_for(&self, [batch, height, width]: [usize; 3]) -> Algorithm {
        if self.runs_as_stem() {
            return Algorithm::Stem;
        }
        if self.stride != 1 {
            return Algorithm::Im2col;
        }
        match self.options.algorithm {
            ConvAlgorithm::Winograd(tile) => Algorithm::Winograd(tile),
            ConvAlgorithm::Im2col => Algorithm::Im2col,
            ConvAlgorithm::Auto if self.shape[1] < 64 => Algorithm::Im2col,
            ConvAlgorithm::Auto if batch * height.div_ceil(4) * width.div_ceil(4) < 32 => {
                Algorithm::Winograd(WinogradTile::F2x2)
            }
            ConvAlgorithm::Auto => Algorithm::Winograd(WinogradTile::F4x4),
        }
    }

    /// Whether the layer runs as a stem: the first, where it [suits](StemConv::suits) one.
    pub(crate) fn runs_as_stem(&self) -> bool {
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

    /// The convolution prepared for `algorithm`, made on first use.
    pub(crate) fn prepared(&self, algorithm: Algorithm) -> Conv<'_> {
        let (weight, shape, precision) = (&self.weight, self.shape, self.options.precision);
        let bias = || self.bias.clone();
        match algorithm {
            Algorithm::Stem => {
                Conv::Stem(self.stem().expect("only the first layer runs as a stem"))
            }
            Algorithm::Winograd(tile) => {
                let cell = match tile {
                    WinogradTile::F2x2 => &self.winograd2,
                    WinogradTile::F4x4 => &self.winograd4,
                };
                Conv::Winograd(
                    cell.get_or_init(|| WinogradConv::new(weight, bias(), shape, tile, precision)),
                )
            }
            Algorithm::Im2col => Conv::Im2col(
                self.im2col
                    .get_or_init(|| Im2colConv::new(weight, bias(), shape, self.stride, precision)),
            ),
        }
    }

    /// Bytes held: the weights, the forms prepared so far, squeeze-excitation.
    pub(crate) fn bytes(&self) -> usize {
        let prepared = [&self.winograd2, &self.winograd4]
            .into_iter()
            .filter_map(OnceLock::get)
            .map(WinogradConv::bytes)
            .chain(self.im2col.get().map(Im2colConv::bytes))
            .chain(self.stem.get().map(StemConv::bytes))
            .sum::<usize>();
        let se = [&self.se, &self.post_se]
            .into_iter()
            .flatten()
            .map(Excitation::bytes)
            .sum::<usize>();
        (self.weight.len() + self.bias.len()) * 4 + prepared + se
    }

    pub(crate) fn in_channels(&self) -> usize {
        self.shape[1] * self.shape[2]
    }

    pub(crate) fn out_channels(&self) -> usize {
        self.shape[0]
    }

    /// Convolution + bias (+ SE) + ReLU (+ post-SE) of channels-last `input` `[batch, height, width, in]`
    /// (the stem: within a one-pixel zero border) into `output`; returns the
    /// output's height and width.
    pub(crate) fn forward(
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
        let (out_height, out_width) =
            match self.prepared(self.algorithm_for([batch, height, width])) {
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
