//! A run's training curves: `metrics.csv`, one row per epoch ([`MetricsLog`], [`EpochMetrics`]),
//! and `curves.svg`, loss and top-1 against the epoch with the learning rate on a second axis
//! ([`plot_runs`], which overlays several runs for a comparison).
//!
//! [`train`](crate::train) and [`resume`](crate::resume) write both files in the run directory at
//! the end of every epoch; a resumed run keeps the rows up to its checkpoint, drops later ones (a
//! crash may have left them) and appends. `repvgg curves RUN... --output FILE.svg` draws several
//! runs in one picture.
//!
//! The CSV's columns, by name (readers look them up in the header, so that columns added later
//! do not break them):
//!
//! | column | what |
//! |---|---|
//! | `epoch` | the epoch, from 1 |
//! | `step` | training steps (batches) done by the end of the epoch, over the whole run |
//! | `train_loss`, `train_top1`, `train_top5` | the epoch's mean training loss and accuracies (percent) |
//! | `val_loss`, `val_top1`, `val_top5` | the same on the validation set; empty without validation |
//! | `lr` | the learning rate of the epoch's last step |
//! | `images_per_second` | training throughput over the epoch, data loading included |
//! | `wall_seconds` | seconds since the run started, at the epoch's end (across resumes) |
//!
//! A value that was not measured is empty; a diverged run's loss is written `NaN` (and not
//! drawn). The SVG is drawn with plotters' SVG backend: text as SVG text elements, no font files.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// The file of a run directory that keeps its per-epoch metrics.
pub const METRICS_FILE: &str = "metrics.csv";

/// The file of a run directory that shows its curves.
pub const CURVES_FILE: &str = "curves.svg";

/// The CSV's columns, in the order they are written.
const COLUMNS: [&str; 11] = [
    "epoch",
    "step",
    "train_loss",
    "train_top1",
    "train_top5",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "images_per_second",
    "wall_seconds",
];

/// Loss and accuracies of one split over one epoch; `None` where not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SplitMetrics {
    /// Mean loss.
    pub loss: Option<f64>,
    /// Top-1 accuracy, percent.
    pub top1: Option<f64>,
    /// Top-5 accuracy, percent (top-k of all the classes when there are fewer than 5).
    pub top5: Option<f64>,
}

impl SplitMetrics {
    /// Whether nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.loss.is_none() && self.top1.is_none() && self.top5.is_none()
    }
}

/// One row of `metrics.csv`: what one epoch measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Training steps (batches) done by the end of the epoch, over the whole run.
    pub step: usize,
    /// The training split.
    pub train: SplitMetrics,
    /// The validation split (empty when the epoch had no validation).
    pub val: SplitMetrics,
    /// The learning rate of the epoch's last step.
    pub lr: Option<f64>,
    /// Training images per second over the epoch, data loading included.
    pub images_per_second: Option<f64>,
    /// Seconds since the run started, at the end of the epoch, counted across resumes.
    pub wall_seconds: f64,
}

impl EpochMetrics {
    /// The row's fields, as `COLUMNS` orders them.
    fn fields(&self) -> [String; 11] {
        let value = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            self.epoch.to_string(),
            self.step.to_string(),
            value(self.train.loss),
            value(self.train.top1),
            value(self.train.top5),
            value(self.val.loss),
            value(self.val.top1),
            value(self.val.top5),
            value(self.lr),
            value(self.images_per_second),
            self.wall_seconds.to_string(),
        ]
    }
}

/// An error reading or drawing training curves; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum CurvesError {
    /// A file that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A run directory that does not exist.
    #[error("{}: no such run directory", path.display())]
    NoRun {
        /// The directory.
        path: PathBuf,
    },
    /// A directory without `metrics.csv`.
    #[error(
        "{}: no such file (not a training run, or one trained before runs wrote their metrics)",
        path.display()
    )]
    NoMetrics {
        /// The missing file.
        path: PathBuf,
    },
    /// A file that is not CSV, or not CSV of the metrics' columns and values.
    #[error("{}, line {line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line, from 1 (the header).
        line: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Nothing to draw.
    #[error("no runs to plot")]
    NoRuns,
    /// plotters failed to lay out or draw the picture.
    #[error("cannot draw the curves: {source}")]
    Draw {
        /// plotters' error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl CurvesError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A run's per-epoch metrics, as `metrics.csv` keeps them: one row per epoch, epochs
/// increasing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsLog {
    epochs: Vec<EpochMetrics>,
}

impl MetricsLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rows, epochs increasing.
    pub fn epochs(&self) -> &[EpochMetrics] {
        &self.epochs
    }

    /// The last row.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }

    /// Sets the row of `metrics.epoch`: rows of that epoch and of later ones are dropped first
    /// (a resumed run writes epochs a crash may have written before).
    pub fn record(&mut self, metrics: EpochMetrics) {
        self.keep_until(metrics.epoch.saturating_sub(1));
        self.epochs.push(metrics);
    }

    /// Drops the rows of epochs after `epoch` (what a run resumed from `epoch`'s checkpoint
    /// keeps).
    pub fn keep_until(&mut self, epoch: usize) {
        self.epochs.retain(|row| row.epoch <= epoch);
    }

    /// The log of the run directory `run` (its `metrics.csv`).
    pub fn read_run(run: &Path) -> Result<Self, CurvesError> {
        if !run.is_dir() {
            return Err(CurvesError::NoRun {
                path: run.to_path_buf(),
            });
        }
        let path = run.join(METRICS_FILE);
        if !path.exists() {
            return Err(CurvesError::NoMetrics { path });
        }
        Self::read(&path)
    }

    /// Reads a `metrics.csv`, checking every value: an error names the file and the line.
    pub fn read(path: &Path) -> Result<Self, CurvesError> {
        let bytes = fs::read(path).map_err(CurvesError::io(path))?;
        Self::from_csv(&bytes, path)
    }

    /// Parses `bytes`, the CSV of the file `path` (named in errors).
    fn from_csv(bytes: &[u8], path: &Path) -> Result<Self, CurvesError> {
        let csv_error = |error: csv::Error| {
            let line = error.position().map_or(1, csv::Position::line);
            let reason = match error.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("{len} fields where the header has {expected_len}"),
                csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_string(),
                _ => error.to_string(),
            };
            CurvesError::Malformed {
                path: path.to_path_buf(),
                line,
                reason,
            }
        };
        let malformed = |line: u64, reason: String| CurvesError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let header = reader.headers().map_err(csv_error)?.clone();
        let mut index = [0; COLUMNS.len()];
        for (slot, column) in index.iter_mut().zip(COLUMNS) {
            *slot = header
                .iter()
                .position(|name| name == column)
                .ok_or_else(|| {
                    malformed(
                        1,
                        format!("no column `{column}` (expected {})", COLUMNS.join(",")),
                    )
                })?;
        }
        let mut log = Self::new();
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |column: usize| record.get(index[column]).unwrap_or_default();
            let value = |column: usize| -> Result<Option<f64>, CurvesError> {
                match field(column) {
                    "" => Ok(None),
                    text => text.parse().map(Some).map_err(|_| {
                        malformed(
                            line,
                            format!("`{}` is not a number: {text:?}", COLUMNS[column]),
                        )
                    }),
                }
            };
            let count = |column: usize| -> Result<usize, CurvesError> {
                let text = field(column);
                text.parse().map_err(|_| {
                    malformed(
                        line,
                        format!("`{}` is not a whole number: {text:?}", COLUMNS[column]),
                    )
                })
            };
            let epoch = count(0)?;
            if epoch == 0 {
                return Err(malformed(line, "`epoch` counts from 1".to_string()));
            }
            if let Some(previous) = log.last()
                && epoch <= previous.epoch
            {
                return Err(malformed(
                    line,
                    format!("epoch {epoch} after epoch {}", previous.epoch),
                ));
            }
            let wall_seconds =
                value(10)?.ok_or_else(|| malformed(line, "`wall_seconds` is empty".to_string()))?;
            if !(wall_seconds.is_finite() && wall_seconds >= 0.0) {
                return Err(malformed(
                    line,
                    format!("`wall_seconds` is not a time: {wall_seconds}"),
                ));
            }
            log.epochs.push(EpochMetrics {
                epoch,
                step: count(1)?,
                train: SplitMetrics {
                    loss: value(2)?,
                    top1: value(3)?,
                    top5: value(4)?,
                },
                val: SplitMetrics {
                    loss: value(5)?,
                    top1: value(6)?,
                    top5: value(7)?,
                },
                lr: value(8)?,
                images_per_second: value(9)?,
                wall_seconds,
            });
        }
        Ok(log)
    }

    /// The CSV text: the header, then one line per epoch.
    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let rows = std::iter::once(COLUMNS.map(String::from))
            .chain(self.epochs.iter().map(EpochMetrics::fields));
        for row in rows {
            writer
                .write_record(&row)
                .expect("writing CSV to memory cannot fail");
        }
        let bytes = writer
            .into_inner()
            .expect("writing CSV to memory cannot fail");
        String::from_utf8(bytes).expect("numbers and column names are UTF-8")
    }

    /// Writes the CSV to `path`, atomically (the file is whole or untouched).
    pub fn write(&self, path: &Path) -> Result<(), CurvesError> {
        write_atomically(path, self.to_csv().as_bytes())
    }
}

/// One run as [`plot_runs`] draws it: its name in the legend and its metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// The legend's name for the run.
    pub name: String,
    /// Its metrics.
    pub metrics: MetricsLog,
}

impl RunCurves {
    /// The run directory `run`'s metrics, named after the directory.
    pub fn read(run: &Path) -> Result<Self, CurvesError> {
        let metrics = MetricsLog::read_run(run)?;
        Ok(Self {
            name: run_name(run),
            metrics,
        })
    }

    /// [`read`](Self::read) of each run directory; runs whose directories share a name are
    /// named by their paths instead.
    pub fn read_all(runs: &[PathBuf]) -> Result<Vec<Self>, CurvesError> {
        let mut read = runs
            .iter()
            .map(|run| Self::read(run))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = read.iter().map(|run| run.name.clone()).collect();
        for (run, path) in read.iter_mut().zip(runs) {
            if names.iter().filter(|name| **name == run.name).count() > 1 {
                run.name = path.display().to_string();
            }
        }
        Ok(read)
    }
}

/// The name of a run directory: its last component (of its absolute path for `.` and the
/// like).
pub(crate) fn run_name(run: &Path) -> String {
    let absolute = run.canonicalize().unwrap_or_else(|_| run.to_path_buf());
    absolute
        .file_name()
        .or_else(|| run.file_name())
        .map_or_else(
            || run.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
}

/// Draws `runs` into the SVG file `output` (written atomically): loss (top panel) and top-1
/// (bottom panel) against the epoch, training dashed and validation solid with a dot per epoch,
/// each run in its own colour, and each run's learning rate as a thin pale line on the right
/// axis. The legend (top panel) names each series after its run.
pub fn plot_runs(runs: &[RunCurves], output: &Path) -> Result<(), CurvesError> {
    let svg = render_svg(runs)?;
    write_atomically(output, svg.as_bytes())
}

/// [`plot_runs`]' picture as SVG text.
pub fn render_svg(runs: &[RunCurves]) -> Result<String, CurvesError> {
    if runs.is_empty() {
        return Err(CurvesError::NoRuns);
    }
    let mut svg = String::new();
    draw(runs, &mut svg).map_err(|err| CurvesError::Draw {
        source: Box::new(err),
    })?;
    Ok(svg)
}

/// The picture's size in pixels.
const SIZE: (u32, u32) = (960, 760);

/// The runs' colours, in order (matplotlib's tab10), repeated beyond ten runs.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `index`th run.
fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Line widths: the SVG's polylines tell the series apart by them (and the tests read them).
const VAL_WIDTH: u32 = 3;
const TRAIN_WIDTH: u32 = 2;
const LR_WIDTH: u32 = 1;
/// Dash and gap of the training lines, pixels.
const DASH: (u32, u32) = (7, 5);

/// What a panel draws on its left axis.
#[derive(Clone, Copy)]
enum Panel {
    Loss,
    Top1,
}

impl Panel {
    fn of(self, split: &SplitMetrics) -> Option<f64> {
        match self {
            Panel::Loss => split.loss,
            Panel::Top1 => split.top1,
        }
    }

    /// Tick labels: `2.5` (loss), `75` (top-1).
    fn format(self, value: f64) -> String {
        match self {
            Panel::Loss => format!("{}", (value * 1e3).round() / 1e3),
            Panel::Top1 => format!("{value:.0}"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Panel::Loss => "loss",
            Panel::Top1 => "top-1 accuracy (%)",
        }
    }

    /// The left axis: from 0 to a little above the largest loss; top-1 on a whole number of
    /// 5% steps around the values, within 0 to 100.
    fn range(self, runs: &[RunCurves]) -> Range<f64> {
        let values: Vec<f64> = runs
            .iter()
            .flat_map(|run| run.metrics.epochs())
            .flat_map(|row| [self.of(&row.train), self.of(&row.val)])
            .flatten()
            .filter(|v| v.is_finite())
            .collect();
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        match self {
            _ if values.is_empty() => 0.0..1.0,
            Panel::Loss if max > 0.0 => 0.0..max * 1.05,
            Panel::Loss => 0.0..1.0,
            Panel::Top1 => {
                let lo = ((min / 5.0).floor() * 5.0).clamp(0.0, 95.0);
                let hi = ((max / 5.0).ceil() * 5.0).clamp(lo + 5.0, 100.0);
                lo..hi
            }
        }
    }
}

/// The epochs' axis: first to last epoch of every run, at least one epoch wide.
fn epoch_range(runs: &[RunCurves]) -> Range<f64> {
    let epochs = || {
        runs.iter()
            .flat_map(|run| run.metrics.epochs())
            .map(|row| row.epoch)
    };
    let first = epochs().min().unwrap_or(1) as f64;
    let last = epochs().max().unwrap_or(1) as f64;
    match last - first < 1.0 {
        true => first - 0.5..last + 0.5,
        false => first..last,
    }
}

/// The learning rate's axis: 0 to a little above the largest rate.
fn lr_range(runs: &[RunCurves]) -> Range<f64> {
    let max = runs
        .iter()
        .flat_map(|run| run.metrics.epochs())
        .filter_map(|row| row.lr)
        .filter(|lr| lr.is_finite())
        .fold(0.0, f64::max);
    match max > 0.0 {
        true => 0.0..max * 1.05,
        false => 0.0..1.0,
    }
}

/// Tick labels of the learning rate: `0.1`, `0.0125`, `2.5e-5`.
fn format_lr(value: f64) -> String {
    match value {
        0.0 => "0".to_string(),
        v if v.abs() >= 1e-3 => format!("{}", (v * 1e6).round() / 1e6),
        v => format!("{v:.1e}"),
    }
}

/// Whole epochs only on the epoch axis.
fn format_epoch(value: f64) -> String {
    match (value - value.round()).abs() < 1e-6 {
        true => format!("{}", value.round()),
        false => String::new(),
    }
}

type DrawResult = Result<(), DrawingAreaErrorKind<io::Error>>;

fn draw(runs: &[RunCurves], svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);
    draw_panel(&upper, runs, Panel::Loss, true)?;
    draw_panel(&lower, runs, Panel::Top1, false)?;
    root.present()
}

/// One panel: `panel`'s values of every run on the left axis, their learning rates on the right.
fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    runs: &[RunCurves],
    panel: Panel,
    legend: bool,
) -> DrawResult {
    let epochs = epoch_range(runs);
    let span = (epochs.end - epochs.start).round() as usize;
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(76)
        .build_cartesian_2d(epochs.clone(), panel.range(runs))?
        .set_secondary_coord(epochs, lr_range(runs));
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.label())
        .x_labels((span + 1).clamp(2, 12))
        .x_label_formatter(&|v| format_epoch(*v))
        .y_label_formatter(&|v| panel.format(*v))
        .max_light_lines(0)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("learning rate")
        .y_label_formatter(&|v| format_lr(*v))
        .draw()?;

    for (index, run) in runs.iter().enumerate() {
        let colour = colour(index);
        let rows = run.metrics.epochs();
        let points = |value: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|row| Some((row.epoch as f64, value(row)?)))
                .filter(|(_, v)| v.is_finite())
                .collect()
        };

        let train_style = colour.stroke_width(TRAIN_WIDTH);
        let train = chart.draw_series(DashedLineSeries::new(
            points(&|row| panel.of(&row.train)),
            DASH.0,
            DASH.1,
            train_style,
        ))?;
        if legend {
            train
                .label(format!("{} train", run.name))
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 24, y)], DASH.0, DASH.1, train_style)
                });
        }

        let val_style = colour.stroke_width(VAL_WIDTH);
        let val = chart.draw_series(
            LineSeries::new(points(&|row| panel.of(&row.val)), val_style).point_size(VAL_WIDTH),
        )?;
        if legend {
            val.label(format!("{} val", run.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], val_style));
        }

        let lr_style = colour.mix(0.5).stroke_width(LR_WIDTH);
        let lr = chart.draw_secondary_series(LineSeries::new(points(&|row| row.lr), lr_style))?;
        if legend {
            lr.label(format!("{} learning rate", run.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], lr_style));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename: the
/// file is whole or unchanged, and the temporary file is removed on failure.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CurvesError> {
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !directory.is_dir() {
        return Err(CurvesError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("the directory {} does not exist", directory.display()),
            ),
        });
    }
    let name = path.file_name().map_or_else(
        || "out".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temporary = directory.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = fs::write(&temporary, bytes).and_then(|()| fs::rename(&temporary, path));
    written.map_err(|source| {
        let _ = fs::remove_file(&temporary);
        CurvesError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use repvgg_testing::svg::{Element, Svg};

    use super::*;

    fn row(epoch: usize, loss: f64, top1: f64, validated: bool) -> EpochMetrics {
        let split = |loss: f64, top1: f64| SplitMetrics {
            loss: Some(loss),
            top1: Some(top1),
            top5: Some((top1 + 20.0).min(100.0)),
        };
        EpochMetrics {
            epoch,
            step: 25 * epoch,
            train: split(loss, top1),
            val: match validated {
                true => split(loss * 1.1, top1 - 3.0),
                false => SplitMetrics::default(),
            },
            lr: Some(0.1 / epoch as f64),
            images_per_second: Some(1234.5),
            wall_seconds: 61.25 * epoch as f64,
        }
    }

    fn log(rows: impl IntoIterator<Item = EpochMetrics>) -> MetricsLog {
        let mut log = MetricsLog::new();
        for row in rows {
            log.record(row);
        }
        log
    }

    /// `text` as `metrics.csv` in a scratch directory, read back.
    fn read(text: &str) -> Result<MetricsLog, CurvesError> {
        MetricsLog::from_csv(text.as_bytes(), Path::new("run/metrics.csv"))
    }

    fn message(result: Result<MetricsLog, CurvesError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn the_csv_reads_back_what_was_written() {
        let mut rows: Vec<EpochMetrics> = (1..=3)
            .map(|e| row(e, 2.0 / e as f64, 30.0, true))
            .collect();
        // Awkward values: no validation, an unmeasured top-5 and throughput, the smallest and
        // largest rates, a third that does not print short.
        rows[1].val = SplitMetrics::default();
        rows[1].train.top5 = None;
        rows[1].images_per_second = None;
        rows[2].lr = Some(f64::MIN_POSITIVE);
        rows[2].train.loss = Some(1.0 / 3.0);
        let written = log(rows.clone());
        let text = written.to_csv();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "epoch,step,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,\
                 images_per_second,wall_seconds"
            )
        );
        assert_eq!(lines.clone().count(), 3, "one line per epoch:\n{text}");
        assert_eq!(
            lines.nth(1),
            Some("2,50,1,30,,,,,0.05,,122.5"),
            "missing values are empty fields"
        );
        assert_eq!(read(&text).unwrap(), written);

        // A diverged run's NaN loss reads back as NaN.
        let mut diverged = rows[0].clone();
        diverged.train.loss = Some(f64::NAN);
        let back = read(&log([diverged]).to_csv()).unwrap();
        assert!(back.epochs()[0].train.loss.unwrap().is_nan());

        // Through a file, atomically: no temporary file is left.
        let dir = tempfile::tempdir().unwrap();
        written.write(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(MetricsLog::read_run(dir.path()).unwrap(), written);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn columns_are_found_by_name() {
        let text = "wall_seconds,lr,epoch,step,train_loss,train_top1,train_top5,val_loss,\
                    val_top1,val_top5,images_per_second,ema_top1\n\
                    12.5,0.1,1,10,2.5,40,80,2.75,38,79,500,41\n";
        let log = read(text).unwrap();
        let [row] = log.epochs() else {
            panic!("{log:?}")
        };
        assert_eq!((row.epoch, row.step, row.wall_seconds), (1, 10, 12.5));
        assert_eq!(row.lr, Some(0.1));
        assert_eq!(row.val.top1, Some(38.0));
        assert_eq!(row.images_per_second, Some(500.0));
    }

    #[test]
    fn a_resumed_run_keeps_the_epochs_up_to_its_checkpoint() {
        let mut log = log((1..=5).map(|e| row(e, 1.0, 50.0, true)));
        log.keep_until(3);
        let epochs = |log: &MetricsLog| log.epochs().iter().map(|r| r.epoch).collect::<Vec<_>>();
        assert_eq!(epochs(&log), [1, 2, 3]);
        // An epoch recorded again replaces its row and drops everything after it.
        log.record(row(2, 0.5, 60.0, true));
        assert_eq!(epochs(&log), [1, 2]);
        assert_eq!(log.last().unwrap().train.loss, Some(0.5));
        log.record(row(3, 0.4, 61.0, false));
        assert_eq!(epochs(&log), [1, 2, 3]);
        log.keep_until(0);
        assert!(log.epochs().is_empty());
    }

    #[test]
    fn damaged_files_are_refused_naming_the_file_and_line() {
        let header = COLUMNS.join(",");
        let good = format!("{header}\n1,10,2,40,80,2,38,79,0.1,500,12\n");
        assert!(read(&good).is_ok());
        for (text, expected) in [
            ("".to_string(), "line 1: no column `epoch`"),
            (
                "epoch,step\n1,2\n".to_string(),
                "line 1: no column `train_loss`",
            ),
            (
                format!("{good}2,20,2,40,80,2,38,79,0.1,500\n"),
                "line 3: 10 fields where the header has 11",
            ),
            (
                format!("{good}2,20,two,40,80,2,38,79,0.1,500,13\n"),
                "line 3: `train_loss` is not a number: \"two\"",
            ),
            (
                format!("{good}2,-20,2,40,80,2,38,79,0.1,500,13\n"),
                "line 3: `step` is not a whole number: \"-20\"",
            ),
            (
                format!("{good}1,20,2,40,80,2,38,79,0.1,500,13\n"),
                "line 3: epoch 1 after epoch 1",
            ),
            (
                format!("{header}\n0,0,2,40,80,2,38,79,0.1,500,13\n"),
                "line 2: `epoch` counts from 1",
            ),
            (
                format!("{good}2,20,2,40,80,2,38,79,0.1,500,\n"),
                "line 3: `wall_seconds` is empty",
            ),
            (
                format!("{good}2,20,2,40,80,2,38,79,0.1,500,-1\n"),
                "line 3: `wall_seconds` is not a time: -1",
            ),
            (
                format!("{header}\n1,10,2,40,80,2,38,79,0.1,500,\u{ff}\n"),
                "line 2: `wall_seconds` is not a number",
            ),
        ] {
            let error = message(read(&text));
            assert!(
                error.starts_with("run/metrics.csv") && error.contains(expected),
                "{text:?}: {error}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let error = message(MetricsLog::read_run(&dir.path().join("nowhere")));
        assert!(error.contains("no such run directory"), "{error}");
        let error = message(MetricsLog::read_run(dir.path()));
        assert!(error.contains("metrics.csv: no such file"), "{error}");
        let header = format!("{header}\n").into_bytes();
        let row = b"1,10,2,40,80,2,38,79,0.1,500,\xff\xfe\n";
        fs::write(dir.path().join(METRICS_FILE), [&header[..], row].concat()).unwrap();
        let error = message(MetricsLog::read_run(dir.path()));
        assert!(
            error.ends_with("metrics.csv, line 2: not UTF-8 text"),
            "{error}"
        );
    }

    /// The polylines of `svg` drawn in `colour` at `width` (with opacity `opacity`).
    fn lines<'a>(svg: &'a Svg, colour: RGBColor, width: u32, opacity: &str) -> Vec<&'a Element> {
        let stroke = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
        svg.all("polyline")
            .filter(|e| {
                e.attribute("stroke") == stroke
                    && e.attribute("stroke-width") == width.to_string()
                    && e.attribute("opacity") == opacity
            })
            .collect()
    }

    #[test]
    fn the_picture_holds_every_series_of_every_run() {
        // A scratch run of 4 epochs, validated except in epoch 3, and a fine-tune of 2.
        let scratch = log((1..=4).map(|e| row(e, 3.0 - 0.5 * e as f64, 20.0 * e as f64, e != 3)));
        let finetune = log((1..=2).map(|e| row(e, 1.0 / e as f64, 70.0 + e as f64, true)));
        let runs = [
            RunCurves {
                name: "a0-scratch".to_string(),
                metrics: scratch.clone(),
            },
            RunCurves {
                name: "a0-finetune".to_string(),
                metrics: finetune,
            },
        ];
        let svg = Svg::parse(&render_svg(&runs).unwrap()).unwrap();
        let root = &svg.elements[0];
        assert_eq!(
            (root.attribute("width"), root.attribute("height")),
            ("960", "760")
        );

        let texts = svg.texts();
        for (index, run) in runs.iter().enumerate() {
            // The legend: each series once, named after its run.
            for series in ["train", "val", "learning rate"] {
                let label = format!("{} {series}", run.name);
                assert_eq!(
                    texts.iter().filter(|t| **t == label).count(),
                    1,
                    "{label}: {texts:?}"
                );
            }
            let colour = colour(index);
            let rows = run.metrics.epochs();
            let validated = rows.iter().filter(|r| !r.val.is_empty()).count();

            // Validation: one solid line per panel through every validated epoch (the loss
            // panel's legend, drawn after its lines, has a two-point sample), with a dot per
            // epoch.
            let val = lines(&svg, colour, VAL_WIDTH, "1");
            let points: Vec<usize> = val.iter().map(|e| e.points().len()).collect();
            assert_eq!(points, [validated, 2, validated], "{}", run.name);
            let fill = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
            let dots = svg
                .all("circle")
                .filter(|c| c.attribute("stroke") == fill)
                .count();
            assert_eq!(dots, 2 * validated);
            // Epochs left to right; in the loss panel a falling loss is a line going down the
            // page (y grows), in the top-1 panel a rising accuracy goes up.
            for (line, falls) in [(val[0], true), (val[2], false)] {
                let points = line.points();
                assert!(points.windows(2).all(|p| p[0].0 < p[1].0), "{points:?}");
                let descends = points.windows(2).all(|p| p[0].1 < p[1].1);
                let ascends = points.windows(2).all(|p| p[0].1 > p[1].1);
                assert!(
                    if falls { descends } else { ascends },
                    "{}: {points:?}",
                    run.name
                );
            }

            // The learning rate: a pale line per panel through every epoch, and the legend's.
            let lr = lines(&svg, colour, LR_WIDTH, "0.5");
            let points: Vec<usize> = lr.iter().map(|e| e.points().len()).collect();
            assert_eq!(points, [rows.len(), 2, rows.len()], "{}", run.name);

            // Training: dashed, many short pieces spanning the first to the last epoch.
            let train = lines(&svg, colour, TRAIN_WIDTH, "1");
            assert!(train.len() > 4, "{}: {} dashes", run.name, train.len());
        }
        for label in ["epoch", "loss", "top-1 accuracy (%)", "learning rate"] {
            assert!(texts.contains(&label), "{label}: {texts:?}");
        }

        // One run alone, in a file; a run without a row yet draws axes and a legend only.
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join(CURVES_FILE);
        let empty = RunCurves {
            name: "starting".to_string(),
            metrics: MetricsLog::new(),
        };
        plot_runs(&[runs[0].clone(), empty], &output).unwrap();
        let svg = Svg::read(&output);
        assert!(svg.texts().contains(&"starting val"));
        assert_eq!(
            lines(&svg, colour(1), VAL_WIDTH, "1").len(),
            1,
            "the legend's"
        );

        assert!(matches!(render_svg(&[]), Err(CurvesError::NoRuns)));
        let error = plot_runs(&runs, &dir.path().join("missing/curves.svg")).unwrap_err();
        assert!(error.to_string().contains("missing/curves.svg"), "{error}");
    }

    #[test]
    fn runs_are_named_after_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["x/a0", "y/a0", "y/b1"]
            .iter()
            .map(|p| dir.path().join(p))
            .collect();
        for path in &paths {
            fs::create_dir_all(path).unwrap();
            log([row(1, 1.0, 10.0, true)])
                .write(&path.join(METRICS_FILE))
                .unwrap();
        }
        let runs = RunCurves::read_all(&paths).unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        // The two a0 runs by their paths, to tell them apart.
        assert_eq!(names[0], paths[0].display().to_string());
        assert_eq!(names[1], paths[1].display().to_string());
        assert_eq!(names[2], "b1");
        assert_eq!(RunCurves::read(&paths[2].join(".")).unwrap().name, "b1");
    }
}
