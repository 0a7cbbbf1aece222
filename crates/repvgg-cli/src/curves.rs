//! `repvgg curves`: several runs' training curves in one picture, to compare recipes, or a
//! fine-tuning run with the same network trained from scratch.

use std::path::PathBuf;

use anyhow::{Result, bail};
use repvgg_train::curves::{CURVES_FILE, METRICS_FILE, RunCurves, plot_runs};

/// Draw the training curves of one or more runs in one SVG picture: loss and top-1 against the
/// epoch (training dashed, validation solid), each run in its own colour and named after its
/// directory, with the learning rates on the right axis.
///
/// Every run directory keeps its own curves.svg, updated each epoch; this command overlays
/// several runs' metrics.csv.
///
/// Example: repvgg curves runs/a0-scratch runs/a0-finetune --output compare.svg
#[derive(clap::Args, Clone, Debug)]
pub struct CurvesArgs {
    /// Run directories (the --output of `repvgg train`), each with its metrics.csv.
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}

/// Reads every run's metrics (refusing a missing or damaged one, naming the file and line) and
/// writes the picture.
pub fn run(args: &CurvesArgs) -> Result<()> {
    let is_svg = args
        .output
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("svg"));
    if !is_svg {
        bail!(
            "{}: the picture is SVG; give the output a .svg name",
            args.output.display()
        );
    }
    let runs = RunCurves::read_all(&args.runs)?;
    plot_runs(&runs, &args.output)?;
    let epochs: Vec<String> = runs
        .iter()
        .map(|run| format!("{} ({} epochs)", run.name, run.metrics.epochs().len()))
        .collect();
    println!("wrote {}: {}", args.output.display(), epochs.join(", "));
    Ok(())
}

/// What `repvgg train` prints about the curves a run keeps.
pub(crate) fn files_line(output: &std::path::Path) -> String {
    format!(
        "training curves: {} and {} (compare runs with `repvgg curves RUN... --output FILE.svg`)",
        output.join(METRICS_FILE).display(),
        output.join(CURVES_FILE).display()
    )
}
