//! Stride-1 3x3 convolutions by Winograd's minimal filtering (Lavin & Gray, 2016): F(4x4, 3x3)
//! (interpolation points 0, ±1, ±2, ∞) makes each 4x4 output tile from a 6x6 input tile through
//! 36 element-wise products instead of 144, so the matrix products do 4x fewer multiplies than
//! im2col's; F(2x2, 3x3) makes 2x2 tiles from 4x4 through 16 instead of 36 (2.25x fewer), with
//! transformed kernels 2.25x smaller and transforms of 0 and ±1. The weights are transformed
//! once, when the layer is prepared; per call the input tiles are transformed, multiplied in the
//! transformed domain as independent matrix products (one per tile position, per group), and
//! transformed back with the bias (and ReLU) applied.
//!
//! Layouts are channels-last throughout so that every transform works on whole channel vectors.

use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

use crate::CpuPrecision;
use crate::kernel::to_bf16_rows;
use crate::ops::{MatMut, SendPtr};
use crate::product::{PackedWeights, Rows};

/// Tiles multiplied per matrix product: enough rows for the kernels to run at full rate, few
/// enough that the products of one layer spread over every core at batch 1.
const TILES_PER_PRODUCT: usize = 128;

/// The transformed tiles and products of the images run together: at most this many bytes (or
/// one image's), so that the phases (input transform, products, output transform) pass them
/// through the caches instead of memory. BENCHMARKS.md has what this and other budgets measured.
const CHUNK_BYTES: usize = 2 << 20;

/// The output tile of a Winograd convolution: F(2x2, 3x3) (16 products per 4 outputs, 2.25x
/// fewer multiplies than im2col, transforms of 0 and ±1 that keep bf16's rounding small) or
/// F(4x4, 3x3) (36 per 16, 4x fewer, transformed kernels 2.25x larger).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinogradTile {
    F2x2,
    F4x4,
}

impl WinogradTile {
    /// Transformed-domain positions: the input tile's side squared.
    fn positions(self) -> usize {
        self.transform().len().pow(2)
    }

    /// `G`, the kernel transform: `G g Gᵀ` is a 3x3 kernel's transformed form.
    fn transform(self) -> &'static [[f64; 3]] {
        match self {
            Self::F2x2 => &G2,
            Self::F4x4 => &G4,
        }
    }

    /// `G g Gᵀ` of one 3x3 kernel (row-major), in position order. Computed in f64 so that the
    /// 1/6 and 1/24 factors cost no more than the final rounding to f32.
    fn transform_kernel(self, kernel: &[f32]) -> Vec<f32> {
        let g = self.transform();
        let side = g.len();
        let rows: Vec<[f64; 3]> = g
            .iter()
            .map(|gi| {
                std::array::from_fn(|kx| {
                    (0..3)
                        .map(|ky| gi[ky] * f64::from(kernel[ky * 3 + kx]))
                        .sum()
                })
            })
            .collect();
        (0..side * side)
            .map(|position| {
                let (i, j) = (position / side, position % side);
                let value: f64 = (0..3).map(|kx| rows[i][kx] * g[j][kx]).sum();
                value as f32
            })
            .collect()
    }
}

/// `G` of F(2x2, 3x3), 4x3.
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of F(4x4, 3x3), 6x3.
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A stride-1, padding-1 3x3 convolution prepared for Winograd.
#[derive(Clone, Debug)]
pub(super) struct WinogradConv {
    pub in_channels: usize,
    pub out_channels: usize,
    groups: usize,
    tile: WinogradTile,
    /// `[position][group]`: the transformed kernels, `[in_per_group, out_per_group]` each.
    weights: Vec<PackedWeights>,
    bias: Vec<f32>,
}

/// Per-call buffers: transformed input tiles `[tile][position][in]` (f32, or bf16 with each
/// group's channels padded to a pair when the products take bf16) and their products
/// `[tile][position][out]`.
#[derive(Debug, Default)]
pub(super) struct WinogradScratch {
    tiles: Vec<f32>,
    tiles_bf16: Vec<bf16>,
    products: Vec<f32>,
}

impl WinogradConv {
    /// `weight` is PyTorch's `[out, in / groups, 3, 3]`, row-major.
    pub fn new(
        weight: &[f32],
        bias: Vec<f32>,
        [out_channels, in_per_group, groups]: [usize; 3],
        tile: WinogradTile,
        precision: CpuPrecision,
    ) -> Self {
        let out_per_group = out_channels / groups;
        let positions = tile.positions();
        // Every kernel transformed, in parallel: `[out][in_per_group][position]`.
        let mut transformed = vec![0f32; out_channels * in_per_group * positions];
        transformed
            .par_chunks_mut(positions)
            .enumerate()
            .for_each(|(kernel, out)| {
                out.copy_from_slice(&tile.transform_kernel(&weight[kernel * 9..][..9]));
            });
        let weights = (0..positions * groups)
            .into_par_iter()
            .map(|position_group| {
                let (position, g) = (position_group / groups, position_group % groups);
                PackedWeights::new(precision, in_per_group, out_per_group, |ci, o| {
                    let co = g * out_per_group + o;
                    transformed[(co * in_per_group + ci) * positions + position]
                })
            })
            .collect();
        Self {
            in_channels: in_per_group * groups,
            out_channels,
            groups,
            tile,
            weights,
            bias,
        }
    }

    /// Bytes of prepared weights.
    pub fn bytes(&self) -> usize {
        self.weights.iter().map(PackedWeights::bytes).sum::<usize>() + self.bias.len() * 4
    }

    /// Convolution + bias (+ ReLU when `relu_after`) of channels-last `input` `[batch, height,
    /// width, in]` into `output` `[batch, height, width, out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        relu_after: bool,
        scratch: &mut WinogradScratch,
        output: &mut Vec<f32>,
    ) {
        output.resize(batch * height * width * self.out_channels, 0.0);
        // A few images at a time, so that their transformed tiles and products stay in the
        // caches between the phases.
        let chunk = (CHUNK_BYTES / self.buffer_bytes(height, width)).max(1);
        let (in_image, out_image) = (
            height * width * self.in_channels,
            height * width * self.out_channels,
        );
        for (input, output) in input
            .chunks(chunk * in_image)
            .zip(output.chunks_mut(chunk * out_image))
        {
            let size = [input.len() / in_image, height, width];
            match self.tile {
                WinogradTile::F2x2 => {
                    self.forward_tiles::<2, 4>(input, size, relu_after, scratch, output);
                }
                WinogradTile::F4x4 => {
                    self.forward_tiles::<4, 6>(input, size, relu_after, scratch, output);
                }
            }
        }
    }

    /// Bytes of transformed tiles and products for one image of `height x width`.
    fn buffer_bytes(&self, height: usize, width: usize) -> usize {
        let side = self.tile.transform().len() - 2;
        let tiles = height.div_ceil(side) * width.div_ceil(side);
        let tile_bytes = if self.weights[0].takes_bf16() { 2 } else { 4 };
        tiles * self.tile.positions() * (self.in_channels * tile_bytes + self.out_channels * 4)
    }

    /// [`forward`](Self::forward) on the images of `input` (some of a call's) for output tiles
    /// of side `M` (input tiles of side `N = M + 2`), into `output`, their part of the call's.
    fn forward_tiles<const M: usize, const N: usize>(
        &self,
        input: &[f32],
        [batch, height, width]: [usize; 3],
        relu_after: bool,
        scratch: &mut WinogradScratch,
        output: &mut [f32],
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let positions = N * N;
        let (tile_rows, tile_cols) = (height.div_ceil(M), width.div_ceil(M));
        let tiles = batch * tile_rows * tile_cols;
        let locate = |t: usize| TileAt {
            image: t / (tile_rows * tile_cols),
            y: ((t / tile_cols) % tile_rows) * M,
            x: (t % tile_cols) * M,
            height,
            width,
        };
        scratch.products.resize(tiles * positions * cout, 0.0);

        let in_per_group = cin / self.groups;
        let padded = self.weights[0].row_length();
        if self.weights[0].takes_bf16() {
            // Each tile transformed in f32, then rounded to bf16 (each group's channels padded
            // to a pair).
            let padded_channels = self.groups * padded;
            scratch
                .tiles_bf16
                .resize(tiles * positions * padded_channels, bf16::ZERO);
            scratch
                .tiles_bf16
                .par_chunks_mut(positions * padded_channels)
                .enumerate()
                .for_each(|(t, out)| {
                    with_work((2 * positions + 1) * cin, |work| {
                        let (work, transformed) = work.split_at_mut((positions + 1) * cin);
                        wide::transform_input::<N>(input, cin, locate(t), work, transformed);
                        to_bf16_rows(transformed, in_per_group, out, padded);
                    });
                });
        } else {
            scratch.tiles.resize(tiles * positions * cin, 0.0);
            scratch
                .tiles
                .par_chunks_mut(positions * cin)
                .enumerate()
                .for_each(|(t, transformed)| {
                    with_work((positions + 1) * cin, |work| {
                        wide::transform_input::<N>(input, cin, locate(t), work, transformed);
                    });
                });
        }

        self.multiply(tiles, positions, scratch);

        let products = &scratch.products;
        output
            .par_chunks_mut(height * width * cout)
            .enumerate()
            .flat_map(|(image, rows)| {
                rows.par_chunks_mut(M * width * cout)
                    .enumerate()
                    .map(move |(ty, rows)| (image, ty, rows))
            })
            .for_each(|(image, ty, rows)| {
                with_work((M * N + M) * cout, |work| {
                    for tx in 0..tile_cols {
                        let t = (image * tile_rows + ty) * tile_cols + tx;
                        let tile = &products[t * positions * cout..][..positions * cout];
                        wide::transform_output::<M, N>(
                            tile,
                            &self.bias,
                            cout,
                            [tx * M, width],
                            relu_after,
                            work,
                            rows,
                        );
                    }
                });
            });
    }

    /// `products[t][p] = tiles[t][p] · weights[p]`, per group: positions x groups x tile-blocks
    /// independent matrix products spread over the threads.
    fn multiply(&self, tiles: usize, positions: usize, scratch: &mut WinogradScratch) {
        let (cout, groups) = (self.out_channels, self.groups);
        let out_per_group = cout / groups;
        let padded = self.weights[0].row_length();
        let bf16 = self.weights[0].takes_bf16();
        // Elements per tile and per (tile, position) of the transformed tiles.
        let position_len = groups * padded;
        let tile_len = positions * position_len;
        let blocks = tiles.div_ceil(TILES_PER_PRODUCT);
        let products_len = scratch.products.len();
        let products_ptr = SendPtr(scratch.products.as_mut_ptr());
        let (tiles_f32, tiles_bf16) = (&scratch.tiles, &scratch.tiles_bf16);
        (0..positions * groups * blocks)
            .into_par_iter()
            .for_each(|job| {
                let (position_group, block) = (job / blocks, job % blocks);
                let (position, g) = (position_group / groups, position_group % groups);
                let first = block * TILES_PER_PRODUCT;
                let rows = TILES_PER_PRODUCT.min(tiles - first);
                let start = first * tile_len + position * position_len + g * padded;
                let lhs = if bf16 {
                    Rows::Bf16 {
                        data: &tiles_bf16[start..],
                        stride: tile_len,
                    }
                } else {
                    Rows::F32 {
                        data: &tiles_f32[start..],
                        stride: tile_len,
                    }
                };
                let offset = (first * positions + position) * cout + g * out_per_group;
                // SAFETY: `products` outlives the loop and every job writes only its own
                // (tile block, position, group) cells: rows `first..first + rows` at stride
                // positions * cout, the columns of its group at this position (the view checks
                // the extent against the buffer).
                let dst = unsafe {
                    MatMut::in_buffer(
                        products_ptr.get(),
                        products_len,
                        offset,
                        rows,
                        out_per_group,
                        positions * cout,
                    )
                };
                self.weights[position_group].multiply(dst, lhs, None, false, 1);
            });
    }
}

thread_local! {
    /// Each thread's transform buffer, kept between layers and calls (allocating and zeroing one
    /// per parallel job cost several percent at batch 1).
    static WORK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `run` on this thread's transform buffer, at least `len` long (its contents are left from
/// earlier use: the transforms write every value they read).
fn with_work(len: usize, run: impl FnOnce(&mut [f32])) {
    WORK.with_borrow_mut(|work| {
        if work.len() < len {
            work.resize(len, 0.0);
        }
        run(&mut work[..len]);
    });
}

/// The transforms compiled for AVX-512 where the CPU has it: the crate is built for baseline
/// x86-64, whose 4-lane vectors leave these channel loops several times slower.
mod wide {
    use super::TileAt;

    pub(super) fn transform_input<const N: usize>(
        input: &[f32],
        channels: usize,
        at: TileAt,
        work: &mut [f32],
        transformed: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            fn wide<const N: usize>(
                input: &[f32],
                channels: usize,
                at: TileAt,
                work: &mut [f32],
                transformed: &mut [f32],
            ) {
                super::transform_input::<N>(input, channels, at, work, transformed);
            }
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { wide::<N>(input, channels, at, work, transformed) };
            return;
        }
        super::transform_input::<N>(input, channels, at, work, transformed);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn transform_output<const M: usize, const N: usize>(
        products: &[f32],
        bias: &[f32],
        channels: usize,
        place: [usize; 2],
        relu_after: bool,
        work: &mut [f32],
        rows: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn wide<const M: usize, const N: usize>(
                products: &[f32],
                bias: &[f32],
                channels: usize,
                place: [usize; 2],
                relu_after: bool,
                work: &mut [f32],
                rows: &mut [f32],
            ) {
                super::transform_output::<M, N>(
                    products, bias, channels, place, relu_after, work, rows,
                );
            }
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { wide::<M, N>(products, bias, channels, place, relu_after, work, rows) };
            return;
        }
        super::transform_output::<M, N>(products, bias, channels, place, relu_after, work, rows);
    }
}

/// Where a tile lies: its image and its top-left output pixel, in an image of `height x width`.
#[derive(Clone, Copy)]
struct TileAt {
    image: usize,
    y: usize,
    x: usize,
    height: usize,
    width: usize,
}

/// `Bᵀ d B` of the `N x N` input tile at `at` (zero outside the image), into `transformed`
/// `[position][channel]`. The tile's pixels are read where they lie in `input`; `work` holds
/// `N² + 1` channel vectors (a zero one for the padding, and the first pass's rows).
#[inline(always)]
fn transform_input<const N: usize>(
    input: &[f32],
    channels: usize,
    at: TileAt,
    work: &mut [f32],
    transformed: &mut [f32],
) {
    let (zeros, rows) = work.split_at_mut(channels);
    zeros.fill(0.0);
    let zeros: &[f32] = zeros;
    let pixel = |py: usize, px: usize| {
        let (iy, ix) = ((at.y + py).wrapping_sub(1), (at.x + px).wrapping_sub(1));
        if iy < at.height && ix < at.width {
            &input[((at.image * at.height + iy) * at.width + ix) * channels..][..channels]
        } else {
            zeros
        }
    };
    // Bᵀ over the tile's rows (column by column), then over the columns of the result.
    for px in 0..N {
        let d: [&[f32]; N] = std::array::from_fn(|py| pixel(py, px));
        input_rows(&d, vectors::<N>(rows, px, N, channels), channels);
    }
    for i in 0..N {
        let d: [&[f32]; N] = std::array::from_fn(|px| &rows[(i * N + px) * channels..][..channels]);
        input_rows(&d, vectors::<N>(transformed, i * N, 1, channels), channels);
    }
}

/// `Bᵀ` applied to N channel vectors (4 for F(2x2), 6 for F(4x4)).
#[inline(always)]
fn input_rows<const N: usize>(d: &[&[f32]; N], out: [&mut [f32]; N], channels: usize) {
    lanewise(d, out, channels, None, |d: [f32; N], _| {
        match *d.as_slice() {
            [d0, d1, d2, d3] => {
                let values = [d0 - d2, d1 + d2, d2 - d1, d1 - d3];
                std::array::from_fn(|i| values[i])
            }
            [d0, d1, d2, d3, d4, d5] => {
                let values = [
                    4.0 * d0 - 5.0 * d2 + d4,
                    -4.0 * (d1 + d2) + d3 + d4,
                    4.0 * (d1 - d2) - d3 + d4,
                    -2.0 * (d1 - d3) - d2 + d4,
                    2.0 * (d1 - d3) - d2 + d4,
                    4.0 * d1 - 5.0 * d3 + d5,
                ];
                std::array::from_fn(|i| values[i])
            }
            _ => unreachable!("input tiles of side 4 or 6"),
        }
    });
}

/// Channels per step of [`lanewise`]: one AVX-512 vector of f32.
const LANES: usize = 16;

/// `out[o][c] = f(inputs[..][c], per_channel[c])[o]` for every channel `c` (`per_channel`
/// zero if `None`), a vector of channels at a time: each step reads its lanes of every input
/// before it writes any output, so the compiler makes vector code that needs no run-time check
/// that the slices do not overlap (the loops over whole slices this replaced ran partly in
/// scalar code under `perf`, and took twice as long for 64 channels).
#[inline(always)]
fn lanewise<const I: usize, const O: usize>(
    inputs: &[&[f32]; I],
    mut out: [&mut [f32]; O],
    channels: usize,
    per_channel: Option<&[f32]>,
    f: impl Fn([f32; I], f32) -> [f32; O],
) {
    let zeros = [0f32; LANES];
    let whole = channels - channels % LANES;
    for c in (0..whole).step_by(LANES) {
        let lanes: [[f32; LANES]; I] =
            std::array::from_fn(|i| inputs[i][c..c + LANES].try_into().expect("a vector"));
        let extra: &[f32; LANES] = per_channel.map_or(&zeros, |values| {
            values[c..c + LANES].try_into().expect("a vector")
        });
        let mut results = [[0f32; LANES]; O];
        for lane in 0..LANES {
            let values = f(std::array::from_fn(|i| lanes[i][lane]), extra[lane]);
            for (result, value) in results.iter_mut().zip(values) {
                result[lane] = value;
            }
        }
        for (out, result) in out.iter_mut().zip(&results) {
            out[c..c + LANES].copy_from_slice(result);
        }
    }
    for c in whole..channels {
        let extra = per_channel.map_or(0.0, |values| values[c]);
        let values = f(std::array::from_fn(|i| inputs[i][c]), extra);
        for (out, value) in out.iter_mut().zip(values) {
            out[c] = value;
        }
    }
}

/// Channel vectors `first`, `first + step`, ... of `out` (N of them), each `channels` long.
#[inline(always)]
fn vectors<const N: usize>(
    out: &mut [f32],
    first: usize,
    step: usize,
    channels: usize,
) -> [&mut [f32]; N] {
    let mut chunks = out.chunks_exact_mut(channels).skip(first).step_by(step);
    std::array::from_fn(|_| chunks.next().expect("the buffer holds every vector"))
}

/// `Aᵀ m A` of one tile's products `[position][channel]` (`N x N` positions), plus the bias (and
/// ReLU), written to the tile's `M x M` pixels of `rows` (the tile row's up to `M` image rows,
/// channels-last) from column `x` of `width`, clipped at the image's right and bottom edges.
/// `work` holds `M N + M` channel vectors (the first pass's columns, and the clipped pixels').
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output<const M: usize, const N: usize>(
    products: &[f32],
    bias: &[f32],
    channels: usize,
    [x, width]: [usize; 2],
    relu_after: bool,
    work: &mut [f32],
    rows: &mut [f32],
) {
    let (columns, clipped) = work.split_at_mut(M * N * channels);
    // Aᵀ over the rows: columns[r][j] for r < M, j < N.
    for j in 0..N {
        let m: [&[f32]; N] =
            std::array::from_fn(|i| &products[(i * N + j) * channels..][..channels]);
        let out = vectors::<M>(columns, j, N, channels);
        output_rows::<N, M, false>(&m, out, channels, bias, 0.0);
    }
    // Aᵀ over the columns, each output row's pixels written with the bias (and ReLU) where
    // they lie in the image; those past its right edge go to `clipped`.
    let image_rows = rows.len() / (width * channels);
    let visible = M.min(width - x);
    let floor = if relu_after { 0.0 } else { f32::NEG_INFINITY };
    for r in 0..M.min(image_rows) {
        let m: [&[f32]; N] =
            std::array::from_fn(|j| &columns[(r * N + j) * channels..][..channels]);
        let line = &mut rows[(r * width + x) * channels..][..visible * channels];
        let mut inside = line.chunks_exact_mut(channels);
        let mut outside = clipped.chunks_exact_mut(channels);
        let out: [&mut [f32]; M] = std::array::from_fn(|c| {
            let pixel = if c < visible {
                inside.next()
            } else {
                outside.next()
            };
            pixel.expect("a vector for every pixel")
        });
        output_rows::<N, M, true>(&m, out, channels, bias, floor);
    }
}

/// `Aᵀ` applied to N channel vectors, giving M (2 of 4 for F(2x2), 4 of 6 for F(4x4)); with
/// `FINISH`, plus `bias` and at least `floor` (the output pixels).
#[inline(always)]
fn output_rows<const N: usize, const M: usize, const FINISH: bool>(
    m: &[&[f32]; N],
    out: [&mut [f32]; M],
    channels: usize,
    bias: &[f32],
    floor: f32,
) {
    let bias = FINISH.then_some(&bias[..channels]);
    lanewise(m, out, channels, bias, |m: [f32; N], bias| {
        let values: [f32; M] = match *m.as_slice() {
            [m0, m1, m2, m3] => {
                let values = [m0 + m1 + m2, m1 - m2 - m3];
                std::array::from_fn(|i| values[i])
            }
            [m0, m1, m2, m3, m4, m5] => {
                let (sum12, diff12) = (m1 + m2, m1 - m2);
                let (sum34, diff34) = (m3 + m4, m3 - m4);
                let values = [
                    m0 + sum12 + sum34,
                    diff12 + 2.0 * diff34,
                    sum12 + 4.0 * sum34,
                    diff12 + 8.0 * diff34 + m5,
                ];
                std::array::from_fn(|i| values[i])
            }
            _ => unreachable!("F(2x2) or F(4x4)"),
        };
        if FINISH {
            values.map(|value| (value + bias).max(floor))
        } else {
            values
        }
    });
}
