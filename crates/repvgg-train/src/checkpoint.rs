//! Which checkpoint a run resumes from. burn-train writes `model-`, `optim-` and
//! `scheduler-<epoch>.bpk` after every epoch through burnpack's writer, which writes a scratch
//! file beside the final name, flushes it and renames it into place: a failed write (full or
//! read-only disk) or a killed process leaves the previous checkpoints as they were. What can
//! still be wrong is a file damaged after it was written, or a set left incomplete; so before a
//! run resumes, the newest checkpoint is read back in full and fitted to the network, falling back
//! to the one before when it does not.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::tensor::Device;

use crate::classifier::{Classifier, Objective};
use crate::config::TrainingConfig;
use crate::error::TrainError;

/// The parts of a checkpoint burn-train writes every epoch, as `<part>-<epoch>.bpk`.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// The weight average's checkpoint, written beside burn-train's when the recipe keeps one.
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
    let template = Classifier::new(
        config.model.init(&Device::flex()),
        Objective::of(&config.recipe),
    );
    let mut unusable = Vec::new();
    for epoch in epochs {
        match check_checkpoint(&dir, epoch, config, &template) {
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

/// Reads every file of `epoch`'s checkpoint in full and applies the model's to `template`.
fn check_checkpoint(
    dir: &Path,
    epoch: usize,
    config: &TrainingConfig,
    template: &Classifier,
) -> Result<(), String> {
    let failed =
        |path: PathBuf| move |err: burn::store::RecordError| format!("{}: {err}", path.display());
    let path = checkpoint_path(dir, "model", epoch);
    let record = ModuleRecord::load(&path).map_err(failed(path.clone()))?;
    template
        .clone()
        .try_load_record(record)
        .map_err(failed(path))?;
    let path = checkpoint_path(dir, "optim", epoch);
    OptimizerRecord::load(&path).map_err(failed(path))?;
    let path = checkpoint_path(dir, "scheduler", epoch);
    LrSchedulerRecord::load(&path).map_err(failed(path))?;
    let path = checkpoint_path(dir, AVERAGE_PART, epoch);
    if config.recipe.ema_decay.is_some() && path.exists() {
        template
            .net
            .clone()
            .try_load_file(&path)
            .map_err(failed(path))?;
    }
    Ok(())
}
