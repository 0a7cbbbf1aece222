//! Developer commands for the workspace: `cargo xtask <command>`. `convert`, `eval` and `archs`
//! are the installable `repvgg` tool's commands (crate `repvgg-cli`), kept here under the names
//! people are told; `bench` and `bench-train` are the developers' own. `train`, `demo` and
//! `bench-loader` are the trainer's (`repvgg-train`), so that one binary carries every command
//! to a GPU machine (`scripts/gpu-build.sh`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_cli::{archs, convert, eval};
use repvgg_train::throughput::LoaderBenchArgs;

mod bench;
/// The trainer's command line (flags, the run, what it prints), compiled in here unchanged.
#[path = "../../crates/repvgg-train/src/cli/mod.rs"]
mod cli;

#[derive(Parser, Debug)]
#[command(about = "Developer commands for repvgg-burn", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the architecture table (parameters and compute of every reference architecture,
    /// as computed by `repvgg-model`) in markdown, as quoted in the README (`repvgg archs`).
    Archs {
        /// Square input size the compute is counted at.
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
        size: u32,
    },
    Convert(convert::ConvertArgs),
    Eval(eval::EvalArgs),
    Bench(bench::BenchArgs),
    /// Time full training steps (forward, backward, SGD) beside PyTorch eager, and write
    /// BENCHMARKS-training.md.
    BenchTrain(bench::training::TrainBenchArgs),
    BenchLayers(bench::layers::LayerBenchArgs),
    BenchPrecision(bench::precision::PrecisionBenchArgs),
    /// One memory measurement of `bench`, in a fresh process.
    #[command(hide = true)]
    BenchMemory(bench::MemoryArgs),
    /// Train RepVGG as `repvgg-train --data DIR ...` does (same flags; see `repvgg-train
    /// --help`).
    Train(Box<cli::train::TrainArgs>),
    /// `repvgg-train demo`: generate the demo's images, train on them on the CPU, convert.
    Demo(cli::demo::DemoArgs),
    /// `repvgg-train bench-loader`: the data pipeline's images/s per worker count.
    BenchLoader(LoaderBenchArgs),
}

fn main() -> ExitCode {
    cli::init_logger();
    let result = match Cli::parse().command {
        Command::Archs { size } => {
            print!("{}", archs::table(size as usize));
            Ok(())
        }
        Command::Convert(args) => convert::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench::training::run(args),
        Command::BenchLayers(args) => bench::layers::run(args),
        Command::BenchPrecision(args) => bench::precision::run(args),
        Command::BenchMemory(args) => bench::run_memory(args),
        Command::Train(args) => cli::train::run(&args),
        Command::Demo(args) => cli::demo::run(&args),
        Command::BenchLoader(args) => cli::run_bench_loader(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
