//! Batch normalization with the batch's own statistics, forward and backward, on f32 slices in
//! NCHW order: one pass over the input for the statistics and one for the output, and the same
//! two for the gradients (Burn's generic op takes about ten, several of them layout copies).

use rayon::prelude::*;

/// The shape of a batch-normalized tensor: `[batch, channels, pixels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
}

impl Planes {
    fn len(&self) -> usize {
        self.batch * self.channels * self.pixels
    }

    /// Values per channel: the normalization's sample count.
    fn per_channel(&self) -> usize {
        self.batch * self.pixels
    }

    /// Channel `c`'s values, one slice per image.
    fn channel<'a>(&self, values: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let (channels, pixels) = (self.channels, self.pixels);
        (0..self.batch).map(move |n| &values[(n * channels + c) * pixels..][..pixels])
    }
}

/// The normalized output, and the batch's per-channel mean and biased variance.
pub struct Normalized {
    pub output: Vec<f32>,
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// `gamma * (x - mean) / sqrt(variance + epsilon) + beta`, with the batch's statistics.
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], epsilon: f64, p: &Planes) -> Normalized {
    assert_eq!(
        x.len(),
        p.len(),
        "the input has batch x channels x pixels values"
    );
    let (mean, variance): (Vec<f32>, Vec<f32>) = (0..p.channels)
        .into_par_iter()
        .map(|c| moments(p.channel(x, c), p.per_channel()))
        .unzip();
    let affine: Vec<(f64, f64)> = (0..p.channels)
        .map(|c| scale_shift(gamma[c], beta[c], (mean[c], variance[c]), epsilon))
        .collect();
    let mut output = vec![0.0; p.len()];
    per_plane(&mut output, p, |c, offset, plane| {
        let (scale, shift) = (affine[c].0 as f32, affine[c].1 as f32);
        let input = &x[offset..][..plane.len()];
        for (out, &value) in plane.iter_mut().zip(input) {
            *out = value * scale + shift;
        }
    });
    Normalized {
        output,
        mean,
        variance,
    }
}

/// The gradients of the input, `gamma` and `beta`, from the output's gradient and the
/// statistics [`forward`] returned.
pub struct Gradients {
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// The backward pass of [`forward`]. Per channel, with `g` the output's gradient and `M` the
/// sample count: `beta' = sum g`, `gamma' = sum g x_hat`, and `x' = gamma / std * (g - beta' / M
/// - x_hat gamma' / M)`, which is `a g + b x + c` with per-channel `a`, `b`, `c`.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    output_grad: &[f32],
    p: &Planes,
) -> Gradients {
    assert_eq!(
        x.len(),
        p.len(),
        "the input has batch x channels x pixels values"
    );
    assert_eq!(
        output_grad.len(),
        p.len(),
        "the gradient has the input's shape"
    );
    let samples = p.per_channel() as f64;
    let sums: Vec<(f64, f64)> = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let grads = p.channel(output_grad, c);
            grad_sums(grads.zip(p.channel(x, c)), mean[c])
        })
        .collect();
    let channels: Vec<ChannelGrad> = sums
        .iter()
        .enumerate()
        .map(|(c, &sums)| {
            ChannelGrad::new(sums, gamma[c], (mean[c], variance[c]), epsilon, samples)
        })
        .collect();
    let mut x_grad = vec![0.0; p.len()];
    per_plane(&mut x_grad, p, |c, offset, plane| {
        let grads = &output_grad[offset..][..plane.len()];
        let inputs = &x[offset..][..plane.len()];
        for ((out, &g), &value) in plane.iter_mut().zip(grads).zip(inputs) {
            *out = channels[c].input(g, value);
        }
    });
    Gradients {
        x: x_grad,
        gamma: channels.iter().map(|c| c.gamma).collect(),
        beta: channels.iter().map(|c| c.beta).collect(),
    }
}

/// A channel's normalization with its batch statistics `(mean, variance)` as the affine map
/// `x scale + shift`: `scale = gamma / sqrt(variance + epsilon)`, `shift = beta - mean scale`.
pub(crate) fn scale_shift(
    gamma: f32,
    beta: f32,
    (mean, variance): (f32, f32),
    epsilon: f64,
) -> (f64, f64) {
    let scale = gamma as f64 / (variance as f64 + epsilon).sqrt();
    (scale, beta as f64 - mean as f64 * scale)
}

/// One channel's batch-norm gradients: of `gamma` and `beta`, and the input's as
/// `a g + slope x + shift` of the output's gradient `g` and the input `x`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChannelGrad {
    pub gamma: f32,
    pub beta: f32,
    a: f32,
    slope: f32,
    shift: f32,
}

impl ChannelGrad {
    /// From [`grad_sums`]' `(sum g, sum g (x - mean))` over the channel's `samples` values.
    /// With `M` samples: `beta' = sum g`, `gamma' = sum g x_hat`, and
    /// `x' = gamma / std (g - beta' / M - x_hat gamma' / M)`.
    pub fn new(
        (sum, centred): (f64, f64),
        gamma: f32,
        (mean, variance): (f32, f32),
        epsilon: f64,
        samples: f64,
    ) -> Self {
        let inv_std = 1.0 / (variance as f64 + epsilon).sqrt();
        let a = gamma as f64 * inv_std;
        let slope = -a * inv_std * inv_std * centred / samples;
        Self {
            gamma: (centred * inv_std) as f32,
            beta: sum as f32,
            a: a as f32,
            slope: slope as f32,
            shift: (-a * sum / samples - slope * mean as f64) as f32,
        }
    }

    /// The input's gradient at a value `x` whose output's gradient is `g`.
    #[inline(always)]
    pub fn input(&self, g: f32, x: f32) -> f32 {
        self.a * g + self.slope * x + self.shift
    }
}

/// Runs `f(channel, offset, plane)` over each image's channel planes of `values`, an image a
/// task.
fn per_plane(values: &mut [f32], p: &Planes, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let image = (p.channels * p.pixels).max(1);
    values
        .par_chunks_mut(image)
        .enumerate()
        .for_each(|(n, image)| {
            for (c, plane) in image.chunks_mut(p.pixels.max(1)).enumerate() {
                f(c, (n * p.channels + c) * p.pixels, plane);
            }
        });
}

/// Lanes of the partial sums, so that the loops vectorize.
const LANES: usize = 16;

/// The mean and biased variance of a channel's values. The sums are taken about the channel's
/// first value (so that a large mean does not swamp the variance), in f32 lanes per run and f64
/// across runs.
pub(crate) fn moments<'a>(runs: impl Iterator<Item = &'a [f32]>, count: usize) -> (f32, f32) {
    let mut runs = runs.peekable();
    let Some(pivot) = runs.peek().and_then(|run| run.first().copied()) else {
        return (0.0, 0.0);
    };
    let (mut sum, mut squares) = (0.0f64, 0.0f64);
    for run in runs {
        let (mut lane_sum, mut lane_squares) = ([0.0f32; LANES], [0.0f32; LANES]);
        let mut chunks = run.chunks_exact(LANES);
        for chunk in &mut chunks {
            for i in 0..LANES {
                let d = chunk[i] - pivot;
                lane_sum[i] += d;
                lane_squares[i] += d * d;
            }
        }
        for &value in chunks.remainder() {
            let d = value - pivot;
            lane_sum[0] += d;
            lane_squares[0] += d * d;
        }
        sum += lane_sum.iter().map(|&s| s as f64).sum::<f64>();
        squares += lane_squares.iter().map(|&s| s as f64).sum::<f64>();
    }
    let shifted_mean = sum / count as f64;
    let variance = (squares / count as f64 - shifted_mean * shifted_mean).max(0.0);
    ((pivot as f64 + shifted_mean) as f32, variance as f32)
}

/// `(sum g, sum g (x - mean))` over a channel's runs of gradients and inputs.
pub(crate) fn grad_sums<'a>(
    runs: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    mean: f32,
) -> (f64, f64) {
    let (mut sum, mut centred) = (0.0f64, 0.0f64);
    for (grads, inputs) in runs {
        let (mut lane_sum, mut lane_centred) = ([0.0f32; LANES], [0.0f32; LANES]);
        let mut grad_chunks = grads.chunks_exact(LANES);
        let mut input_chunks = inputs.chunks_exact(LANES);
        for (g, x) in (&mut grad_chunks).zip(&mut input_chunks) {
            for i in 0..LANES {
                lane_sum[i] += g[i];
                lane_centred[i] += g[i] * (x[i] - mean);
            }
        }
        for (&g, &x) in grad_chunks.remainder().iter().zip(input_chunks.remainder()) {
            lane_sum[0] += g;
            lane_centred[0] += g * (x - mean);
        }
        sum += lane_sum.iter().map(|&s| s as f64).sum::<f64>();
        centred += lane_centred.iter().map(|&s| s as f64).sum::<f64>();
    }
    (sum, centred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random values in [-1.5, 2.5), a different sequence for each seed.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let v = (i + 1).wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B);
                let v = (v ^ (v >> 15)).wrapping_mul(0xC2B2_AE35);
                (v >> 8) as f32 / (1 << 24) as f32 * 4.0 - 1.5
            })
            .collect()
    }

    #[test]
    fn the_output_has_the_batch_statistics_and_the_affine_map() {
        let p = Planes {
            batch: 3,
            channels: 4,
            pixels: 37,
        };
        let x: Vec<f32> = values(p.len(), 7).iter().map(|v| v + 1000.0).collect();
        let (gamma, beta) = ([1.0, 2.0, 0.5, -1.0], [0.0, 1.0, -2.0, 0.25]);
        let result = forward(&x, &gamma, &beta, 1e-5, &p);
        for (c, shift) in beta.iter().enumerate() {
            let channel: Vec<f64> = p.channel(&x, c).flatten().map(|&v| v as f64).collect();
            let mean = channel.iter().sum::<f64>() / channel.len() as f64;
            let variance =
                channel.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / channel.len() as f64;
            assert!((result.mean[c] as f64 - mean).abs() < 1e-3);
            assert!((result.variance[c] as f64 - variance).abs() < 1e-3 * variance);
            let normalized: Vec<f32> = p.channel(&result.output, c).flatten().copied().collect();
            let out_mean = normalized.iter().sum::<f32>() / normalized.len() as f32;
            assert!(
                (out_mean - shift).abs() < 1e-3,
                "channel {c}: mean {out_mean}"
            );
        }
    }

    #[test]
    fn the_input_gradient_is_orthogonal_to_what_normalization_removes() {
        // Shifting or scaling a channel's input leaves the output unchanged, so the input
        // gradient sums to zero over each channel and is orthogonal to the centred input.
        let p = Planes {
            batch: 2,
            channels: 3,
            pixels: 21,
        };
        let x = values(p.len(), 11);
        let grad = values(p.len(), 5);
        let gamma = [1.5, -0.5, 2.0];
        // Without epsilon, so that the normalization removes exactly the mean and the scale.
        let result = forward(&x, &gamma, &[0.0; 3], 0.0, &p);
        let grads = backward(&x, &gamma, &result.mean, &result.variance, 0.0, &grad, &p);
        for c in 0..p.channels {
            let dx: Vec<f32> = p.channel(&grads.x, c).flatten().copied().collect();
            let xs: Vec<f32> = p.channel(&x, c).flatten().copied().collect();
            let products: Vec<f32> = dx
                .iter()
                .zip(&xs)
                .map(|(d, v)| d * (v - result.mean[c]))
                .collect();
            let scale: f32 = products.iter().map(|p| p.abs()).sum();
            let (sum, dot) = (dx.iter().sum::<f32>(), products.iter().sum::<f32>());
            assert!(
                sum.abs() < 1e-4 && dot.abs() < 1e-4 * scale,
                "channel {c}: {sum} {dot}"
            );
            let beta_grad: f32 = p.channel(&grad, c).flatten().sum();
            assert!((grads.beta[c] - beta_grad).abs() < 1e-4);
        }
    }
}
