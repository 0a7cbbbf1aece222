//! The binary's side: flags mapped onto the library's configs, and what is printed. `xtask`
//! compiles this module in too (`#[path]`), so that one binary carries the trainer's commands to
//! a GPU machine.

pub mod demo;
pub mod report;
pub mod train;

use std::io::Write;

use repvgg_train::throughput::{LoaderBenchArgs, compare_loaders};

/// Shows the library's `log` lines on stderr: its own at `info` (as plain lines), every other
/// crate's from `warn` (burn-train logs every iteration at `info`); `RUST_LOG` overrides.
pub fn init_logger() {
    let filter = env_logger::Env::default().default_filter_or("warn,repvgg=info");
    env_logger::Builder::from_env(filter)
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "{}", record.args()),
            level => {
                let style = out.default_level_style(level);
                let label = match level {
                    log::Level::Warn => "warning",
                    other => other.as_str(),
                };
                writeln!(out, "{style}{label}{style:#}: {}", record.args())
            }
        })
        .init();
}

/// `repvgg-train bench-loader`'s flags: the measurement's, and a Python to measure torchvision's
/// pipeline with beside it.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchLoaderArgs {
    #[command(flatten)]
    pub loader: LoaderBenchArgs,
    /// A Python with torch, torchvision and Pillow: also time torchvision's RandomResizedCrop,
    /// flip and normalisation over the same files and worker counts ("none": don't).
    #[arg(long, env = "REPVGG_PYTHON", value_name = "PYTHON")]
    pub python: Option<String>,
}

impl From<&LoaderBenchArgs> for BenchLoaderArgs {
    /// The measurement's flags alone (xtask's `bench-loader`): torchvision is timed when
    /// `REPVGG_PYTHON` names a Python.
    fn from(loader: &LoaderBenchArgs) -> Self {
        Self {
            loader: loader.clone(),
            python: std::env::var("REPVGG_PYTHON").ok(),
        }
    }
}

/// `bench-loader`: measures, then prints a markdown table, with torchvision's figures beside
/// when a Python is given.
pub fn run_bench_loader(args: impl Into<BenchLoaderArgs>) -> anyhow::Result<()> {
    let args = args.into();
    let python = args.python.as_deref().filter(|python| *python != "none");
    let comparison = compare_loaders(&args.loader, python)?;
    let torchvision = match comparison.torchvision {
        Some(Ok(torchvision)) => Some(torchvision),
        Some(Err(err)) => {
            log::warn!("torchvision not measured: {err}");
            None
        }
        None => None,
    };
    match &torchvision {
        None => {
            println!("| workers | images | images/s | images/s per worker |");
            println!("|---|---|---|---|");
        }
        Some(_) => {
            println!(
                "| workers | images | images/s | images/s per worker | torchvision images/s | \
                 ours / torchvision |"
            );
            println!("|---|---|---|---|---|---|");
        }
    }
    for (i, result) in comparison.loader.iter().enumerate() {
        let ours = result.images_per_second;
        print!(
            "| {} | {} | {ours:.1} | {:.1} |",
            result.workers,
            result.images,
            ours / result.workers as f64
        );
        match torchvision.as_ref().and_then(|t| t.results.get(i)) {
            Some(theirs) => println!(
                " {:.1} | {:.2}x |",
                theirs.images_per_second,
                ours / theirs.images_per_second
            ),
            None if torchvision.is_some() => println!(" - | - |"),
            None => println!(),
        }
    }
    if let Some(torchvision) = torchvision {
        println!(
            "\ntorchvision: {} (one worker: the main process, one thread; N: N DataLoader \
             processes)",
            torchvision.versions
        );
    }
    Ok(())
}
