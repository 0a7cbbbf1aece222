//! RepVGGplus: the L2pse preset's exact parameter counts and module paths, the auxiliary heads,
//! and the deploy form computing the training form's main output.

use burn::tensor::{Distribution, Tensor};
use repvgg_model::{
    PlusLayout, RepVggArch, RepVggConfig, RepVggPlus, RepVggPlusDeploy, Reparameterize, Weights,
    reparameterize, tensor_infos,
};
use repvgg_testing::test_device;
use repvgg_testing::{random_plus_model, relative_difference};

/// A narrow RepVGGplus: stage 3 of four blocks split two and two, post-SE with reduction 4.
fn narrow() -> RepVggConfig {
    RepVggConfig::new(vec![1, 1, 4, 1], vec![0.125, 0.125, 0.125, 0.125])
        .with_se_reduction(4)
        .with_num_classes(7)
        .with_plus(Some(PlusLayout::new()))
}

fn shape_of(tensors: &[repvgg_model::TensorInfo], path: &str) -> Option<Vec<usize>> {
    tensors
        .iter()
        .find(|t| t.path == path)
        .map(|t| t.shape.clone())
}

#[test]
fn l2pse_has_the_reference_parameter_counts() {
    let device = test_device();
    let config = RepVggArch::L2pse.config();
    let counts = config.num_params();
    assert_eq!(counts.training, 146_062_864);
    assert_eq!(counts.deploy, 127_151_960);
    // Parameters are lazy: building the 146 M-parameter network allocates nothing.
    let model = RepVggPlus::new(&config, &device);
    assert_eq!(model.num_trainable_params(), 146_062_864);
    let aux: usize = [
        &model.stage1_aux,
        &model.stage2_aux,
        &model.stage3_first_aux,
    ]
    .into_iter()
    .map(|head| repvgg_model::num_trainable_params(head.as_ref().unwrap()))
    .sum();
    assert_eq!(aux, 5_963_640);
    assert_eq!(
        RepVggPlusDeploy::new(&config, &device).num_trainable_params(),
        127_151_960
    );
    // 142 batch norms' running means and variances: 137,216 elements.
    let buffers: usize = tensor_infos(&model)
        .iter()
        .filter(|t| !t.is_trainable())
        .map(|t| t.num_elements())
        .sum();
    assert_eq!(buffers, 137_216);
}

#[test]
fn l2pse_module_paths_are_the_reference_keys() {
    let device = test_device();
    let config = RepVggArch::L2pse.config();
    assert_eq!(
        RepVggArch::from_name("RepVGGplus-L2pse"),
        Ok(RepVggArch::L2pse)
    );
    assert_eq!(RepVggArch::L2pse.to_string(), "RepVGGplus-L2pse");
    assert_eq!(config.stage_widths(), [64, 160, 320, 640, 2560]);
    let model = RepVggPlus::new(&config, &device);
    let tensors = tensor_infos(&model);
    for (path, shape) in [
        ("stage0.rbr_dense.conv.weight", vec![64, 3, 3, 3]),
        ("stage0.post_se.down.weight", vec![16, 64, 1, 1]),
        ("stage1.blocks.7.rbr_identity.gamma", vec![160]),
        ("stage2.blocks.13.post_se.up.bias", vec![320]),
        (
            "stage3_first.blocks.0.rbr_dense.conv.weight",
            vec![640, 320, 3, 3],
        ),
        (
            "stage3_first.blocks.11.rbr_1x1.conv.weight",
            vec![640, 640, 1, 1],
        ),
        // The first block of the second half keeps its shape, so it has the identity branch.
        ("stage3_second.blocks.0.rbr_identity.running_var", vec![640]),
        ("stage4.blocks.0.post_se.down.weight", vec![640, 2560, 1, 1]),
        ("linear.weight", vec![2560, 1000]),
        ("stage1_aux.conv_bn.conv.weight", vec![160, 160, 3, 3]),
        ("stage3_first_aux.linear.weight", vec![640, 1000]),
    ] {
        assert_eq!(shape_of(&tensors, path), Some(shape), "{path}");
    }
    for absent in [
        "stage3_first.blocks.0.rbr_identity.gamma",
        "stage4.blocks.0.rbr_identity.gamma",
        "stage0.se.down.weight",
    ] {
        assert_eq!(shape_of(&tensors, absent), None, "{absent}");
    }
    let blocks = [
        model.stage1.blocks.len(),
        model.stage2.blocks.len(),
        model.stage3_first.blocks.len(),
        model.stage3_second.blocks.len(),
        model.stage4.blocks.len(),
    ];
    assert_eq!(blocks, [8, 14, 12, 12, 1]);
    let deploy = tensor_infos(&RepVggPlusDeploy::new(&config, &device));
    assert_eq!(
        shape_of(&deploy, "stage3_second.blocks.11.rbr_reparam.bias"),
        Some(vec![640])
    );
    assert!(deploy.iter().all(|t| !t.path.contains("_aux")));
}

#[test]
fn the_training_form_gives_main_and_auxiliary_logits() {
    let device = test_device();
    let model = RepVggPlus::new(&narrow(), &device);
    let images = Tensor::<4>::random([2, 3, 64, 48], Distribution::Default, &device);
    let output = model.forward_with_aux(images.clone());
    assert_eq!(output.main.dims(), [2, 7]);
    let aux: Vec<[usize; 2]> = output.aux.iter().map(|logits| logits.dims()).collect();
    assert_eq!(aux, [[2, 7]; 3]);
    let main_only = model.forward(images.clone());
    let difference = (main_only - output.main).abs().max().into_scalar::<f32>();
    assert_eq!(difference, 0.0);
    let features = model.forward_features(images);
    let shapes: Vec<[usize; 4]> = features.iter().map(|map| map.dims()).collect();
    assert_eq!(
        shapes,
        [
            [2, 8, 32, 24],
            [2, 8, 16, 12],
            [2, 16, 8, 6],
            [2, 32, 4, 3],
            [2, 64, 2, 2]
        ]
    );
    // Without a classifier there is nothing for auxiliary heads to predict.
    let backbone = RepVggPlus::new(&narrow().with_num_classes(0), &device);
    assert!(backbone.stage1_aux.is_none() && backbone.linear.is_none());
    let without_aux = RepVggPlus::new(
        &narrow().with_plus(Some(PlusLayout::new().with_aux_heads(false))),
        &device,
    );
    assert!(
        without_aux
            .forward_with_aux(Tensor::zeros([1, 3, 32, 32], &device))
            .aux
            .is_empty()
    );
}

#[test]
fn the_deploy_form_of_qarepvgg_blocks_computes_the_main_output() {
    let device = test_device();
    let config = narrow().quantization_aware();
    let model = random_plus_model(&config, &device);
    let deployed = model.reparameterize().unwrap();
    let images = Tensor::<4>::random([2, 3, 64, 48], Distribution::Normal(0.0, 1.0), &device);
    let expected = model.forward_with_aux(images.clone()).main.into_data();
    let actual = deployed.forward(images).into_data();
    let diff = relative_difference(&actual, &expected);
    assert!(diff <= 1e-5, "{diff:e}");
}

#[test]
fn the_deploy_form_computes_the_main_output() {
    let device = test_device();
    let config = narrow();
    let model = random_plus_model(&config, &device);
    let deployed = model.reparameterize().unwrap();
    // Non-square on purpose: the reference's SE pooling breaks there.
    let images = Tensor::<4>::random([2, 3, 64, 48], Distribution::Normal(0.0, 1.0), &device);
    let expected = model.forward_with_aux(images.clone()).main.into_data();
    let actual = deployed.forward(images.clone()).into_data();
    let diff = relative_difference(&actual, &expected);
    eprintln!("RepVGGplus max |train - deploy| / max |logit| = {diff:.2e}");
    assert!(diff <= 1e-5, "{diff:e}");

    // The named-tensor transform gives the same deploy weights, with the aux heads dropped.
    let weights = reparameterize(&Weights::from_module(&model).unwrap(), &config, &device).unwrap();
    assert!(weights.names().all(|name| !name.contains("_aux")));
    assert!(
        weights
            .get("stage3_second.blocks.1.post_se.up.weight")
            .is_some()
    );
    assert_eq!(weights, Weights::from_module(&deployed).unwrap());
}

#[test]
fn invalid_plus_configs_are_explained() {
    let cases = [
        (
            RepVggConfig::new(vec![1, 1, 1, 1], vec![0.25; 4]).with_plus(Some(PlusLayout::new())),
            "at least two blocks in stage 3",
        ),
        (
            RepVggConfig::new(vec![1, 1, 2], vec![0.25; 3]).with_plus(Some(PlusLayout::new())),
            "four stages",
        ),
        (narrow().with_use_se(true), "cannot be combined"),
        (narrow().with_se_reduction(0), "se_reduction"),
    ];
    for (config, expected) in cases {
        let err = config.validate().expect_err(expected).to_string();
        assert!(
            err.contains(expected),
            "`{err}` should mention `{expected}`"
        );
    }
}
