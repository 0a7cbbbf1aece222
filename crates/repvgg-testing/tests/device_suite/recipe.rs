//! The recipe: which parameters decay (on real module paths), the learning-rate schedule and
//! its resumption.

use std::collections::BTreeMap;

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::{Distribution, Tensor};
use repvgg_model::{RepVggArch, RepVggConfig, RepVggPlus, Weights, tensor_infos};
use repvgg_testing::test_device;
use repvgg_train::RecipeConfig;
use repvgg_train::recipe::{DecayRule, WarmupCosine, scaled_lr, sgd};

#[test]
fn only_conv_and_linear_weights_decay() {
    let device = test_device();
    let model = RepVggArch::D2se.config().init(&device);
    for custom_l2 in [false, true] {
        let rule = DecayRule {
            custom_l2,
            identity_bn: false,
        };
        let group = rule.no_decay_group();
        let mut decayed = 0;
        for info in tensor_infos(&model).iter().filter(|t| t.is_trainable()) {
            let branch_kernel = info.path.ends_with("rbr_dense.conv.weight")
                || info.path.ends_with("rbr_1x1.conv.weight");
            let expected = (branch_kernel && !custom_l2)
                || info.path.ends_with(".se.down.weight")
                || info.path.ends_with(".se.up.weight")
                || info.path == "linear.weight";
            assert_eq!(rule.decays(&info.path), expected, "{}", info.path);
            assert_eq!(
                group.matches(&ParamId::new(), Some(&info.path)),
                !expected,
                "{}",
                info.path
            );
            decayed += usize::from(expected);
        }
        // D2se: 48 blocks with two branch convs and two SE convs each, plus the head; with the
        // custom L2 the branch convs are regularised by the loss instead.
        let branch_convs = if custom_l2 { 0 } else { 2 };
        assert_eq!(decayed, 48 * (branch_convs + 2) + 1);
        assert!(!rule.decays("stage1.1.rbr_identity.gamma"));
        assert!(!rule.decays("stage1.1.rbr_dense.bn.beta"));
        assert!(!rule.decays("stage0.se.up.bias"));
    }
}

#[test]
fn repvggplus_decays_weights_of_more_than_one_dimension_and_identity_bn_weights() {
    let device = test_device();
    let config = RepVggArch::L2pse.config();
    let rule = DecayRule::of(&RecipeConfig::new(), &config);
    assert!(rule.identity_bn && !rule.custom_l2);
    let group = rule.no_decay_group();
    let mut decayed = 0;
    for info in tensor_infos(&RepVggPlus::new(&config, &device))
        .iter()
        .filter(|t| t.is_trainable())
    {
        // The reference's rule: `ndim > 1` (convs, SE, aux heads, linears) and
        // `rbr_identity.weight`; no other BN weight, no bias.
        let expected = info.shape.len() > 1 || info.path.ends_with("rbr_identity.gamma");
        assert_eq!(rule.decays(&info.path), expected, "{}", info.path);
        assert_eq!(
            group.matches(&ParamId::new(), Some(&info.path)),
            !expected,
            "{}",
            info.path
        );
        decayed += usize::from(expected);
    }
    // 48 blocks x (two branch convs + two SE convs), 43 identity BNs, the linear head, and
    // three auxiliary heads with a conv and a linear each.
    assert_eq!(decayed, 48 * 4 + 43 + 1 + 3 * 2);
}

#[test]
fn the_optimizer_decays_exactly_those_parameters() {
    let device = test_device().autodiff();
    let config = RepVggConfig::new(vec![1, 2], vec![0.125, 0.125])
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(3)
        .with_grouped_layers(BTreeMap::from([(2, 2)]));
    for custom_l2 in [false, true] {
        // Weights loaded explicitly: on wgpu, the values read from a freshly initialised
        // (lazy) parameter are not the ones its first forward pass uses.
        let before = Weights::from_module(&config.init(&device)).unwrap();
        let model = before
            .load_into(config.init(&device), "the test network")
            .unwrap();
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
        // A zero loss: the gradients vanish and only weight decay moves the weights.
        let loss = model.forward(images).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let recipe = RecipeConfig::new()
            .with_weight_decay(0.5)
            .with_custom_l2(custom_l2);
        let rule = DecayRule::of(&recipe, &config);
        let mut optimizer = sgd(&recipe, rule);
        let model = optimizer.step(1.0, model, grads);
        let after = Weights::from_module(&model).unwrap();
        for (path, old) in before.iter() {
            if path.ends_with("running_mean") || path.ends_with("running_var") {
                continue;
            }
            let new = after.get(path).unwrap();
            let factor = if rule.decays(path) { 0.5 } else { 1.0 };
            for (o, n) in old.iter::<f32>().zip(new.iter::<f32>()) {
                assert!(
                    (n - o * factor).abs() <= 1e-6 * o.abs().max(1.0),
                    "{path}: {o} -> {n}"
                );
            }
        }
    }
}

#[test]
fn learning_rate_scales_with_the_batch() {
    assert_eq!(scaled_lr(0.1, 256), 0.1);
    assert!((scaled_lr(0.1, 512) - 0.2).abs() < 1e-12);
    assert!((scaled_lr(0.1, 64) - 0.025).abs() < 1e-12);
}

#[test]
fn cosine_schedule_values_at_known_steps() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let plain = WarmupCosine::new(0.1, 0, 1000);
    assert!(close(plain.lr_at(0), 0.1));
    assert!(close(
        plain.lr_at(250),
        0.05 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)
    ));
    assert!(close(plain.lr_at(500), 0.05));
    assert!(plain.lr_at(999) < 1e-6 && plain.lr_at(999) > 0.0);
    assert!(close(plain.lr_at(1000), 0.0));

    let warm = WarmupCosine::new(0.1, 100, 1100);
    assert!(close(warm.lr_at(0), 0.001));
    assert!(close(warm.lr_at(49), 0.05));
    assert!(close(warm.lr_at(99), 0.1));
    assert!(close(warm.lr_at(100), 0.1));
    assert!(close(warm.lr_at(600), 0.05));
}

#[test]
fn resuming_continues_the_same_curve() {
    let mut uninterrupted = WarmupCosine::new(0.2, 30, 500);
    let curve: Vec<f64> = (0..500).map(|_| uninterrupted.step()).collect();

    let mut first = WarmupCosine::new(0.2, 30, 500);
    let before: Vec<f64> = (0..123).map(|_| first.step()).collect();
    let record = first.to_record();
    let mut resumed = WarmupCosine::new(0.2, 30, 500);
    resumed.load_record(record);
    assert_eq!(resumed.step, 123);
    let after: Vec<f64> = (0..377).map(|_| resumed.step()).collect();
    assert_eq!([before, after].concat(), curve);
}
