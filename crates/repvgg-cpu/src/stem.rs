//! The stem (the first layer, on the images' 3 channels) read where its input lies: the images
//! are written once, channels-last, into a buffer with a one-pixel zero border, and each output
//! pixel's 3x3 window is then three runs of `3 x channels` values (one per kernel row), which the
//! f32 kernel multiplies in place ([`Lhs::F32Segments`]). im2col would copy 27 values per output
//! pixel first, and its product on rows of 27 values is dominated by that copy.
//!
//! The stem computes in f32 in both precisions: 27 products per output value are too few for
//! bf16's rate to pay for converting the images.

use rayon::prelude::*;

use crate::kernel::{self, Element, Lhs, PackedRhs};
use crate::ops::{MatMut, output_size};

/// Input channels up to which a layer is computed as a stem (the images' 3 in every preset).
const MAX_CHANNELS: usize = 4;

/// A padding-1 3x3 convolution of the images, prepared for the in-place product.
#[derive(Clone, Debug)]
pub(super) struct StemConv {
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    /// `[9 * in, out]`, rows ordered (ky, kx, ci).
    weights: PackedRhs,
    bias: Vec<f32>,
}

impl StemConv {
    /// Whether a layer of `[out, in / groups, groups]` can be computed as a stem on this CPU
    /// (ungrouped, few input channels, the f32 kernels available).
    pub fn suits([_, in_per_group, groups]: [usize; 3]) -> bool {
        groups == 1 && in_per_group <= MAX_CHANNELS && kernel::supported(Element::F32)
    }

    /// `weight` is PyTorch's `[out, in, 3, 3]`, row-major.
    ///
    /// # Panics
    /// If the layer does not [`suit`](Self::suits) a stem.
    pub fn new(weight: &[f32], bias: Vec<f32>, shape: [usize; 3], stride: usize) -> Self {
        assert!(
            Self::suits(shape),
            "a stem is an ungrouped layer of few channels"
        );
        let [out_channels, in_channels, _] = shape;
        let weights = PackedRhs::new(Element::F32, 9 * in_channels, out_channels, |row, co| {
            let (ky, kx, ci) = (
                row / (3 * in_channels),
                row / in_channels % 3,
                row % in_channels,
            );
            weight[((co * in_channels + ci) * 3 + ky) * 3 + kx]
        });
        Self {
            in_channels,
            out_channels,
            stride,
            weights,
            bias,
        }
    }

    /// Bytes of prepared weights.
    pub fn bytes(&self) -> usize {
        self.weights.bytes() + self.bias.len() * 4
    }

    /// Output height and width for an input of `height x width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        output_size(height, width, self.stride)
    }

    /// Convolution + bias (+ ReLU when `relu_after`) of `padded`, images of `height x width`
    /// channels-last within a one-pixel zero border (`[batch, height + 2, width + 2, in]`), into
    /// `output` `[batch, out_height, out_width, out]`.
    pub fn forward(
        &self,
        padded: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        relu_after: bool,
        output: &mut Vec<f32>,
    ) {
        let (out_height, out_width) = self.output_size(height, width);
        let (cin, cout) = (self.in_channels, self.out_channels);
        let padded_row = (width + 2) * cin;
        output.resize(batch * out_height * out_width * cout, 0.0);
        // One output row per job: its pixels' windows start `stride` pixels apart in the padded
        // rows `y * stride ..= y * stride + 2`.
        output
            .par_chunks_mut(out_width * cout)
            .enumerate()
            .for_each(|(row, out)| {
                let (image, y) = (row / out_height, row % out_height);
                let first = (image * (height + 2) + y * self.stride) * padded_row;
                let lhs = Lhs::F32Segments {
                    data: &padded[first..],
                    stride: self.stride * cin,
                    segment: 3 * cin,
                    pitch: padded_row,
                };
                let dst = MatMut::new(out, out_width, cout, cout);
                let panels = 0..self.weights.panels();
                kernel::multiply(
                    dst,
                    lhs,
                    &self.weights,
                    panels,
                    Some(&self.bias),
                    relu_after,
                );
            });
    }
}
