//! `repvgg-train`: train RepVGG on an ImageFolder data set with the paper's recipe, or run the
//! self-contained demonstration. The flags and what is printed live here (`src/cli/`); the
//! training itself is the library's ([`repvgg_train::train`]).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::BenchLoaderArgs;
use crate::cli::demo::DemoArgs;
use crate::cli::train::TrainArgs;

/// Train RepVGG with the paper's ImageNet recipe (defaults), then write the training-time and
/// the re-parameterized deploy-time model.
///
/// Example: repvgg-train --data /data/imagenet --arch A0
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: Option<TrainArgs>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a small image set, train a small RepVGG on it on the CPU, convert it, and
    /// compare the speed of both forms (a few minutes, nothing to download).
    Demo(DemoArgs),
    /// Measure the data pipeline: decoded and augmented ImageNet-sized JPEGs per second, for
    /// each worker count, beside torchvision's with --python (or REPVGG_PYTHON).
    BenchLoader(BenchLoaderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logger();
    let outcome = match (cli.command, cli.train) {
        (Some(Command::Demo(args)), _) => cli::demo::run(&args),
        (Some(Command::BenchLoader(args)), _) => cli::run_bench_loader(args),
        (None, Some(args)) => cli::train::run(&args),
        (None, None) => {
            eprintln!("error: give --data DIR to train, or `demo` (see --help)");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
