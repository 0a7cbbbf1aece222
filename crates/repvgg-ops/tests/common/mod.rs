//! What the op tests share: deterministic inputs, the comparison of two results, and the
//! training-time block's cases and comparison with the block composed of Burn's ops.

// Each test file uses its share of these.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor, TensorData};
use repvgg_ops::{block_train, burn_block_train};

/// Largest difference relative to the largest magnitude of `expected`.
pub fn relative(actual: TensorData, expected: TensorData) -> f32 {
    relative_above(actual, expected, 1e-12)
}

/// [`relative`] with the magnitude taken as at least `floor`, for values that are zero in exact
/// arithmetic (every digit of both sides is rounding).
pub fn relative_above(actual: TensorData, expected: TensorData, floor: f32) -> f32 {
    let actual = actual.try_to_vec::<f32>().unwrap();
    let expected = expected.try_to_vec::<f32>().unwrap();
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
    actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()))
        / scale
}

/// Weights for a loss that weights every output differently.
pub fn loss_weights(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let count = shape.iter().product::<usize>();
    let weights = (0..count).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    Tensor::from_data(TensorData::new(weights, shape), device)
}

/// Pseudo-random values in [0, 1), the same on every run, a different sequence for each seed.
pub fn spread<const D: usize>(shape: [usize; D], seed: u32, device: &Device) -> Tensor<D> {
    let count = shape.iter().product::<usize>() as u32;
    let values = (0..count)
        .map(|i| {
            let v = (i + 1).wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B);
            let v = (v ^ (v >> 15)).wrapping_mul(0xC2B2_AE35);
            (v >> 8) as f32 / (1 << 24) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// (batch, in, out, height, width, stride, groups, identity)
pub type BlockCase = (usize, usize, usize, usize, usize, usize, usize, bool);

pub const BLOCK_CASES: [BlockCase; 8] = [
    (2, 6, 6, 9, 7, 1, 1, true),
    (2, 6, 8, 9, 7, 2, 1, false),
    (1, 8, 8, 11, 5, 1, 2, true),
    (3, 8, 12, 10, 10, 2, 4, false),
    (64, 12, 12, 2, 2, 1, 1, true),
    (1, 3, 16, 33, 31, 2, 1, false),
    (3, 4, 4, 1, 1, 1, 1, true),
    // Images large enough that the op takes them in several blocks (one image each).
    (3, 16, 16, 128, 128, 1, 1, true),
];

/// A block case's name in assertion messages.
pub fn block_case_name(case: BlockCase) -> String {
    let (batch, input, output, height, width, stride, groups, identity) = case;
    format!(
        "{batch}x{input}x{height}x{width}, {output} out, s{stride} g{groups} identity {identity}"
    )
}

/// `block_train` against `burn_block_train` on one case, under autodiff, with the loss
/// `sum(output * loss(shape))`: each result's name and its [`relative`] difference (output,
/// statistics, and the gradients of every input).
pub fn block_differences(
    case: BlockCase,
    loss: fn([usize; 4], &Device) -> Tensor<4>,
) -> Vec<(&'static str, f32)> {
    let (batch, input, output, height, width, stride, groups, identity) = case;
    let device = Device::flex().autodiff();
    let branches = 2 + identity as usize;
    let x = spread([batch, input, height, width], 1, &device);
    let dense = spread([output, input / groups, 3, 3], 2, &device) - 0.5;
    let pointwise = spread([output, input / groups, 1, 1], 3, &device) - 0.5;
    let gamma = spread([branches, output], 4, &device) + 0.5;
    let beta = spread([branches, output], 5, &device);
    let run = |fast: bool| {
        let x = x.clone().require_grad();
        let weights = [
            dense.clone().require_grad(),
            pointwise.clone().require_grad(),
        ];
        let norms = [gamma.clone().require_grad(), beta.clone().require_grad()];
        let result = if fast {
            let [d, p] = weights.clone();
            let [g, b] = norms.clone();
            block_train(x.clone(), d, p, g, b, stride, groups, 1e-5)
        } else {
            burn_block_train(
                x.clone(),
                weights.clone(),
                norms.clone(),
                stride,
                groups,
                1e-5,
            )
        };
        let y = result.output;
        let grads = (y.clone() * loss(y.dims(), &device)).sum().backward();
        let [d, p] = weights;
        let [g, b] = norms;
        [
            y.into_data(),
            result.mean.into_data(),
            result.variance.into_data(),
            x.grad(&grads).unwrap().into_data(),
            d.grad(&grads).unwrap().into_data(),
            p.grad(&grads).unwrap().into_data(),
            g.grad(&grads).unwrap().into_data(),
            b.grad(&grads).unwrap().into_data(),
        ]
    };
    let names = [
        "output",
        "mean",
        "variance",
        "x grad",
        "3x3 grad",
        "1x1 grad",
        "gamma grad",
        "beta grad",
    ];
    names
        .into_iter()
        .zip(run(true))
        .zip(run(false))
        .map(|((what, a), e)| (what, relative(a, e)))
        .collect()
}
