//! The training objective (mixup, custom L2) and the accuracy counts, against values computed
//! by hand.

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use repvgg_data::{ImageBatch, MixedTargets};
use repvgg_model::{PlusLayout, PlusOutput, RepVggConfig, RepVggPlus, Weights};
use repvgg_testing::test_device;
use repvgg_train::classifier::{Classifier, Objective, custom_l2};

fn tiny_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2], vec![0.125, 0.125]).with_num_classes(4)
}

#[test]
fn custom_l2_matches_the_reference_formula() {
    let device = test_device();
    let config = tiny_config();
    let mut weights = Weights::from_module(&config.init(&device)).unwrap();
    // Non-trivial BN scales, so that the equivalent-kernel term is weighted.
    let names: Vec<String> = weights.names().map(str::to_string).collect();
    for (i, name) in names.iter().enumerate() {
        if name.ends_with(".gamma") || name.ends_with(".running_var") {
            let shape = weights.get(name).unwrap().shape().to_vec();
            let count: usize = shape.iter().product();
            let values: Vec<f32> = (0..count)
                .map(|j| 0.5 + ((i * 7 + j * 3) % 11) as f32 / 10.0)
                .collect();
            weights.insert(name.clone(), TensorData::new(values, shape));
        }
    }
    let net = weights.load_into(config.init(&device), "test").unwrap();

    let expected = reference_custom_l2(&config, &weights);
    let actual = f64::from(custom_l2(&net).into_scalar::<f32>());
    assert!(
        (actual - expected).abs() <= 1e-4 * expected.abs(),
        "{actual} vs {expected}"
    );
}

/// The reference's custom L2, summed in f64 over the named weights.
fn reference_custom_l2(config: &RepVggConfig, weights: &Weights) -> f64 {
    let mut expected = 0f64;
    for spec in config.block_specs() {
        let value = |suffix: &str| -> Vec<f64> {
            let name = format!("{}.{suffix}", spec.path);
            weights
                .get(&name)
                .unwrap()
                .iter::<f32>()
                .map(f64::from)
                .collect()
        };
        let scale = |branch: &str| -> Vec<f64> {
            let gamma = value(&format!("{branch}.bn.gamma"));
            let var = value(&format!("{branch}.bn.running_var"));
            gamma
                .iter()
                .zip(&var)
                .map(|(g, v)| g / (v + config.bn_epsilon).sqrt())
                .collect()
        };
        let (k3, k1) = (value("rbr_dense.conv.weight"), value("rbr_1x1.conv.weight"));
        let (t3, t1) = (scale("rbr_dense"), scale("rbr_1x1"));
        let per_out = k1.len() / spec.out_channels;
        for (index, k) in k1.iter().enumerate() {
            let out = index / per_out;
            let centre = k3[index * 9 + 4];
            let equivalent = centre * t3[out] + k * t1[out];
            expected += equivalent.powi(2) / (t3[out].powi(2) + t1[out].powi(2));
            expected -= centre.powi(2);
        }
        expected += k3.iter().map(|k| k * k).sum::<f64>();
    }
    expected
}

#[test]
fn the_mixup_loss_weighs_both_targets() {
    let device = test_device();
    let net = tiny_config().init(&device);
    let plain = Classifier::new(net.clone(), Objective::default());
    let images = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
    let reversed = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 2, 1, 0], [4]), &device);
    let logits = net.forward(images.clone());
    let batch = |targets: Tensor<1, Int>, mixup| ImageBatch {
        images: images.clone(),
        targets,
        mixup,
    };
    let output = PlusOutput {
        main: logits,
        aux: Vec::new(),
    };
    let loss_a = plain.loss(&output, &batch(targets.clone(), None));
    let loss_b = plain.loss(&output, &batch(reversed.clone(), None));
    let mixed = plain.loss(
        &output,
        &batch(
            targets,
            Some(MixedTargets {
                targets: reversed,
                lambda: 0.3,
            }),
        ),
    );
    let expected = loss_a.into_scalar::<f32>() * 0.3 + loss_b.into_scalar::<f32>() * 0.7;
    assert!((mixed.into_scalar::<f32>() - expected).abs() < 1e-5);
}

/// Smoothed cross-entropy of one row of logits, by its definition: the targets are
/// `(1 - smoothing)` on the class plus `smoothing / classes` everywhere.
fn smoothed_cross_entropy(logits: &[f32], target: usize, smoothing: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let log_sum = logits.iter().map(|z| (z - max).exp()).sum::<f32>().ln() + max;
    let classes = logits.len() as f32;
    logits
        .iter()
        .enumerate()
        .map(|(c, z)| {
            let q = smoothing / classes + if c == target { 1.0 - smoothing } else { 0.0 };
            -q * (z - log_sum)
        })
        .sum()
}

#[test]
fn repvggplus_adds_a_tenth_of_each_auxiliary_loss_with_the_same_mixup_and_smoothing() {
    let device = test_device();
    let config = RepVggConfig::new(vec![1, 1, 2, 1], vec![0.125; 4])
        .with_se_reduction(4)
        .with_num_classes(3)
        .with_plus(Some(PlusLayout::new()));
    let classifier = Classifier::new(
        RepVggPlus::new(&config, &device),
        Objective {
            label_smoothing: 0.1,
            custom_l2: None,
        },
    );
    let rows: [[f32; 3]; 8] = [
        [1.0, -0.5, 0.25],
        [0.0, 2.0, -1.0],
        [0.5, 0.5, 3.0],
        [-2.0, 1.0, 0.0],
        [1.5, 0.0, -0.5],
        [0.25, -1.0, 2.0],
        [3.0, 1.0, 1.0],
        [-0.5, -0.5, 0.5],
    ];
    let logits = |pair: usize| {
        let values: Vec<f32> = rows[2 * pair..2 * pair + 2].concat();
        Tensor::<2>::from_data(TensorData::new(values, [2, 3]), &device)
    };
    let output = PlusOutput {
        main: logits(0),
        aux: vec![logits(1), logits(2), logits(3)],
    };
    let (targets, mixed_with, lambda) = ([2usize, 0], [1usize, 1], 0.7f32);
    let batch = ImageBatch {
        images: Tensor::zeros([2, 3, 32, 32], &device),
        targets: Tensor::from_data(TensorData::new(vec![2i64, 0], [2]), &device),
        mixup: Some(MixedTargets {
            targets: Tensor::from_data(TensorData::new(vec![1i64, 1], [2]), &device),
            lambda,
        }),
    };
    // Each head: the batch mean of lambda * CE(target) + (1 - lambda) * CE(mixed target).
    let head_loss = |pair: usize| -> f32 {
        (0..2)
            .map(|i| {
                let row = &rows[2 * pair + i];
                lambda * smoothed_cross_entropy(row, targets[i], 0.1)
                    + (1.0 - lambda) * smoothed_cross_entropy(row, mixed_with[i], 0.1)
            })
            .sum::<f32>()
            / 2.0
    };
    let expected = head_loss(0) + 0.1 * (head_loss(1) + head_loss(2) + head_loss(3));
    let actual = classifier.loss(&output, &batch).into_scalar::<f32>();
    assert!((actual - expected).abs() < 1e-5, "{actual} vs {expected}");
    // The network gives the training step three auxiliary outputs to weigh in.
    let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
    assert_eq!(classifier.net.forward_with_aux(images).aux.len(), 3);
}
