//! 3x3 convolutions of any stride as im2col + matrix product, in blocks of output pixels: each
//! block's columns (9 input pixels per output pixel) are built in a per-thread buffer that stays
//! in the core's cache and multiplied at once, instead of materialising the whole layer's columns
//! (43 MB for A0's second layer at batch 8) and streaming them through memory.

use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

use crate::CpuPrecision;
use crate::kernel::to_bf16;
use crate::ops::{MatMut, output_size};
use crate::product::{PackedWeights, Rows};

/// Target size of one block's columns, in floats (128 KiB: well inside a core's L2).
const BLOCK_FLOATS: usize = 32 * 1024;

thread_local! {
    /// Each thread's im2col block, kept between layers and calls, and its bf16 copy (each row
    /// padded to a pair) when the product takes bf16.
    static COLUMNS: RefCell<(Vec<f32>, Vec<bf16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A padding-1 3x3 convolution prepared for im2col.
#[derive(Clone, Debug)]
pub(super) struct Im2colConv {
    pub in_channels: usize,
    pub out_channels: usize,
    stride: usize,
    groups: usize,
    /// Per group, `[9 * in_per_group, out_per_group]`, rows ordered (ky, kx, ci).
    weights: Vec<PackedWeights>,
    bias: Vec<f32>,
}

/// The geometry of one call: input and output sizes.
#[derive(Clone, Copy)]
struct Shape {
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
}

impl Im2colConv {
    /// `weight` is PyTorch's `[out, in / groups, 3, 3]`, row-major.
    pub fn new(
        weight: &[f32],
        bias: Vec<f32>,
        [out_channels, in_per_group, groups]: [usize; 3],
        stride: usize,
        precision: CpuPrecision,
    ) -> Self {
        let out_per_group = out_channels / groups;
        let weights = (0..groups)
            .into_par_iter()
            .map(|g| {
                PackedWeights::new(precision, 9 * in_per_group, out_per_group, |row, co| {
                    let (k, ci) = (row / in_per_group, row % in_per_group);
                    weight[((g * out_per_group + co) * in_per_group + ci) * 9 + k]
                })
            })
            .collect();
        Self {
            in_channels: in_per_group * groups,
            out_channels,
            stride,
            groups,
            weights,
            bias,
        }
    }

    /// Bytes of prepared weights.
    pub fn bytes(&self) -> usize {
        self.weights.iter().map(PackedWeights::bytes).sum::<usize>() + self.bias.len() * 4
    }

    /// Output height and width for an input of `height x width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        output_size(height, width, self.stride)
    }

    /// Convolution + bias (+ ReLU when `relu_after`) of channels-last `input` `[batch, height,
    /// width, in]` into `output` `[batch, out_height, out_width, out]`.
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        relu_after: bool,
        output: &mut Vec<f32>,
    ) {
        let (out_height, out_width) = self.output_size(height, width);
        let shape = Shape {
            height,
            width,
            out_height,
            out_width,
        };
        let rows = batch * out_height * out_width;
        let depth = 9 * self.in_channels / self.groups;
        // Blocks of equal size: a short last block would stream all the weights for a few rows
        // (B0's last layer at batch 1: 49 rows as 16 + 16 + 16 + 1).
        let blocks = rows.div_ceil((BLOCK_FLOATS / depth).clamp(16, 512));
        let block = rows.div_ceil(blocks);
        let threads = rayon::current_num_threads();
        output.resize(rows * self.out_channels, 0.0);
        if blocks >= 2 * threads {
            // Many blocks: one per job, each product on the job's thread.
            output
                .par_chunks_mut(block * self.out_channels)
                .enumerate()
                .for_each(|(b, out)| {
                    self.block(input, shape, b * block, out, 1, relu_after);
                });
        } else {
            // Few output pixels (late layers at batch 1): one block, the product split over
            // the threads.
            self.block(input, shape, 0, output, threads, relu_after);
        }
    }

    /// Output rows `first..first + out.len() / out_channels`.
    fn block(
        &self,
        input: &[f32],
        shape: Shape,
        first: usize,
        out: &mut [f32],
        threads: usize,
        relu_after: bool,
    ) {
        let cout = self.out_channels;
        let rows = out.len() / cout;
        let in_per_group = self.in_channels / self.groups;
        let out_per_group = cout / self.groups;
        let depth = 9 * in_per_group;
        // Taken out of the thread's slot for the block and put back after: while a product split
        // over the threads waits, this thread runs other jobs, another call's blocks among them
        // (which then find the slot empty and allocate their own).
        let (mut columns, mut rounded) = COLUMNS.take();
        for (g, weights) in self.weights.iter().enumerate() {
            let channels = (g * in_per_group, in_per_group);
            let lhs = if weights.takes_bf16() {
                // Gathered straight into bf16: no f32 copy to convert afterwards.
                let padded = weights.row_length();
                rounded.resize(rows * padded, bf16::ZERO);
                self.im2col(input, shape, first, channels, padded, &mut rounded);
                Rows::Bf16 {
                    data: &rounded,
                    stride: padded,
                }
            } else {
                columns.resize(rows * depth, 0.0);
                self.im2col(input, shape, first, channels, depth, &mut columns);
                Rows::F32 {
                    data: &columns,
                    stride: depth,
                }
            };
            let bias = &self.bias[g * out_per_group..][..out_per_group];
            weights.multiply(
                MatMut::new(&mut out[g * out_per_group..], rows, out_per_group, cout),
                lhs,
                Some(bias),
                relu_after,
                threads,
            );
        }
        COLUMNS.set((columns, rounded));
    }

    /// The columns of output rows `first..first + columns.len() / row_length` for the channels
    /// `channel..channel + count`: per row, the 3x3 neighbourhood (ky, kx, ci), zero outside,
    /// then zeros up to `row_length` (bf16 rows are padded to a pair).
    fn im2col<T: Column>(
        &self,
        input: &[f32],
        shape: Shape,
        first: usize,
        (channel, count): (usize, usize),
        row_length: usize,
        columns: &mut [T],
    ) {
        let Shape {
            height,
            width,
            out_height,
            out_width,
        } = shape;
        let cin = self.in_channels;
        let depth = 9 * count;
        for (i, row) in columns.chunks_exact_mut(row_length).enumerate() {
            let (row, padding) = row.split_at_mut(depth);
            padding.fill(T::ZERO);
            let r = first + i;
            let (image, pixel) = (r / (out_height * out_width), r % (out_height * out_width));
            let (oy, ox) = (pixel / out_width, pixel % out_width);
            let left = (ox * self.stride).wrapping_sub(1);
            for ky in 0..3 {
                let taps = &mut row[ky * 3 * count..][..3 * count];
                let iy = (oy * self.stride + ky).wrapping_sub(1);
                if iy >= height {
                    taps.fill(T::ZERO);
                    continue;
                }
                let line = &input[(image * height + iy) * width * cin..][..width * cin];
                if count == cin && left < width && left + 3 <= width {
                    // All three taps inside the row, every channel: one contiguous run.
                    T::gather(taps, &line[left * cin..][..3 * cin]);
                    continue;
                }
                for (kx, tap) in taps.chunks_exact_mut(count).enumerate() {
                    let ix = left.wrapping_add(kx);
                    if ix < width {
                        T::gather(tap, &line[ix * cin + channel..][..count]);
                    } else {
                        tap.fill(T::ZERO);
                    }
                }
            }
        }
    }
}

/// An element of im2col's columns: f32, or bf16 for the bf16 products.
trait Column: Copy {
    const ZERO: Self;

    /// `destination = source`, converted.
    fn gather(destination: &mut [Self], source: &[f32]);
}

impl Column for f32 {
    const ZERO: Self = 0.0;

    fn gather(destination: &mut [Self], source: &[f32]) {
        // The 3-channel stem's runs of nine as a copy of known length (no call per run).
        match (
            <&mut [f32; 9]>::try_from(&mut *destination),
            <&[f32; 9]>::try_from(source),
        ) {
            (Ok(destination), Ok(source)) => *destination = *source,
            _ => destination.copy_from_slice(source),
        }
    }
}

impl Column for bf16 {
    const ZERO: Self = bf16::ZERO;

    fn gather(destination: &mut [Self], source: &[f32]) {
        to_bf16(source, destination);
    }
}
