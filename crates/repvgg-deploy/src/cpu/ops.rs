//! The small pieces the CPU path's layers share: the matrix product, layout and pooling passes,
//! squeeze-excitation and ReLU.

use burn::tensor::Tensor;
use gemm::Parallelism;
use rayon::prelude::*;
use repvgg_model::SqueezeExcite;

/// A tensor's values as `f32`, read to the host.
pub(super) fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 after conversion")
}

/// A pointer that rayon jobs writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub *mut f32);

// SAFETY: only used for buffers whose jobs write disjoint elements (see each use).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `SendPtr`).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst[m, n] = dst[m, n] * keep + lhs[m, k] * rhs[k, n]` (`keep`: 1 when `accumulate`, else
/// the old values are ignored), all row-major with the given row strides, on `threads` threads.
///
/// # Safety
/// Each matrix must lie within its slice: `dst` spans `(m - 1) * dst_stride + n` elements,
/// `lhs` `(m - 1) * lhs_stride + k`, `rhs` `(k - 1) * rhs_stride + n`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul_add(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: &[f32],
    lhs_stride: usize,
    rhs: &[f32],
    rhs_stride: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    threads: usize,
) {
    debug_assert!(m == 0 || dst.len() >= (m - 1) * dst_stride + n);
    debug_assert!(m == 0 || lhs.len() >= (m - 1) * lhs_stride + k);
    debug_assert!(k == 0 || rhs.len() >= (k - 1) * rhs_stride + n);
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the caller guarantees the bounds above; strides are in elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            lhs_stride as isize,
            rhs.as_ptr(),
            1,
            rhs_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `max(x, 0)` in place.
pub(super) fn relu(values: &mut [f32]) {
    for value in values {
        *value = value.max(0.0);
    }
}

/// `[N, C, H, W]` to `[N, H, W, C]`, into `out`.
pub(super) fn to_channels_last(
    data: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    out: &mut Vec<f32>,
) {
    let plane = height * width;
    out.resize(data.len(), 0.0);
    out.par_chunks_mut(plane * channels)
        .enumerate()
        .for_each(|(n, image)| {
            for c in 0..channels {
                let source = &data[(n * channels + c) * plane..][..plane];
                for (p, value) in source.iter().enumerate() {
                    image[p * channels + c] = *value;
                }
            }
        });
}

/// `[N, H, W, C]` to `[N, C, H, W]`.
pub(super) fn to_channels_first(
    data: &[f32],
    channels: usize,
    height: usize,
    width: usize,
) -> Vec<f32> {
    let plane = height * width;
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(plane * channels)
        .zip(data.par_chunks(plane * channels))
        .for_each(|(image, source)| {
            for (p, pixel) in source.chunks_exact(channels).enumerate() {
                for (c, value) in pixel.iter().enumerate() {
                    image[c * plane + p] = *value;
                }
            }
        });
    out
}

/// Mean over the pixels of channels-last `[batch, pixels, channels]`: `[batch, channels]`.
pub(super) fn average_pool(data: &[f32], batch: usize, pixels: usize, channels: usize) -> Vec<f32> {
    let mut pooled = vec![0f32; batch * channels];
    pooled
        .par_chunks_mut(channels)
        .enumerate()
        .for_each(|(n, mean)| {
            for pixel in data[n * pixels * channels..][..pixels * channels].chunks(channels) {
                for (m, v) in mean.iter_mut().zip(pixel) {
                    *m += v;
                }
            }
            for m in mean.iter_mut() {
                *m /= pixels as f32;
            }
        });
    pooled
}

/// Squeeze-excitation weights: `down` `[hidden, channels]`, `up` `[channels, hidden]`.
#[derive(Clone, Debug)]
pub(super) struct Excitation {
    hidden: usize,
    down: Vec<f32>,
    down_bias: Vec<f32>,
    up: Vec<f32>,
    up_bias: Vec<f32>,
}

impl Excitation {
    pub fn new(se: &SqueezeExcite) -> Self {
        let hidden = se.down.weight.dims()[0];
        let bias = |conv: &burn::nn::conv::Conv2d| {
            conv.bias
                .as_ref()
                .map(|b| values(b.val()))
                .unwrap_or_default()
        };
        Self {
            hidden,
            down: values(se.down.weight.val()),
            down_bias: bias(&se.down),
            up: values(se.up.weight.val()),
            up_bias: bias(&se.up),
        }
    }

    /// Scales every channel of each image by `sigmoid(up(relu(down(mean))))`.
    pub fn apply(&self, features: &mut [f32], batch: usize, pixels: usize, channels: usize) {
        let pooled = average_pool(features, batch, pixels, channels);
        features
            .par_chunks_mut(pixels * channels)
            .zip(pooled.par_chunks(channels))
            .for_each(|(image, mean)| {
                let hidden: Vec<f32> = (0..self.hidden)
                    .map(|h| {
                        let row = &self.down[h * channels..][..channels];
                        let sum: f32 = row.iter().zip(mean).map(|(w, x)| w * x).sum();
                        (sum + self.down_bias.get(h).copied().unwrap_or(0.0)).max(0.0)
                    })
                    .collect();
                let scale: Vec<f32> = (0..channels)
                    .map(|c| {
                        let row = &self.up[c * self.hidden..][..self.hidden];
                        let sum: f32 = row.iter().zip(&hidden).map(|(w, x)| w * x).sum();
                        let z = sum + self.up_bias.get(c).copied().unwrap_or(0.0);
                        1.0 / (1.0 + (-z).exp())
                    })
                    .collect();
                for pixel in image.chunks_mut(channels) {
                    for (value, s) in pixel.iter_mut().zip(&scale) {
                        *value *= s;
                    }
                }
            });
    }
}
