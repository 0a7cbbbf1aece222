//! The training config: the paper's recipe by default, saved and read back as JSON, and
//! refused field by field when it cannot be trained.

use burn::config::Config;
use repvgg_data::{EvalTransform, RandAugment, RandomErasing};
use repvgg_model::{RepVggArch, RepVggConfig};
use repvgg_train::{
    AugmentationConfig, InvalidTrainingConfig, Precision, RecipeConfig, TrainingConfig, WeightsInit,
};

fn a0() -> TrainingConfig {
    TrainingConfig::new(RepVggArch::A0.config())
}

#[test]
fn the_defaults_are_the_papers_imagenet_recipe() {
    let config = a0();
    let recipe = &config.recipe;
    assert_eq!(recipe.epochs, 120);
    assert_eq!(recipe.batch_size, 256);
    assert_eq!(recipe.accumulation, 1);
    assert_eq!(recipe.lr, 0.1);
    assert_eq!(recipe.momentum, 0.9);
    assert!(!recipe.nesterov);
    assert_eq!(recipe.weight_decay, 1e-4);
    assert_eq!(recipe.warmup_epochs, 0);
    assert_eq!(recipe.label_smoothing, 0.0);
    assert_eq!((recipe.mixup_alpha, recipe.ema_decay), (None, None));
    assert!(!recipe.custom_l2);
    assert_eq!(
        (recipe.freeze_stages, recipe.backbone_lr_scale),
        (None, None)
    );
    assert_eq!(config.init, None);
    assert_eq!(config.augmentation.image_size, 224);
    assert_eq!(config.augmentation.min_crop_scale, 0.08);
    assert_eq!(config.loader.workers, None);
    assert_eq!(config.seed, 0);
    assert_eq!(config.precision, Precision::F32);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn a_config_survives_its_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("training.json");
    let config = TrainingConfig::new(
        RepVggConfig::new(vec![1, 2], vec![0.25, 0.5])
            .with_use_se(true)
            .with_num_classes(7),
    )
    .with_recipe(
        RecipeConfig::new()
            .with_epochs(300)
            .with_mixup_alpha(Some(0.2))
            .with_ema_decay(Some(0.9998))
            .with_custom_l2(true),
    )
    .with_precision(Precision::Bf16)
    .with_init(Some(WeightsInit::Checkpoint("runs/a0/model.bpk".into())))
    .with_seed(3);
    config.save(&path).unwrap();
    assert_eq!(TrainingConfig::load(&path).unwrap(), config);
    for init in [None, Some(WeightsInit::Pretrained("b1g4".into()))] {
        let config = config.clone().with_init(init);
        config.save(&path).unwrap();
        assert_eq!(TrainingConfig::load(&path).unwrap(), config);
    }
}

#[test]
fn a_training_json_from_before_fine_tuning_still_loads() {
    let mut json: serde_json::Value = serde_json::from_str(&a0().to_string()).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("init").unwrap();
    let recipe = object["recipe"].as_object_mut().unwrap();
    recipe.remove("freeze_stages").unwrap();
    recipe.remove("backbone_lr_scale").unwrap();
    let loaded = TrainingConfig::load_binary(json.to_string().as_bytes()).unwrap();
    assert_eq!(loaded, a0());
}

#[test]
fn initial_weights_are_named_as_text() {
    assert_eq!(
        "pretrained:B1g4".parse(),
        Ok(WeightsInit::Pretrained("b1g4".into()))
    );
    assert_eq!(
        "runs/a0/model.bpk".parse(),
        Ok(WeightsInit::Checkpoint("runs/a0/model.bpk".into()))
    );
    for init in ["pretrained:a0", "timm/a0.safetensors"] {
        assert_eq!(init.parse::<WeightsInit>().unwrap().to_string(), init);
    }
    let error = "pretrained:a9".parse::<WeightsInit>().unwrap_err();
    assert!(error.to_string().contains("pretrained:a9"), "{error}");
}

#[test]
fn precisions_are_named_in_lower_case() {
    assert_eq!("bf16".parse(), Ok(Precision::Bf16));
    assert_eq!("F32".parse(), Ok(Precision::F32));
    assert!("f16".parse::<Precision>().is_err());
    assert_eq!(Precision::Bf16.name(), "bf16");
}

#[test]
fn untrainable_configs_name_the_field() {
    let out_of_range = |config: TrainingConfig| match config.validate() {
        Err(InvalidTrainingConfig::OutOfRange { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let recipe =
        |change: fn(RecipeConfig) -> RecipeConfig| a0().with_recipe(change(RecipeConfig::new()));
    assert_eq!(out_of_range(recipe(|r| r.with_epochs(0))), "recipe.epochs");
    assert_eq!(
        out_of_range(recipe(|r| r.with_batch_size(0))),
        "recipe.batch_size"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_accumulation(0))),
        "recipe.accumulation"
    );
    assert_eq!(out_of_range(recipe(|r| r.with_lr(f64::NAN))), "recipe.lr");
    assert_eq!(
        out_of_range(recipe(|r| r.with_momentum(1.0))),
        "recipe.momentum"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_weight_decay(-1.0))),
        "recipe.weight_decay"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_label_smoothing(1.0))),
        "recipe.label_smoothing"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_mixup_alpha(Some(0.0)))),
        "recipe.mixup_alpha"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_ema_decay(Some(1.5)))),
        "recipe.ema_decay"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_freeze_stages(Some(5)))),
        "recipe.freeze_stages"
    );
    assert_eq!(
        out_of_range(recipe(|r| r.with_backbone_lr_scale(Some(0.0)))),
        "recipe.backbone_lr_scale"
    );
    let pretrained_nothing = a0().with_init(Some(WeightsInit::Pretrained("a9".into())));
    assert_eq!(out_of_range(pretrained_nothing), "init");
    let mut config = a0();
    config.augmentation.image_size = 16;
    assert_eq!(out_of_range(config), "augmentation.image_size");
    let mut config = a0();
    config.augmentation.min_crop_scale = 0.0;
    assert_eq!(out_of_range(config), "augmentation.min_crop_scale");
    let mut config = a0();
    config.loader.workers = Some(0);
    assert_eq!(out_of_range(config), "loader.workers");
    let mut config = a0();
    config.augmentation.crop_pct = Some(1.5);
    assert_eq!(out_of_range(config), "augmentation.crop_pct");
    let mut config = a0();
    config.augmentation.eval_image_size = Some(8);
    assert_eq!(out_of_range(config), "augmentation.eval_image_size");

    let error = recipe(|r| r.with_epochs(3).with_warmup_epochs(5)).validate();
    assert_eq!(
        error,
        Err(InvalidTrainingConfig::WarmupBeyondEpochs {
            warmup_epochs: 5,
            epochs: 3
        })
    );
    let headless = TrainingConfig::new(RepVggArch::A0.config().with_num_classes(0));
    assert_eq!(headless.validate(), Err(InvalidTrainingConfig::Headless));
    let broken = TrainingConfig::new(RepVggConfig::new(vec![1, 0], vec![1.0, 1.0]));
    assert!(matches!(
        broken.validate(),
        Err(InvalidTrainingConfig::Model(_))
    ));
}

#[test]
fn evaluation_size_and_crop_follow_timm() {
    let augmentation = AugmentationConfig::new().with_image_size(256);
    // By default the validation crop is the training size, out of floor(size / 0.875).
    assert_eq!(augmentation.eval_transform(), EvalTransform::new(256));
    assert_eq!(augmentation.eval_transform().resize, 292);
    // RepVGGplus-L2pse: trained at 256, tested at 320 with crop_pct 1.0.
    let plus = augmentation
        .with_eval_image_size(Some(320))
        .with_crop_pct(Some(1.0));
    assert_eq!(plus.eval_transform().size, 320);
    assert_eq!(plus.eval_transform().resize, 320);
    // A training.json written before these fields existed still loads.
    let old = r#"{"image_size": 224, "min_crop_scale": 0.08}"#;
    let loaded = AugmentationConfig::load_binary(old.as_bytes()).unwrap();
    assert_eq!(loaded.eval_image_size, None);
    assert_eq!(loaded.eval_transform(), EvalTransform::new(224));
}

#[test]
fn rand_augment_and_random_erasing_are_optional_and_checked() {
    // A training.json written before these fields existed loads without them.
    let old = r#"{"image_size": 224, "min_crop_scale": 0.08}"#;
    let loaded = AugmentationConfig::load_binary(old.as_bytes()).unwrap();
    assert_eq!(
        (loaded.rand_augment.clone(), loaded.random_erasing),
        (None, None)
    );
    let plain = loaded.train_transform().unwrap();
    assert_eq!((plain.rand_augment, plain.random_erasing), (None, None));

    let augmentation = AugmentationConfig::new()
        .with_min_crop_scale(0.35)
        .with_rand_augment(Some("raug15".into()))
        .with_random_erasing(Some(0.25));
    let transform = augmentation.train_transform().unwrap();
    assert_eq!(transform.crop.scale, (0.35, 1.0));
    assert_eq!(transform.rand_augment, Some(RandAugment::raug15()));
    assert_eq!(transform.random_erasing, Some(RandomErasing::new(0.25)));
    let config = a0().with_augmentation(augmentation);
    assert_eq!(config.validate(), Ok(()));
    let json = serde_json::to_string(&config.augmentation).unwrap();
    assert_eq!(
        AugmentationConfig::load_binary(json.as_bytes()).unwrap(),
        config.augmentation
    );

    let with = |policy: &str| {
        a0().with_augmentation(AugmentationConfig::new().with_rand_augment(Some(policy.into())))
    };
    assert_eq!(with("rand-m9-mstd0.5-inc1").validate(), Ok(()));
    let error = with("rand-m9-x3").validate().unwrap_err();
    assert!(matches!(error, InvalidTrainingConfig::RandAugment(_)));
    assert!(
        error.to_string().contains("unknown section `x3`"),
        "{error}"
    );
    let mut config = a0();
    config.augmentation.random_erasing = Some(1.5);
    assert!(
        matches!(config.validate(), Err(InvalidTrainingConfig::OutOfRange { field, .. }) if field == "augmentation.random_erasing")
    );
}
