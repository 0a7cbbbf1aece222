//! The training objective (mixup, custom L2) and the accuracy counts, against values computed
//! by hand.

#[path = "../../repvgg-model/tests/support/test_device.rs"]
mod test_device;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use repvgg_data::{ImageBatch, MixedTargets};
use repvgg_model::{RepVggConfig, Weights};
use repvgg_train::classifier::{Classifier, Objective, custom_l2};

use test_device::test_device;

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
    let loss_a = plain.loss(logits.clone(), &batch(targets.clone(), None));
    let loss_b = plain.loss(logits.clone(), &batch(reversed.clone(), None));
    let mixed = plain.loss(
        logits.clone(),
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
