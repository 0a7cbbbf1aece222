//! `Precision::Bf16Mixed`: on a CPU with AVX512_BF16 a run trains, stays finite and its deploy
//! model agrees with the training-time one; on a CPU without it the run is refused before it
//! starts, with an error naming the missing feature, and leaves no run directory behind.

use burn::tensor::Device;
use repvgg_data::write_synthetic_set;
use repvgg_ops::bf16_products_supported;
use repvgg_train::{
    AugmentationConfig, LoaderConfig, Precision, RecipeConfig, TrainError, TrainingConfig, train,
};

#[test]
fn bf16_mixed_trains_where_the_cpu_has_bf16_and_is_refused_elsewhere() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, run) = (scratch.path().join("data"), scratch.path().join("run"));
    write_synthetic_set(&data, 1, 2, 5).unwrap();
    let network = repvgg_model::RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5; 4])
        .with_num_classes(repvgg_data::SYNTHETIC_CLASSES.len());
    let config = TrainingConfig::new(network)
        .with_recipe(RecipeConfig::new().with_epochs(1).with_batch_size(16))
        .with_augmentation(AugmentationConfig::new().with_image_size(32))
        .with_loader(LoaderConfig::new().with_workers(Some(2)))
        .with_precision(Precision::Bf16Mixed);

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
