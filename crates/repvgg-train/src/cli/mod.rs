//! The binary's side: flags mapped onto the library's configs, and what is printed. `xtask`
//! compiles this module in too (`#[path]`), so that one binary carries the trainer's commands to
//! a GPU machine.

pub mod demo;
pub mod report;
pub mod train;

use std::io::Write;

use repvgg_train::throughput::{LoaderBenchArgs, bench_loader};

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

/// `bench-loader`: measures, then prints a markdown table.
pub fn run_bench_loader(args: &LoaderBenchArgs) -> anyhow::Result<()> {
    let results = bench_loader(args)?;
    println!("| workers | images | images/s | images/s per worker |");
    println!("|---|---|---|---|");
    for result in results {
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            result.workers,
            result.images,
            result.images_per_second,
            result.images_per_second / result.workers as f64
        );
    }
    Ok(())
}
