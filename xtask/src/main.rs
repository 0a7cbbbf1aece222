//! Developer commands for the workspace: `cargo xtask <command>`. `convert`, `eval` and `archs`
//! are the installable `repvgg` tool's commands (crate `repvgg-cli`), kept here under the names
//! people are told; `bench` and `bench-train` are the developers' own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_cli::{archs, convert, eval};

mod bench;

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
    /// One memory measurement of `bench`, in a fresh process.
    #[command(hide = true)]
    BenchMemory(bench::MemoryArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Archs { size } => {
            print!("{}", archs::table(size as usize));
            Ok(())
        }
        Command::Convert(args) => convert::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench::training::run(args),
        Command::BenchMemory(args) => bench::run_memory(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
