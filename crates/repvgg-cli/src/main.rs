//! `repvgg`: train, convert, evaluate and run RepVGG checkpoints.

use std::process::ExitCode;

use clap::Parser;
use repvgg_cli::{Cli, init_logger};

fn main() -> ExitCode {
    init_logger();
    Cli::parse().run()
}
