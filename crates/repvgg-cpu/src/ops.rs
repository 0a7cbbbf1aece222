//! The small pieces the engine's layers share: the matrix product, layout and pooling passes,
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
        // The tensor's own buffer where it can be taken over (no copy).
        .try_into_vec::<f32>()
        .expect("f32 after conversion")
}

pub(super) use repvgg_kernels::{MatMut, MatRef, SendPtr};

/// `dst = dst + lhs · rhs` (`accumulate`), or `dst = lhs · rhs`, on `threads` threads.
///
/// # Panics
/// If the shapes do not agree (`lhs` is `m x k`, `rhs` `k x n`, `dst` `m x n`).
pub(super) fn matmul_add(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) {
    let (m, n, k) = (dst.rows(), dst.cols(), lhs.cols());
    assert!(
        lhs.rows() == m && rhs.rows() == k && rhs.cols() == n,
        "cannot multiply {}x{} by {}x{} into {m}x{n}",
        lhs.rows(),
        lhs.cols(),
        rhs.rows(),
        rhs.cols()
    );
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the views checked that each matrix lies within its buffer (rows at their strides,
    // in elements) and the shapes agree; `dst`'s cells are its own (borrowed mutably, or promised
    // by `MatMut::in_buffer`'s caller), so they alias neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst.stride() as isize,
            accumulate,
            lhs.data().as_ptr(),
            1,
            lhs.stride() as isize,
            rhs.data().as_ptr(),
            1,
            rhs.stride() as isize,
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

/// Output height and width of a padding-1 3x3 convolution of `stride` on `height x width`.
pub(super) fn output_size(height: usize, width: usize, stride: usize) -> (usize, usize) {
    ((height - 1) / stride + 1, (width - 1) / stride + 1)
}

/// `data` `[N, C, H, W]` to `[N, H + 2 border, W + 2 border, C]`, into `out`: channels-last,
/// within a zero border of `border` pixels (1 for the stem, which reads its windows in place).
pub(super) fn to_channels_last(
    data: &[f32],
    [batch, channels, height, width]: [usize; 4],
    border: usize,
    out: &mut Vec<f32>,
) {
    let plane = height * width;
    let (padded_height, padded_width) = (height + 2 * border, width + 2 * border);
    out.resize(batch * padded_height * padded_width * channels, 0.0);
    out.par_chunks_mut(padded_width * channels)
        .enumerate()
        .for_each(|(row, line)| {
            let (image, y) = (
                row / padded_height,
                (row % padded_height).wrapping_sub(border),
            );
            if y >= height {
                line.fill(0.0);
                return;
            }
            let (left, rest) = line.split_at_mut(border * channels);
            let (inside, right) = rest.split_at_mut(width * channels);
            left.fill(0.0);
            right.fill(0.0);
            for c in 0..channels {
                let source = &data[(image * channels + c) * plane + y * width..][..width];
                for (pixel, value) in inside.chunks_exact_mut(channels).zip(source) {
                    pixel[c] = *value;
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

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.down.len() + self.down_bias.len() + self.up.len() + self.up_bias.len()) * 4
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x3 column block (columns 1..4 of a 2x5 matrix) times 3x2 into a column block of a 2x4.
    #[test]
    fn strided_blocks_multiply_like_the_definition() {
        let lhs: Vec<f32> = (0..10).map(|v| v as f32).collect(); // [[0..5], [5..10]]
        let rhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = vec![1.0; 8];
        matmul_add(
            MatMut::new(&mut dst[2..], 2, 2, 4),
            MatRef::new(&lhs[1..], 2, 3, 5),
            MatRef::new(&rhs, 3, 2, 2),
            true,
            1,
        );
        // Row 0: [1, 2, 3] · rhs = [22, 28]; row 1: [6, 7, 8] · rhs = [67, 88]; plus the old 1s.
        assert_eq!(dst, [1.0, 1.0, 23.0, 29.0, 1.0, 1.0, 68.0, 89.0]);
    }

    #[test]
    #[should_panic(expected = "spans 9 values; the slice has 8")]
    fn a_view_past_its_slice_is_refused() {
        MatRef::new(&[0.0; 8], 2, 4, 5);
    }

    #[test]
    #[should_panic(expected = "cannot multiply")]
    fn disagreeing_shapes_are_refused() {
        let mut dst = [0.0; 4];
        matmul_add(
            MatMut::new(&mut dst, 2, 2, 2),
            MatRef::new(&[0.0; 6], 2, 3, 3),
            MatRef::new(&[0.0; 4], 2, 2, 2),
            false,
            1,
        );
    }
}
