//! Bad checkpoints never crash the readers: valid small files of every format, damaged byte by
//! byte and structurally (`repvgg_testing::mutation`), each give a `DeployError` (or, where the damage
//! missed everything that is read, a valid checkpoint), never a panic, through reading,
//! architecture resolution (detection included) and the conversion to deploy weights. Damage no
//! reader may accept (missing, misnamed or misshapen tensors, NaN, lying headers) must be an
//! error; the same weights stored in f16, bf16 or f64 must load. The heap is measured around
//! every read: the largest allocation a damaged file caused is printed per format.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::tensor::{DType, Device};
use peak_alloc::PeakAlloc;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use repvgg_deploy::{ArchSource, DeployError, ResolvedCheckpoint, write_checkpoint};
use repvgg_model::{RepVggConfig, Weights};
use repvgg_testing::fixture;
use repvgg_testing::mutation::{Edit, Format, Mutation, apply};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The tests of this file run one at a time, so that the heap measured is one read's.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `file` as `arch` and converts it to deploy weights.
fn convert(file: &Path, arch: &ArchSource) -> Result<Weights, DeployError> {
    ResolvedCheckpoint::read(file, arch).and_then(|resolved| {
        resolved
            .deploy_weights(&Device::flex())
            .map(|w| w.into_owned())
    })
}

/// What the damaged copies of one file did.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    errors: usize,
    panics: usize,
    /// The most heap one read allocated beyond what was allocated before it.
    peak_bytes: usize,
}

/// Reads and converts `cases` damaged copies of `source` (its architecture from `arch`).
fn mutate(source: &Path, arch: &ArchSource, cases: u32) -> Tally {
    let format = Format::of(source).unwrap();
    let original = convert(source, arch).expect("the undamaged file converts");
    let bytes = std::fs::read(source).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join(format!(
        "mutated.{}",
        source.extension().unwrap().to_string_lossy()
    ));
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&repvgg_testing::mutation::mutation(format), |mutation| {
        std::fs::write(&file, apply(&bytes, format, &mutation)).unwrap();
        let mut tally = tally.borrow_mut();
        tally.tried += 1;
        HEAP.reset_peak_usage();
        let before = HEAP.current_usage();
        let outcome = catch_unwind(AssertUnwindSafe(|| convert(&file, arch)));
        tally.peak_bytes = tally.peak_bytes.max(HEAP.peak_usage() - before);
        let Ok(outcome) = outcome else {
            tally.panics += 1;
            return Err(TestCaseError::fail(format!(
                "{mutation:?} made the reader panic"
            )));
        };
        tally.errors += usize::from(outcome.is_err());
        check_outcome(&mutation, &original, outcome)
    });
    if let Err(err) = result {
        panic!("{}: {err}", source.display());
    }
    tally.into_inner()
}

/// What a reader must make of `mutation`, beyond not panicking.
fn check_outcome(
    mutation: &Mutation,
    original: &Weights,
    outcome: Result<Weights, DeployError>,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(_) if mutation.must_fail() => {
            Err(TestCaseError::fail(format!("{mutation:?} was accepted")))
        }
        Err(err) if mutation.must_load() => Err(TestCaseError::fail(format!(
            "{mutation:?} was refused: {err}"
        ))),
        Ok(weights) if mutation.must_load() => {
            let difference = largest_relative_difference(original, &weights);
            if difference > 1e-2 {
                return Err(TestCaseError::fail(format!(
                    "{mutation:?} changed the weights by {difference:.1e}"
                )));
            }
            Ok(())
        }
        Err(DeployError::Unreadable { source, .. })
            if matches!(mutation, Mutation::Edit(Edit::Poison(..))) =>
        {
            // The refusal names the tensor.
            match source.to_string().contains("tensor `") {
                true => Ok(()),
                false => Err(TestCaseError::fail(format!("{source}"))),
            }
        }
        _ => Ok(()),
    }
}

/// max |a - b| / max |a| over all tensors of two sets of weights with the same names.
fn largest_relative_difference(a: &Weights, b: &Weights) -> f32 {
    let (mut difference, mut largest) = (0f32, 0f32);
    for (name, data) in a.iter() {
        let other = b.get(name).unwrap_or_else(|| panic!("{name} missing"));
        for (x, y) in data.iter::<f32>().zip(other.iter::<f32>()) {
            difference = difference.max((x - y).abs());
            largest = largest.max(x.abs());
        }
    }
    difference / largest
}

#[test]
fn damaged_checkpoints_give_errors_not_panics() {
    let _alone = one_at_a_time();
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
    let timm = ArchSource::ConfigFile(fixture("timm.json"));
    let sources = [
        (fixture("narrow_train.pth"), narrow.clone()),
        (fixture("narrow_train_wrapped.pth"), narrow.clone()),
        (fixture("narrow_deploy.pth"), narrow),
        (fixture("timm_train.safetensors"), timm.clone()),
        (fixture("timm_deploy.safetensors"), timm),
        (burnpack, ArchSource::Auto),
    ];
    let mut total = Tally::default();
    for (source, arch) in &sources {
        let tally = mutate(source, arch, 500);
        let size = std::fs::metadata(source).unwrap().len();
        eprintln!(
            "{}: {} mutated inputs, {} errors, {} panics; largest heap growth while reading \
             one: {:.1} MiB (the file: {:.2} MiB)",
            source.file_name().unwrap().to_string_lossy(),
            tally.tried,
            tally.errors,
            tally.panics,
            tally.peak_bytes as f64 / (1 << 20) as f64,
            size as f64 / (1 << 20) as f64,
        );
        total.tried += tally.tried;
        total.errors += tally.errors;
        total.panics += tally.panics;
        total.peak_bytes = total.peak_bytes.max(tally.peak_bytes);
    }
    eprintln!(
        "{} mutated inputs, {} panics; largest heap growth {:.1} MiB",
        total.tried,
        total.panics,
        total.peak_bytes as f64 / (1 << 20) as f64
    );
    assert_eq!(total.panics, 0);
    // A lying header costs at most a few copies of the file, never what it declares.
    assert!(total.peak_bytes < 64 << 20, "{} bytes", total.peak_bytes);
}

#[test]
fn half_precision_and_double_checkpoints_load_as_f32() {
    let _alone = one_at_a_time();
    let timm = ArchSource::ConfigFile(fixture("timm.json"));
    let source = fixture("timm_train.safetensors");
    let original = convert(&source, &timm).unwrap();
    let bytes = std::fs::read(&source).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for dtype in [DType::F16, DType::BF16, DType::F64] {
        let file = scratch.path().join(format!("{dtype:?}.safetensors"));
        std::fs::write(
            &file,
            repvgg_testing::mutation::all_floats_as(&bytes, Format::Safetensors, dtype),
        )
        .unwrap();
        let weights = convert(&file, &timm).unwrap_or_else(|err| panic!("{dtype:?}: {err}"));
        let difference = largest_relative_difference(&original, &weights);
        let tolerance = match dtype {
            DType::F64 => 1e-6,
            _ => 1e-2,
        };
        assert!(difference <= tolerance, "{dtype:?}: {difference:.1e}");
    }
}
