//! `repvgg-train`: the same as `repvgg train` (same flags, same code), under the name a training
//! script looks for: `repvgg-train --data /data/imagenet --arch A0`.

use std::process::ExitCode;

use clap::Parser;
use repvgg_cli::{Cli, init_logger};

fn main() -> ExitCode {
    init_logger();
    let args = std::env::args_os().skip(1);
    let command = ["repvgg".into(), "train".into()].into_iter().chain(args);
    Cli::parse_from(command).run()
}
