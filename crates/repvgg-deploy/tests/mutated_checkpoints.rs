//! Bad checkpoints never crash the readers: valid small files of every format, truncated at
//! many offsets and with bytes flipped in their header and data, each give a `DeployError` (or,
//! where the damage missed everything that is read, a valid checkpoint), never a panic, through
//! reading, architecture resolution (detection included) and the conversion to deploy weights.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Device;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use repvgg_deploy::{ArchSource, ResolvedCheckpoint, write_checkpoint};
use repvgg_model::{RepVggConfig, Weights};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// How one valid file is damaged.
#[derive(Clone, Debug)]
enum Mutation {
    /// Keep the first `fraction` of the bytes.
    Truncate(f64),
    /// XOR bytes at these relative positions with these masks.
    Flip(Vec<(f64, u8)>),
    /// The same, within the first 4 KiB (headers, zip directories' starts, pickle opcodes).
    FlipHeader(Vec<(usize, u8)>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        prop::collection::vec((0.0..1.0f64, 1..=255u8), 1..8).prop_map(Mutation::Flip),
        prop::collection::vec((0..4096usize, 1..=255u8), 1..8).prop_map(Mutation::FlipHeader),
    ]
}

fn apply(bytes: &[u8], mutation: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match mutation {
        Mutation::Truncate(fraction) => out.truncate((bytes.len() as f64 * fraction) as usize),
        Mutation::Flip(flips) => {
            for (at, mask) in flips {
                let index = ((out.len() as f64 * at) as usize).min(out.len() - 1);
                out[index] ^= mask;
            }
        }
        Mutation::FlipHeader(flips) => {
            for (at, mask) in flips {
                let index = at % out.len();
                out[index] ^= mask;
            }
        }
    }
    out
}

/// Reads and converts `cases` damaged copies of `source`, its architecture from `arch`; returns
/// how many were tried and how many panicked.
fn mutate(source: &Path, arch: &ArchSource, cases: u32) -> (usize, usize) {
    let device = Device::flex();
    let convert = |file: &Path| {
        ResolvedCheckpoint::read(file, arch)
            .and_then(|resolved| resolved.deploy_weights(&device).map(drop))
    };
    // The undamaged file converts: the mutations start from valid input.
    convert(source).unwrap();
    let bytes = std::fs::read(source).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join(format!(
        "mutated.{}",
        source.extension().unwrap().to_str().unwrap()
    ));
    let (tried, panics) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&mutation(), |mutation| {
        std::fs::write(&file, apply(&bytes, &mutation)).unwrap();
        tried.fetch_add(1, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| convert(&file)));
        if outcome.is_err() {
            panics.fetch_add(1, Ordering::Relaxed);
        }
        prop_assert!(outcome.is_ok(), "{mutation:?} made the reader panic");
        Ok(())
    });
    let counts = (tried.into_inner(), panics.into_inner());
    if let Err(err) = result {
        panic!("{}: {err}", source.display());
    }
    counts
}

#[test]
fn damaged_checkpoints_give_errors_not_panics() {
    let scratch = tempfile::tempdir().unwrap();
    let config = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(3);
    let weights = Weights::from_module(&config.init(&Device::flex())).unwrap();
    let burnpack = scratch.path().join("small.bpk");
    write_checkpoint(
        &weights,
        &config,
        Some(&["a".into(), "b".into(), "c".into()]),
        &burnpack,
    )
    .unwrap();
    let narrow = ArchSource::ConfigFile(fixture("narrow.json"));
    let sources = [
        (fixture("narrow_train.pth"), narrow.clone()),
        (fixture("narrow_train_wrapped.pth"), narrow.clone()),
        (fixture("narrow_deploy.pth"), narrow),
        (
            fixture("timm_train.safetensors"),
            ArchSource::ConfigFile(fixture("timm.json")),
        ),
        (
            fixture("timm_deploy.safetensors"),
            ArchSource::ConfigFile(fixture("timm.json")),
        ),
        (burnpack, ArchSource::Auto),
    ];
    let mut total = (0, 0);
    for (source, arch) in &sources {
        let (tried, panics) = mutate(source, arch, 400);
        eprintln!(
            "{}: {tried} mutated inputs, {panics} panics",
            source.display()
        );
        total = (total.0 + tried, total.1 + panics);
    }
    eprintln!("{} mutated inputs, {} panics", total.0, total.1);
    assert_eq!(total.1, 0);
}
