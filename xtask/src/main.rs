//! Developer commands for the workspace: `cargo xtask <command>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_model::RepVggArch;

mod bench;
mod convert;
mod eval;
mod weights_file;

#[derive(Parser, Debug)]
#[command(about = "Developer commands for repvgg-burn", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the architecture table (parameters and compute of every reference architecture,
    /// as computed by `repvgg-model`) in markdown, as quoted in the README.
    Archs {
        /// Square input size the compute is counted at.
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
        size: u32,
    },
    Convert(convert::ConvertArgs),
    Eval(eval::EvalArgs),
    Bench(bench::BenchArgs),
    /// One memory measurement of `bench`, in a fresh process.
    #[command(hide = true)]
    BenchMemory(bench::MemoryArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Archs { size } => {
            print_arch_table(size as usize);
            Ok(())
        }
        Command::Convert(args) => convert::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
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

fn print_arch_table(size: usize) {
    println!(
        "| arch | blocks per stage | widths (stem, stages) | groups | training-time params | \
         deploy params | training-time GMACs | deploy GMACs |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|");
    for arch in RepVggArch::ALL {
        let config = arch.config();
        let params = config.num_params();
        let macs = config.macs(size, size);
        let groups = config
            .grouped_layers
            .values()
            .max()
            .map_or("-".to_string(), |g| format!("{g} (layers 2-26, even)"));
        let groups = if config.use_se {
            format!("{groups}, SE")
        } else {
            groups
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            arch.name(),
            join(&config.num_blocks),
            join(&config.stage_widths()),
            groups,
            thousands(params.training),
            thousands(params.deploy),
            macs.training as f64 / 1e9,
            macs.deploy as f64 / 1e9,
        );
    }
    println!(
        "\nMACs per {size}x{size} image (the paper's \"FLOPs\" column counts MACs; 1 MAC = 2 FLOPs)."
    );
}

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

/// `9108968` as `9,108,968`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
