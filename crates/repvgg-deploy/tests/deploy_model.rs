//! `DeployModel` takes the CPU engine for models on Burn's CPU backend, and Burn's own
//! operations elsewhere; the engine's options are refused off the CPU backend.

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployError, DeployModel};
use repvgg_model::{RepVggArch, RepVggConfig, logit_difference};

#[test]
fn deploy_model_takes_the_cpu_engine_on_flex() {
    let device = Device::flex();
    let config = RepVggConfig::new(vec![1, 2, 1], vec![0.25, 0.25, 0.25]).with_num_classes(4);
    let generic = config.init_deploy(&device);
    let model = DeployModel::new(generic.clone());
    assert!(model.uses_cpu_engine());
    let images = Tensor::<4>::random([2, 3, 37, 29], Distribution::Normal(0.0, 1.0), &device);
    let expected = generic.forward(images.clone()).into_data();
    let difference = logit_difference(&model.forward(images.clone()).into_data(), &expected);
    assert!(difference.relative <= 1e-4, "{difference:?}");
    // A model on an autodiff device keeps the generic operations (they record gradients).
    let autodiff = device.autodiff();
    let trainable = config.init_deploy(&autodiff);
    let model = DeployModel::new(trainable.clone());
    assert!(!model.uses_cpu_engine());
    let images = Tensor::<4>::random([1, 3, 20, 20], Distribution::Normal(0.0, 1.0), &autodiff);
    assert_eq!(
        model.forward(images.clone()).into_data(),
        trainable.forward(images).into_data()
    );
}

#[test]
fn options_off_the_cpu_backend_are_refused() {
    let autodiff = Device::flex().autodiff();
    let model = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init_deploy(&autodiff);
    let err = DeployModel::with_options(model, CpuOptions::default())
        .expect_err("the options are the CPU engine's");
    assert!(
        matches!(err, DeployError::UnsupportedPrecision { .. }),
        "{err}"
    );
}

#[test]
fn bf16_is_taken_or_refused_naming_the_feature() {
    let device = Device::flex();
    let options = CpuOptions::default().with_precision(CpuPrecision::Bf16);
    match DeployModel::with_options(RepVggArch::B0.config().init_deploy(&device), options) {
        Ok(model) => assert_eq!(model.precision(), CpuPrecision::Bf16),
        Err(err) => {
            assert!(!CpuPrecision::Bf16.is_supported());
            assert!(err.to_string().contains("AVX512_BF16"), "{err}");
        }
    }
}
