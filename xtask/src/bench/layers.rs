//! `cargo xtask bench-layers`: the CPU deploy path's time layer by layer, for each precision and
//! stride-1 algorithm asked for, side by side (what `ConvAlgorithm::Auto` is chosen from).

use std::fmt::Write as _;

use anyhow::{Result, ensure};
use burn::tensor::{Device, Tensor};
use clap::Args;
use repvgg_cpu::{ConvAlgorithm, CpuEngine, CpuOptions, CpuPrecision, LayerTime};
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

    /// Timed passes per configuration and round (each layer's median is kept).
    #[arg(long, default_value_t = 10)]
    runs: usize,

    /// Rounds, each timing every configuration in turn (starting one further along each round);
    /// each layer's figure is the median over the rounds. Configurations timed one after another
    /// only once would each see a different moment of a shared machine's load.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub fn run(args: LayerBenchArgs) -> Result<()> {
    ensure_repvgg(&args.arch)?;
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
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
                columns.push((options, CpuEngine::with_options(&model, options)?));
            }
        }
        for &batch in &args.batch {
            eprintln!("{arch} batch {batch}");
            let images = random_images(batch, args.size as usize, &device);
            let times = interleaved(&columns, &images, args.runs, args.rounds);
            table(&mut out, arch, batch, &columns, &times);
        }
    }
    print!("{out}");
    Ok(())
}

/// Each column's layer times over `rounds` rounds, the columns taken in turn (round `r` from
/// column `r`): per layer, the median over the rounds of each round's median.
fn interleaved(
    columns: &[(CpuOptions, CpuEngine)],
    images: &Tensor<4>,
    runs: usize,
    rounds: usize,
) -> Vec<Vec<LayerTime>> {
    let mut measured: Vec<Vec<Vec<LayerTime>>> = vec![Vec::new(); columns.len()];
    for round in 0..rounds {
        for offset in 0..columns.len() {
            let column = (round + offset) % columns.len();
            let times = columns[column].1.layer_times(images.clone(), runs);
            measured[column].push(times);
        }
    }
    measured
        .into_iter()
        .map(|mut rounds| {
            let mut layers = rounds.pop().expect("at least one round");
            for (i, layer) in layers.iter_mut().enumerate() {
                let mut millis: Vec<f64> = rounds.iter().map(|round| round[i].millis).collect();
                millis.push(layer.millis);
                millis.sort_by(f64::total_cmp);
                layer.millis = millis[millis.len() / 2];
            }
            layers
        })
        .collect()
}

fn table(
    out: &mut String,
    arch: RepVggArch,
    batch: usize,
    columns: &[(CpuOptions, CpuEngine)],
    times: &[Vec<LayerTime>],
) {
    let _ = writeln!(
        out,
        "\n### {arch}, batch {batch} (ms per layer, median over interleaved rounds)\n"
    );
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
