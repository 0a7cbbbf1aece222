//! Which checkpoint a run resumes from. burn-train writes `model-`, `optim-` and
//! `scheduler-<epoch>.bpk` after every epoch through burnpack's writer, which writes a scratch
//! file beside the final name, flushes it and renames it into place: a failed write (full or
//! read-only disk) or a killed process leaves the previous checkpoints as they were. What can
//! still be wrong is a file damaged after it was written, or a set left incomplete; so before a
//! run resumes, the newest checkpoint is read back in full and fitted to the network, falling back
//! to the one before when it does not.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::tensor::{DType, Device, Tensor};
use burn_store::burn_pack;

use repvgg_model::{RepVgg, RepVggPlus, Weights};

use crate::classifier::{Classifier, Objective, TrainableNetwork};
use crate::config::{Precision, TrainingConfig};
use crate::error::TrainError;

/// The parts of a checkpoint burn-train writes every epoch, as `<part>-<epoch>.bpk`.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// The EMA's checkpoint, written beside burn-train's when the recipe keeps one.
const AVERAGE_PART: &str = "ema";

/// The path of `part`'s checkpoint after `epoch` in `dir`.
pub fn checkpoint_path(dir: &Path, part: &str, epoch: usize) -> PathBuf {
    dir.join(format!("{part}-{epoch}.bpk"))
}

/// The epochs with a complete set of checkpoint files (model, optimizer and scheduler) in
/// `dir`, newest first. Files are not opened here; [`crate::resume`] reads them back.
pub fn complete_checkpoints(dir: &Path) -> Result<Vec<usize>, TrainError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let epoch_of = |name: &str| {
        name.strip_prefix("model-")?
            .strip_suffix(".bpk")?
            .parse::<usize>()
            .ok()
    };
    let mut epochs = Vec::new();
    for entry in fs::read_dir(dir).map_err(TrainError::io(dir))? {
        let name = entry.map_err(TrainError::io(dir))?.file_name();
        if let Some(epoch) = name.to_str().and_then(epoch_of) {
            let complete = PARTS
                .iter()
                .all(|part| checkpoint_path(dir, part, epoch).is_file());
            if complete {
                epochs.push(epoch);
            }
        }
    }
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(epochs)
}

/// The last epoch with a complete set of checkpoint files in `dir`.
pub fn last_checkpoint(dir: &Path) -> Result<Option<usize>, TrainError> {
    Ok(complete_checkpoints(dir)?.first().copied())
}

/// A checkpoint passed over when a run resumed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusableCheckpoint {
    pub epoch: usize,
    pub reason: String,
}

/// Where a run resumes: the newest checkpoint (within the config's epochs) whose files all read
/// back and fit the network, and the newer ones passed over (each logged as a warning).
pub(crate) fn resume_point(
    output: &Path,
    config: &TrainingConfig,
) -> Result<(usize, Vec<UnusableCheckpoint>), TrainError> {
    let dir = output.join("checkpoint");
    let epochs = complete_checkpoints(&dir)?;
    let Some(&newest) = epochs.first() else {
        return Err(TrainError::NothingToResume {
            path: output.to_path_buf(),
        });
    };
    if newest > config.recipe.epochs {
        return Err(TrainError::CheckpointBeyondEnd {
            path: output.to_path_buf(),
            epoch: newest,
            epochs: config.recipe.epochs,
        });
    }
    let mut unusable = Vec::new();
    for epoch in epochs {
        let checked = match config.model.is_plus() {
            true => check_checkpoint::<RepVggPlus>(&dir, epoch, config),
            false => check_checkpoint::<RepVgg>(&dir, epoch, config),
        };
        match checked {
            Ok(()) => {
                if !unusable.is_empty() {
                    log::warn!("resuming from the checkpoint of epoch {epoch} instead");
                }
                return Ok((epoch, unusable));
            }
            Err(reason) => {
                log::warn!("the checkpoint of epoch {epoch} is unusable: {reason}");
                unusable.push(UnusableCheckpoint { epoch, reason });
            }
        }
    }
    Err(TrainError::NoUsableCheckpoint {
        path: dir,
        unusable,
    })
}

/// An error naming the first tensor of the burnpack file at `path` stored in another element
/// type than `expected` (any floating-point type when `None`). Burn loads a tensor of another
/// type into a parameter without a word, to panic at its first use.
fn check_element_types(path: &Path, expected: Option<DType>) -> Result<(), String> {
    let failed = |err: burn_pack::Error| format!("{}: {err}", path.display());
    let tensors = burn_pack::Reader::from_file(path)
        .and_then(|reader| reader.into_tensors())
        .map_err(failed)?;
    let fits = |dtype: DType| expected.map_or(dtype.is_float(), |expected| dtype == expected);
    match tensors.iter().find(|tensor| !fits(tensor.dtype)) {
        Some(tensor) => Err(format!(
            "{}: tensor `{}` is stored as {:?} where the run trains in {}",
            path.display(),
            tensor.name,
            tensor.dtype,
            expected.map_or("floating point".to_string(), |d| format!("{d:?}"))
        )),
        None => Ok(()),
    }
}

/// Reads every file of `epoch`'s checkpoint in full and applies the model's to the run's
/// network (of type `N`, the family the config describes).
fn check_checkpoint<N: TrainableNetwork>(
    dir: &Path,
    epoch: usize,
    config: &TrainingConfig,
) -> Result<(), String> {
    let template = Classifier::new(
        N::init(&config.model, &Device::flex()),
        Objective::of(&config.recipe),
    );
    let failed =
        |path: PathBuf| move |err: burn::store::RecordError| format!("{}: {err}", path.display());
    // The network's weights (and their average) are in the run's precision; the optimizer's
    // and scheduler's state in floats.
    let weights = match config.precision {
        Precision::F32 | Precision::Bf16Mixed => DType::F32,
        Precision::Bf16 => DType::BF16,
    };
    for part in PARTS.into_iter().chain([AVERAGE_PART]) {
        let path = checkpoint_path(dir, part, epoch);
        let expected = matches!(part, "model" | AVERAGE_PART).then_some(weights);
        if part != AVERAGE_PART || (config.recipe.ema_decay.is_some() && path.exists()) {
            check_element_types(&path, expected)?;
        }
    }
    let path = checkpoint_path(dir, "model", epoch);
    let record = ModuleRecord::load(&path).map_err(failed(path.clone()))?;
    let model = template
        .clone()
        .try_load_record(record)
        .map_err(failed(path.clone()))?;
    check_values(&model.net, &path)?;
    let path = checkpoint_path(dir, "optim", epoch);
    check_optimizer_state(&path, &model)?;
    OptimizerRecord::load(&path).map_err(failed(path))?;
    let path = checkpoint_path(dir, "scheduler", epoch);
    LrSchedulerRecord::load(&path).map_err(failed(path))?;
    let path = checkpoint_path(dir, AVERAGE_PART, epoch);
    if config.recipe.ema_decay.is_some() && path.exists() {
        let average = template
            .net
            .clone()
            .try_load_file(&path)
            .map_err(failed(path.clone()))?;
        check_values(&average, &path)?;
    }
    Ok(())
}

/// An error naming the first optimizer state tensor in the burnpack file at `path` that does not
/// fit `model`'s parameters: without a parameter id, for a parameter the network does not have,
/// or of another shape than its parameter. Burn's optimizer would panic on each, when loading
/// the record or at the next step.
fn check_optimizer_state<N: TrainableNetwork>(
    path: &Path,
    model: &Classifier<N>,
) -> Result<(), String> {
    let mut parameters = ParameterShapes::default();
    model.visit(&mut parameters);
    let tensors = burn_pack::Reader::from_file(path)
        .and_then(|reader| reader.into_tensors())
        .map_err(|err| format!("{}: {err}", path.display()))?;
    for tensor in tensors {
        let problem = match tensor.param_id.map(|id| parameters.0.get(&id)) {
            None => "has no parameter id".to_string(),
            Some(None) => "belongs to no parameter of the network".to_string(),
            Some(Some(shape)) if shape.as_slice() != tensor.shape.as_slice() => format!(
                "has shape {:?} where its parameter has {shape:?}",
                tensor.shape.as_slice()
            ),
            Some(Some(_)) => continue,
        };
        return Err(format!(
            "{}: optimizer state `{}` {problem}",
            path.display(),
            tensor.name
        ));
    }
    Ok(())
}

/// The shape of every float parameter of a module, by parameter id.
#[derive(Default)]
struct ParameterShapes(HashMap<u64, Vec<usize>>);

impl ModuleVisitor for ParameterShapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(param.id.val(), param.val().dims().to_vec());
    }
}

/// An error naming the first tensor of `net` (loaded from `path`) that holds NaN or infinity:
/// a run that diverged before its checkpoint is no place to continue from.
fn check_values<M: Module>(net: &M, path: &Path) -> Result<(), String> {
    let weights = Weights::from_module(net).map_err(|err| format!("{}: {err}", path.display()))?;
    match weights.first_non_finite() {
        Some(name) => Err(format!(
            "{}: tensor `{name}` holds NaN or infinite values (the run diverged?)",
            path.display()
        )),
        None => Ok(()),
    }
}
