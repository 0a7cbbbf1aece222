//! `repvgg`: convert, evaluate and run RepVGG checkpoints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_cli::{archs, classify, convert, eval};

/// RepVGG for Burn: convert training checkpoints (ours, the PyTorch reference's, timm's) into
/// the fast plain model, evaluate weights, classify images.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Convert(convert::ConvertArgs),
    Eval(eval::EvalArgs),
    Classify(classify::ClassifyArgs),
    /// Print the architecture table: parameters and compute of every reference architecture.
    Archs {
        /// Square input size the compute is counted at.
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
        size: u32,
    },
}

fn main() -> ExitCode {
    // The libraries report through `log` (downloads, skipped images); show it unless RUST_LOG
    // says otherwise.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .format_timestamp(None)
        .init();
    let result = match Cli::parse().command {
        Command::Convert(args) => convert::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Archs { size } => {
            print!("{}", archs::table(size as usize));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
