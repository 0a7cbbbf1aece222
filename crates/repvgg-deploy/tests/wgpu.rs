//! The transform gives the same deploy weights when its math runs on wgpu. Skipped without a
//! wgpu adapter unless `REPVGG_REQUIRE_WGPU=1` (see repvgg-model's wgpu tests).

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::DeployModel;
use repvgg_model::{RepVggConfig, Weights, reparameterize};
use repvgg_testing::{random_training_model, relative_difference, wgpu_device};

#[test]
fn fusion_on_wgpu_agrees_with_the_training_network() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let config = RepVggConfig::new(vec![2, 2, 1], vec![0.25, 0.25, 0.5])
        .with_grouped_layers(BTreeMap::from([(2, 2), (4, 4)]))
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(10);
    let model = random_training_model(&config, &cpu);
    let training = Weights::from_module(&model).unwrap();

    let on_gpu = reparameterize(&training, &config, &gpu).unwrap();
    let on_cpu = reparameterize(&training, &config, &cpu).unwrap();
    for (name, data) in on_cpu.iter() {
        let diff = relative_difference(on_gpu.get(name).unwrap(), data);
        assert!(diff <= 1e-5, "{name}: {diff:e}");
    }

    let deployed = on_gpu
        .load_into(config.init_deploy(&cpu), "the deploy network")
        .unwrap();
    let images = Tensor::<4>::random([2, 3, 40, 48], Distribution::Normal(0.0, 1.0), &cpu);
    let diff = relative_difference(
        &deployed.forward(images.clone()).into_data(),
        &model.forward(images).into_data(),
    );
    assert!(diff <= 1e-5, "{diff:e}");
}

#[test]
fn deploy_model_on_wgpu_runs_the_generic_path() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.5]).with_num_classes(6);
    let on_cpu = DeployModel::new(config.init_deploy(&cpu));
    let on_gpu = DeployModel::new(on_cpu.model().clone().fork(&gpu));
    assert!(on_cpu.uses_cpu_engine());
    assert!(!on_gpu.uses_cpu_engine());
    let images = Tensor::<4>::random([2, 3, 33, 41], Distribution::Normal(0.0, 1.0), &cpu);
    let diff = relative_difference(
        &on_gpu.forward(images.clone().to_device(&gpu)).into_data(),
        &on_cpu.forward(images).into_data(),
    );
    assert!(diff <= 1e-4, "{diff:e}");
}
