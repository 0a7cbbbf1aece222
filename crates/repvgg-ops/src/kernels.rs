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

    pub(crate) fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub(crate) fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Rows of one group's im2col columns: `in_per_group x kernel x kernel`.
    pub(crate) fn depth(&self) -> usize {
        self.in_per_group() * self.kernel * self.kernel
    }

    /// Output pixels per image.
    pub(crate) fn pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    pub(crate) fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    pub(crate) fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.pixels()
    }

    pub(crate) fn weight_len(&self) -> usize {
        self.out_channels * self.depth()
    }

    /// The blocks of images the products take: `(first image, images)`.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let per_image = (self.depth() * self.pixels()).max(1);
        let size = (BLOCK_FLOATS / per_image).clamp(1, self.batch.max(1));
        let batch = self.batch;
        (0..batch)
            .step_by(size)
            .map(move |first| (first, size.min(batch - first)))
    }
}

/// How a batch lays out its `height x width` planes: image after image (NCHW, Burn's order), or
/// channel after channel (CNHW, where a channel's values over the batch lie together, as batch
/// norm reads them and as the products write them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Nchw,
    Cnhw,
}

impl Order {
    /// Where plane `(image, channel)` starts, in planes.
    pub fn plane(self, image: usize, channel: usize, batch: usize, channels: usize) -> usize {
        match self {
            Order::Nchw => image * channels + channel,
            Order::Cnhw => channel * batch + image,
        }
    }

    /// The `(image, channel)` of the plane at `index`, the inverse of [`Order::plane`].
    fn image_channel(self, index: usize, batch: usize, channels: usize) -> (usize, usize) {
        match self {
            Order::Nchw => (index / channels, index % channels),
            Order::Cnhw => (index % batch, index / batch),
        }
    }
}

/// The convolution of `x` by `weight` (no bias).
pub fn forward(x: &[f32], weight: &[f32], geometry: &Geometry) -> Vec<f32> {
    let g = geometry;
    assert_eq!(x.len(), g.input_len(), "input of {g:?}");
    assert_eq!(weight.len(), g.weight_len(), "weight of {g:?}");
    let (depth, pixels, out_per_group) = (g.depth(), g.pixels(), g.out_per_group());
    let mut output = vec![0f32; g.output_len()];
    Scratch::with(|scratch| {
        for (first, images) in g.blocks() {
            let width = images * pixels;
            for group in 0..g.groups {
                im2col(x, Order::Nchw, g, [first, images, group], scratch);
                let weight = &weight[group * out_per_group * depth..][..out_per_group * depth];
                let product = sized(&mut scratch.product, out_per_group * width);
                // product [out_per_group x width] = weight [out_per_group x depth] . columns
                matmul(
                    Mat::new(product, width, 1),
                    MatRef::new(weight, depth, 1),
                    MatRef::new(&scratch.columns, width, 1),
                    [out_per_group, width, depth],
                    false,
                );
                scatter_rows(product, g, first, images, group, &mut output);
            }
        }
    });
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
    Scratch::with(|scratch| {
        for (first, images) in g.blocks() {
            let width = images * pixels;
            for group in 0..g.groups {
                gather_rows(output_grad, g, first, images, group, &mut scratch.product);
                let weight = &weight[group * out_per_group * depth..][..out_per_group * depth];
                let columns = sized(&mut scratch.columns, depth * width);
                // columns [depth x width] = weight^T [depth x out_per_group] . rows
                matmul(
                    Mat::new(columns, width, 1),
                    MatRef::new(weight, 1, depth),
                    MatRef::new(&scratch.product, width, 1),
                    [depth, width, out_per_group],
                    false,
                );
                let place = [first, images, group];
                col2im(
                    columns,
                    g,
                    place,
                    Order::Nchw,
                    &mut input_grad,
                    &mut scratch.padded,
                );
            }
        }
    });
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
    Scratch::with(|scratch| {
        for (block, (first, images)) in g.blocks().enumerate() {
            let width = images * pixels;
            for group in 0..g.groups {
                gather_rows(output_grad, g, first, images, group, &mut scratch.product);
                im2col(x, Order::Nchw, g, [first, images, group], scratch);
                let grad =
                    &mut weight_grad[group * out_per_group * depth..][..out_per_group * depth];
                // grad [out_per_group x depth] (+)= rows [out_per_group x width] . columns^T
                matmul(
                    Mat::new(grad, depth, 1),
                    MatRef::new(&scratch.product, width, 1),
                    MatRef::new(&scratch.columns, 1, width),
                    [out_per_group, depth, width],
                    block > 0,
                );
            }
        }
    });
    weight_grad
}

/// Reusable buffers for the kernels' intermediates (im2col columns, padded planes, products),
/// kept per thread between calls, so that each step does not fault in fresh pages for them.
#[derive(Default)]
pub(crate) struct Scratch {
    pub columns: Vec<f32>,
    pub padded: Vec<f32>,
    pub product: Vec<f32>,
    /// A weight, or its gradient, with its depth in another order.
    pub weight: Vec<f32>,
    pub weight_grad: Vec<f32>,
    /// The 1x1's share of a pixel-major column gradient (bf16 products).
    pub weight_grad_pointwise: Vec<f32>,
    /// Output gradients as bf16 rows `[3x3, 1x1]`, and transposed (bf16 products).
    pub bf16_rows: [Vec<half::bf16>; 2],
    pub bf16_transposed: [Vec<half::bf16>; 2],
}

impl Scratch {
    /// Runs `f` with this thread's buffers (taken out for the call, so a nested call gets
    /// fresh ones).
    pub fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
        }
        let mut scratch = SCRATCH.with(|cell| cell.take());
        let result = f(&mut scratch);
        SCRATCH.with(|cell| cell.replace(scratch));
        result
    }
}

/// The first `len` values of `values`, grown with zeros where it is shorter; what it already
/// holds is left as it is, for callers that overwrite it.
pub(crate) fn sized(values: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if values.len() < len {
        values.resize(len, 0.0);
    }
    &mut values[..len]
}

/// The sides of a plane zero-padded by `g.padding`: `(height, width)`.
fn padded_size(g: &Geometry) -> (usize, usize) {
    (g.height + 2 * g.padding, g.width + 2 * g.padding)
}

/// A group's input planes for `images` images from `first` of `x` (planes in `order`),
/// zero-padded on every side: `[in_per_group][images][padded plane]`, in `padded`.
fn pad(
    x: &[f32],
    order: Order,
    g: &Geometry,
    [first, images, group]: [usize; 3],
    padded: &mut Vec<f32>,
) {
    let (height, width) = padded_size(g);
    let plane = g.height * g.width;
    let out = sized(padded, g.in_per_group() * images * height * width);
    out.par_chunks_mut(images * height * width)
        .enumerate()
        .for_each(|(local, out)| {
            let channel = group * g.in_per_group() + local;
            for (image, out) in out.chunks_exact_mut(height * width).enumerate() {
                let index = order.plane(first + image, channel, g.batch, g.in_channels);
                let source = &x[index * plane..][..plane];
                out[..g.padding * width].fill(0.0);
                out[(g.padding + g.height) * width..].fill(0.0);
                for (line, source) in out[g.padding * width..]
                    .chunks_exact_mut(width)
                    .zip(source.chunks_exact(g.width))
                {
                    line[..g.padding].fill(0.0);
                    line[g.padding..g.padding + g.width].copy_from_slice(source);
                    line[g.padding + g.width..].fill(0.0);
                }
            }
        });
}

/// `out[i] = line[i * stride]` for each `i`, by fixed-length copies for the narrow rows of
/// small images (where a call to `memcpy` a row would cost more than the copy).
#[inline(always)]
fn copy_row(out: &mut [f32], line: &[f32], stride: usize) {
    #[inline(always)]
    fn fixed<const N: usize>(out: &mut [f32], line: &[f32]) {
        let out: &mut [f32; N] = out.try_into().expect("N values");
        out.copy_from_slice(&line[..N]);
    }
    if stride != 1 {
        for (out, value) in out.iter_mut().zip(line.iter().step_by(stride)) {
            *out = *value;
        }
        return;
    }
    match out.len() {
        1 => fixed::<1>(out, line),
        2 => fixed::<2>(out, line),
        4 => fixed::<4>(out, line),
        7 => fixed::<7>(out, line),
        8 => fixed::<8>(out, line),
        14 => fixed::<14>(out, line),
        16 => fixed::<16>(out, line),
        n => out.copy_from_slice(&line[..n]),
    }
}

/// `line[i * stride] += values[i]` for each `i`.
#[inline(always)]
fn add_row(line: &mut [f32], values: &[f32], stride: usize) {
    if stride == 1 {
        for (tap, value) in line.iter_mut().zip(values) {
            *tap += value;
        }
    } else {
        for (tap, value) in line.iter_mut().step_by(stride).zip(values) {
            *tap += value;
        }
    }
}

/// A group's im2col columns for `images` images from `first` of `x` (planes in `order`), in
/// `scratch.columns`: row `(channel, ky, kx)` holds, image after image, the input pixel under
/// that tap for every output pixel (zero in the padding). The planes are padded first, so that
/// every row is a plain copy.
pub(crate) fn im2col(
    x: &[f32],
    order: Order,
    g: &Geometry,
    [first, images, group]: [usize; 3],
    scratch: &mut Scratch,
) {
    let (kernel, pixels, out_width) = (g.kernel, g.pixels(), g.out_width());
    let (height, width) = padded_size(g);
    let plane = height * width;
    pad(x, order, g, [first, images, group], &mut scratch.padded);
    let padded = &scratch.padded[..g.in_per_group() * images * plane];
    let columns = sized(&mut scratch.columns, g.depth() * images * pixels);
    columns
        .par_chunks_mut(images * pixels)
        .enumerate()
        .for_each(|(row, out)| {
            let local = row / (kernel * kernel);
            let (ky, kx) = ((row / kernel) % kernel, row % kernel);
            let source = &padded[local * images * plane..][..images * plane];
            for (out, source) in out.chunks_exact_mut(pixels).zip(source.chunks_exact(plane)) {
                for (oy, out) in out.chunks_exact_mut(out_width).enumerate() {
                    let start = (oy * g.stride + ky) * width + kx;
                    copy_row(out, &source[start..], g.stride);
                }
            }
        });
}

/// A group's im2col columns for `images` images from `first` of `x` (planes in `order`), pixel
/// after pixel, in `scratch.columns`: row `p` (output pixel `p` of the block, image after
/// image) holds the `kernel x kernel` window under it, `(ky, kx, channel)` in that order (zero in
/// the padding), `depth` values. The group's input is laid out channels-last first, so that each
/// of a window's rows is one copy of `kernel x in_per_group` values.
///
/// The weight gradient's product reads these rows where they lie: its contraction runs over
/// pixels, and the product's kernels take its left-hand side pixel-major without packing it
/// (where [`im2col`]'s rows, pixels contiguous, would be repacked with strided reads).
pub(crate) fn im2col_pixel_major(
    x: &[f32],
    order: Order,
    g: &Geometry,
    [first, images, group]: [usize; 3],
    scratch: &mut Scratch,
) {
    let (kernel, out_width, in_per_group) = (g.kernel, g.out_width(), g.in_per_group());
    let (height, width) = padded_size(g);
    let plane = g.height * g.width;
    // The padded input, channels-last: [images][height][width][in_per_group].
    let padded = sized(&mut scratch.padded, images * height * width * in_per_group);
    padded
        .par_chunks_mut(height * width * in_per_group)
        .enumerate()
        .for_each(|(image, out)| {
            let line = width * in_per_group;
            out[..g.padding * line].fill(0.0);
            out[(g.padding + g.height) * line..].fill(0.0);
            for y in 0..g.height {
                let row = &mut out[(g.padding + y) * line..][..line];
                row[..g.padding * in_per_group].fill(0.0);
                row[(g.padding + g.width) * in_per_group..].fill(0.0);
                let inside = &mut row[g.padding * in_per_group..][..g.width * in_per_group];
                for local in 0..in_per_group {
                    let channel = group * in_per_group + local;
                    let index = order.plane(first + image, channel, g.batch, g.in_channels);
                    let source = &x[index * plane + y * g.width..][..g.width];
                    for (pixel, &value) in inside.chunks_exact_mut(in_per_group).zip(source) {
                        pixel[local] = value;
                    }
                }
            }
        });
    let padded = &*padded;
    let window_row = kernel * in_per_group;
    let columns = sized(&mut scratch.columns, g.depth() * images * g.pixels());
    columns
        .par_chunks_mut(g.depth() * out_width)
        .enumerate()
        .for_each(|(line, out)| {
            let (image, oy) = (line / g.out_height(), line % g.out_height());
            let source = &padded[image * height * width * in_per_group..];
            for (ox, window) in out.chunks_exact_mut(g.depth()).enumerate() {
                for (ky, out) in window.chunks_exact_mut(window_row).enumerate() {
                    let start = ((oy * g.stride + ky) * width + ox * g.stride) * in_per_group;
                    out.copy_from_slice(&source[start..][..window_row]);
                }
            }
        });
}

/// Pixel-major column gradients (rows as [`im2col_pixel_major`] lays them out) folded back onto
/// the input's gradient, whose planes lie channel after channel (CNHW): the inverse of
/// [`im2col_pixel_major`]. Each image's windows are summed into a channels-last padded plane,
/// one add of `kernel x in_per_group` values per window row, and the planes' insides are then
/// written (not added) to the group's `(image, channel)` planes, which no other block of images
/// or group writes.
pub(crate) fn col2im_pixel_major(
    columns: &[f32],
    g: &Geometry,
    [first, images, group]: [usize; 3],
    input_grad: &mut [f32],
    padded: &mut Vec<f32>,
) {
    let (kernel, out_width, in_per_group) = (g.kernel, g.out_width(), g.in_per_group());
    let (height, width) = padded_size(g);
    let image_len = height * width * in_per_group;
    let window_row = kernel * in_per_group;
    let padded = sized(padded, images * image_len);
    padded
        .par_chunks_mut(image_len)
        .enumerate()
        .for_each(|(image, target)| {
            target.fill(0.0);
            let source = &columns[image * g.pixels() * g.depth()..][..g.pixels() * g.depth()];
            for (p, window) in source.chunks_exact(g.depth()).enumerate() {
                let (oy, ox) = (p / out_width, p % out_width);
                for (ky, values) in window.chunks_exact(window_row).enumerate() {
                    let start = ((oy * g.stride + ky) * width + ox * g.stride) * in_per_group;
                    for (sum, value) in target[start..][..window_row].iter_mut().zip(values) {
                        *sum += value;
                    }
                }
            }
        });
    let padded = &*padded;
    let plane = g.height * g.width;
    let group_planes =
        &mut input_grad[group * in_per_group * g.batch * plane..][..in_per_group * g.batch * plane];
    // Sixteen channels at a time: one cache line of each channels-last pixel.
    const CHANNELS: usize = 16;
    group_planes
        .par_chunks_mut(CHANNELS * g.batch * plane)
        .enumerate()
        .for_each(|(chunk, planes)| {
            let channels = planes.len() / (g.batch * plane);
            for image in 0..images {
                let source = &padded[image * image_len..][..image_len];
                for y in 0..g.height {
                    let line = &source[((y + g.padding) * width + g.padding) * in_per_group..];
                    for x in 0..g.width {
                        let pixel = &line[x * in_per_group + chunk * CHANNELS..][..channels];
                        for (local, &value) in pixel.iter().enumerate() {
                            let target = (local * g.batch + first + image) * plane + y * g.width;
                            planes[target + x] = value;
                        }
                    }
                }
            }
        });
}

/// A group's column gradients folded back onto the input gradient (planes in `order`), the
/// inverse of [`im2col`]: each channel sums its `kernel x kernel` rows into padded planes, whose
/// insides are then written (not added) to its `(image, channel)` planes of `input_grad`, which
/// no other block of images or group writes.
pub(crate) fn col2im(
    columns: &[f32],
    g: &Geometry,
    [first, images, group]: [usize; 3],
    order: Order,
    input_grad: &mut [f32],
    padded: &mut Vec<f32>,
) {
    let (kernel, pixels, out_width) = (g.kernel, g.pixels(), g.out_width());
    let (height, width) = padded_size(g);
    let plane = height * width;
    let in_per_group = g.in_per_group();
    let padded = sized(padded, in_per_group * images * plane);
    padded
        .par_chunks_mut(images * plane)
        .enumerate()
        .for_each(|(local, target)| {
            target.fill(0.0);
            for tap in 0..kernel * kernel {
                let (ky, kx) = (tap / kernel, tap % kernel);
                let row = local * kernel * kernel + tap;
                let source = &columns[row * images * pixels..][..images * pixels];
                for (source, target) in source
                    .chunks_exact(pixels)
                    .zip(target.chunks_exact_mut(plane))
                {
                    for (oy, values) in source.chunks_exact(out_width).enumerate() {
                        let start = (oy * g.stride + ky) * width + kx;
                        add_row(&mut target[start..], values, g.stride);
                    }
                }
            }
        });
    let padded = &*padded;
    input_grad
        .par_chunks_mut(g.height * g.width)
        .enumerate()
        .map(|(index, target)| (order.image_channel(index, g.batch, g.in_channels), target))
        .filter(|((image, channel), _)| {
            (first..first + images).contains(image) && channel / in_per_group == group
        })
        .for_each(|((image, channel), target)| {
            let local = channel % in_per_group;
            let source = &padded[(local * images + image - first) * plane..][..plane];
            for (line, source) in target
                .chunks_exact_mut(g.width)
                .zip(source[g.padding * width..].chunks_exact(width))
            {
                line.copy_from_slice(&source[g.padding..g.padding + g.width]);
            }
        });
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
    sized(rows, out_per_group * images * pixels)
        .par_chunks_mut(images * pixels)
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
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> MatRef<'a> {
    pub(crate) fn new(data: &'a [f32], row_stride: usize, column_stride: usize) -> Self {
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
pub(crate) struct Mat<'a> {
    data: &'a mut [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a mut [f32], row_stride: usize, column_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            column_stride,
        }
    }
}

/// `out = lhs . rhs` (or `out += lhs . rhs` when `accumulate`) for `[m, n, k]`: `out [m x n]`,
/// `lhs [m x k]`, `rhs [k x n]`, on every core.
pub(crate) fn matmul(
    out: Mat<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    [m, n, k]: [usize; 3],
    accumulate: bool,
) {
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
