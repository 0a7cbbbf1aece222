//! The report `cargo xtask bench` prints and writes to benchmarks/inference.md: the command and machine,
//! the inference table, the deployment engines beside the CPU engine, re-parameterization and
//! export times, and the data pipeline.

use std::fmt::Write as _;

use repvgg_deploy::CpuPrecision;

use super::Latency;
use super::inference::{BenchArgs, Measurement};
use super::loader::Throughput;
use super::machine;
use super::python::TorchFigures;

/// Everything one run measured.
pub(super) struct Report<'a> {
    pub args: &'a BenchArgs,
    pub rows: &'a [Measurement],
    /// Each architecture's CPU engine: its prepared bytes per precision.
    pub prepared: &'a [(String, CpuPrecision, usize)],
    /// Each architecture's re-parameterization time, ms.
    pub reparameterization: &'a [(String, f64)],
    /// Each architecture's ONNX export: time in ms, size in bytes.
    pub exports: &'a [(String, f64, usize)],
    pub torch: Option<&'a TorchFigures<Latency>>,
    /// The data pipeline on one core.
    pub loader: Option<Throughput>,
}

impl Report<'_> {
    /// The report in markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.inference_table(&mut out);
        self.notes(&mut out);
        if let Some(torch) = self.torch.filter(|torch| !torch.engines.is_empty()) {
            engines_table(&mut out, self.rows, torch);
        }
        self.conversion(&mut out);
        if let Some(loader) = &self.loader {
            let _ = writeln!(
                out,
                "\n## Training data pipeline\n\nDecode a 500x375 JPEG, RandomResizedCrop to 224, \
                 flip, normalise, batch: {:.1} images/s on one core ({} images).",
                loader.images_per_second, loader.images
            );
        }
        out
    }

    /// The command that produced the report, the machine, PyTorch's setup and how the rounds
    /// were run.
    fn header(&self, out: &mut String) {
        let args = self.args;
        let list = |items: Vec<String>| items.join(",");
        let command = format!(
            "cargo xtask bench --arch {} --batch {} --size {} --device {} --precision {} --runs {} \
             --rounds {}",
            list(args.arch.iter().map(|a| a.name().to_string()).collect()),
            list(args.batch.iter().map(usize::to_string).collect()),
            args.size,
            args.device.name(),
            list(
                args.precision
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect()
            ),
            args.runs,
            args.rounds
        );
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(out, "Produced by `{command}`.\n");
        let _ = writeln!(out, "{}\n", machine::describe(args.device.description()));
        if let Some(TorchFigures {
            version: Some(version),
            threads,
            ..
        }) = self.torch
        {
            let _ = writeln!(
                out,
                "PyTorch {version} eager, {threads} threads, `torch.inference_mode()`, models \
                 built by timm (deploy form by `timm.utils.reparameterize_model`), measured in the \
                 same run by `scripts/bench_torch.py`.\n"
            );
        }
        let _ = writeln!(
            out,
            "## Inference at {0}x{0} (median of {1} rounds, each the median of {2} runs after {3} \
             warm-up)\n",
            args.size, args.rounds, args.runs, args.warmup
        );
        if let Some(torch) = self.torch {
            let _ = write!(
                out,
                "The rounds are interleaved: each times this project's rows, then PyTorch and the \
                 deployment engines, in turn, so that the figures compared are measured close in \
                 time (a shared machine's load changes between measurements minutes apart)."
            );
            if torch.rounds < args.rounds {
                let _ = write!(
                    out,
                    " PyTorch's and the engines' figures come from the {} of {} rounds in which \
                     `scripts/bench_torch.py` succeeded.",
                    torch.rounds, args.rounds
                );
            }
            let _ = writeln!(out, "\n");
        }
    }

    /// One row per model, form and batch: ours beside PyTorch's, the deploy forms' speed-up over
    /// the training form, and peak memory.
    fn inference_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| model | form | batch | burn img/s | burn ms | PyTorch img/s | burn / PyTorch | \
             deploy speed-up | peak MB | inference MB |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let dash = || "-".to_string();
        for row in self.rows {
            let torch = row.torch.map(|t| row.batch as f64 * 1000.0 / t.median_ms);
            let training = self
                .rows
                .iter()
                .find(|r| r.model == row.model && r.batch == row.batch && r.form == "training");
            let speedup = training
                .filter(|_| row.form.starts_with("deploy"))
                .map(|t| format!("{:.2}x", t.latency.median_ms / row.latency.median_ms));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                row.model,
                row.form,
                row.batch,
                row.images_per_second(),
                row.latency.median_ms,
                torch.map_or_else(dash, |v| format!("{v:.1}")),
                torch.map_or_else(dash, |v| format!("{:.2}", row.images_per_second() / v)),
                speedup.unwrap_or_else(dash),
                row.peak_mb
                    .map_or_else(dash, |(peak, _)| format!("{peak:.0}")),
                row.peak_mb
                    .map_or_else(dash, |(_, growth)| format!("{growth:.0}")),
            );
        }
    }

    /// What the forms and memory columns are, and the CPU engine's prepared sizes.
    fn notes(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n\"deploy-cpu\": the deploy model through `repvgg_deploy::DeployModel`, which on the \
             CPU backend runs `repvgg_cpu::CpuEngine` (channels-last throughout, Winograd F(4x4) or \
             F(2x2) or im2col for the stride-1 layers as `ConvAlgorithm::Auto` chooses, a few \
             images at a time, blocked im2col for the strided ones, the stem on the zero-bordered \
             images in place, matrix products by its own AVX-512 kernels on weights packed once \
             (gemm on other CPUs), bias and ReLU on the output pass); \"deploy-cpu-bf16\": the \
             same in bf16 (weights and activations rounded to bfloat16 for the products, f32 \
             accumulation, AVX512_BF16); \"deploy\": the same model through Burn's generic \
             ops.\n\n\"peak MB\": the peak resident memory of a fresh process that builds the \
             model (random weights), makes one input batch and runs it twice on the CPU; \
             \"inference MB\": how far that peak rose above the memory held once model and input \
             existed.\n"
        );
        if !self.prepared.is_empty() {
            let sizes: Vec<String> = self
                .prepared
                .iter()
                .map(|(model, precision, bytes)| {
                    format!("{model} {precision} {:.1} MB", *bytes as f64 / 1e6)
                })
                .collect();
            let _ = writeln!(
                out,
                "Prepared CPU engine (the weights, and the transformed and packed forms the batch \
                 sizes above used, held beside the model): {}.\n",
                sizes.join(", ")
            );
        }
    }

    /// Re-parameterization and ONNX export times.
    fn conversion(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Re-parameterization (training-time weights to deploy weights)\n"
        );
        let _ = writeln!(out, "| architecture | time ms |\n|---|---:|");
        for (arch, ms) in self.reparameterization {
            let _ = writeln!(out, "| {arch} | {ms:.1} |");
        }
        let _ = writeln!(
            out,
            "\n## ONNX export (deploy weights to an opset-17 graph in memory)\n\n| architecture | \
             time ms | size MB |\n|---|---:|---:|"
        );
        for (arch, ms, bytes) in self.exports {
            let _ = writeln!(out, "| {arch} | {ms:.1} | {:.1} |", *bytes as f64 / 1e6);
        }
    }
}

/// The deploy model on the CPU engine beside PyTorch eager and the engines running its ONNX
/// export, in images/s: each cell the median over the rounds and, over several rounds, their
/// range.
fn engines_table(out: &mut String, rows: &[Measurement], torch: &TorchFigures<Latency>) {
    let ranges = if rows.iter().any(|row| row.latency.rounds > 1) {
        " (in brackets, the range of the rounds' figures)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "\n## Deployment engines (the same deploy model: ours, and its ONNX export)\n\n\
         ONNX Runtime (CPU execution provider, all graph optimisations) and OpenVINO (CPU, \
         latency hint; in f32, and in its default precision) run the file `repvgg convert \
         --output X.onnx` writes, with {} threads, in the same run. Images/s, the median over \
         the rounds{ranges}:\n",
        torch.threads
    );
    let bf16 = rows.iter().any(|row| row.form == "deploy-cpu-bf16");
    let mut header = "| model | batch | this project (deploy-cpu, f32)".to_string();
    if bf16 {
        header += " | this project (deploy-cpu-bf16)";
    }
    header += " | PyTorch eager (f32)";
    for engine in &torch.engines {
        header += &format!(" | {}", engine.label);
    }
    let _ = writeln!(out, "{header} |");
    let _ = writeln!(
        out,
        "|---|---:|---:|---:{}|",
        "|---:".repeat(torch.engines.len() + usize::from(bf16))
    );
    for row in rows.iter().filter(|row| row.form == "deploy-cpu") {
        let mut line = format!(
            "| {} | {} | {}",
            row.model,
            row.batch,
            images_per_second_cell(row.batch, Some(row.latency))
        );
        if bf16 {
            let bf16_row = rows.iter().find(|r| {
                r.form == "deploy-cpu-bf16" && r.model == row.model && r.batch == row.batch
            });
            line += &format!(
                " | {}",
                images_per_second_cell(row.batch, bf16_row.map(|r| r.latency))
            );
        }
        line += &format!(" | {}", images_per_second_cell(row.batch, row.torch));
        for engine in &torch.engines {
            let key = format!("{}/{}", row.model, row.batch);
            line += &format!(
                " | {}",
                images_per_second_cell(row.batch, engine.models.get(&key).copied())
            );
        }
        let _ = writeln!(out, "{line} |");
    }
    out.push('\n');
}

/// A cell of images/s at `batch`: the median and, over several rounds, the range ("92.3
/// (88.0-95.1)"); "-" where nothing was measured.
fn images_per_second_cell(batch: usize, latency: Option<Latency>) -> String {
    let Some(latency) = latency else {
        return "-".to_string();
    };
    let per_second = |ms: f64| batch as f64 * 1000.0 / ms;
    let median = per_second(latency.median_ms);
    if latency.rounds > 1 {
        // The slowest round has the fewest images/s.
        let (low, high) = (per_second(latency.max_ms), per_second(latency.min_ms));
        format!("{median:.1} ({low:.1}-{high:.1})")
    } else {
        format!("{median:.1}")
    }
}
