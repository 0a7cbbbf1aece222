//! The same weights give the same outputs on wgpu as on the CPU backend.
//!
//! Needs a Vulkan (or Metal/DX12) adapter; on a machine without a GPU, Mesa's lavapipe provides
//! one (`apt-get install mesa-vulkan-drivers libvulkan1`). Without an adapter the test is skipped
//! with a message, unless `REPVGG_REQUIRE_WGPU=1` (as in CI) makes that a failure.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};
use repvgg_model::{PlusLayout, RepVggConfig, RepVggPlus, Reparameterize};
use repvgg_testing::wgpu_device;

/// Runs `forward` on the CPU and on wgpu with the same weights and input.
fn cpu_and_wgpu<M: Module>(
    build: impl Fn(&Device) -> M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<2>,
) -> Option<(TensorData, TensorData)> {
    let gpu = wgpu_device()?;
    let cpu = Device::flex();
    let model = build(&cpu);
    let input = Tensor::<4>::random([2, 3, 40, 56], Distribution::Normal(0.0, 1.0), &cpu);
    let expected = forward(&model, input.clone()).into_data();
    let gpu_model = build(&gpu).load_record(model.into_record());
    let actual = forward(&gpu_model, input.to_device(&gpu)).into_data();
    Some((expected, actual))
}

fn config() -> RepVggConfig {
    RepVggConfig::new(vec![2, 2, 1], vec![0.25, 0.25, 0.5])
        .with_grouped_layers(BTreeMap::from([(2, 2)]))
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(10)
}

#[test]
fn training_time_network_agrees_with_cpu() {
    if let Some((expected, actual)) = cpu_and_wgpu(|d| config().init(d), |m, x| m.forward(x)) {
        actual.assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-4));
    }
}

#[test]
fn deploy_network_agrees_with_cpu() {
    if let Some((expected, actual)) = cpu_and_wgpu(|d| config().init_deploy(d), |m, x| m.forward(x))
    {
        actual.assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-4));
    }
}

fn plus_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 1, 2, 1], vec![0.25; 4])
        .with_se_reduction(4)
        .with_num_classes(10)
        .with_plus(Some(PlusLayout::new()))
}

#[test]
fn repvggplus_agrees_with_cpu_and_converts_on_wgpu() {
    // The training form: main and auxiliary logits side by side.
    let all_logits = |model: &repvgg_model::RepVggPlus, images| {
        let output = model.forward_with_aux(images);
        Tensor::cat([vec![output.main], output.aux].concat(), 1)
    };
    let Some((expected, actual)) = cpu_and_wgpu(|d| RepVggPlus::new(&plus_config(), d), all_logits)
    else {
        return;
    };
    assert_eq!(actual.shape().as_slice(), [2, 40]);
    actual.assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-4));

    // Converted on wgpu, the deploy form computes the training form's main output there.
    let gpu = wgpu_device().expect("found above");
    let weights = RepVggPlus::new(&plus_config(), &Device::flex()).into_record();
    let model = RepVggPlus::new(&plus_config(), &gpu).load_record(weights);
    let deploy = model.reparameterize().unwrap();
    let images = Tensor::<4>::random([2, 3, 40, 56], Distribution::Normal(0.0, 1.0), &gpu);
    let main = model.forward(images.clone()).into_data();
    deploy
        .forward(images)
        .into_data()
        .assert_approx_eq::<f32>(&main, Tolerance::absolute(1e-4));
}
