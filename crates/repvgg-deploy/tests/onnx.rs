//! The exported ONNX graphs run in another engine (tract, a Rust ONNX runtime) and compute what
//! Burn computes: plain, grouped, SE and RepVGGplus networks, with and without the head and the stage
//! outputs, one file at several batch sizes and odd, non-square image sizes.

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use repvgg_deploy::DeployError;
use repvgg_deploy::onnx::{OnnxOptions, network_to_onnx, to_onnx};
use repvgg_model::{DeployNetwork, PlusLayout, RepVggConfig, Weights, logit_difference};

#[path = "common/tract.rs"]
mod tract;
use tract::run_tract;

/// Exports `net` with `options` and checks every output of the graph against Burn's forward on
/// batches of `(batch, height, width)`; returns the largest relative difference seen.
fn assert_agrees(
    net: &DeployNetwork,
    options: OnnxOptions,
    sizes: &[(usize, usize, usize)],
) -> f32 {
    let bytes = network_to_onnx(net, &options).unwrap();
    let mut largest = 0f32;
    for &(batch, height, width) in sizes {
        let images = Tensor::<4>::random(
            [batch, 3, height, width],
            Distribution::Normal(0.0, 1.0),
            &Device::flex(),
        );
        let mut expected = vec![net.forward(images.clone()).into_data()];
        if options.stage_outputs {
            expected.extend(
                net.forward_features(images.clone())
                    .into_iter()
                    .map(Tensor::into_data),
            );
        }
        let actual = run_tract(&bytes, &images.into_data());
        assert_eq!(actual.len(), expected.len(), "{options:?}");
        for (i, (actual, expected)) in actual.iter().zip(&expected).enumerate() {
            assert_eq!(actual.shape(), expected.shape(), "output {i}, {options:?}");
            let difference = logit_difference(actual, expected);
            assert!(
                difference.relative <= 1e-4,
                "output {i}, {options:?}, batch {batch} at {height}x{width}: {difference:?}"
            );
            largest = largest.max(difference.relative);
        }
    }
    largest
}

/// The test networks: three stages, a quarter of A0's widths.
fn narrow() -> RepVggConfig {
    RepVggConfig::new(vec![2, 2, 2], vec![0.25, 0.25, 0.25]).with_num_classes(10)
}

const SIZES: [(usize, usize, usize); 3] = [(1, 32, 32), (2, 37, 53), (3, 64, 40)];

const EVERY_OPTION: [OnnxOptions; 4] = [
    OnnxOptions {
        without_head: false,
        stage_outputs: false,
    },
    OnnxOptions {
        without_head: true,
        stage_outputs: false,
    },
    OnnxOptions {
        without_head: false,
        stage_outputs: true,
    },
    OnnxOptions {
        without_head: true,
        stage_outputs: true,
    },
];

#[test]
fn a_plain_network_agrees_with_and_without_head_and_stage_outputs() {
    agrees_with_every_option("plain", &narrow());
}

#[test]
fn grouped_and_se_networks_agree_with_and_without_head_and_stage_outputs() {
    let grouped = narrow().with_grouped_layers(BTreeMap::from([(2, 2), (4, 4), (6, 2)]));
    agrees_with_every_option("grouped", &grouped);
    let se = narrow().with_use_se(true).with_se_reduction(4);
    agrees_with_every_option("SE", &se);
}

#[test]
fn a_repvggplus_network_agrees_with_and_without_head_and_stage_outputs() {
    let plus = RepVggConfig::new(vec![1, 2, 4, 1], vec![0.25; 4])
        .with_se_reduction(4)
        .with_num_classes(10)
        .with_plus(Some(PlusLayout::new()));
    agrees_with_every_option("RepVGGplus", &plus);
}

/// [`assert_agrees`] for a random network of `config`, with and without its head and stage
/// outputs, at every test size.
fn agrees_with_every_option(name: &str, config: &RepVggConfig) {
    let device = Device::flex();
    let net = DeployNetwork::new(config, &device);
    for options in EVERY_OPTION {
        let net = match options.without_head {
            // Without the head, Burn's reference is the headless network's forward (pooled
            // features) on the same weights.
            true => headless(&net),
            false => net.clone(),
        };
        let difference = assert_agrees(&net, options, &SIZES);
        eprintln!("{name}, {options:?}: tract vs Burn, max relative difference {difference:.1e}");
    }
}

/// `net` without its classifier, its other weights unchanged.
fn headless(net: &DeployNetwork) -> DeployNetwork {
    let config = net.config().clone().with_num_classes(0);
    let mut weights = Weights::default();
    for (name, data) in net.weights().unwrap().iter() {
        if !name.starts_with("linear.") {
            weights.insert(name, data.clone());
        }
    }
    DeployNetwork::load(&weights, &config, &Device::flex(), "the headless network").unwrap()
}

#[test]
fn weights_that_do_not_fit_the_graph_are_errors_naming_the_tensor() {
    let config = narrow();
    let net = config.init_deploy(&Device::flex());
    let weights = Weights::from_module(&net).unwrap();

    let mut missing = Weights::default();
    for (name, data) in weights
        .iter()
        .filter(|(name, _)| *name != "stage2.1.rbr_reparam.bias")
    {
        missing.insert(name, data.clone());
    }
    let err = to_onnx(&missing, &config, &OnnxOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("stage2.1.rbr_reparam.bias"),
        "{err}"
    );

    let mut misshapen = weights.clone();
    misshapen.insert("linear.bias", TensorData::new(vec![0f32; 7], [7]));
    let err = to_onnx(&misshapen, &config, &OnnxOptions::default()).unwrap_err();
    assert!(
        matches!(&err, DeployError::TensorShape { name, .. } if name == "linear.bias"),
        "{err}"
    );
}
