//! The CPU engine computes what the generic deploy network computes: presets, grouped layers,
//! squeeze-excitation, odd input sizes (partial Winograd tiles), one image and several, with
//! every stride-1 algorithm, in f32 and (within its tolerance) in bf16.

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_cpu::{ConvAlgorithm, CpuEngine, CpuOptions, CpuPrecision, WinogradTile};
use repvgg_model::logit_difference;
use repvgg_model::{RepVggArch, RepVggConfig};

/// Every stride-1 algorithm the path can be asked for.
const ALGORITHMS: [ConvAlgorithm; 4] = [
    ConvAlgorithm::Auto,
    ConvAlgorithm::Winograd(WinogradTile::F2x2),
    ConvAlgorithm::Winograd(WinogradTile::F4x4),
    ConvAlgorithm::Im2col,
];

/// The largest relative logit difference bf16 may make on these random-weight networks (the
/// measured worst case is 8e-4, Winograd F(4x4) on the odd-channel network).
const BF16_TOLERANCE: f32 = 5e-3;

fn assert_agrees(config: &RepVggConfig, batch: usize, height: usize, width: usize) {
    assert_agrees_with(config, [batch, height, width], CpuOptions::default(), 1e-4);
}

fn assert_agrees_with(
    config: &RepVggConfig,
    [batch, height, width]: [usize; 3],
    options: CpuOptions,
    tolerance: f32,
) {
    let device = Device::flex();
    let model = config.init_deploy(&device);
    let fast = CpuEngine::with_options(&model, options).expect("options this CPU runs");
    let images = Tensor::<4>::random(
        [batch, 3, height, width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let expected = model.forward(images.clone()).into_data();
    let actual = fast.forward(images).into_data();
    assert_eq!(actual.shape(), expected.shape());
    let difference = logit_difference(&actual, &expected);
    eprintln!("{options:?} batch {batch}, {height}x{width}: {difference:?}");
    assert!(
        difference.relative <= tolerance,
        "{options:?} batch {batch}, {height}x{width}: {difference:?}"
    );
}

/// The shapes every algorithm and precision is checked on: A0 at one image and several
/// (partial tiles of either size; at 320x320 the Winograd layers run an image at a time), a
/// grouped network and one with squeeze-excitation.
fn check_every_shape(options: CpuOptions, tolerance: f32) {
    let grouped = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.25])
        .with_grouped_layers(BTreeMap::from([(2, 4), (4, 2), (6, 4)]))
        .with_num_classes(7);
    let excited = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.5])
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(5);
    // Odd channel counts: bf16 pads each group's depth to a pair.
    let odd = RepVggConfig::new(vec![1, 2, 1], vec![0.3, 0.3, 0.3]).with_num_classes(3);
    let a0 = RepVggArch::A0.config();
    for (config, size) in [
        (&a0, [1, 57, 71]),
        (&a0, [2, 64, 64]),
        (&a0, [2, 320, 320]),
        (&grouped, [2, 33, 47]),
        (&excited, [1, 33, 35]),
        (&odd, [2, 29, 30]),
    ] {
        assert_agrees_with(config, size, options, tolerance);
    }
}

#[test]
fn every_algorithm_agrees_in_f32() {
    for algorithm in ALGORITHMS {
        check_every_shape(CpuOptions::default().with_algorithm(algorithm), 1e-4);
    }
}

#[test]
fn bf16_agrees_within_its_tolerance_or_is_refused() {
    let device = Device::flex();
    let options = CpuOptions::default().with_precision(CpuPrecision::Bf16);
    if !CpuPrecision::Bf16.is_supported() {
        let model = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init_deploy(&device);
        let err = CpuEngine::with_options(&model, options).expect_err("no AVX512_BF16");
        assert!(err.to_string().contains("AVX512_BF16"), "{err}");
        return;
    }
    for algorithm in ALGORITHMS {
        check_every_shape(options.with_algorithm(algorithm), BF16_TOLERANCE);
    }
}

#[test]
fn prepared_sizes_follow_the_algorithm() {
    // Each form is prepared when a call first takes it: F(4x4) holds 36 transformed positions
    // per kernel, F(2x2) 16, im2col the 9 taps; bf16 half as many bytes.
    let device = Device::flex();
    let model = RepVggArch::A0.config().init_deploy(&device);
    let images = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
    let bytes = |options: CpuOptions| {
        let cpu = CpuEngine::with_options(&model, options).ok()?;
        let before = cpu.prepared_bytes();
        cpu.forward(images.clone());
        Some((before, cpu.prepared_bytes()))
    };
    let with = |algorithm| CpuOptions::default().with_algorithm(algorithm);
    let (unprepared, im2col) = bytes(with(ConvAlgorithm::Im2col)).expect("f32");
    let (_, f4) = bytes(with(ConvAlgorithm::Winograd(WinogradTile::F4x4))).expect("f32");
    let (_, f2) = bytes(with(ConvAlgorithm::Winograd(WinogradTile::F2x2))).expect("f32");
    // A0's deploy weights are 8.3M values, held as the model holds them until prepared.
    assert!(
        (33_000_000..34_000_000).contains(&unprepared),
        "{unprepared}"
    );
    assert!(
        unprepared < im2col && im2col < f2 && f2 < f4,
        "{im2col} {f2} {f4}"
    );
    let bf16 = CpuOptions::default().with_precision(CpuPrecision::Bf16);
    if let Some((_, bf16_f2)) =
        bytes(bf16.with_algorithm(ConvAlgorithm::Winograd(WinogradTile::F2x2)))
    {
        assert!(
            bf16_f2 - unprepared < (f2 - unprepared) * 55 / 100,
            "{bf16_f2} vs {f2}"
        );
    }
}

#[test]
fn a0_agrees_at_batch_one_and_several() {
    let config = RepVggArch::A0.config();
    assert_agrees(&config, 1, 64, 64);
    assert_agrees(&config, 3, 64, 96);
    // Sizes whose stride-1 layers end in partial 4x4 tiles (and a 1x1 last stage).
    assert_agrees(&config, 2, 57, 71);
    assert_agrees(&config, 1, 18, 30);
}

#[test]
fn features_agree() {
    // A three-stage custom network and A0: every stage's map, shape and values.
    let device = Device::flex();
    let custom = RepVggConfig::new(vec![2, 1, 2], vec![0.25, 0.5, 0.25]).with_num_classes(3);
    for (config, batch, height, width) in
        [(custom, 2, 37, 50), (RepVggArch::A0.config(), 1, 64, 48)]
    {
        let generic = config.init_deploy(&device);
        let model = CpuEngine::new(&generic);
        let images = Tensor::<4>::random(
            [batch, 3, height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let expected = generic.forward_features(images.clone());
        let actual = model.forward_features(images);
        assert_eq!(actual.len(), expected.len());
        for (stage, (actual, expected)) in actual.into_iter().zip(expected).enumerate() {
            assert_eq!(actual.dims(), expected.dims(), "stage {stage}");
            let difference = logit_difference(&actual.into_data(), &expected.into_data());
            assert!(difference.relative <= 1e-4, "stage {stage}: {difference:?}");
        }
    }
}

#[test]
fn presets_agree() {
    for arch in [RepVggArch::A1, RepVggArch::B0, RepVggArch::B1g2] {
        let config = arch.config();
        let device = Device::flex();
        let model = config.init_deploy(&device);
        let fast = CpuEngine::new(&model);
        let images = Tensor::<4>::random([2, 3, 48, 40], Distribution::Normal(0.0, 1.0), &device);
        let difference = logit_difference(
            &fast.forward(images.clone()).into_data(),
            &model.forward(images).into_data(),
        );
        assert!(difference.relative <= 1e-4, "{arch}: {difference:?}");
    }
}

#[test]
fn grouped_layers_agree_at_odd_sizes() {
    // B1g4's pattern on a narrow network: 2- and 4-group convolutions between dense ones.
    let config = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.25])
        .with_grouped_layers(BTreeMap::from([(2, 4), (4, 2), (6, 4)]))
        .with_num_classes(7);
    assert_agrees(&config, 2, 33, 47);
    assert_agrees(&config, 1, 45, 32);
}

#[test]
fn squeeze_excitation_agrees() {
    let config = RepVggConfig::new(vec![2, 2, 2, 1], vec![0.25, 0.25, 0.25, 0.5])
        .with_use_se(true)
        .with_se_reduction(4)
        .with_num_classes(5);
    assert_agrees(&config, 2, 40, 40);
    assert_agrees(&config, 1, 33, 35);
}

#[test]
fn b1g4_agrees() {
    assert_agrees(&RepVggArch::B1g4.config(), 1, 64, 64);
}

#[test]
#[should_panic(expected = "the model takes 3-channel images, got [N, C, H, W] = [1, 1, 32, 32]")]
fn wrong_channel_count_is_refused() {
    let device = Device::flex();
    let model =
        CpuEngine::new(&RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init_deploy(&device));
    model.forward(Tensor::<4>::zeros([1, 1, 32, 32], &device));
}

/// Calls from several threads at once, on one model and on several: each pass runs on the
/// thread pool, whose threads take up other calls' work while they wait inside a layer; every
/// call must still compute its own images' logits.
#[test]
fn concurrent_calls_agree() {
    let device = Device::flex();
    let config = RepVggArch::A0.config().with_num_classes(10);
    let generic = config.init_deploy(&device);
    let shared = CpuEngine::new(&generic);
    let images: Vec<Tensor<4>> = (0..4)
        .map(|_| Tensor::random([1, 3, 40, 48], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let expected: Vec<_> = images
        .iter()
        .map(|images| generic.forward(images.clone()).into_data())
        .collect();
    std::thread::scope(|scope| {
        for (images, expected) in images.iter().zip(&expected) {
            let (shared, generic) = (&shared, &generic);
            scope.spawn(move || {
                let own = CpuEngine::new(generic);
                for _ in 0..6 {
                    for model in [shared, &own] {
                        let actual = model.forward(images.clone()).into_data();
                        let difference = logit_difference(&actual, expected);
                        assert!(difference.relative <= 1e-4, "{difference:?}");
                    }
                }
            });
        }
    });
}
