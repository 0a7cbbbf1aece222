//! The CPU deploy path computes what the generic deploy model computes: presets, grouped
//! layers, squeeze-excitation, odd input sizes, one image and several.

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{CpuDeploy, logit_difference};
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
