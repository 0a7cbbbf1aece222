//! `cargo xtask bench-layers`: the CPU deploy path's time layer by layer, for each precision and
//! stride-1 algorithm asked for, side by side (what `ConvAlgorithm::Auto` is chosen from).

use std::fmt::Write as _;

use anyhow::{Result, ensure};
use burn::tensor::Device;
use clap::Args;
use repvgg_deploy::{ConvAlgorithm, CpuDeploy, CpuOptions, CpuPrecision, LayerTime};
use repvgg_model::RepVggArch;

use super::{ensure_repvgg, random_images};

/// Time the CPU deploy path layer by layer (random weights, images of --size), for every
/// combination of --precision and --algorithm, and print one markdown table per architecture
/// and batch.
#[derive(Args, Debug)]
pub struct LayerBenchArgs {
    #[arg(long, value_delimiter = ',', default_value = "A0")]
    arch: Vec<RepVggArch>,

    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,

    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    size: u32,

    /// f32, bf16 (comma separated; bf16 needs AVX512_BF16).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    precision: Vec<CpuPrecision>,

    /// Stride-1 algorithms: auto, winograd4, winograd2, im2col (comma separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "winograd4,winograd2,im2col"
    )]
    algorithm: Vec<ConvAlgorithm>,

    /// Timed passes per configuration (the median of each layer is reported).
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

pub fn run(args: LayerBenchArgs) -> Result<()> {
    ensure_repvgg(&args.arch)?;
    ensure!(args.runs > 0, "--runs must be at least 1");
    let device = Device::flex();
    let mut out = String::new();
    for &arch in &args.arch {
        let model = arch.config().init_deploy(&device);
        let mut columns = Vec::new();
        for &precision in &args.precision {
            for &algorithm in &args.algorithm {
                let options = CpuOptions::default()
                    .with_precision(precision)
                    .with_algorithm(algorithm);
                columns.push((options, CpuDeploy::with_options(&model, options)?));
            }
        }
        for &batch in &args.batch {
            eprintln!("{arch} batch {batch}");
            let images = random_images(batch, args.size as usize, &device);
            let times: Vec<Vec<LayerTime>> = columns
                .iter()
                .map(|(_, cpu)| cpu.layer_times(images.clone(), args.runs))
                .collect();
            table(&mut out, arch, batch, &columns, &times);
        }
    }
    print!("{out}");
    Ok(())
}

fn table(
    out: &mut String,
    arch: RepVggArch,
    batch: usize,
    columns: &[(CpuOptions, CpuDeploy)],
    times: &[Vec<LayerTime>],
) {
    let _ = writeln!(out, "\n### {arch}, batch {batch} (ms per layer, median)\n");
    let mut header = "| layer | input | output".to_string();
    for (options, _) in columns {
        let _ = write!(header, " | {} {}", options.precision, options.algorithm);
    }
    let _ = writeln!(out, "{header} |");
    let _ = writeln!(out, "|---:|---|---{}|", "|---:".repeat(columns.len()));
    let Some(first) = times.first() else { return };
    for (i, layer) in first.iter().enumerate() {
        let [_, h, w, c] = layer.input;
        let [_, oh, ow, oc] = layer.output;
        let mut line = format!("| {} | {h}x{w}x{c} | {oh}x{ow}x{oc}", layer.index);
        for column in times {
            let _ = write!(
                line,
                " | {:.2} ({})",
                column[i].millis,
                short(column[i].algorithm)
            );
        }
        let _ = writeln!(out, "{line} |");
    }
    let mut total = "| all | | ".to_string();
    for column in times {
        let _ = write!(
            total,
            " | {:.2}",
            column.iter().map(|l| l.millis).sum::<f64>()
        );
    }
    let _ = writeln!(out, "{total} |");
}

/// A layer's algorithm in a table cell.
fn short(algorithm: &str) -> &str {
    match algorithm {
        "winograd F(4x4)" => "W4",
        "winograd F(2x2)" => "W2",
        other => other,
    }
}
