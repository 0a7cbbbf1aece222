//! A square-kernel 2-D convolution and its two gradients on f32 slices in NCHW order, each as
//! batched matrix products over im2col columns.
//!
//! Images are taken a block at a time, several in one product, so that the product's column
//! count is the block's pixels rather than one image's: the late stages of a network at 32x32
//! have 4 pixels an image, and a product per image there runs the matrix kernels' narrowest
//! (one-row) form. The weight gradient is one product per block whose depth is the block's
//! pixels, instead of a convolution of the input by the output gradient.

use rayon::prelude::*;

/// Floats of im2col columns per block of images (8 MB): a block is as many images as fit,
/// at least one.
const BLOCK_FLOATS: usize = 2 << 20;

/// The shapes of one convolution: `x [batch, in_channels, height, width]`, `weight
/// [out_channels, in_channels / groups, kernel, kernel]`, output `[batch, out_channels,
/// out_height, out_width]`, with the same stride and zero padding in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Geometry {
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Rows of one group's im2col columns: `in_per_group x kernel x kernel`.
    fn depth(&self) -> usize {
        self.in_per_group() * self.kernel * self.kernel
    }

    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.pixels()
    }

    fn weight_len(&self) -> usize {
        self.out_channels * self.depth()
    }

    /// The blocks of images the products take: `(first image, images)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let per_image = (self.depth() * self.pixels()).max(1);
        let size = (BLOCK_FLOATS / per_image).clamp(1, self.batch.max(1));
        let batch = self.batch;
        (0..batch)
            .step_by(size)
            .map(move |first| (first, size.min(batch - first)))
    }
}

/// The convolution of `x` by `weight` (no bias).
pub fn forward(x: &[f32], weight: &[f32], geometry: &Geometry) -> Vec<f32> {
    let g = geometry;
    assert_eq!(x.len(), g.input_len(), "input of {g:?}");
    assert_eq!(weight.len(), g.weight_len(), "weight of {g:?}");
    let (depth, pixels, out_per_group) = (g.depth(), g.pixels(), g.out_per_group());
    let mut output = vec![0f32; g.output_len()];
    let mut columns = Vec::new();
    let mut product = Vec::new();
    for (first, images) in g.blocks() {
        let width = images * pixels;
        for group in 0..g.groups {
            im2col(x, g, first, images, group, &mut columns);
            let weight = &weight[group * out_per_group * depth..][..out_per_group * depth];
            product.resize(out_per_group * width, 0.0);
            // product [out_per_group x width] = weight [out_per_group x depth] . columns
            matmul(
                Mat::new(&mut product, width, 1),
                MatRef::new(weight, depth, 1),
                MatRef::new(&columns, width, 1),
                [out_per_group, width, depth],
                false,
            );
            scatter_rows(&product, g, first, images, group, &mut output);
        }
    }
    output
}

/// The gradient of the input: `output_grad` (the output's shape) through the transposed
/// weight, folded back onto the input's pixels.
pub fn input_grad(weight: &[f32], output_grad: &[f32], geometry: &Geometry) -> Vec<f32> {
    let g = geometry;
    assert_eq!(weight.len(), g.weight_len(), "weight of {g:?}");
    assert_eq!(
        output_grad.len(),
        g.output_len(),
        "output gradient of {g:?}"
    );
    let (depth, pixels, out_per_group) = (g.depth(), g.pixels(), g.out_per_group());
    let mut input_grad = vec![0f32; g.input_len()];
    let mut rows = Vec::new();
    let mut columns = Vec::new();
    for (first, images) in g.blocks() {
        let width = images * pixels;
        for group in 0..g.groups {
            gather_rows(output_grad, g, first, images, group, &mut rows);
            let weight = &weight[group * out_per_group * depth..][..out_per_group * depth];
            columns.resize(depth * width, 0.0);
            // columns [depth x width] = weight^T [depth x out_per_group] . rows
            matmul(
                Mat::new(&mut columns, width, 1),
                MatRef::new(weight, 1, depth),
                MatRef::new(&rows, width, 1),
                [depth, width, out_per_group],
                false,
            );
            col2im(&columns, g, first, images, group, &mut input_grad);
        }
    }
    input_grad
}

/// The gradient of the weight: `output_grad` against the input's im2col columns, summed over
/// every image and pixel.
pub fn weight_grad(x: &[f32], output_grad: &[f32], geometry: &Geometry) -> Vec<f32> {
    let g = geometry;
    assert_eq!(x.len(), g.input_len(), "input of {g:?}");
    assert_eq!(
        output_grad.len(),
        g.output_len(),
        "output gradient of {g:?}"
    );
    let (depth, pixels, out_per_group) = (g.depth(), g.pixels(), g.out_per_group());
    let mut weight_grad = vec![0f32; g.weight_len()];
    let mut rows = Vec::new();
    let mut columns = Vec::new();
    for (block, (first, images)) in g.blocks().enumerate() {
        let width = images * pixels;
        for group in 0..g.groups {
            gather_rows(output_grad, g, first, images, group, &mut rows);
            im2col(x, g, first, images, group, &mut columns);
            let grad = &mut weight_grad[group * out_per_group * depth..][..out_per_group * depth];
            // grad [out_per_group x depth] (+)= rows [out_per_group x width] . columns^T
            matmul(
                Mat::new(grad, depth, 1),
                MatRef::new(&rows, width, 1),
                MatRef::new(&columns, 1, width),
                [out_per_group, depth, width],
                block > 0,
            );
        }
    }
    weight_grad
}

/// A group's im2col columns for `images` images from `first`: row `(channel, ky, kx)` holds,
/// image after image, the input pixel under that tap for every output pixel (zero in the
/// padding).
fn im2col(x: &[f32], g: &Geometry, first: usize, images: usize, group: usize, out: &mut Vec<f32>) {
    let (kernel, pixels) = (g.kernel, g.pixels());
    let out_width = g.out_width();
    let plane = g.height * g.width;
    out.resize(g.depth() * images * pixels, 0.0);
    out.par_chunks_mut(images * pixels)
        .enumerate()
        .for_each(|(row, out)| {
            let channel = group * g.in_per_group() + row / (kernel * kernel);
            let (ky, kx) = ((row / kernel) % kernel, row % kernel);
            let (lo, hi) = valid_range(out_width, g.width, g.stride, kx, g.padding);
            for (image, out) in out.chunks_exact_mut(pixels).enumerate() {
                let source = &x[((first + image) * g.in_channels + channel) * plane..][..plane];
                for (oy, out) in out.chunks_exact_mut(out_width).enumerate() {
                    let iy = (oy * g.stride + ky).wrapping_sub(g.padding);
                    if iy >= g.height {
                        out.fill(0.0);
                        continue;
                    }
                    let line = &source[iy * g.width..][..g.width];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if lo == hi {
                        continue;
                    }
                    let start = lo * g.stride + kx - g.padding;
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                    } else {
                        let taps = line[start..].iter().step_by(g.stride);
                        for (value, tap) in out[lo..hi].iter_mut().zip(taps) {
                            *value = *tap;
                        }
                    }
                }
            }
        });
}

/// Adds a group's column gradients back onto the input gradient, the inverse of [`im2col`]:
/// each `(image, channel)` plane gathers its `kernel x kernel` rows.
fn col2im(
    columns: &[f32],
    g: &Geometry,
    first: usize,
    images: usize,
    group: usize,
    input_grad: &mut [f32],
) {
    let (kernel, pixels, width) = (g.kernel, g.pixels(), images * g.pixels());
    let out_width = g.out_width();
    let plane = g.height * g.width;
    let in_per_group = g.in_per_group();
    let block = &mut input_grad[first * g.in_channels * plane..][..images * g.in_channels * plane];
    block
        .par_chunks_mut(plane)
        .enumerate()
        .filter(|(index, _)| index % g.in_channels / in_per_group == group)
        .for_each(|(index, target)| {
            let (image, channel) = (index / g.in_channels, index % g.in_channels % in_per_group);
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let row = (channel * kernel + ky) * kernel + kx;
                    let source = &columns[row * width + image * pixels..][..pixels];
                    let (lo, hi) = valid_range(out_width, g.width, g.stride, kx, g.padding);
                    for (oy, source) in source.chunks_exact(out_width).enumerate() {
                        let iy = (oy * g.stride + ky).wrapping_sub(g.padding);
                        if iy >= g.height || lo == hi {
                            continue;
                        }
                        let line = &mut target[iy * g.width..][..g.width];
                        let start = lo * g.stride + kx - g.padding;
                        let values = &source[lo..hi];
                        if g.stride == 1 {
                            let taps = &mut line[start..start + values.len()];
                            for (tap, value) in taps.iter_mut().zip(values) {
                                *tap += value;
                            }
                        } else {
                            let taps = line[start..].iter_mut().step_by(g.stride);
                            for (tap, value) in taps.zip(values) {
                                *tap += value;
                            }
                        }
                    }
                }
            }
        });
}

/// The output columns `lo..hi` whose input column, `column * stride + tap - padding`, lies
/// within `0..in_len` (the others read the zero padding).
fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    tap: usize,
    padding: usize,
) -> (usize, usize) {
    let lo = padding.saturating_sub(tap).div_ceil(stride).min(out_len);
    let hi = match (in_len + padding).checked_sub(tap + 1) {
        Some(last) => (last / stride + 1).min(out_len),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// A group's output channels of `images` images from `first`, as rows `[out_per_group x
/// images * pixels]`.
fn gather_rows(
    output: &[f32],
    g: &Geometry,
    first: usize,
    images: usize,
    group: usize,
    rows: &mut Vec<f32>,
) {
    let (pixels, out_per_group) = (g.pixels(), g.out_per_group());
    rows.resize(out_per_group * images * pixels, 0.0);
    rows.par_chunks_mut(images * pixels)
        .enumerate()
        .for_each(|(local, row)| {
            let channel = group * out_per_group + local;
            for (image, row) in row.chunks_exact_mut(pixels).enumerate() {
                let start = ((first + image) * g.out_channels + channel) * pixels;
                row.copy_from_slice(&output[start..start + pixels]);
            }
        });
}

/// The inverse of [`gather_rows`]: rows written into their places in the output.
fn scatter_rows(
    rows: &[f32],
    g: &Geometry,
    first: usize,
    images: usize,
    group: usize,
    output: &mut [f32],
) {
    let (pixels, out_per_group) = (g.pixels(), g.out_per_group());
    let block = &mut output[first * g.out_channels * pixels..][..images * g.out_channels * pixels];
    block
        .par_chunks_mut(pixels)
        .enumerate()
        .filter(|(index, _)| index % g.out_channels / out_per_group == group)
        .for_each(|(index, target)| {
            let (image, local) = (
                index / g.out_channels,
                index % g.out_channels % out_per_group,
            );
            target.copy_from_slice(&rows[(local * images + image) * pixels..][..pixels]);
        });
}

/// A matrix in a slice: element `(row, column)` at `row * row_stride + column * column_stride`.
struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> MatRef<'a> {
    fn new(data: &'a [f32], row_stride: usize, column_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            column_stride,
        }
    }

    /// Whether a `rows x columns` matrix lies within the slice.
    fn fits(&self, rows: usize, columns: usize) -> bool {
        rows == 0
            || columns == 0
            || (rows - 1) * self.row_stride + (columns - 1) * self.column_stride < self.data.len()
    }
}

/// A mutable [`MatRef`].
struct Mat<'a> {
    data: &'a mut [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a mut [f32], row_stride: usize, column_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            column_stride,
        }
    }
}

/// `out = lhs . rhs` (or `out += lhs . rhs` when `accumulate`) for `[m, n, k]`: `out [m x n]`,
/// `lhs [m x k]`, `rhs [k x n]`, on every core.
fn matmul(out: Mat<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, [m, n, k]: [usize; 3], accumulate: bool) {
    let out_view = MatRef::new(out.data, out.row_stride, out.column_stride);
    assert!(
        out_view.fits(m, n) && lhs.fits(m, k) && rhs.fits(k, n),
        "a [{m} x {k}] . [{k} x {n}] product outside its slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.data.fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every element the product reads or writes within its
    // slice; `out` is borrowed mutably and so aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.data.as_mut_ptr(),
            out.column_stride as isize,
            out.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition.
    fn reference(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut out = vec![0f32; g.output_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                let group = o / g.out_per_group();
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = 0.0;
                        for c in 0..g.in_per_group() {
                            let ci = group * g.in_per_group() + c;
                            for ky in 0..g.kernel {
                                for kx in 0..g.kernel {
                                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                    if iy < 0 || ix < 0 {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    if iy >= g.height || ix >= g.width {
                                        continue;
                                    }
                                    let xv = x
                                        [((n * g.in_channels + ci) * g.height + iy) * g.width + ix];
                                    let wv = weight[((o * g.in_per_group() + c) * g.kernel + ky)
                                        * g.kernel
                                        + kx];
                                    sum += xv * wv;
                                }
                            }
                        }
                        out[((n * g.out_channels + o) * oh + oy) * ow + ox] = sum;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn geometries() -> Vec<Geometry> {
        let base = Geometry {
            batch: 3,
            in_channels: 4,
            height: 7,
            width: 5,
            out_channels: 6,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        vec![
            base,
            Geometry { stride: 2, ..base },
            Geometry { groups: 2, ..base },
            Geometry {
                kernel: 1,
                padding: 0,
                ..base
            },
            Geometry {
                kernel: 1,
                padding: 0,
                stride: 2,
                ..base
            },
            Geometry {
                batch: 1,
                height: 1,
                width: 1,
                ..base
            },
            Geometry {
                height: 2,
                width: 3,
                stride: 2,
                ..base
            },
            Geometry {
                height: 6,
                width: 2,
                stride: 2,
                groups: 2,
                ..base
            },
        ]
    }

    fn close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
        }
    }

    #[test]
    fn the_forward_pass_is_the_definition() {
        for g in geometries() {
            let x = values(g.input_len(), 1);
            let w = values(g.weight_len(), 2);
            close(&forward(&x, &w, &g), &reference(&x, &w, &g));
        }
    }

    /// The gradients are the adjoints of the forward pass: `<dy, conv(x, w)>` equals
    /// `<input_grad(w, dy), x>` and `<weight_grad(x, dy), w>`, since the convolution is linear in
    /// each.
    #[test]
    fn the_gradients_are_the_adjoints() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
        for g in geometries() {
            let x = values(g.input_len(), 3);
            let w = values(g.weight_len(), 4);
            let dy = values(g.output_len(), 5);
            let y = reference(&x, &w, &g);
            let expected = dot(&dy, &y);
            let through_x = dot(&input_grad(&w, &dy, &g), &x);
            let through_w = dot(&weight_grad(&x, &dy, &g), &w);
            for actual in [through_x, through_w] {
                assert!(
                    (actual - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                    "{g:?}: {actual} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn several_blocks_sum_as_one() {
        // Images large enough that a block holds one: the weight gradient accumulates.
        let g = Geometry {
            batch: 3,
            in_channels: 16,
            height: 160,
            width: 160,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        assert!(g.blocks().count() > 1);
        let x = values(g.input_len(), 6);
        let dy = values(g.output_len(), 7);
        let w = values(g.weight_len(), 8);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
        let expected = dot(&dy, &forward(&x, &w, &g));
        let actual = dot(&weight_grad(&x, &dy, &g), &w);
        assert!(
            (actual - expected).abs() <= 1e-3 * (1.0 + expected.abs()),
            "{actual} vs {expected}"
        );
    }
}
