//! `cargo xtask bench`: inference speed of both RepVGG forms beside ResNet baselines,
//! PyTorch and the deployment engines (ONNX Runtime and OpenVINO running the project's own ONNX
//! export), re-parameterization and export time, inference memory and the data pipeline,
//! written to BENCHMARKS.md.

pub mod layers;
mod machine;
pub mod precision;
mod resnet;
pub mod training;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use repvgg_deploy::onnx::{OnnxOptions, network_to_onnx};
use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel, median_millis};
use repvgg_model::{DeviceChoice, RepVggArch, Weights, reparameterize};
use repvgg_train::throughput::{LoaderBenchArgs, bench_loader};

use resnet::ResNet;

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
    arch: Vec<RepVggArch>,

    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,

    /// Square input size.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    size: u32,

    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,

    /// Precisions of the CPU deploy path, comma separated: f32 (rows "deploy-cpu") and bf16
    /// (rows "deploy-cpu-bf16"; skipped with a note on CPUs without AVX512_BF16).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    precision: Vec<CpuPrecision>,

    /// Timed forward passes per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    runs: usize,

    /// Untimed forward passes before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,

    /// Rounds, each timing every model, ours then PyTorch's and the engines' (the median over
    /// rounds is reported): on a shared machine, whose load changes over tens of seconds, the
    /// figures compared then come from measurements close in time.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Python for the PyTorch columns (torch, timm; CPU and CUDA) and the deployment engines
    /// (onnxruntime, openvino; CPU only); a missing package skips its figures, "none" skips them
    /// all.
    #[arg(long, env = "REPVGG_PYTHON", default_value = "python3")]
    python: String,

    /// JPEGs decoded for the data-pipeline line (0 skips it).
    #[arg(long, default_value_t = 128)]
    loader_images: usize,

    /// Where the report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
}

/// One model at one batch size, built once and timed in every round.
struct Subject {
    model: String,
    form: &'static str,
    batch: usize,
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
    /// Each architecture's CPU path in each precision, kept to report its prepared size (which
    /// grows with the batch sizes run) after the rounds.
    cpu_paths: Vec<(String, CpuPrecision, Arc<DeployModel>)>,
    /// Each architecture's ONNX export: time in ms, size in bytes.
    exports: Vec<(String, f64, usize)>,
}

/// A latency measured in each round: the median over the rounds of each round's median, and the
/// range of those per-round medians.
#[derive(Clone, Copy, Debug)]
struct Latency {
    /// With an even number of rounds, the mean of the middle two.
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// How many rounds measured it.
    rounds: usize,
}

impl Latency {
    /// The latency of per-round medians `ms` (at least one).
    fn over_rounds(mut ms: Vec<f64>) -> Self {
        assert!(!ms.is_empty(), "a latency needs at least one round");
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        Latency {
            median_ms: (ms[(n - 1) / 2] + ms[n / 2]) / 2.0,
            min_ms: ms[0],
            max_ms: ms[n - 1],
            rounds: n,
        }
    }
}

/// One timed model at one batch size.
struct Measurement {
    model: String,
    form: &'static str,
    batch: usize,
    latency: Latency,
    /// Peak resident memory of a fresh process running this model at this batch (CPU only):
    /// (whole process, inference above the loaded model).
    peak_mb: Option<(f64, f64)>,
    /// PyTorch eager's latency for the same model (each of our deploy forms beside its one).
    torch: Option<Latency>,
}

impl Measurement {
    fn images_per_second(&self) -> f64 {
        self.batch as f64 * 1000.0 / self.latency.median_ms
    }
}

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
        .cpu_paths
        .iter()
        .map(|(model, precision, fast)| {
            let bytes = fast.cpu_path().map_or(0, |cpu| cpu.prepared_bytes());
            (model.clone(), *precision, bytes)
        })
        .collect();
    let loader = (args.loader_images > 0)
        .then(|| {
            bench_loader(&LoaderBenchArgs {
                data: None,
                images: args.loader_images,
                workers: vec![1],
                image_size: 224,
                rand_augment: None,
                random_erasing: None,
            })
        })
        .transpose()?;

    let report = report(
        &args,
        &rows,
        &prepared,
        &reparameterization,
        &subjects.exports,
        torch.as_ref(),
        loader.as_ref().and_then(|l| l.first()),
    );
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
    // The CPU path runs on the CPU backend only.
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
    /// `arch`'s training-time model, its deploy model through Burn's ops and through the CPU path
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
        // The CPU path in each precision, prepared once per architecture as an application would
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
            self.cpu_paths.push((model.clone(), precision, fast));
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

/// The row name of the CPU path in `precision`.
fn cpu_form(precision: CpuPrecision) -> &'static str {
    match precision {
        CpuPrecision::F32 => "deploy-cpu",
        CpuPrecision::Bf16 => "deploy-cpu-bf16",
    }
}

fn random_images(batch: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// Runs `cargo xtask bench-memory` for one configuration in a fresh process, so that no earlier
/// measurement's allocations hide this one's.
fn peak_memory_of(model: &str, form: &str, batch: usize, size: u32) -> Option<(f64, f64)> {
    let output = Command::new(std::env::current_exe().ok()?)
        .args(["bench-memory", "--model", model, "--form", form])
        .args(["--batch", &batch.to_string(), "--size", &size.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .split_whitespace()
        .filter_map(|word| word.parse::<f64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Options of the hidden `bench-memory` command (one configuration, CPU).
#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    form: String,
    #[arg(long)]
    batch: usize,
    #[arg(long)]
    size: usize,
    /// Two training steps (`bench-train`) instead of two forward passes.
    #[arg(long)]
    train: bool,
}

/// The benchmarks (and their PyTorch side) cover RepVGG: refuse RepVGGplus by name rather than
/// fail inside.
pub fn ensure_repvgg(archs: &[RepVggArch]) -> Result<()> {
    match archs.iter().find(|arch| arch.config().is_plus()) {
        Some(arch) => anyhow::bail!(
            "{arch}: the benchmarks cover the RepVGG architectures; RepVGGplus is not benchmarked"
        ),
        None => Ok(()),
    }
}

/// Builds one model on the CPU, runs it twice and prints `PEAK_MB INFERENCE_MB`: the
/// process's peak resident memory, and how far it rose above the loaded model and input.
pub fn run_memory(args: MemoryArgs) -> Result<()> {
    if args.train {
        let memory = machine::PeakMemory::start().context("/proc/self is not available")?;
        training::two_steps(RepVggArch::from_name(&args.model)?, args.batch, args.size);
        println!("{:.1} {:.1}", memory.peak_mb(), memory.growth_mb());
        return Ok(());
    }
    let device = Device::flex();
    let images = random_images(args.batch, args.size, &device);
    // Parameters are created lazily: touch them all, so that the weights count as the model's.
    fn loaded<M: Module>(net: M) -> M {
        net.visit(&mut Touch);
        net
    }
    let forward: Box<dyn Fn() -> Tensor<2>> = match (args.model.as_str(), args.form.as_str()) {
        ("ResNet-18", _) => {
            let net = loaded(ResNet::resnet18(&device));
            Box::new(move || net.forward(images.clone()))
        }
        ("ResNet-50", _) => {
            let net = loaded(ResNet::resnet50(&device));
            Box::new(move || net.forward(images.clone()))
        }
        (name, "training") => {
            let config = RepVggArch::from_name(name)?.config();
            let net = loaded(config.init(&device));
            Box::new(move || net.forward(images.clone()))
        }
        (name, form @ ("deploy-cpu" | "deploy-cpu-bf16")) => {
            let config = RepVggArch::from_name(name)?.config();
            let precision = if form == "deploy-cpu" {
                CpuPrecision::F32
            } else {
                CpuPrecision::Bf16
            };
            let options = CpuOptions::default().with_precision(precision);
            let net = DeployModel::with_options(config.init_deploy(&device), options)?;
            Box::new(move || net.forward(images.clone()))
        }
        (name, _) => {
            let config = RepVggArch::from_name(name)?.config();
            let net = loaded(config.init_deploy(&device));
            Box::new(move || net.forward(images.clone()))
        }
    };
    let memory = machine::PeakMemory::start().context("/proc/self is not available")?;
    for _ in 0..2 {
        forward().into_data();
    }
    println!("{:.1} {:.1}", memory.peak_mb(), memory.growth_mb());
    Ok(())
}

/// Reads every float tensor of a module (initializing lazy parameters), copying nothing.
struct Touch;

impl ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
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

/// What `scripts/bench_torch.py` measured: latencies `F` are one round's median ms (`f64`), or
/// [`Latency`] over the rounds.
struct TorchFigures<F> {
    /// PyTorch's version, when torch and timm were there.
    version: Option<String>,
    threads: usize,
    /// How many rounds (script runs) the figures come from.
    rounds: usize,
    /// PyTorch eager, by "RepVGG-A0/deploy/8".
    models: HashMap<String, F>,
    /// The engines that ran the exported files.
    engines: Vec<EngineFigures<F>>,
    /// What was skipped, and why.
    notes: Vec<String>,
}

/// One deployment engine's latencies on the exported files.
struct EngineFigures<F> {
    /// bench_torch.py's name for it: "openvino-default".
    key: &'static str,
    /// "ONNX Runtime 1.32.0 (f32)".
    label: String,
    /// By "RepVGG-A0/8".
    models: HashMap<String, F>,
}

impl TorchFigures<Latency> {
    /// The rounds' figures in one (none without a round): each latency over the rounds that
    /// measured it; version, threads, engines' labels and notes as the first round found them.
    fn over_rounds(rounds: &[TorchFigures<f64>]) -> Option<Self> {
        let first = rounds.first()?;
        let engines = first
            .engines
            .iter()
            .map(|engine| EngineFigures {
                key: engine.key,
                label: engine.label.clone(),
                models: latencies(
                    rounds
                        .iter()
                        .flat_map(|round| &round.engines)
                        .filter(|other| other.key == engine.key)
                        .map(|other| &other.models),
                ),
            })
            .collect();
        Some(TorchFigures {
            version: first.version.clone(),
            threads: first.threads,
            rounds: rounds.len(),
            models: latencies(rounds.iter().map(|round| &round.models)),
            engines,
            notes: first.notes.clone(),
        })
    }

    /// PyTorch eager's latency for our `model` in `form` at `batch`: PyTorch has one deploy
    /// model, which each of our deploy forms is compared with.
    fn eager(&self, model: &str, form: &str, batch: usize) -> Option<Latency> {
        let form = if form.starts_with("deploy") {
            "deploy"
        } else {
            form
        };
        self.models.get(&format!("{model}/{form}/{batch}")).copied()
    }
}

/// Each model's latency over the rounds' figures (by model) that include it.
fn latencies<'a>(
    rounds: impl Iterator<Item = &'a HashMap<String, f64>>,
) -> HashMap<String, Latency> {
    let mut per_model: HashMap<String, Vec<f64>> = HashMap::new();
    for figures in rounds {
        for (model, &ms) in figures {
            per_model.entry(model.clone()).or_default().push(ms);
        }
    }
    per_model
        .into_iter()
        .map(|(model, ms)| (model, Latency::over_rounds(ms)))
        .collect()
}

/// One run of `scripts/bench_torch.py`: one round's Python figures.
fn run_torch(args: &BenchArgs, onnx_dir: &Path) -> Result<TorchFigures<f64>> {
    let join = |items: Vec<String>| items.join(",");
    let mut script_args = vec![
        "--archs".into(),
        join(args.arch.iter().map(|a| a.name().to_string()).collect()),
        "--batches".into(),
        join(args.batch.iter().map(usize::to_string).collect()),
        "--size".into(),
        args.size.to_string(),
        "--runs".into(),
        args.runs.to_string(),
        "--warmup".into(),
        args.warmup.to_string(),
    ];
    // The deployment engines run on the CPU only.
    if args.device == DeviceChoice::Cpu {
        script_args.extend(["--onnx-dir".into(), onnx_dir.display().to_string()]);
    }
    let json = run_bench_script(&args.python, &script_args, args.device)?;
    let models = json["models"]
        .as_object()
        .context("no models in bench_torch.py's output")?
        .iter()
        .filter_map(|(key, value)| Some((torch_key(key), value["median_ms"].as_f64()?)))
        .collect();
    let names = [
        ("onnxruntime", "ONNX Runtime"),
        ("openvino-f32", "OpenVINO"),
        ("openvino-default", "OpenVINO"),
    ];
    let engines = names
        .into_iter()
        .filter_map(|(key, name)| {
            let engine = json["engines"].get(key)?;
            Some(EngineFigures {
                key,
                label: format!(
                    "{name} {} ({})",
                    engine["version"].as_str().unwrap_or("?"),
                    engine["precision"].as_str().unwrap_or("?")
                ),
                models: engine["models"]
                    .as_object()?
                    .iter()
                    .filter_map(|(key, ms)| Some((torch_key(key), ms.as_f64()?)))
                    .collect(),
            })
        })
        .collect();
    let notes = json["notes"]
        .as_array()
        .map(|notes| {
            notes
                .iter()
                .filter_map(|note| Some(note.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(TorchFigures {
        version: json["torch"].as_str().map(str::to_string),
        threads: json["threads"].as_u64().unwrap_or(0) as usize,
        rounds: 1,
        models,
        engines,
        notes,
    })
}

/// Runs `scripts/bench_torch.py` with `python`, `args`, PyTorch on `device` and one thread per
/// core, and parses the JSON object it prints.
fn run_bench_script(
    python: &str,
    args: &[String],
    device: DeviceChoice,
) -> Result<serde_json::Value> {
    let script = workspace_root().join("scripts/bench_torch.py");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .args(["--threads", &threads.to_string(), "--device", device.name()])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    serde_json::from_slice(&output.stdout).context("unexpected output of bench_torch.py")
}

/// bench_torch.py names RepVGG models by the short preset name ("A0"); the rows use "RepVGG-A0".
fn torch_key(key: &str) -> String {
    if key.starts_with("ResNet") {
        key.to_string()
    } else {
        format!("RepVGG-{key}")
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn report(
    args: &BenchArgs,
    rows: &[Measurement],
    prepared: &[(String, CpuPrecision, usize)],
    reparameterization: &[(String, f64)],
    exports: &[(String, f64, usize)],
    torch: Option<&TorchFigures<Latency>>,
    loader: Option<&repvgg_train::throughput::LoaderThroughput>,
) -> String {
    let mut out = String::new();
    let command = format!(
        "cargo xtask bench --arch {} --batch {} --size {} --device {} --precision {} --runs {} \
         --rounds {}",
        args.arch
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(","),
        args.batch
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.size,
        format!("{:?}", args.device).to_lowercase(),
        args.precision
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(","),
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
    }) = torch
    {
        let _ = writeln!(
            out,
            "PyTorch {version} eager, {threads} threads, `torch.inference_mode()`, models built by \
             timm (deploy form by `timm.utils.reparameterize_model`), measured in the same run by \
             `scripts/bench_torch.py`.\n"
        );
    }
    let _ = writeln!(
        out,
        "## Inference at {0}x{0} (median of {1} rounds, each the median of {2} runs after {3} \
         warm-up)\n",
        args.size, args.rounds, args.runs, args.warmup
    );
    if let Some(torch) = torch {
        interleaving(&mut out, args, torch);
    }
    let _ = writeln!(
        out,
        "| model | form | batch | burn img/s | burn ms | PyTorch img/s | burn / PyTorch | deploy speed-up | peak MB | inference MB |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let torch_ips = row
            .torch
            .map(|torch| row.batch as f64 * 1000.0 / torch.median_ms);
        let speedup = row
            .form
            .starts_with("deploy")
            .then(|| {
                rows.iter()
                    .find(|r| r.model == row.model && r.batch == row.batch && r.form == "training")
            })
            .flatten()
            .map(|training| format!("{:.2}x", training.latency.median_ms / row.latency.median_ms));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            row.model,
            row.form,
            row.batch,
            row.images_per_second(),
            row.latency.median_ms,
            torch_ips.map_or("-".into(), |v| format!("{v:.1}")),
            torch_ips.map_or("-".into(), |v| format!(
                "{:.2}",
                row.images_per_second() / v
            )),
            speedup.unwrap_or_else(|| "-".into()),
            row.peak_mb
                .map_or("-".into(), |(peak, _)| format!("{peak:.0}")),
            row.peak_mb
                .map_or("-".into(), |(_, growth)| format!("{growth:.0}")),
        );
    }
    let _ = writeln!(
        out,
        "\n\"deploy-cpu\": the deploy model through `repvgg_deploy::DeployModel`, which on the CPU \
         backend runs `CpuDeploy` (channels-last throughout, Winograd F(4x4) or F(2x2) or im2col for \
         the stride-1 layers as `ConvAlgorithm::Auto` chooses, a few images at a time, blocked \
         im2col for the strided ones, the stem on the zero-bordered images in place, matrix \
         products by its own AVX-512 kernels on weights packed once (gemm on other CPUs), bias \
         and ReLU on the output pass); \
         \"deploy-cpu-bf16\": the same in bf16 (weights and activations rounded to bfloat16 for \
         the products, f32 accumulation, AVX512_BF16); \
         \"deploy\": the same model through Burn's generic ops.\n\n\"peak MB\": the peak resident memory of a fresh process that builds the model (random \
         weights), makes one input batch and runs it twice on the CPU; \"inference MB\": how far \
         that peak rose above the memory held once model and input existed.\n"
    );
    if !prepared.is_empty() {
        let _ = writeln!(
            out,
            "Prepared CPU path (the weights, and the transformed and packed forms the batch sizes \
             above used, held beside the model): {}.\n",
            prepared
                .iter()
                .map(|(model, precision, bytes)| format!(
                    "{model} {precision} {:.1} MB",
                    *bytes as f64 / 1e6
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(torch) = torch.filter(|torch| !torch.engines.is_empty()) {
        engines_table(&mut out, rows, torch);
    }
    let _ = writeln!(
        out,
        "## Re-parameterization (training-time weights to deploy weights)\n"
    );
    let _ = writeln!(out, "| architecture | time ms |\n|---|---:|");
    for (arch, ms) in reparameterization {
        let _ = writeln!(out, "| {arch} | {ms:.1} |");
    }
    let _ = writeln!(
        out,
        "\n## ONNX export (deploy weights to an opset-17 graph in memory)\n\n| architecture | \
         time ms | size MB |\n|---|---:|---:|"
    );
    for (arch, ms, bytes) in exports {
        let _ = writeln!(out, "| {arch} | {ms:.1} | {:.1} |", *bytes as f64 / 1e6);
    }
    if let Some(loader) = loader {
        let _ = writeln!(
            out,
            "\n## Training data pipeline\n\nDecode a 500x375 JPEG, RandomResizedCrop to 224, flip, \
             normalise, batch: {:.1} images/s on one core ({} images).",
            loader.images_per_second, loader.images
        );
    }
    out
}

/// Why PyTorch's and the engines' figures are comparable with ours: the rounds interleave them.
fn interleaving(out: &mut String, args: &BenchArgs, torch: &TorchFigures<Latency>) {
    let _ = write!(
        out,
        "The rounds are interleaved: each times this project's rows, then PyTorch and the \
         deployment engines, in turn, so that the figures compared are measured close in time \
         (a shared machine's load changes between measurements minutes apart)."
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

/// The deploy model through the CPU path beside PyTorch eager and the engines running its ONNX
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
         latency hint; in f32, and in its default precision) run the file `cargo xtask convert \
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
