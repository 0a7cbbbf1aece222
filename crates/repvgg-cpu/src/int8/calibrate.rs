//! Calibration: the range of each layer's input activations, chosen from what calibration
//! images produce there, and the u8 quantization it gives.

use std::fmt;
use std::str::FromStr;

/// Most values an [`Observer`] keeps for the percentile and MSE rules (a uniform sample of
/// everything it saw).
const SAMPLE_SIZE: usize = 1 << 18;

/// Clipping values the MSE rule tries: `MSE_STEPS` of them, geometrically spaced from the
/// largest value down to `2^-MSE_OCTAVES` of it (an outlier can sit far above the rest), each
/// scored on at most `MSE_SAMPLE` of the sampled values (evenly spaced through the sample).
const MSE_SAMPLE: usize = 1 << 15;
const MSE_STEPS: usize = 384;
const MSE_OCTAVES: f32 = 10.0;

/// How the range of a layer's input activations is chosen from the calibration images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrationRule {
    /// The largest value seen: nothing is clipped, and one outlier widens every step.
    MinMax,
    /// The given percentile of the values seen (99.99 clips the top 0.01%).
    Percentile(f64),
    /// The clipping value with the smallest mean squared error between the values seen and
    /// their quantized values (clipping error against rounding error).
    Mse,
}

impl CalibrationRule {
    /// Every rule, with the percentile at 99.99.
    pub const ALL: [CalibrationRule; 3] = [Self::MinMax, Self::Percentile(99.99), Self::Mse];
}

impl fmt::Display for CalibrationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MinMax => f.write_str("minmax"),
            Self::Percentile(p) => write!(f, "percentile:{p}"),
            Self::Mse => f.write_str("mse"),
        }
    }
}

impl FromStr for CalibrationRule {
    type Err = String;

    /// `minmax`, `mse`, `percentile` (99.99) or `percentile:P` with P in (50, 100].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        let invalid =
            || format!("`{text}`: use minmax, mse, percentile or percentile:P (P in (50, 100])");
        match text.split_once(':') {
            None if text == "minmax" => Ok(Self::MinMax),
            None if text == "mse" => Ok(Self::Mse),
            None if text == "percentile" => Ok(Self::Percentile(99.99)),
            Some(("percentile", value)) => match value.parse::<f64>() {
                Ok(p) if p > 50.0 && p <= 100.0 => Ok(Self::Percentile(p)),
                _ => Err(invalid()),
            },
            _ => Err(invalid()),
        }
    }
}

/// The u8 quantization of an activation: `real = scale * (q - zero_point)`, `q` in 0..=255.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationScale {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationScale {
    /// The quantization that covers `[low, high]` (widened to include 0, which must be exact:
    /// it is the convolution's padding and ReLU's floor).
    pub fn covering(low: f32, high: f32) -> Self {
        let (low, high) = (low.min(0.0), high.max(0.0));
        let scale = match (high - low) / 255.0 {
            scale if scale > 0.0 && scale.is_finite() => scale,
            _ => 1.0,
        };
        let zero_point = (-low / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }

    /// `value`'s code: `value / scale + zero_point`, clamped to 0..=255 and rounded half up.
    pub fn quantize(&self, value: f32) -> u8 {
        self.code(value, 1.0 / self.scale)
    }

    /// [`quantize`](Self::quantize) of every value (vectorized: no call per value).
    pub fn quantize_into(&self, values: &[f32], codes: &mut [u8]) {
        let inverse = 1.0 / self.scale;
        for (code, &value) in codes.iter_mut().zip(values) {
            *code = self.code(value, inverse);
        }
    }

    #[inline(always)]
    fn code(&self, value: f32, inverse: f32) -> u8 {
        // Non-negative after the clamp, so truncating `x + 0.5` rounds half up.
        ((value * inverse + f32::from(self.zero_point)).clamp(0.0, 255.0) + 0.5) as u8
    }

    /// The value a code stands for.
    pub fn dequantize(&self, code: u8) -> f32 {
        self.scale * (f32::from(code) - f32::from(self.zero_point))
    }
}

/// What one layer's input looked like over the calibration images: the exact extremes and a
/// uniform sample of the values (reservoir sampling, fixed seed: the same images give the same
/// ranges).
#[derive(Clone, Debug)]
pub(crate) struct Observer {
    min: f32,
    max: f32,
    seen: u64,
    sample: Vec<f32>,
    state: u64,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            seen: 0,
            sample: Vec::new(),
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Observer {
    pub(crate) fn observe(&mut self, values: &[f32]) {
        for &value in values {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
            self.seen += 1;
            if self.sample.len() < SAMPLE_SIZE {
                self.sample.push(value);
            } else {
                let slot = self.next_random() % self.seen;
                if let Some(kept) = self.sample.get_mut(slot as usize) {
                    *kept = value;
                }
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The quantization `rule` chooses. A range that reaches below zero (the stem's input, a
    /// normalized image) is taken whole by every rule; the rules choose the top of the
    /// non-negative ranges that ReLU leaves everywhere else.
    pub(crate) fn scale(&self, rule: CalibrationRule) -> ActivationScale {
        if self.seen == 0 {
            return ActivationScale::covering(0.0, 1.0);
        }
        if self.min < 0.0 {
            return ActivationScale::covering(self.min, self.max);
        }
        let top = match rule {
            CalibrationRule::MinMax => self.max,
            CalibrationRule::Percentile(p) => self.percentile(p),
            CalibrationRule::Mse => self.mse_clip(),
        };
        ActivationScale::covering(0.0, top)
    }

    fn percentile(&self, p: f64) -> f32 {
        let mut sorted = self.sample.clone();
        sorted.sort_unstable_by(f32::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    fn mse_clip(&self) -> f32 {
        let step = self.sample.len().div_ceil(MSE_SAMPLE).max(1);
        let error = |top: f32| -> f64 {
            let scale = ActivationScale::covering(0.0, top);
            self.sample
                .iter()
                .step_by(step)
                .map(|&value| {
                    let difference = value - scale.dequantize(scale.quantize(value));
                    f64::from(difference * difference)
                })
                .sum()
        };
        (0..MSE_STEPS)
            .map(|step| self.max * (-MSE_OCTAVES * step as f32 / (MSE_STEPS - 1) as f32).exp2())
            .map(|top| (top, error(top)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(self.max, |(top, _)| top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for rule in CalibrationRule::ALL {
            assert_eq!(rule.to_string().parse::<CalibrationRule>(), Ok(rule));
        }
        assert_eq!(
            "percentile:99.9".parse(),
            Ok(CalibrationRule::Percentile(99.9))
        );
        for bad in ["max", "percentile:30", "percentile:x", ""] {
            assert!(bad.parse::<CalibrationRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_is_exact_and_codes_round_to_the_nearest_step() {
        let scale = ActivationScale::covering(-1.0, 3.0);
        assert_eq!(scale.dequantize(scale.quantize(0.0)), 0.0);
        assert_eq!(scale.quantize(-5.0), 0);
        assert_eq!(scale.quantize(5.0), 255);
        let step = scale.scale;
        for value in [-0.9, -0.1, 0.37, 1.5, 2.99] {
            let error = (scale.dequantize(scale.quantize(value)) - value).abs();
            assert!(
                error <= step / 2.0 + 1e-6,
                "{value}: {error} > {}",
                step / 2.0
            );
        }
        assert_eq!(ActivationScale::covering(0.0, 2.55).zero_point, 0);
    }

    #[test]
    fn the_rules_clip_what_minmax_keeps() {
        let top = |observer: &Observer, rule| observer.scale(rule).dequantize(255);
        // A rare outlier: the percentile clips it.
        let mut observer = Observer::default();
        let values: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        observer.observe(&values);
        observer.observe(&[50.0]);
        assert!((top(&observer, CalibrationRule::MinMax) - 50.0).abs() < 1e-3);
        assert!(top(&observer, CalibrationRule::Percentile(99.99)) < 1.01);
        // A long tail (exponential): the MSE rule clips it, with less error than the maximum.
        let mut tail = Observer::default();
        let values: Vec<f32> = (1..100_000).map(|i| -(i as f32 / 100_000.0).ln()).collect();
        tail.observe(&values);
        let error = |rule| -> f64 {
            let scale = tail.scale(rule);
            values
                .iter()
                .map(|&v| f64::from((v - scale.dequantize(scale.quantize(v))).powi(2)))
                .sum()
        };
        assert!(top(&tail, CalibrationRule::Mse) < top(&tail, CalibrationRule::MinMax));
        assert!(error(CalibrationRule::Mse) < error(CalibrationRule::MinMax));
        // A negative range (the stem's input) is taken whole.
        let mut signed = Observer::default();
        signed.observe(&[-2.0, 0.5, 1.0]);
        let scale = signed.scale(CalibrationRule::Percentile(90.0));
        assert!((scale.dequantize(0) + 2.0).abs() < 0.01);
        assert!((scale.dequantize(255) - 1.0).abs() < 0.01);
    }
}
