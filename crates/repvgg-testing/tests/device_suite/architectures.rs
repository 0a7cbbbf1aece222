//! The reference architectures: names, parameter counts, branch layout, grouping and SE.

use std::collections::BTreeMap;

use burn::config::Config;
use repvgg_model::{RepVggArch, RepVggConfig, tensor_infos};
use repvgg_testing::test_device;

/// Exact trainable-parameter counts of the reference implementation (training-time, deploy).
const REFERENCE_PARAMS: [(RepVggArch, usize, usize); 14] = [
    (RepVggArch::A0, 9_108_968, 8_309_384),
    (RepVggArch::A1, 14_092_264, 12_789_864),
    (RepVggArch::A2, 28_210_600, 25_499_944),
    (RepVggArch::B0, 15_817_960, 14_339_048),
    (RepVggArch::B1, 57_415_016, 51_829_480),
    (RepVggArch::B1g2, 45_782_376, 41_360_104),
    (RepVggArch::B1g4, 39_966_056, 36_125_416),
    (RepVggArch::B2, 89_022_376, 80_315_112),
    (RepVggArch::B2g2, 70_846_376, 63_956_712),
    (RepVggArch::B2g4, 61_758_376, 55_777_512),
    (RepVggArch::B3, 123_085_288, 110_960_872),
    (RepVggArch::B3g2, 96_911_848, 87_404_776),
    (RepVggArch::B3g4, 83_825_128, 75_626_728),
    (RepVggArch::D2se, 133_334_836, 120_387_572),
];

fn shape_of(model: &impl burn::module::Module, path: &str) -> Option<Vec<usize>> {
    tensor_infos(model)
        .into_iter()
        .find(|t| t.path == path)
        .map(|t| t.shape)
}

#[test]
fn every_preset_has_the_reference_parameter_counts() {
    let device = test_device();
    for (arch, training, deploy) in REFERENCE_PARAMS {
        let config = arch.config();
        let counts = config.num_params();
        assert_eq!(
            counts.training, training,
            "{arch} training-time (from config)"
        );
        assert_eq!(counts.deploy, deploy, "{arch} deploy (from config)");
        // Parameters are initialised lazily, so building even B3 here is cheap.
        let model = config.init(&device);
        assert_eq!(
            model.num_trainable_params(),
            training,
            "{arch} training-time module"
        );
        let deployed = config.init_deploy(&device);
        assert_eq!(
            deployed.num_trainable_params(),
            deploy,
            "{arch} deploy module"
        );
    }
}

#[test]
fn names_are_looked_up_case_insensitively_with_prefixes() {
    for (name, arch) in [
        ("a0", RepVggArch::A0),
        ("A0", RepVggArch::A0),
        ("RepVGG-A0", RepVggArch::A0),
        ("repvgg_b1g4", RepVggArch::B1g4),
        ("REPVGG-B3G2", RepVggArch::B3g2),
        ("d2se", RepVggArch::D2se),
        ("RepVGG-D2se", RepVggArch::D2se),
    ] {
        assert_eq!(RepVggArch::from_name(name), Ok(arch), "{name}");
        assert_eq!(name.parse::<RepVggArch>(), Ok(arch), "{name}");
    }
    for arch in RepVggArch::ALL {
        assert_eq!(RepVggArch::from_name(arch.name()), Ok(arch));
        assert_eq!(RepVggArch::from_name(&arch.to_string()), Ok(arch));
    }
}

#[test]
fn unknown_names_are_rejected_with_the_valid_names() {
    for name in ["", "A3", "resnet18", "repvgg", "B1g3", "D2"] {
        let err = RepVggConfig::from_arch_name(name).expect_err(name);
        let message = err.to_string();
        assert!(message.contains(&format!("`{name}`")), "{message}");
        for arch in RepVggArch::ALL {
            assert!(message.contains(arch.name()), "{message} lacks {arch}");
        }
    }
}

#[test]
fn stage_widths_follow_the_multipliers() {
    let widths = |arch: RepVggArch| arch.config().stage_widths();
    assert_eq!(widths(RepVggArch::A0), [48, 48, 96, 192, 1280]);
    assert_eq!(widths(RepVggArch::A1), [64, 64, 128, 256, 1280]);
    assert_eq!(widths(RepVggArch::A2), [64, 96, 192, 384, 1408]);
    assert_eq!(widths(RepVggArch::B1), [64, 128, 256, 512, 2048]);
    assert_eq!(widths(RepVggArch::B2), [64, 160, 320, 640, 2560]);
    assert_eq!(widths(RepVggArch::B3), [64, 192, 384, 768, 2560]);
    assert_eq!(widths(RepVggArch::D2se), [64, 160, 320, 640, 2560]);
}

#[test]
fn identity_branch_exists_only_where_shape_is_kept() {
    let device = test_device();
    let model = RepVggArch::A0.config().init(&device);
    assert!(model.stage0.rbr_identity.is_none());
    for (number, stage) in [&model.stage1, &model.stage2, &model.stage3, &model.stage4]
        .into_iter()
        .enumerate()
    {
        for (i, block) in stage.iter().enumerate() {
            assert_eq!(
                block.rbr_identity.is_some(),
                i > 0,
                "stage{}.{i}",
                number + 1
            );
        }
    }
    // Paths equal the reference checkpoint keys.
    assert_eq!(
        shape_of(&model, "stage2.3.rbr_identity.gamma"),
        Some(vec![96])
    );
    assert_eq!(
        shape_of(&model, "stage1.0.rbr_1x1.bn.running_mean"),
        Some(vec![48])
    );
    assert_eq!(shape_of(&model, "stage1.0.rbr_identity.gamma"), None);
    assert_eq!(shape_of(&model, "stage4.0.rbr_identity.gamma"), None);
    assert_eq!(
        shape_of(&model, "stage0.rbr_dense.conv.weight"),
        Some(vec![48, 3, 3, 3])
    );
    assert_eq!(shape_of(&model, "linear.weight"), Some(vec![1280, 1000]));
}

#[test]
fn reference_paths_are_complete() {
    let device = test_device();
    let model = RepVggArch::A0.config().init(&device);
    let tensors = tensor_infos(&model);
    // 22 blocks: 2 convs and 2 BNs (4 tensors each) per block, identity BNs in 17 of them,
    // and the head: 290 tensors. The reference A0 state dict has these plus one
    // `num_batches_tracked` per BN, 351 in all.
    assert_eq!(tensors.len(), 22 * (2 + 2 * 4) + 17 * 4 + 2);
    let deployed = RepVggArch::A0.config().init_deploy(&device);
    let paths: Vec<String> = tensor_infos(&deployed)
        .into_iter()
        .map(|t| t.path)
        .collect();
    assert_eq!(paths.len(), 22 * 2 + 2);
    assert_eq!(paths[0], "stage0.rbr_reparam.weight");
    assert_eq!(paths[1], "stage0.rbr_reparam.bias");
    assert!(paths.contains(&"stage3.13.rbr_reparam.bias".to_string()));
    assert_eq!(paths[paths.len() - 2..], ["linear.weight", "linear.bias"]);
}

#[test]
fn grouped_layers_match_the_reference_indices() {
    let device = test_device();
    let model = RepVggArch::B1g4.config().init(&device);
    // Global index: stage1.i = 1 + i, stage2.i = 5 + i, stage3.i = 11 + i, stage4.0 = 27.
    let dense = |path: &str| shape_of(&model, &format!("{path}.rbr_dense.conv.weight")).unwrap();
    let one_by_one = |path: &str| shape_of(&model, &format!("{path}.rbr_1x1.conv.weight")).unwrap();
    assert_eq!(dense("stage0"), [64, 3, 3, 3]);
    assert_eq!(dense("stage1.0"), [128, 64, 3, 3]); // layer 1
    assert_eq!(dense("stage1.1"), [128, 32, 3, 3]); // layer 2: 128 / 4
    assert_eq!(one_by_one("stage1.1"), [128, 32, 1, 1]);
    assert_eq!(dense("stage1.2"), [128, 128, 3, 3]); // layer 3
    assert_eq!(dense("stage2.0"), [256, 128, 3, 3]); // layer 5
    assert_eq!(dense("stage2.1"), [256, 64, 3, 3]); // layer 6
    assert_eq!(dense("stage3.0"), [512, 256, 3, 3]); // layer 11
    assert_eq!(dense("stage3.1"), [512, 128, 3, 3]); // layer 12: 512 / 4
    assert_eq!(dense("stage3.2"), [512, 512, 3, 3]); // layer 13
    assert_eq!(dense("stage3.15"), [512, 128, 3, 3]); // layer 26
    assert_eq!(dense("stage4.0"), [2048, 512, 3, 3]); // layer 27: never grouped

    let grouped: Vec<usize> = RepVggArch::B2g2
        .config()
        .block_specs()
        .into_iter()
        .filter(|spec| spec.groups > 1)
        .map(|spec| {
            assert_eq!(spec.groups, 2);
            spec.index
        })
        .collect();
    assert_eq!(grouped, (2..=26).step_by(2).collect::<Vec<_>>());
    for arch in [RepVggArch::A0, RepVggArch::B3, RepVggArch::D2se] {
        assert!(arch.config().block_specs().iter().all(|s| s.groups == 1));
    }
}

#[test]
fn squeeze_excitation_only_in_d2se_and_after_the_relu_in_l2pse() {
    let device = test_device();
    for arch in RepVggArch::ALL {
        let specs = arch.config().block_specs();
        let with_se = specs.iter().filter(|s| s.se_channels.is_some()).count();
        let after_relu = specs.iter().filter(|s| s.se_after_relu).count();
        let expected = match arch {
            RepVggArch::D2se => (specs.len(), 0),
            RepVggArch::L2pse => (specs.len(), specs.len()),
            _ => (0, 0),
        };
        assert_eq!((with_se, after_relu), expected, "{arch}");
    }
    let model = RepVggArch::D2se.config().init(&device);
    assert_eq!(
        model.stage1.len() + model.stage2.len() + model.stage3.len(),
        46
    );
    assert_eq!(
        shape_of(&model, "stage0.se.down.weight"),
        Some(vec![4, 64, 1, 1])
    );
    assert_eq!(
        shape_of(&model, "stage3.7.se.up.weight"),
        Some(vec![640, 40, 1, 1])
    );
    assert_eq!(shape_of(&model, "stage4.0.se.up.bias"), Some(vec![2560]));
    let deployed = RepVggArch::D2se.config().init_deploy(&device);
    assert_eq!(shape_of(&deployed, "stage2.5.se.down.bias"), Some(vec![20]));
}

#[test]
fn config_round_trips_through_json() {
    let dir = tempfile::Builder::new()
        .prefix("repvgg-config-")
        .tempdir()
        .unwrap();
    for arch in [RepVggArch::B1g4, RepVggArch::D2se] {
        let config = arch.config().with_num_classes(37);
        let path = dir.path().join(format!("{}.json", arch.name()));
        config.save(&path).unwrap();
        assert_eq!(RepVggConfig::load(&path).unwrap(), config);
    }
}

#[test]
fn custom_three_stage_network_for_small_images() {
    let config = RepVggConfig::new(vec![2, 3, 2], vec![0.25, 0.25, 0.5])
        .with_grouped_layers(BTreeMap::from([(3, 2)]))
        .with_num_classes(10);
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.stage_widths(), [16, 16, 32, 128]);
    let specs = config.block_specs();
    assert_eq!(specs.len(), 8);
    assert_eq!(specs[3].path, "stage2.0");
    assert_eq!(specs[3].groups, 2);
    assert!(specs.iter().all(|s| s.stage <= 3));
}

#[test]
fn invalid_configs_are_explained() {
    let base = || RepVggConfig::new(vec![1, 1], vec![0.5, 0.5]);
    let cases = [
        (RepVggConfig::new(vec![], vec![]), "1 to 4 stages"),
        (RepVggConfig::new(vec![1; 5], vec![1.0; 5]), "1 to 4 stages"),
        (
            RepVggConfig::new(vec![1, 1], vec![1.0]),
            "`width_multipliers` has 1",
        ),
        (
            RepVggConfig::new(vec![1, 0], vec![1.0, 1.0]),
            "stage 2 has no blocks",
        ),
        (RepVggConfig::new(vec![1], vec![0.001]), "channels"),
        (base().with_bn_epsilon(0.0), "bn_epsilon"),
        (
            base().with_grouped_layers(BTreeMap::from([(9, 2)])),
            "grouped layer 9 does not exist",
        ),
        (
            base().with_grouped_layers(BTreeMap::from([(1, 3)])),
            "3 groups do not divide",
        ),
        (
            base().with_use_se(true).with_se_reduction(64),
            "SE bottleneck",
        ),
        // What a damaged or hostile file may ask for, refused before anything is computed
        // or allocated from it.
        (
            RepVggConfig::new(vec![usize::MAX, 1], vec![1.0, 1.0]),
            "blocks is beyond",
        ),
        (
            RepVggConfig::new(vec![1, 1], vec![1e30, 1.0]),
            "channels is beyond",
        ),
        (
            RepVggConfig::new(vec![1, 1], vec![f64::NAN, 1.0]),
            "must be positive",
        ),
        (base().with_num_classes(usize::MAX), "classes are beyond"),
        (
            RepVggConfig::new(vec![1024; 4], vec![64.0; 4]),
            "parameters are beyond",
        ),
    ];
    for (config, expected) in cases {
        let err = config.validate().expect_err(expected).to_string();
        assert!(
            err.contains(expected),
            "`{err}` should mention `{expected}`"
        );
    }
}
