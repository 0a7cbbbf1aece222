//! The metric logger that keeps a run's `metrics.csv` and `curves.svg` ([`crate::curves`]).
//!
//! burn-train hands every metric logger each batch's values and, at the end of a split, the
//! epoch's final ones, on its event store's thread. The learner is given this logger beside its
//! file logger (the per-iteration `.log` files, which its checkpoint strategy and summary read):
//! it keeps the final values of each split and, when the validation of an epoch ends, records
//! the epoch's row and redraws the picture. An epoch that does not reach its validation (an
//! interrupted run) writes no row; it had no checkpoint either, and is trained again on resume.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, MetricName, NumericEntry};

use crate::curves::{
    CURVES_FILE, EpochMetrics, METRICS_FILE, MetricsLog, RunCurves, SplitMetrics, plot_runs,
    run_name,
};

/// The names of the metrics the columns come from, as the learner registers them.
pub(crate) struct MetricNames {
    pub loss: MetricName,
    pub top1: MetricName,
    pub top5: MetricName,
    pub lr: MetricName,
    pub images_per_second: MetricName,
}

/// burn-train identifies a metric by its name.
struct MetricIds {
    loss: MetricId,
    top1: MetricId,
    top5: MetricId,
    lr: MetricId,
    images_per_second: MetricId,
}

impl From<MetricNames> for MetricIds {
    fn from(names: MetricNames) -> Self {
        Self {
            loss: MetricId::new(names.loss),
            top1: MetricId::new(names.top1),
            top5: MetricId::new(names.top5),
            lr: MetricId::new(names.lr),
            images_per_second: MetricId::new(names.images_per_second),
        }
    }
}

/// What one split of the current epoch has reported so far.
#[derive(Default)]
struct SplitValues {
    /// The epoch's final values (logged when the split ends).
    finals: HashMap<MetricId, f64>,
    /// Each metric's value at the last batch.
    last: HashMap<MetricId, f64>,
    /// Batches seen.
    batches: usize,
}

impl SplitValues {
    fn metrics(&self, ids: &MetricIds) -> SplitMetrics {
        SplitMetrics {
            loss: self.finals.get(&ids.loss).copied(),
            top1: self.finals.get(&ids.top1).copied(),
            top5: self.finals.get(&ids.top5).copied(),
        }
    }
}

/// Records each finished epoch in `metrics.csv` and redraws `curves.svg`, in the run directory.
pub(crate) struct EpochRecorder {
    run: PathBuf,
    name: String,
    ids: MetricIds,
    log: MetricsLog,
    batches_per_epoch: usize,
    started: Instant,
    /// Seconds the run had taken before this process continued it.
    earlier_seconds: f64,
    train: SplitValues,
    valid: SplitValues,
}

impl EpochRecorder {
    /// The recorder of the run in `run`: a new run starts an empty `metrics.csv` (and removes a
    /// stale `curves.svg`); a run resumed after `resume_after` keeps the rows up to that epoch,
    /// its wall time continuing from the last of them. Problems with the files are logged: the
    /// curves never stop a run.
    pub(crate) fn start(
        run: &Path,
        resume_after: Option<usize>,
        batches_per_epoch: usize,
        names: MetricNames,
    ) -> Self {
        let log = match resume_after {
            None => MetricsLog::new(),
            Some(epoch) => continued_log(run, epoch),
        };
        let recorder = Self {
            run: run.to_path_buf(),
            name: run_name(run),
            ids: names.into(),
            earlier_seconds: log.last().map_or(0.0, |row| row.wall_seconds),
            log,
            batches_per_epoch,
            started: Instant::now(),
            train: SplitValues::default(),
            valid: SplitValues::default(),
        };
        recorder.save();
        recorder
    }

    /// The row of `epoch`, whose validation just ended.
    fn end_epoch(&mut self, epoch: usize) {
        let (train, valid) = (
            std::mem::take(&mut self.train),
            std::mem::take(&mut self.valid),
        );
        let row = EpochMetrics {
            epoch,
            step: epoch * self.batches_per_epoch,
            train: train.metrics(&self.ids),
            val: match valid.batches {
                0 => SplitMetrics::default(),
                _ => valid.metrics(&self.ids),
            },
            lr: train.last.get(&self.ids.lr).copied(),
            // Throughput to 0.1 image/s and time to the millisecond: digits beyond are noise.
            images_per_second: train
                .last
                .get(&self.ids.images_per_second)
                .map(|speed| (speed * 10.0).round() / 10.0),
            wall_seconds: ((self.earlier_seconds + self.started.elapsed().as_secs_f64()) * 1e3)
                .round()
                / 1e3,
        };
        self.log.record(row);
        self.save();
    }

    /// Writes `metrics.csv` and draws `curves.svg` (removes it while there is no row).
    fn save(&self) {
        if let Err(err) = self.log.write(&self.run.join(METRICS_FILE)) {
            log::warn!("training metrics not saved: {err}");
        }
        let curves = self.run.join(CURVES_FILE);
        if self.log.epochs().is_empty() {
            if let Err(err) = fs::remove_file(&curves)
                && err.kind() != io::ErrorKind::NotFound
            {
                log::warn!("cannot remove the stale {}: {err}", curves.display());
            }
            return;
        }
        let run = RunCurves {
            name: self.name.clone(),
            metrics: self.log.clone(),
        };
        if let Err(err) = plot_runs(&[run], &curves) {
            log::warn!("training curves not drawn: {err}");
        }
    }
}

/// The rows of `run`'s `metrics.csv` up to `epoch`. A damaged file is moved aside (to
/// `metrics.csv.damaged`) and the log starts again, saying so.
fn continued_log(run: &Path, epoch: usize) -> MetricsLog {
    let path = run.join(METRICS_FILE);
    if !path.exists() {
        log::info!(
            "no {METRICS_FILE} in {}: it starts at epoch {}",
            run.display(),
            epoch + 1
        );
        return MetricsLog::new();
    }
    match MetricsLog::read(&path) {
        Ok(mut log) => {
            let later = log.epochs().iter().filter(|row| row.epoch > epoch).count();
            if later > 0 {
                log::info!(
                    "{METRICS_FILE}: dropped the rows of {later} epochs after epoch {epoch}, \
                     the checkpoint the run continues from"
                );
            }
            log.keep_until(epoch);
            log
        }
        Err(err) => {
            let aside = run.join(format!("{METRICS_FILE}.damaged"));
            match fs::rename(&path, &aside) {
                Ok(()) => log::warn!(
                    "{err}: moved to {}; {METRICS_FILE} starts again at epoch {}",
                    aside.display(),
                    epoch + 1
                ),
                Err(rename) => log::warn!(
                    "{err} (and it cannot be moved aside: {rename}); {METRICS_FILE} starts \
                     again at epoch {}",
                    epoch + 1
                ),
            }
            MetricsLog::new()
        }
    }
}

impl MetricLogger for EpochRecorder {
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, split: &Split) {
        let values = match split {
            Split::Train => &mut self.train,
            Split::Valid => &mut self.valid,
            Split::Test(_) => return,
        };
        let mut batch = false;
        for update in update.entries_numeric {
            let id = update.entry.metric_id;
            match update.numeric_entry {
                Some(NumericEntry::Final(value)) => {
                    values.finals.insert(id, value);
                }
                Some(entry) => {
                    batch = true;
                    values.last.insert(id, entry.current());
                }
                None => {}
            }
        }
        values.batches += usize::from(batch);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        _epoch: usize,
        _split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        // The file logger registered before this one answers burn-train's queries.
        Err(format!(
            "{METRICS_FILE} does not serve {name}'s values back"
        ))
    }

    fn log_metric_definition(&mut self, _definition: MetricDefinition) {}

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        if summary.split == Split::Valid {
            self.end_epoch(summary.epoch_number);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::train::metric::store::NumericMetricUpdate;
    use burn::train::metric::{MetricEntry, SerializedEntry};

    use super::*;

    fn names() -> MetricNames {
        let name = |name: &str| Arc::new(name.to_string());
        MetricNames {
            loss: name("Loss"),
            top1: name("Accuracy"),
            top5: name("Top-5"),
            lr: name("Learning Rate"),
            images_per_second: name("Images per second"),
        }
    }

    /// An update of the metrics `values` (name, entry) as burn-train logs it.
    fn update(values: &[(&str, NumericEntry)]) -> MetricsUpdate {
        let entries = values
            .iter()
            .map(|(name, entry)| NumericMetricUpdate {
                entry: MetricEntry::new(
                    MetricId::new(Arc::new(name.to_string())),
                    SerializedEntry::new(String::new(), String::new()),
                ),
                numeric_entry: Some(entry.clone()),
                running_entry: None,
            })
            .collect();
        MetricsUpdate::new(Vec::new(), entries)
    }

    fn batch(value: f64) -> NumericEntry {
        NumericEntry::Aggregated {
            aggregated_value: value,
            count: 1,
        }
    }

    /// One epoch as burn-train reports it: two training batches and their final values, then
    /// (when `validated`) one validation batch and its final values.
    fn epoch(recorder: &mut EpochRecorder, epoch: usize, validated: bool) {
        let e = epoch as f64;
        for step in 0..2 {
            recorder.log(
                update(&[
                    ("Loss", batch(2.0 / e)),
                    ("Learning Rate", batch(0.1 / (e + step as f64))),
                    ("Images per second", batch(100.0 + step as f64)),
                ]),
                epoch,
                &Split::Train,
            );
        }
        recorder.log(
            update(&[
                ("Loss", NumericEntry::Final(1.0 / e)),
                ("Accuracy", NumericEntry::Final(10.0 * e)),
                ("Top-5", NumericEntry::Final(20.0 * e)),
                ("Learning Rate", NumericEntry::Final(0.5)),
                ("Images per second", NumericEntry::Final(50.0)),
            ]),
            epoch,
            &Split::Train,
        );
        recorder.log_epoch_summary(EpochSummary::new(epoch, Split::Train));
        if validated {
            recorder.log(update(&[("Loss", batch(3.0))]), epoch, &Split::Valid);
        }
        recorder.log(
            update(&[
                ("Loss", NumericEntry::Final(1.5 / e)),
                ("Accuracy", NumericEntry::Final(5.0 * e)),
                ("Top-5", NumericEntry::Final(15.0 * e)),
            ]),
            epoch,
            &Split::Valid,
        );
        recorder.log_epoch_summary(EpochSummary::new(epoch, Split::Valid));
    }

    #[test]
    fn an_epoch_becomes_one_row_when_its_validation_ends() {
        let run = tempfile::tempdir().unwrap();
        let mut recorder = EpochRecorder::start(run.path(), None, 3, names());
        let csv = run.path().join(METRICS_FILE);
        assert_eq!(MetricsLog::read(&csv).unwrap(), MetricsLog::new());
        assert!(!run.path().join(CURVES_FILE).exists());

        epoch(&mut recorder, 1, true);
        epoch(&mut recorder, 2, false);
        let log = MetricsLog::read(&csv).unwrap();
        let [first, second] = log.epochs() else {
            panic!("{log:?}");
        };
        assert_eq!((first.epoch, first.step), (1, 3));
        assert_eq!(
            first.train,
            SplitMetrics {
                loss: Some(1.0),
                top1: Some(10.0),
                top5: Some(20.0)
            }
        );
        assert_eq!(
            first.val,
            SplitMetrics {
                loss: Some(1.5),
                top1: Some(5.0),
                top5: Some(15.0)
            }
        );
        // The rate of the last step, not the epoch's mean; the throughput over the whole epoch
        // (the metric's value at the last batch).
        assert_eq!(first.lr, Some(0.05));
        assert_eq!(first.images_per_second, Some(101.0));
        assert_eq!((second.epoch, second.step), (2, 6));
        assert!(second.val.is_empty(), "no validation batch: {second:?}");
        assert!(second.wall_seconds >= first.wall_seconds);
        assert!(run.path().join(CURVES_FILE).is_file());
    }

    #[test]
    fn a_resumed_run_keeps_the_rows_up_to_its_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let mut recorder = EpochRecorder::start(run.path(), None, 3, names());
        for e in 1..=3 {
            epoch(&mut recorder, e, true);
        }
        let csv = run.path().join(METRICS_FILE);
        let before = MetricsLog::read(&csv).unwrap();

        // Resumed from epoch 2's checkpoint: epoch 3's row goes, the clock continues.
        let mut recorder = EpochRecorder::start(run.path(), Some(2), 3, names());
        assert_eq!(
            MetricsLog::read(&csv).unwrap().epochs(),
            &before.epochs()[..2]
        );
        epoch(&mut recorder, 3, true);
        let after = MetricsLog::read(&csv).unwrap();
        let epochs: Vec<usize> = after.epochs().iter().map(|row| row.epoch).collect();
        assert_eq!(epochs, [1, 2, 3]);
        assert!(after.epochs()[2].wall_seconds >= before.epochs()[1].wall_seconds);

        // A damaged file is moved aside, and the log starts again after the checkpoint.
        fs::write(&csv, "epoch,step\n1,x\n").unwrap();
        let mut recorder = EpochRecorder::start(run.path(), Some(2), 3, names());
        assert!(run.path().join("metrics.csv.damaged").is_file());
        epoch(&mut recorder, 3, true);
        let epochs: Vec<usize> = MetricsLog::read(&csv)
            .unwrap()
            .epochs()
            .iter()
            .map(|row| row.epoch)
            .collect();
        assert_eq!(epochs, [3]);

        // A new run in the directory starts an empty log.
        EpochRecorder::start(run.path(), None, 3, names());
        assert!(MetricsLog::read(&csv).unwrap().epochs().is_empty());
        assert!(!run.path().join(CURVES_FILE).exists());
    }
}
