//! Stride-1 3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2016,
//! interpolation points 0, ±1, ±2, ∞): each 4x4 output tile comes from a 6x6 input tile through
//! 36 element-wise products instead of 144, so the matrix products do 4x fewer multiplies than
//! im2col's. The weights are transformed once, when the layer is prepared; per call the input
//! tiles are transformed, multiplied in the transformed domain as 36 independent matrix products
//! (one per tile position, per group), and transformed back with the bias (and ReLU) applied.
//!
//! Layouts are channels-last throughout so that every transform works on whole channel vectors.

use rayon::prelude::*;

use super::ops::{MatMut, MatRef, SendPtr, matmul_add};

/// Output tile side, input tile side, and the number of transformed-domain positions.
const TILE: usize = 4;
const INPUT_TILE: usize = TILE + 2;
const POSITIONS: usize = INPUT_TILE * INPUT_TILE;

/// Tiles multiplied per matrix product: enough rows for the kernels to run at full rate, few
/// enough that the products of one layer spread over every core at batch 1.
const TILES_PER_PRODUCT: usize = 128;

/// `G`, the 6x3 weight transform: `G g Gᵀ` turns a 3x3 kernel into its 6x6 transformed form.
const G: [[f64; 3]; INPUT_TILE] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A stride-1, padding-1 3x3 convolution prepared for F(4x4, 3x3).
#[derive(Clone, Debug)]
pub(super) struct WinogradConv {
    pub in_channels: usize,
    pub out_channels: usize,
    groups: usize,
    /// `[position][group][in_per_group][out_per_group]`: the transformed kernels.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// Per-call buffers: transformed input tiles `[tile][position][in]` and their products
/// `[tile][position][out]`.
#[derive(Debug, Default)]
pub(super) struct WinogradScratch {
    tiles: Vec<f32>,
    products: Vec<f32>,
}

impl WinogradConv {
    /// `weight` is PyTorch's `[out, in / groups, 3, 3]`, row-major.
    pub fn new(
        weight: &[f32],
        bias: Vec<f32>,
        out_channels: usize,
        in_per_group: usize,
        groups: usize,
    ) -> Self {
        let out_per_group = out_channels / groups;
        // Each output channel's kernels, transformed in parallel: `[out][position][in_per_group]`.
        let mut by_output = vec![0f32; out_channels * POSITIONS * in_per_group];
        by_output
            .par_chunks_mut(POSITIONS * in_per_group)
            .enumerate()
            .for_each(|(co, transformed)| {
                for ci in 0..in_per_group {
                    let kernel = &weight[(co * in_per_group + ci) * 9..][..9];
                    for (position, value) in transform_kernel(kernel).into_iter().enumerate() {
                        transformed[position * in_per_group + ci] = value;
                    }
                }
            });
        // Rearranged for the products: `[position][group][in_per_group][out_per_group]`.
        let mut weights = vec![0f32; POSITIONS * groups * in_per_group * out_per_group];
        weights
            .par_chunks_mut(in_per_group * out_per_group)
            .enumerate()
            .for_each(|(position_group, matrix)| {
                let (position, g) = (position_group / groups, position_group % groups);
                for (ci, row) in matrix.chunks_exact_mut(out_per_group).enumerate() {
                    for (o, value) in row.iter_mut().enumerate() {
                        let co = g * out_per_group + o;
                        *value = by_output[(co * POSITIONS + position) * in_per_group + ci];
                    }
                }
            });
        Self {
            in_channels: in_per_group * groups,
            out_channels,
            groups,
            weights,
            bias,
        }
    }

    /// Convolution + bias (+ ReLU when `relu_after`) of channels-last `input` `[batch, height, width,
    /// in]` into `output` `[batch, height, width, out]`.
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
        let (cin, cout) = (self.in_channels, self.out_channels);
        let (tile_rows, tile_cols) = (height.div_ceil(TILE), width.div_ceil(TILE));
        let tiles = batch * tile_rows * tile_cols;
        scratch.tiles.resize(tiles * POSITIONS * cin, 0.0);
        scratch.products.resize(tiles * POSITIONS * cout, 0.0);
        output.resize(batch * height * width * cout, 0.0);

        scratch
            .tiles
            .par_chunks_mut(POSITIONS * cin)
            .enumerate()
            .for_each_init(
                || vec![0f32; 2 * POSITIONS * cin],
                |work, (t, transformed)| {
                    let image = t / (tile_rows * tile_cols);
                    let (ty, tx) = ((t / tile_cols) % tile_rows, t % tile_cols);
                    let at = TileAt {
                        image,
                        y: ty * TILE,
                        x: tx * TILE,
                        height,
                        width,
                    };
                    transform_input(input, cin, at, work, transformed);
                },
            );

        self.multiply(tiles, &scratch.tiles, &mut scratch.products);

        let products = &scratch.products;
        output
            .par_chunks_mut(height * width * cout)
            .enumerate()
            .flat_map(|(image, rows)| {
                rows.par_chunks_mut(TILE * width * cout)
                    .enumerate()
                    .map(move |(ty, rows)| (image, ty, rows))
            })
            .for_each_init(
                || vec![0f32; (TILE * INPUT_TILE + TILE * TILE) * cout],
                |work, (image, ty, rows)| {
                    for tx in 0..tile_cols {
                        let t = (image * tile_rows + ty) * tile_cols + tx;
                        let tile = &products[t * POSITIONS * cout..][..POSITIONS * cout];
                        transform_output(
                            tile,
                            &self.bias,
                            cout,
                            tx * TILE,
                            width,
                            relu_after,
                            work,
                            rows,
                        );
                    }
                },
            );
    }

    /// `products[t][p] = tiles[t][p] · weights[p]`, per group: 36 x groups x tile-blocks
    /// independent matrix products spread over the threads.
    fn multiply(&self, tiles: usize, transformed: &[f32], products: &mut [f32]) {
        let (cin, cout, groups) = (self.in_channels, self.out_channels, self.groups);
        let (in_per_group, out_per_group) = (cin / groups, cout / groups);
        let blocks = tiles.div_ceil(TILES_PER_PRODUCT);
        let products_len = products.len();
        let products_ptr = SendPtr(products.as_mut_ptr());
        (0..POSITIONS * groups * blocks)
            .into_par_iter()
            .for_each(|job| {
                let (position_group, block) = (job / blocks, job % blocks);
                let (position, g) = (position_group / groups, position_group % groups);
                let first = block * TILES_PER_PRODUCT;
                let rows = TILES_PER_PRODUCT.min(tiles - first);
                let lhs = &transformed[(first * POSITIONS + position) * cin + g * in_per_group..];
                let rhs = &self.weights[position_group * in_per_group * out_per_group..];
                let offset = (first * POSITIONS + position) * cout + g * out_per_group;
                // SAFETY: `products` outlives the loop and every job writes only its own
                // (tile block, position, group) cells: rows `first..first + rows` at stride
                // POSITIONS * cout, the columns of its group at this position (the view checks
                // the extent against the buffer).
                let dst = unsafe {
                    MatMut::in_buffer(
                        products_ptr.get(),
                        products_len,
                        offset,
                        rows,
                        out_per_group,
                        POSITIONS * cout,
                    )
                };
                matmul_add(
                    dst,
                    MatRef::new(lhs, rows, in_per_group, POSITIONS * cin),
                    MatRef::new(rhs, in_per_group, out_per_group, out_per_group),
                    false,
                    1,
                );
            });
    }
}

/// `G g Gᵀ` of one 3x3 kernel (row-major), as 36 values in position order. Computed in f64 so
/// that the 1/6 and 1/24 factors cost no more than the final rounding to f32.
fn transform_kernel(kernel: &[f32]) -> [f32; POSITIONS] {
    let mut rows = [[0f64; 3]; INPUT_TILE];
    for (i, row) in rows.iter_mut().enumerate() {
        for (kx, value) in row.iter_mut().enumerate() {
            *value = (0..3)
                .map(|ky| G[i][ky] * f64::from(kernel[ky * 3 + kx]))
                .sum();
        }
    }
    std::array::from_fn(|position| {
        let (i, j) = (position / INPUT_TILE, position % INPUT_TILE);
        let value: f64 = (0..3).map(|kx| rows[i][kx] * G[j][kx]).sum();
        value as f32
    })
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

/// `Bᵀ d B` of the 6x6 input tile at `at` (zero outside the image), into `transformed`
/// `[position][channel]`. `work` holds 72 channel vectors.
fn transform_input(
    input: &[f32],
    channels: usize,
    at: TileAt,
    work: &mut [f32],
    transformed: &mut [f32],
) {
    let (patch, rows) = work.split_at_mut(POSITIONS * channels);
    for py in 0..INPUT_TILE {
        for px in 0..INPUT_TILE {
            let dst = &mut patch[(py * INPUT_TILE + px) * channels..][..channels];
            let (iy, ix) = ((at.y + py).wrapping_sub(1), (at.x + px).wrapping_sub(1));
            if iy < at.height && ix < at.width {
                let start = ((at.image * at.height + iy) * at.width + ix) * channels;
                dst.copy_from_slice(&input[start..start + channels]);
            } else {
                dst.fill(0.0);
            }
        }
    }
    // Bᵀ over the tile's rows (column by column), then over the columns of the result.
    for px in 0..INPUT_TILE {
        let d = std::array::from_fn(|py| &patch[(py * INPUT_TILE + px) * channels..][..channels]);
        input_rows(d, rows, px, INPUT_TILE, channels);
    }
    for i in 0..INPUT_TILE {
        let d = std::array::from_fn(|px| &rows[(i * INPUT_TILE + px) * channels..][..channels]);
        input_rows(d, transformed, i * INPUT_TILE, 1, channels);
    }
}

/// `Bᵀ` applied to six channel vectors: writes vector `first + i * step` of `out` for i in 0..6.
#[inline(always)]
fn input_rows(d: [&[f32]; 6], out: &mut [f32], first: usize, step: usize, channels: usize) {
    let [o0, o1, o2, o3, o4, o5] = vectors(out, first, step, channels);
    let [d0, d1, d2, d3, d4, d5] = d.map(|row| &row[..channels]);
    for c in 0..channels {
        let (d0, d1, d2, d3, d4, d5) = (d0[c], d1[c], d2[c], d3[c], d4[c], d5[c]);
        o0[c] = 4.0 * d0 - 5.0 * d2 + d4;
        o1[c] = -4.0 * (d1 + d2) + d3 + d4;
        o2[c] = 4.0 * (d1 - d2) - d3 + d4;
        o3[c] = -2.0 * (d1 - d3) - d2 + d4;
        o4[c] = 2.0 * (d1 - d3) - d2 + d4;
        o5[c] = 4.0 * d1 - 5.0 * d3 + d5;
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

/// `Aᵀ m A` of one tile's products `[position][channel]`, plus the bias (and ReLU), written to
/// the tile's pixels of `rows` (the tile row's up to 4 image rows, channels-last), clipped at
/// the image's right and bottom edges. `work` holds 40 channel vectors.
#[allow(clippy::too_many_arguments)]
fn transform_output(
    products: &[f32],
    bias: &[f32],
    channels: usize,
    x: usize,
    width: usize,
    relu_after: bool,
    work: &mut [f32],
    rows: &mut [f32],
) {
    let (columns, tile) = work.split_at_mut(TILE * INPUT_TILE * channels);
    // Aᵀ over the rows: columns[r][j] for r in 0..4, j in 0..6.
    for j in 0..INPUT_TILE {
        let m = std::array::from_fn(|i| &products[(i * INPUT_TILE + j) * channels..][..channels]);
        output_rows(m, columns, j, INPUT_TILE, channels);
    }
    // Aᵀ over the columns: tile[r][c] for r, c in 0..4.
    for r in 0..TILE {
        let m = std::array::from_fn(|j| &columns[(r * INPUT_TILE + j) * channels..][..channels]);
        output_rows(m, tile, r * TILE, 1, channels);
    }
    let image_rows = rows.len() / (width * channels);
    for r in 0..TILE.min(image_rows) {
        for c in 0..TILE.min(width - x) {
            let dst = &mut rows[(r * width + x + c) * channels..][..channels];
            let src = &tile[(r * TILE + c) * channels..][..channels];
            let floor = if relu_after { 0.0 } else { f32::NEG_INFINITY };
            for ((out, value), b) in dst.iter_mut().zip(src).zip(bias) {
                *out = (value + b).max(floor);
            }
        }
    }
}

/// `Aᵀ` applied to six channel vectors: writes vector `first + r * step` of `out` for r in 0..4.
#[inline(always)]
fn output_rows(m: [&[f32]; 6], out: &mut [f32], first: usize, step: usize, channels: usize) {
    let [o0, o1, o2, o3] = vectors(out, first, step, channels);
    let [m0, m1, m2, m3, m4, m5] = m.map(|row| &row[..channels]);
    for c in 0..channels {
        let (sum12, diff12) = (m1[c] + m2[c], m1[c] - m2[c]);
        let (sum34, diff34) = (m3[c] + m4[c], m3[c] - m4[c]);
        o0[c] = m0[c] + sum12 + sum34;
        o1[c] = diff12 + 2.0 * diff34;
        o2[c] = sum12 + 4.0 * sum34;
        o3[c] = diff12 + 8.0 * diff34 + m5[c];
    }
}
