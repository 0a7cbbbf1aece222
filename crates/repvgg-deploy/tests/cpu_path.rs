//! The CPU deploy path computes what the generic deploy model computes: presets, grouped
//! layers, squeeze-excitation, odd input sizes (partial Winograd tiles), one image and several;
//! and `DeployModel` takes it on the CPU backend.

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{CpuDeploy, DeployModel};
use repvgg_model::logit_difference;
use repvgg_model::{RepVggArch, RepVggConfig};

fn assert_agrees(config: &RepVggConfig, batch: usize, height: usize, width: usize) {
    let device = Device::flex();
    let model = config.init_deploy(&device);
    let fast = CpuDeploy::new(&model);
    let images = Tensor::<4>::random(
        [batch, 3, height, width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let expected = model.forward(images.clone()).into_data();
    let actual = fast.forward(images).into_data();
    assert_eq!(actual.shape(), expected.shape());
    let difference = logit_difference(&actual, &expected);
    assert!(
        difference.relative <= 1e-4,
        "batch {batch}, {height}x{width}: {difference:?}"
    );
}

#[test]
fn a0_agrees_at_batch_one_and_several() {
    let config = RepVggArch::A0.config();
    assert_agrees(&config, 1, 64, 64);
    assert_agrees(&config, 3, 64, 96);
    // Sizes whose stride-1 layers end in partial 4x4 tiles (and a 1x1 last stage).
    assert_agrees(&config, 2, 57, 71);
    assert_agrees(&config, 1, 18, 30);
}

#[test]
fn features_agree() {
    // A three-stage custom network and A0: every stage's map, shape and values.
    let device = Device::flex();
    let custom = RepVggConfig::new(vec![2, 1, 2], vec![0.25, 0.5, 0.25]).with_num_classes(3);
    for (config, batch, height, width) in
        [(custom, 2, 37, 50), (RepVggArch::A0.config(), 1, 64, 48)]
    {
        let generic = config.init_deploy(&device);
        let model = DeployModel::new(generic.clone());
        let images = Tensor::<4>::random(
            [batch, 3, height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let expected = generic.forward_features(images.clone());
        let actual = model.forward_features(images);
        assert_eq!(actual.len(), expected.len());
        for (stage, (actual, expected)) in actual.into_iter().zip(expected).enumerate() {
            assert_eq!(actual.dims(), expected.dims(), "stage {stage}");
            let difference = logit_difference(&actual.into_data(), &expected.into_data());
            assert!(difference.relative <= 1e-4, "stage {stage}: {difference:?}");
        }
    }
}

#[test]
fn presets_agree() {
    for arch in [RepVggArch::A1, RepVggArch::B0, RepVggArch::B1g2] {
        let config = arch.config();
        let device = Device::flex();
        let model = config.init_deploy(&device);
        let fast = CpuDeploy::new(&model);
        let images = Tensor::<4>::random([2, 3, 48, 40], Distribution::Normal(0.0, 1.0), &device);
        let difference = logit_difference(
            &fast.forward(images.clone()).into_data(),
            &model.forward(images).into_data(),
        );
        assert!(difference.relative <= 1e-4, "{arch}: {difference:?}");
    }
}

#[test]
fn deploy_model_takes_the_cpu_path_on_flex() {
    let device = Device::flex();
    let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.25]).with_num_classes(4);
    let generic = config.init_deploy(&device);
    let model = DeployModel::new(generic.clone());
    assert!(model.uses_cpu_path());
    let images = Tensor::<4>::random([2, 3, 37, 29], Distribution::Normal(0.0, 1.0), &device);
    let expected = generic.forward(images.clone()).into_data();
    let difference = logit_difference(&model.forward(images.clone()).into_data(), &expected);
    assert!(difference.relative <= 1e-4, "{difference:?}");
    // A model on an autodiff device keeps the generic operations (they record gradients).
    let autodiff = device.autodiff();
    let trainable = config.init_deploy(&autodiff);
    let model = DeployModel::new(trainable.clone());
    assert!(!model.uses_cpu_path());
    let images = Tensor::<4>::random([1, 3, 20, 20], Distribution::Normal(0.0, 1.0), &autodiff);
    assert_eq!(
        model.forward(images.clone()).into_data(),
        trainable.forward(images).into_data()
    );
}

#[test]
fn grouped_layers_agree_at_odd_sizes() {
    // B1g4's pattern on a narrow network: 2- and 4-group convolutions between dense ones.
    let config = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.25])
        .with_grouped_layers(BTreeMap::from([(2, 4), (4, 2), (6, 4)]))
        .with_num_classes(7);
    assert_agrees(&config, 2, 33, 47);
    assert_agrees(&config, 1, 45, 32);
}

#[test]
fn squeeze_excitation_agrees() {
    let config = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.5])
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(5);
    assert_agrees(&config, 2, 40, 40);
    assert_agrees(&config, 1, 33, 35);
}

#[test]
fn b1g4_agrees() {
    assert_agrees(&RepVggArch::B1g4.config(), 1, 64, 64);
}

#[test]
#[should_panic(expected = "the model takes 3-channel images, got [N, C, H, W] = [1, 1, 32, 32]")]
fn wrong_channel_count_is_refused() {
    let device = Device::flex();
    let model =
        CpuDeploy::new(&RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init_deploy(&device));
    model.forward(Tensor::<4>::zeros([1, 1, 32, 32], &device));
}
