//! Comparing the outputs of the two forms.

use burn::tensor::TensorData;

/// How far apart two sets of logits are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogitDifference {
    /// `max |actual - expected|`.
    pub max_abs: f32,
    /// `max |actual - expected| / max |expected|`.
    pub relative: f32,
}

/// Compares `actual` logits with `expected` ones of the same shape.
///
/// # Panics
/// If the shapes differ.
pub fn logit_difference(actual: &TensorData, expected: &TensorData) -> LogitDifference {
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "logits of different shapes"
    );
    let expected: Vec<f32> = expected.iter::<f32>().collect();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs = actual
        .iter::<f32>()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    LogitDifference {
        max_abs,
        relative: max_abs / scale.max(f32::MIN_POSITIVE),
    }
}
