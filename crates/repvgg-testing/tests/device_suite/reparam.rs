//! The deploy network computes the training-time network's function (eval mode, running stats),
//! whether converted alone, as named tensors, or nested in a bigger module.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor};
use repvgg_model::{
    RepVgg, RepVggArch, RepVggConfig, RepVggDeploy, Reparameterize, Weights, WeightsError,
    reparameterize, reparameterize_nested,
};
use repvgg_testing::test_device;
use repvgg_testing::{random_training_model, relative_difference};

/// Fuses a randomly initialised network and compares logits on a random batch.
fn agreement(config: &RepVggConfig, size: [usize; 2]) -> f32 {
    let device = test_device();
    let model = random_training_model(config, &device);
    let deployed = model.reparameterize().unwrap();
    let images = Tensor::<4>::random(
        [2, 3, size[0], size[1]],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let expected = model.forward(images.clone()).into_data();
    let actual = deployed.forward(images).into_data();
    let diff = relative_difference(&actual, &expected);
    eprintln!("max |train - deploy| / max |logit| = {diff:.2e} for {config:?}");
    diff
}

#[test]
fn narrow_custom_networks_agree() {
    let plain = RepVggConfig::new(vec![2, 3, 2], vec![0.25, 0.25, 0.5]).with_num_classes(10);
    let grouped =
        plain
            .clone()
            .with_grouped_layers(BTreeMap::from([(2, 2), (4, 4), (5, 4), (7, 2)]));
    let se = grouped.clone().with_use_se(true).with_se_reduction(4);
    let wide_eps = se.clone().with_bn_epsilon(1e-3);
    for config in [plain, grouped, se, wide_eps] {
        let diff = agreement(&config, [40, 56]);
        assert!(diff <= 1e-5, "{config:?}: {diff:e}");
    }
}

#[test]
fn a0_agrees() {
    let diff = agreement(&RepVggArch::A0.config(), [64, 64]);
    assert!(diff <= 1e-5, "A0: {diff:e}");
}

#[test]
fn b1g4_with_grouped_identity_agrees() {
    let diff = agreement(&RepVggArch::B1g4.config(), [64, 48]);
    assert!(diff <= 1e-5, "B1g4: {diff:e}");
}

#[test]
fn d2se_with_se_agrees() {
    let diff = agreement(&RepVggArch::D2se.config(), [48, 64]);
    assert!(diff <= 1e-5, "D2se: {diff:e}");
}

/// QARepVGG's blocks (no BN on the 1x1 and identity branches, one on the sum) fuse into the same
/// deploy network: plain, grouped, SE, and the reference architectures with each.
#[test]
fn qarepvgg_networks_agree() {
    let plain = RepVggConfig::new(vec![2, 3, 2], vec![0.25, 0.25, 0.5])
        .with_num_classes(10)
        .quantization_aware();
    let grouped =
        plain
            .clone()
            .with_grouped_layers(BTreeMap::from([(2, 2), (4, 4), (5, 4), (7, 2)]));
    let se = grouped.clone().with_use_se(true).with_se_reduction(4);
    for config in [plain, grouped, se] {
        let diff = agreement(&config, [40, 56]);
        assert!(diff <= 1e-5, "{config:?}: {diff:e}");
    }
    for arch in [RepVggArch::A0, RepVggArch::B1g4, RepVggArch::D2se] {
        let diff = agreement(&arch.config().quantization_aware(), [48, 64]);
        assert!(diff <= 1e-5, "QARepVGG {arch}: {diff:e}");
    }
}

/// The QARepVGG block's tensors: its 1x1 branch is the convolution alone, its identity adds the
/// input without a batch norm, and the batch norm of the sum is `bn` (YOLOv6's naming).
#[test]
fn qarepvgg_blocks_have_the_papers_layout() {
    let config = RepVggArch::A0.config().quantization_aware();
    let model = config.init(&test_device());
    let names: Vec<String> = repvgg_model::tensor_infos(&model)
        .into_iter()
        .map(|tensor| tensor.path)
        .filter(|path| path.starts_with("stage1.1."))
        .collect();
    let expected = [
        "rbr_dense.conv.weight",
        "rbr_dense.bn.gamma",
        "rbr_dense.bn.beta",
        "rbr_dense.bn.running_mean",
        "rbr_dense.bn.running_var",
        "rbr_1x1.conv.weight",
        "bn.gamma",
        "bn.beta",
        "bn.running_mean",
        "bn.running_var",
    ]
    .map(|name| format!("stage1.1.{name}"));
    assert_eq!(names, expected);
    // Two batch norms per block instead of three (two where RepVGG's block has no identity).
    let repvgg = RepVggArch::A0.config().num_params();
    let qa = config.num_params();
    assert_eq!(qa.deploy, repvgg.deploy);
    let identity_blocks: usize = config
        .block_specs()
        .iter()
        .filter(|s| s.has_identity)
        .map(|s| 2 * s.out_channels)
        .sum();
    assert_eq!(repvgg.training - qa.training, identity_blocks);
    assert_eq!(repvgg_model::num_trainable_params(&model), qa.training);
}

#[test]
fn transform_checks_its_input_layout() {
    let device = test_device();
    let config = RepVggConfig::new(vec![1, 2], vec![0.25, 0.25]).with_num_classes(3);
    let weights = Weights::from_module(&config.init(&device)).unwrap();

    let mut missing: Weights = weights
        .iter()
        .filter(|(name, _)| *name != "stage2.1.rbr_identity.running_var")
        .map(|(name, data)| (name.to_string(), data.clone()))
        .collect();
    let err = reparameterize(&missing, &config, &device).unwrap_err();
    assert!(matches!(err, WeightsError::Mismatch { .. }));
    assert!(
        err.to_string()
            .contains("1 missing (stage2.1.rbr_identity.running_var)"),
        "{err}"
    );

    missing.insert(
        "stage2.1.rbr_identity.running_var",
        weights
            .get("stage2.1.rbr_identity.running_var")
            .unwrap()
            .clone(),
    );
    missing.insert("stage9.extra", weights.get("linear.bias").unwrap().clone());
    let err = reparameterize(&missing, &config, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 unexpected (stage9.extra)"), "{err}");

    let other = RepVggConfig::new(vec![1, 2], vec![0.5, 0.25]).with_num_classes(3);
    let err = reparameterize(&weights, &other, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("with the wrong shape (stage0.rbr_dense.conv.weight: expected [32, 3, 3, 3], found [16, 3, 3, 3]"), "{err}");
}

#[test]
fn deploy_weights_are_the_deploy_layout() {
    let device = test_device();
    let config = RepVggArch::A0.config().with_num_classes(4);
    let model = random_training_model(&config, &device);
    let deploy = reparameterize(&Weights::from_module(&model).unwrap(), &config, &device).unwrap();
    assert_eq!(deploy.len(), 22 * 2 + 2);
    assert_eq!(deploy.num_elements(), config.num_params().deploy);
    assert_eq!(
        deploy.get("linear.weight"),
        Weights::from_module(&model).unwrap().get("linear.weight")
    );
}

#[test]
fn headless_networks_convert_to_headless_deploy_networks() {
    let device = test_device();
    let config = RepVggConfig::new(vec![1, 2], vec![0.25, 0.5]).with_num_classes(0);
    let model = random_training_model(&config, &device);
    assert!(model.linear.is_none());
    assert_eq!(
        model.num_trainable_params(),
        config.num_params().training,
        "counts follow the missing head"
    );
    let deployed = model.reparameterize().unwrap();
    assert_eq!(deployed.num_trainable_params(), config.num_params().deploy);
    let images = Tensor::<4>::random([2, 3, 40, 36], Distribution::Normal(0.0, 1.0), &device);
    let expected = model.forward(images.clone());
    assert_eq!(
        expected.dims(),
        [2, config.feature_width()],
        "pooled features"
    );
    let diff = relative_difference(&deployed.forward(images).into_data(), &expected.into_data());
    assert!(diff <= 1e-5, "{diff:e}");
}

/// A detector-like model: a RepVGG backbone and a head of its own, in both forms.
#[derive(Module, Debug)]
struct Detector<B> {
    backbone: B,
    head: Linear,
}

impl Detector<RepVgg> {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(images))
    }
}

impl Detector<RepVggDeploy> {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(images))
    }
}

#[test]
fn a_nested_backbone_converts_and_the_rest_is_carried() {
    let device = test_device();
    let config = RepVggConfig::new(vec![2, 2], vec![0.25, 0.25])
        .with_grouped_layers(BTreeMap::from([(2, 2)]))
        .with_num_classes(0);
    let training = Detector {
        backbone: random_training_model(&config, &device),
        head: LinearConfig::new(32, 7).init(&device),
    };
    let target = Detector {
        backbone: config.init_deploy(&device),
        head: LinearConfig::new(32, 7).init(&device),
    };
    let deployed = reparameterize_nested(&training, "backbone", &config, target).unwrap();
    let images = Tensor::<4>::random([2, 3, 48, 40], Distribution::Normal(0.0, 1.0), &device);
    let diff = relative_difference(
        &deployed.forward(images.clone()).into_data(),
        &training.forward(images).into_data(),
    );
    assert!(diff <= 1e-5, "{diff:e}");

    let wrong = Detector {
        backbone: config.init(&device),
        head: LinearConfig::new(32, 7).init(&device),
    };
    let err = reparameterize_nested(&training, "neck", &config, wrong).unwrap_err();
    assert!(
        matches!(&err, WeightsError::NoTensorsUnder { prefix } if prefix == "neck"),
        "{err}"
    );
}
