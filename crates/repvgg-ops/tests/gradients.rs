//! The ops against Burn's: `repvgg_ops::conv2d` against `conv2d` (at odd sizes, stride 1 and 2,
//! grouped and not, 3x3 and 1x1, one image and several), `repvgg_ops::batch_norm_train` against
//! `batch_norm_train`, and `repvgg_ops::block_train` against `burn_block_train` (the block
//! composed of Burn's ops): the same outputs and, under autodiff, the same gradients of every
//! input.

use burn::tensor::module::{batch_norm_train as burn_batch_norm_train, conv2d as burn_conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use repvgg_ops::{Conv, batch_norm_train, block_train, burn_block_train, conv2d};

mod common;

use common::{
    BLOCK_CASES, block_case_name, block_differences, loss_weights, relative, relative_above, spread,
};

/// (batch, in, out, height, width, kernel, stride, groups)
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: [ConvCase; 8] = [
    (2, 6, 8, 9, 7, 3, 1, 1),
    (2, 6, 8, 9, 7, 3, 2, 1),
    (1, 8, 8, 11, 5, 3, 1, 2),
    (3, 8, 12, 10, 10, 3, 2, 4),
    (2, 6, 10, 9, 7, 1, 1, 1),
    (2, 6, 10, 9, 7, 1, 2, 1),
    (1, 3, 16, 33, 31, 3, 2, 1),
    (64, 12, 24, 2, 2, 3, 1, 1),
];

#[test]
fn outputs_and_gradients_equal_burns() {
    let device = Device::flex().autodiff();
    for (batch, input, output, height, width, kernel, stride, groups) in CASES {
        let case = format!(
            "{batch}x{input}x{height}x{width}, {output} out, k{kernel} s{stride} g{groups}"
        );
        let padding = kernel / 2;
        let x = Tensor::<4>::random(
            [batch, input, height, width],
            Distribution::Default,
            &device,
        );
        let weight = Tensor::<4>::random(
            [output, input / groups, kernel, kernel],
            Distribution::Default,
            &device,
        );
        let run = |fast: bool| {
            let (x, weight) = (x.clone().require_grad(), weight.clone().require_grad());
            let y = if fast {
                conv2d(
                    x.clone(),
                    weight.clone(),
                    Conv {
                        stride,
                        padding,
                        groups,
                    },
                )
            } else {
                let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], groups);
                burn_conv2d(x.clone(), weight.clone(), None, options)
            };
            let grads = (y.clone() * loss_weights(y.dims(), &device))
                .sum()
                .backward();
            (
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                weight.grad(&grads).unwrap().into_data(),
            )
        };
        let (fast, generic) = (run(true), run(false));
        for (what, a, e) in [
            ("output", fast.0, generic.0),
            ("input grad", fast.1, generic.1),
            ("weight grad", fast.2, generic.2),
        ] {
            let difference = relative(a, e);
            assert!(
                difference < 1e-5,
                "{case}: {what} differs by {difference:e}"
            );
        }
    }
}

/// (batch, channels, height, width, offset of the input's values)
const NORM_CASES: [(usize, usize, usize, usize, f32); 5] = [
    (2, 3, 5, 7, 0.0),
    (1, 4, 9, 9, 0.0),
    (64, 8, 2, 2, 0.0),
    (3, 5, 17, 1, 100.0),
    (2, 2, 1, 1, 0.0),
];

#[test]
fn batch_norm_outputs_statistics_and_gradients_equal_burns() {
    let device = Device::flex().autodiff();
    for (batch, channels, height, width, offset) in NORM_CASES {
        let case = format!("{batch}x{channels}x{height}x{width} + {offset}");
        let shape = [batch, channels, height, width];
        // Fixed values: with two samples a channel the input's gradient is zero in exact
        // arithmetic and both sides compute rounding, which random inputs made flaky.
        let x = spread(shape, 1, &device) + offset;
        let gamma = spread([channels], 2, &device);
        let beta = spread([channels], 3, &device);
        let run = |fast: bool| {
            let x = x.clone().require_grad();
            let (gamma, beta) = (gamma.clone().require_grad(), beta.clone().require_grad());
            let (x_, gamma_, beta_) = (x.clone(), gamma.clone(), beta.clone());
            let result = if fast {
                batch_norm_train(x_, gamma_, beta_, 1e-5)
            } else {
                burn_batch_norm_train(x_, gamma_, beta_, 1e-5)
            };
            let y = result.output;
            let grads = (y.clone() * loss_weights(shape, &device)).sum().backward();
            [
                y.into_data(),
                result.mean.into_data(),
                result.variance.into_data(),
                x.grad(&grads).unwrap().into_data(),
                gamma.grad(&grads).unwrap().into_data(),
                beta.grad(&grads).unwrap().into_data(),
            ]
        };
        // With two samples a channel each is the mean plus or minus one deviation, and the
        // input's gradient is zero in exact arithmetic: both sides compute rounding, compared
        // against the scale of its terms (gamma / std times the loss weights, above 1 here).
        let floor = if batch * height * width > 2 {
            1e-12
        } else {
            1.0
        };
        let names = [
            "output",
            "mean",
            "variance",
            "x grad",
            "gamma grad",
            "beta grad",
        ];
        for ((what, a), e) in names.iter().zip(run(true)).zip(run(false)) {
            let difference = relative_above(a, e, floor);
            assert!(
                difference < 1e-4,
                "{case}: {what} differs by {difference:e}"
            );
        }
    }
}

#[test]
fn blocks_outputs_statistics_and_gradients_equal_burns() {
    for case in BLOCK_CASES {
        let (batch, _, _, height, width, stride, _, _) = case;
        let tolerance = if batch * height * width / (stride * stride) > 3 {
            1e-4
        } else {
            1e-3
        };
        for (what, difference) in block_differences(case, loss_weights) {
            assert!(
                difference < tolerance,
                "{}: {what} differs by {difference:e}",
                block_case_name(case)
            );
        }
    }
}

#[test]
fn chained_blocks_pass_their_channel_first_layout_on() {
    // The second block reads the first's CNHW output, and hands its CNHW input gradient back.
    let device = Device::flex().autodiff();
    let x = spread([3, 4, 7, 6], 1, &device);
    let weights: Vec<[Tensor<4>; 2]> = [(4, 8), (8, 8)]
        .iter()
        .map(|&(i, o)| {
            let (dense, pointwise) = (
                spread([o, i, 3, 3], 2, &device),
                spread([o, i, 1, 1], 3, &device),
            );
            [dense - 0.5, pointwise - 0.5]
        })
        .collect();
    let norms = [(2, 8), (3, 8)]
        .map(|(b, c)| [spread([b, c], 4, &device) + 0.5, spread([b, c], 5, &device)]);
    let run = |fast: bool| {
        let x = x.clone().require_grad();
        let weights: Vec<[Tensor<4>; 2]> = weights
            .iter()
            .map(|w| w.clone().map(|w| w.require_grad()))
            .collect();
        let mut y = x.clone();
        for ((w, n), stride) in weights.iter().zip(&norms).zip([2, 1]) {
            y = if fast {
                let [d, p] = w.clone();
                let [g, b] = n.clone();
                block_train(y, d, p, g, b, stride, 1, 1e-5).output
            } else {
                burn_block_train(y, w.clone(), n.clone(), stride, 1, 1e-5).output
            };
        }
        let grads = (y.clone() * loss_weights(y.dims(), &device))
            .sum()
            .backward();
        [
            y.into_data(),
            x.grad(&grads).unwrap().into_data(),
            weights[0][0].grad(&grads).unwrap().into_data(),
        ]
    };
    for ((what, a), e) in ["output", "x grad", "first 3x3 grad"]
        .iter()
        .zip(run(true))
        .zip(run(false))
    {
        let difference = relative(a, e);
        assert!(difference < 1e-4, "{what} differs by {difference:e}");
    }
}

#[test]
fn sgd_steps_equal_burns_sgd() {
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{Optimizer, SgdConfig, decay::WeightDecayConfig};
    let device = Device::flex();
    for nesterov in [false, true] {
        let momentum = MomentumConfig::new()
            .with_momentum(0.9)
            .with_dampening(0.0)
            .with_nesterov(nesterov);
        let burn_sgd = SgdConfig::new()
            .with_momentum(Some(momentum))
            .with_weight_decay(Some(WeightDecayConfig::new(1e-4)))
            .build();
        let sgd = repvgg_ops::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov,
        };
        let start = Tensor::<2>::random([37, 5], Distribution::Default, &device);
        let (mut ours, mut velocity) = (start.clone(), None);
        let (mut theirs, mut state) = (start, None);
        for _ in 0..3 {
            let grad = Tensor::<2>::random([37, 5], Distribution::Default, &device);
            let (param, new_velocity) = repvgg_ops::sgd_step(ours, grad.clone(), velocity, sgd);
            (ours, velocity) = (param, Some(new_velocity));
            (theirs, state) = burn_sgd.step(0.05, theirs, grad, state);
            let difference = relative(ours.to_data(), theirs.to_data());
            assert!(difference < 1e-6, "nesterov {nesterov}: {difference:e}");
        }
    }
}

#[test]
fn other_devices_and_precisions_take_burns_convolution() {
    // Without autodiff on the CPU: the same values through this crate's forward pass.
    let device = Device::flex();
    let x = Tensor::<4>::random([1, 4, 6, 6], Distribution::Default, &device);
    let weight = Tensor::<4>::random([4, 4, 3, 3], Distribution::Default, &device);
    let conv = Conv {
        stride: 1,
        padding: 1,
        groups: 1,
    };
    let options = ConvOptions::new([1; 2], [1; 2], [1, 1], 1);
    let difference = relative(
        conv2d(x.clone(), weight.clone(), conv).into_data(),
        burn_conv2d(x, weight, None, options).into_data(),
    );
    assert!(difference < 1e-5, "{difference:e}");
    assert!(repvgg_ops::runs_here(&Device::flex().autodiff()));
}
