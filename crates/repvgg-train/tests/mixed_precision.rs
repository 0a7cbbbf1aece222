//! `Precision::Bf16Mixed`: on a CPU with AVX512_BF16 a run trains, stays finite and its deploy
//! model agrees with the training-time one; on a CPU without it, or on another device than the
//! CPU, the run is refused before it starts, with an error naming the reason, and leaves no run
//! directory behind.

use burn::tensor::Device;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_ops::bf16_products_supported;
use repvgg_testing::{small_network, wgpu_device};
use repvgg_train::{
    AugmentationConfig, LoaderConfig, Precision, RecipeConfig, TrainError, TrainingConfig, train,
};

#[test]
fn bf16_mixed_trains_on_a_cpu_with_bf16_and_is_refused_elsewhere() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, run) = (scratch.path().join("data"), scratch.path().join("run"));
    write_synthetic_set(&data, 1, 2, 5).unwrap();
    let config = TrainingConfig::new(small_network(SYNTHETIC_CLASSES.len()))
        .with_recipe(RecipeConfig::new().with_epochs(1).with_batch_size(16))
        .with_augmentation(AugmentationConfig::new().with_image_size(32))
        .with_loader(LoaderConfig::new().with_workers(Some(2)))
        .with_precision(Precision::Bf16Mixed);

    if let Some(gpu) = wgpu_device() {
        let error = train(&config, &data, &[gpu], &run).expect_err("bf16-mixed on wgpu");
        assert!(
            matches!(error, TrainError::MixedPrecisionDevice { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("CPU device"), "{error}");
        assert!(!run.exists(), "a refused run left {}", run.display());
    }

    let outcome = train(&config, &data, &[Device::flex()], &run);
    if bf16_products_supported() {
        let report = outcome.expect("bf16-mixed trains on this CPU");
        assert_eq!(report.config.precision, Precision::Bf16Mixed);
        assert!(report.max_relative_logit_difference.is_finite());
        assert!(
            report.max_relative_logit_difference < 1e-3,
            "deploy model differs by {}",
            report.max_relative_logit_difference
        );
        assert_eq!(report.validation.images, report.deploy_validation.images);
    } else {
        let error = outcome.expect_err("no bf16 products on this CPU");
        assert!(matches!(error, TrainError::MixedPrecisionCpu), "{error:?}");
        assert!(error.to_string().contains("AVX512_BF16"), "{error}");
        assert!(!run.exists(), "a refused run left {}", run.display());
    }
}
