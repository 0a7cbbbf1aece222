//! A run directory damaged on disk: its `training.json` and each of its checkpoint files,
//! damaged byte by byte and (checkpoints) structurally as the readers' mutation test damages
//! them, make `resume` return an error (or resume, where the damage missed what is read), never
//! panic; a checkpoint with NaN weights or weights that do not fit is never resumed from.
//! (`repvgg train --resume` on them: the CLI's tests.)

use std::cell::RefCell;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::tensor::{Bytes, Device};
use burn_store::burn_pack;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_testing::mutation::{self, Format, Mutation, apply, byte_damage};
use repvgg_testing::{copy_dir, small_network};
use repvgg_train::{AugmentationConfig, LoaderConfig, RecipeConfig, TrainingConfig, resume, train};

/// What the damaged copies of one file did.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    refused: usize,
    panics: usize,
}

/// Resumes `cases` copies of the finished run `run` with `file` (relative to it) damaged by
/// `damage`; damage that must fail must be refused.
fn mutate(
    run: &Path,
    data: &Path,
    file: &str,
    damage: BoxedStrategy<Mutation>,
    cases: u32,
) -> Tally {
    let bytes = fs::read(run.join(file)).unwrap();
    let copy = run.with_file_name("damaged");
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&damage, |mutation| {
        let _ = fs::remove_dir_all(&copy);
        copy_dir(run, &copy);
        fs::write(copy.join(file), apply(&bytes, Format::Burnpack, &mutation)).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| resume(&copy, data, &[Device::flex()])));
        let mut tally = tally.borrow_mut();
        tally.tried += 1;
        let Ok(outcome) = outcome else {
            tally.panics += 1;
            return Err(TestCaseError::fail(format!(
                "{file}: {mutation:?} panicked"
            )));
        };
        tally.refused += usize::from(outcome.is_err());
        match outcome {
            Ok(_) if mutation.must_fail() => Err(TestCaseError::fail(format!(
                "{file}: resumed from {mutation:?}"
            ))),
            _ => Ok(()),
        }
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    tally.into_inner()
}

#[test]
fn damaged_run_directories_are_refused_not_panicked_on() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, run) = (scratch.path().join("data"), scratch.path().join("run"));
    write_synthetic_set(&data, 1, 2, 5).unwrap();
    let config = TrainingConfig::new(small_network(SYNTHETIC_CLASSES.len()))
        .with_recipe(
            RecipeConfig::new()
                .with_epochs(1)
                .with_batch_size(16)
                .with_ema_decay(Some(0.9)),
        )
        .with_augmentation(AugmentationConfig::new().with_image_size(32))
        .with_loader(LoaderConfig::new().with_workers(Some(2)));
    train(&config, &data, &[Device::flex()], &run).unwrap();

    let structural = || mutation::mutation(Format::Burnpack);
    let files = [
        ("training.json", byte_damage(), 60),
        ("checkpoint/model-1.bpk", structural(), 80),
        ("checkpoint/ema-1.bpk", structural(), 40),
        ("checkpoint/optim-1.bpk", byte_damage(), 40),
        ("checkpoint/scheduler-1.bpk", byte_damage(), 40),
    ];
    let mut total = Tally::default();
    for (file, damage, cases) in files {
        let tally = mutate(&run, &data, file, damage, cases);
        eprintln!(
            "resume with a damaged {file}: {} mutated inputs, {} refused, {} panics",
            tally.tried, tally.refused, tally.panics
        );
        total.tried += tally.tried;
        total.refused += tally.refused;
        total.panics += tally.panics;
    }
    eprintln!(
        "resume: {} mutated inputs, {} refused, {} panics",
        total.tried, total.refused, total.panics
    );
    assert_eq!(total.panics, 0);

    // Optimizer state that parses but does not fit the network, which Burn's optimizer panics
    // on (random damage found the first): a state without its parameter id, and one of another
    // shape than its parameter.
    let optim = fs::read(run.join("checkpoint/optim-1.bpk")).unwrap();
    let damaged = [
        with_first_state_changed(&optim, |_, id, _| *id = None),
        with_first_state_changed(&optim, |shape, _, bytes| {
            let slice = bytes.len() / shape[0];
            shape[0] -= 1;
            bytes.truncate(bytes.len() - slice);
        }),
    ];
    for (bytes, problem) in damaged.iter().zip(["has no parameter id", "has shape"]) {
        let copy = run.with_file_name("bad-optimizer");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(&run, &copy);
        fs::write(copy.join("checkpoint/optim-1.bpk"), bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| resume(&copy, &data, &[Device::flex()])));
        let error = outcome.expect("no panic").unwrap_err().to_string();
        assert!(
            error.contains("optim-1.bpk") && error.contains(problem),
            "{error}"
        );
    }
}

/// The optimizer checkpoint `bytes` with its first state tensor's shape, parameter id and data
/// changed by `change`, everything else (metadata, scalars) kept.
fn with_first_state_changed(
    bytes: &[u8],
    change: impl FnOnce(&mut Vec<usize>, &mut Option<u64>, &mut Vec<u8>),
) -> Vec<u8> {
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).unwrap();
    let (metadata, scalars) = (reader.metadata().clone(), reader.scalars().clone());
    let mut tensors = reader.into_tensors().unwrap();
    let (name, dtype, shape, id, data) = tensors.remove(0).into_parts().unwrap();
    let (mut shape, mut id, mut data) = (shape.as_slice().to_vec(), id, data.to_vec());
    change(&mut shape, &mut id, &mut data);
    let data = Bytes::from_bytes_vec(data);
    tensors.insert(0, burn_pack::Tensor::new(name, dtype, shape, id, data));
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    for (key, value) in scalars {
        writer = writer.with_scalar(&key, value);
    }
    writer.into_bytes().unwrap().to_vec()
}
