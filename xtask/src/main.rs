//! The developers' chores: `cargo xtask <command>`. The measurements (`bench`, `bench-train`,
//! `bench-layers`, `bench-precision`, `bench-loader`) and the PyTorch fixtures (`fixtures`).
//! The user's commands live in the `repvgg` tool (crate `repvgg-cli`); built with the
//! `gpu-bundle` feature, this binary also carries that tool whole as `xtask repvgg ...`, so that
//! one executable travels to a GPU machine (`scripts/gpu-build.sh`).

mod bench;

use std::process::{Command as Process, ExitCode};

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Developer commands for repvgg-burn", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Bench(bench::inference::BenchArgs),
    /// Time full training steps (forward, backward, SGD) beside PyTorch eager, and write
    /// benchmarks/training.md.
    BenchTrain(bench::training::TrainBenchArgs),
    BenchLayers(bench::layers::LayerBenchArgs),
    BenchPrecision(bench::precision::PrecisionBenchArgs),
    BenchInt8(bench::int8::Int8BenchArgs),
    /// Measure the data pipeline: decoded and augmented ImageNet-sized JPEGs per second, for
    /// each worker count, beside torchvision's with --python (or REPVGG_PYTHON).
    BenchLoader(bench::loader::LoaderBenchArgs),
    /// One memory measurement of `bench`, in a fresh process.
    #[command(hide = true)]
    BenchMemory(bench::memory::MemoryArgs),
    /// Regenerate the PyTorch parity fixtures and the test images with scripts/make_fixtures.py,
    /// then check the ONNX export against ONNX Runtime (scripts/check_onnx.py).
    Fixtures {
        /// A Python with torch, timm, safetensors and onnxruntime.
        #[arg(long, env = "REPVGG_PYTHON", default_value = "python3")]
        python: String,
        /// Arguments for make_fixtures.py (e.g. --plus-only).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The `repvgg` tool, whole (the GPU bundle's one executable).
    #[cfg(feature = "gpu-bundle")]
    #[command(hide = true)]
    Repvgg(repvgg_cli::Cli),
}

fn main() -> ExitCode {
    repvgg_cli::init_logger();
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::inference::run(args),
        Command::BenchTrain(args) => bench::training::run(args),
        Command::BenchLayers(args) => bench::layers::run(args),
        Command::BenchPrecision(args) => bench::precision::run(args),
        Command::BenchInt8(args) => bench::int8::run(args),
        Command::BenchLoader(args) => bench::loader::run(args),
        Command::BenchMemory(args) => bench::memory::run_memory(args),
        Command::Fixtures { python, args } => fixtures(&python, &args),
        #[cfg(feature = "gpu-bundle")]
        Command::Repvgg(cli) => return cli.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask fixtures`: builds the `repvgg` binary that check_onnx.py converts with, then
/// runs make_fixtures.py.
fn fixtures(python: &str, args: &[String]) -> Result<()> {
    let root = bench::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Process::new(cargo)
        .args(["build", "--workspace"])
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    ensure!(built.success(), "cargo build --workspace failed");
    let script = root.join("scripts/make_fixtures.py");
    let ran = Process::new(python)
        .arg(&script)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("cannot run {python}"))?;
    ensure!(ran.success(), "{} failed", script.display());
    Ok(())
}
