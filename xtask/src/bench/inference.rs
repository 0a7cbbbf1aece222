//! `cargo xtask bench`: inference speed of both RepVGG forms beside ResNet baselines, PyTorch
//! and the deployment engines (ONNX Runtime and OpenVINO running the project's own ONNX export),
//! re-parameterization and export time, inference memory and the data pipeline, written to
//! benchmarks/inference.md (BENCHMARKS.md quotes it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::tensor::{Device, Tensor};
use clap::Args;
use repvgg_deploy::onnx::{OnnxOptions, network_to_onnx};
use repvgg_deploy::timing::median_millis;
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel};
use repvgg_model::{DeviceChoice, RepVggArch, Weights, reparameterize};

use super::memory::peak_memory_of;
use super::python::{TorchFigures, run_torch};
use super::report::Report;
use super::resnet::ResNet;
use super::{Latency, ensure_repvgg, loader, random_images};

/// Measure inference speed: RepVGG's training-time and deploy models, ResNet-18/50 baselines
/// and (on the CPU and on CUDA) PyTorch's eager figures for the same models on the same device,
/// side by side in one run.
///
/// Prints a markdown report and writes it to --output with a description of the machine.
/// Latency is the median over --rounds rounds of the median of --runs timed forward passes after
/// --warmup untimed ones; each round times our models, then PyTorch's and the engines', so that
/// the figures compared are measured close in time. Weights are random (speed does not depend on
/// them).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Architectures, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "A0,B0")]
    pub arch: Vec<RepVggArch>,

    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,

    /// Square input size.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    pub size: u32,

    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,

    /// Precisions of the CPU deploy path, comma separated: f32 (rows "deploy-cpu") and bf16
    /// (rows "deploy-cpu-bf16"; skipped with a note on CPUs without AVX512_BF16).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    pub precision: Vec<CpuPrecision>,

    /// Timed forward passes per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,

    /// Untimed forward passes before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,

    /// Rounds, each timing every model, ours then PyTorch's and the engines' (the median over
    /// rounds is reported): on a shared machine, whose load changes over tens of seconds, the
    /// figures compared then come from measurements close in time.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Python for the PyTorch columns (torch, timm; CPU and CUDA) and the deployment engines
    /// (onnxruntime, openvino; CPU only); a missing package skips its figures, "none" skips them
    /// all.
    #[arg(long, env = "REPVGG_PYTHON", default_value = "python3")]
    pub python: String,

    /// JPEGs decoded for the data-pipeline line (0 skips it).
    #[arg(long, default_value_t = 128)]
    pub loader_images: usize,

    /// Where the report goes.
    #[arg(long, default_value = "benchmarks/inference.md")]
    pub output: PathBuf,
}

/// One model at one batch size, built once and timed in every round.
struct Subject {
    pub model: String,
    pub form: &'static str,
    pub batch: usize,
    /// One forward pass on the subject's input, reading the logits back (which waits for the
    /// device).
    forward: Box<dyn Fn()>,
}

impl Subject {
    /// `net` run by `forward` on `images` (a batch of them).
    fn new<M: 'static>(
        model: &str,
        form: &'static str,
        images: &Tensor<4>,
        net: M,
        forward: impl Fn(&M, Tensor<4>) -> Tensor<2> + 'static,
    ) -> Self {
        let input = images.clone();
        Subject {
            model: model.to_string(),
            form,
            batch: images.dims()[0],
            forward: Box::new(move || {
                forward(&net, input.clone()).into_data();
            }),
        }
    }
}

/// Everything `run` times, built before the first round.
#[derive(Default)]
struct Subjects {
    /// Every model at every batch size, in the report's row order.
    list: Vec<Subject>,
    /// Each architecture's CPU engine in each precision, kept to report its prepared size
    /// (which grows with the batch sizes run) after the rounds.
    cpu_engines: Vec<(String, CpuPrecision, Arc<DeployModel>)>,
    /// Each architecture's ONNX export: time in ms, size in bytes.
    exports: Vec<(String, f64, usize)>,
}

/// One timed model at one batch size.
pub(super) struct Measurement {
    pub model: String,
    pub form: &'static str,
    pub batch: usize,
    pub latency: Latency,
    /// Peak resident memory of a fresh process running this model at this batch (CPU only):
    /// (whole process, inference above the loaded model).
    pub peak_mb: Option<(f64, f64)>,
    /// PyTorch eager's latency for the same model (each of our deploy forms beside its one).
    pub torch: Option<Latency>,
}

impl Measurement {
    pub fn images_per_second(&self) -> f64 {
        self.batch as f64 * 1000.0 / self.latency.median_ms
    }
}

/// Times every model as `args` say, writes the report and prints it.
pub fn run(args: BenchArgs) -> Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure_repvgg(&args.arch)?;
    ensure!(
        !args.batch.is_empty() && args.batch.iter().all(|&b| b > 0),
        "--batch needs positive sizes"
    );
    let device = args.device.device()?;
    let started = Instant::now();

    let precisions: Vec<CpuPrecision> = args
        .precision
        .iter()
        .copied()
        .filter(|precision| {
            let supported = precision.is_supported();
            if !supported {
                eprintln!("note: no {precision} rows: this CPU lacks AVX512_BF16");
            }
            supported
        })
        .collect();
    let onnx_dir = tempfile::tempdir().context("cannot create a directory for the ONNX files")?;
    let subjects = build_subjects(&args, &precisions, &device, onnx_dir.path())?;
    let reparameterization = time_reparameterization(&args.arch, &device)?;

    let (ours, torch_rounds) = time_rounds(&args, &subjects.list, onnx_dir.path());
    let torch = TorchFigures::over_rounds(&torch_rounds);
    if let Some(torch) = &torch {
        for note in &torch.notes {
            eprintln!("note: {note}");
        }
    }
    if args.device == DeviceChoice::Cpu {
        eprintln!("peak memory: one fresh process per row");
    }
    let rows: Vec<Measurement> = subjects
        .list
        .iter()
        .zip(ours)
        .map(|(subject, ms)| Measurement {
            model: subject.model.clone(),
            form: subject.form,
            batch: subject.batch,
            latency: Latency::over_rounds(ms),
            peak_mb: (args.device == DeviceChoice::Cpu)
                .then(|| peak_memory_of(&subject.model, subject.form, subject.batch, args.size))
                .flatten(),
            torch: torch
                .as_ref()
                .and_then(|torch| torch.eager(&subject.model, subject.form, subject.batch)),
        })
        .collect();
    let prepared: Vec<_> = subjects
        .cpu_engines
        .iter()
        .map(|(model, precision, fast)| {
            let bytes = fast.cpu_engine().map_or(0, |cpu| cpu.prepared_bytes());
            (model.clone(), *precision, bytes)
        })
        .collect();
    let loader = (args.loader_images > 0)
        .then(|| loader::on_one_core(args.loader_images))
        .transpose()?;

    let report = Report {
        args: &args,
        rows: &rows,
        prepared: &prepared,
        reparameterization: &reparameterization,
        exports: &subjects.exports,
        torch: torch.as_ref(),
        loader,
    }
    .render();
    println!("{report}");
    std::fs::write(&args.output, &report)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "wrote {} in {:.0?}",
        args.output.display(),
        started.elapsed()
    );
    Ok(())
}

/// Builds every model the rounds time, at every batch size (one input per batch size, shared),
/// and exports each architecture's deploy model to `onnx_dir` for the engines.
fn build_subjects(
    args: &BenchArgs,
    precisions: &[CpuPrecision],
    device: &Device,
    onnx_dir: &Path,
) -> Result<Subjects> {
    let inputs: Vec<Tensor<4>> = args
        .batch
        .iter()
        .map(|&batch| random_images(batch, args.size as usize, device))
        .collect();
    // The CPU engine runs on the CPU backend only.
    let precisions = if args.device == DeviceChoice::Cpu {
        precisions
    } else {
        &[]
    };
    let mut subjects = Subjects::default();
    for &arch in &args.arch {
        eprintln!("building {arch}");
        subjects.add_repvgg(arch, precisions, device, &inputs, onnx_dir)?;
    }
    for (name, resnet) in [
        ("ResNet-18", ResNet::resnet18(device)),
        ("ResNet-50", ResNet::resnet50(device)),
    ] {
        for images in &inputs {
            subjects.list.push(Subject::new(
                name,
                "-",
                images,
                resnet.clone(),
                |net, images| net.forward(images),
            ));
        }
    }
    Ok(subjects)
}

impl Subjects {
    /// `arch`'s training-time model, its deploy model through Burn's ops and through the CPU engine
    /// in each of `precisions`, at each batch size of `inputs`; and its ONNX export, written to
    /// `onnx_dir` as `convert --output X.onnx` would write it.
    fn add_repvgg(
        &mut self,
        arch: RepVggArch,
        precisions: &[CpuPrecision],
        device: &Device,
        inputs: &[Tensor<4>],
        onnx_dir: &Path,
    ) -> Result<()> {
        let config = arch.config();
        let training = config.init(device);
        let weights = Weights::from_module(&training)?;
        let deploy = reparameterize(&weights, &config, device)?
            .load_into(config.init_deploy(device), "the deploy model")?;
        let exporting = Instant::now();
        let onnx = network_to_onnx(&deploy.clone().into(), &OnnxOptions::default())?;
        let path = onnx_dir.join(format!("{}.onnx", arch.name()));
        std::fs::write(&path, &onnx).with_context(|| format!("cannot write {}", path.display()))?;
        self.exports.push((
            arch.to_string(),
            exporting.elapsed().as_secs_f64() * 1e3,
            onnx.len(),
        ));
        // The CPU engine in each precision, prepared once per architecture as an application would
        // (each stride-1 form is made the first time a batch size needs it).
        let fast_models = precisions
            .iter()
            .map(|&precision| {
                let options = CpuOptions::default().with_precision(precision);
                let fast = DeployModel::with_options(deploy.clone(), options)?;
                Ok((precision, Arc::new(fast)))
            })
            .collect::<Result<Vec<_>>>()?;
        let model = arch.to_string();
        for images in inputs {
            self.list.push(Subject::new(
                &model,
                "training",
                images,
                training.clone(),
                |net, images| net.forward(images),
            ));
            self.list.push(Subject::new(
                &model,
                "deploy",
                images,
                deploy.clone(),
                |net, images| net.forward(images),
            ));
            for (precision, fast) in &fast_models {
                self.list.push(Subject::new(
                    &model,
                    cpu_form(*precision),
                    images,
                    Arc::clone(fast),
                    |net, images| net.forward(images),
                ));
            }
        }
        for (precision, fast) in fast_models {
            self.cpu_engines.push((model.clone(), precision, fast));
        }
        Ok(())
    }
}

/// Runs --rounds rounds, each timing every subject and then (unless --python none, or on wgpu)
/// running `scripts/bench_torch.py` once: our figures and Python's are measured close in time,
/// however the machine's load drifts between rounds. Returns each subject's per-round medians,
/// and the Python figures of the rounds whose script run succeeded.
fn time_rounds(
    args: &BenchArgs,
    subjects: &[Subject],
    onnx_dir: &Path,
) -> (Vec<Vec<f64>>, Vec<TorchFigures<f64>>) {
    let python =
        matches!(args.device, DeviceChoice::Cpu | DeviceChoice::Cuda) && args.python != "none";
    let mut ours = vec![Vec::with_capacity(args.rounds); subjects.len()];
    let mut torch = Vec::new();
    for round in 1..=args.rounds {
        let progress = format!("round {round}/{}", args.rounds);
        for (times, ms) in ours
            .iter_mut()
            .zip(time_subjects(args, subjects, &progress))
        {
            times.push(ms);
        }
        if !python {
            continue;
        }
        eprintln!(
            "{progress}: PyTorch and the deployment engines ({} scripts/bench_torch.py)",
            args.python
        );
        match run_torch(args, onnx_dir) {
            Ok(figures) => torch.push(figures),
            Err(err) => eprintln!("warning: {progress}: no Python figures: {err:#}"),
        }
    }
    (ours, torch)
}

/// One round of our side: each subject's median latency (of --runs passes after --warmup), in
/// order.
fn time_subjects(args: &BenchArgs, subjects: &[Subject], progress: &str) -> Vec<f64> {
    let mut times = Vec::with_capacity(subjects.len());
    for group in subjects.chunk_by(|a, b| a.model == b.model && a.batch == b.batch) {
        eprintln!("{progress}: {} batch {}", group[0].model, group[0].batch);
        times.extend(
            group
                .iter()
                .map(|subject| median_millis(args.warmup, args.runs, &subject.forward)),
        );
    }
    times
}

/// The row name of the CPU engine in `precision`.
fn cpu_form(precision: CpuPrecision) -> &'static str {
    match precision {
        CpuPrecision::F32 => "deploy-cpu",
        CpuPrecision::Bf16 => "deploy-cpu-bf16",
    }
}

/// Median time to re-parameterize each architecture's training-time weights (3 runs).
fn time_reparameterization(archs: &[RepVggArch], device: &Device) -> Result<Vec<(String, f64)>> {
    let mut times = Vec::new();
    for &arch in archs {
        let config = arch.config();
        let weights = Weights::from_module(&config.init(device))?;
        // The first run checks the input (and warms up); the timed runs repeat it exactly.
        reparameterize(&weights, &config, device)?;
        let median = median_millis(0, 3, || {
            let _ = reparameterize(&weights, &config, device);
        });
        times.push((arch.to_string(), median));
    }
    Ok(times)
}
