//! Forward passes: classification and feature shapes of both forms, SE pooling, training.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData, Tolerance};
use repvgg_model::{ConvBn, RepVggArch, RepVggConfig, SqueezeExcite, tensor_infos};
use repvgg_testing::test_device;

fn images(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn dims(features: &[Tensor<4>]) -> Vec<[usize; 4]> {
    features.iter().map(Tensor::dims).collect()
}

#[test]
fn a0_shapes_at_224() {
    let device = test_device();
    let config = RepVggArch::A0.config();
    let expected = vec![
        [1, 48, 112, 112],
        [1, 48, 56, 56],
        [1, 96, 28, 28],
        [1, 192, 14, 14],
        [1, 1280, 7, 7],
    ];
    let input = images([1, 3, 224, 224], &device);

    let model = config.init(&device);
    assert_eq!(model.forward(input.clone()).dims(), [1, 1000]);
    assert_eq!(dims(&model.forward_features(input.clone())), expected);

    let deployed = config.init_deploy(&device);
    assert_eq!(deployed.forward(input.clone()).dims(), [1, 1000]);
    assert_eq!(dims(&deployed.forward_features(input)), expected);
}

#[test]
fn a0_shapes_at_non_square_and_odd_sizes() {
    let device = test_device();
    let config = RepVggArch::A0.config().with_num_classes(7);
    let model = config.init(&device);
    let deployed = config.init_deploy(&device);

    let input = images([2, 3, 96, 160], &device);
    let expected = vec![
        [2, 48, 48, 80],
        [2, 48, 24, 40],
        [2, 96, 12, 20],
        [2, 192, 6, 10],
        [2, 1280, 3, 5],
    ];
    assert_eq!(model.forward(input.clone()).dims(), [2, 7]);
    assert_eq!(dims(&model.forward_features(input.clone())), expected);
    assert_eq!(dims(&deployed.forward_features(input)), expected);

    // Odd sizes round up at every stride-2 layer (3x3, padding 1).
    let input = images([1, 3, 33, 47], &device);
    let sizes: Vec<[usize; 2]> = model
        .forward_features(input.clone())
        .iter()
        .map(|f| [f.dims()[2], f.dims()[3]])
        .collect();
    assert_eq!(sizes, [[17, 24], [9, 12], [5, 6], [3, 3], [2, 2]]);
    assert_eq!(deployed.forward(input).dims(), [1, 7]);
}

/// A narrow network with every feature of the big ones: grouped layers, identity branches, SE
/// and only three stages.
fn narrow_config() -> RepVggConfig {
    RepVggConfig::new(vec![2, 2, 2], vec![0.25, 0.25, 0.25])
        .with_grouped_layers(BTreeMap::from([(2, 2), (4, 4)]))
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(5)
}

#[test]
fn custom_network_with_groups_and_se_runs_on_non_square_input() {
    let device = test_device();
    let config = narrow_config();
    let input = images([3, 3, 32, 48], &device);
    for features in [
        config.init(&device).forward_features(input.clone()),
        config.init_deploy(&device).forward_features(input.clone()),
    ] {
        assert_eq!(
            dims(&features),
            [
                [3, 16, 16, 24],
                [3, 16, 8, 12],
                [3, 32, 4, 6],
                [3, 64, 2, 3]
            ]
        );
    }
    assert_eq!(config.init(&device).forward(input).dims(), [3, 5]);
}

#[test]
fn se_pools_over_the_whole_map_whatever_its_shape() {
    let device = test_device();
    let se = SqueezeExcite::new(8, 2, &device);
    let input = images([2, 8, 3, 5], &device);
    // Tiling the map leaves the global average, and so the attention weights, unchanged.
    let tiled = Tensor::cat(vec![input.clone(), input.clone(), input.clone()], 3);
    let expected = Tensor::cat(vec![se.forward(input.clone()); 3], 3);
    se.forward(tiled)
        .into_data()
        .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
}

#[test]
fn batch_norms_start_as_identity_maps() {
    let device = test_device();
    let model = narrow_config().init(&device);
    let record = tensor_infos(&model);
    let mut checked = 0;
    for (info, tensor) in record.iter().zip(all_floats(&model)) {
        let expected = match info.path.rsplit('.').next().unwrap() {
            "gamma" | "running_var" => 1.0,
            "beta" | "running_mean" => 0.0,
            _ => continue,
        };
        let values = tensor.try_to_vec::<f32>().unwrap();
        assert!(values.iter().all(|&v| v == expected), "{}", info.path);
        checked += 1;
    }
    assert!(checked > 0);
}

/// Every float tensor's data, in the same order as `tensor_infos`.
fn all_floats(module: &impl Module) -> Vec<TensorData> {
    struct Collect(Vec<TensorData>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.push(param.val().into_data());
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The 1x1 branch runs as a matrix product (strided: on every other pixel); it must compute,
/// and differentiate, what Burn's convolution does, at odd sizes too.
#[test]
fn the_one_by_one_branch_is_its_convolution() {
    let device = test_device().autodiff();
    device.seed(11);
    for stride in [1, 2] {
        let conv = Conv2dConfig::new([6, 5], [1, 1])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 0, 0))
            .with_bias(false)
            .init(&device);
        let branch = ConvBn {
            conv,
            bn: Some(BatchNormConfig::new(5).init(&device)),
        };
        let input = images([2, 6, 7, 9], &device).require_grad();
        let fast = branch.forward(input.clone());
        let general = branch
            .bn
            .as_ref()
            .unwrap()
            .forward(branch.conv.forward(input.clone()));
        assert_eq!(fast.dims(), general.dims(), "stride {stride}");
        fast.clone()
            .into_data()
            .assert_approx_eq::<f32>(&general.clone().into_data(), Tolerance::default());

        // A loss weighting each output by a fixed random number, so that the gradients are
        // of order one (not the near-cancelling ones of a loss BN normalises away).
        let weights = images(general.dims(), &device);
        let gradients = |output: Tensor<4>| {
            let grads = output.mul(weights.clone()).sum().backward();
            let weight = branch.conv.weight.grad(&grads).expect("weight gradient");
            (
                weight.into_data(),
                input.grad(&grads).expect("input gradient").into_data(),
            )
        };
        let (fast_weight, fast_input) = gradients(fast);
        let (general_weight, general_input) = gradients(general.clone());
        fast_weight.assert_approx_eq::<f32>(&general_weight, Tolerance::default());
        fast_input.assert_approx_eq::<f32>(&general_input, Tolerance::default());
    }
}

#[test]
fn the_training_time_network_learns() {
    let device = test_device().autodiff();
    device.seed(7);
    let config = RepVggConfig::new(vec![1, 1], vec![0.125, 0.125]).with_num_classes(2);
    let mut model = config.init(&device);
    let mut optimizer = SgdConfig::new().init();
    // Two classes that differ in brightness: class 1 images are shifted up by one.
    let noise = images([16, 3, 32, 32], &device).mul_scalar(0.5);
    let labels = Tensor::<1, Int>::from_ints([0, 1].repeat(8).as_slice(), &device);
    let shift = labels.clone().float().reshape([16, 1, 1, 1]);
    let input = noise + shift;
    let loss_fn = CrossEntropyLossConfig::new().init(&device);

    let mut losses = Vec::new();
    for _ in 0..15 {
        let loss = loss_fn.forward(model.forward(input.clone()), labels.clone());
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(0.05, model, grads);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.5 * first, "loss did not fall: {losses:?}");
}
