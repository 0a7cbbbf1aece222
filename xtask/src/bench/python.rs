//! PyTorch's and the deployment engines' side of `cargo xtask bench`: one run of
//! `scripts/bench_torch.py` per round, and its figures over the rounds.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use repvgg_model::DeviceChoice;

use super::inference::BenchArgs;
use super::{Latency, workspace_root};

/// What `scripts/bench_torch.py` measured: latencies `F` are one round's median ms (`f64`), or
/// [`Latency`] over the rounds.
pub(super) struct TorchFigures<F> {
    /// PyTorch's version, when torch and timm were there.
    pub version: Option<String>,
    pub threads: usize,
    /// How many rounds (script runs) the figures come from.
    pub rounds: usize,
    /// PyTorch eager, by "RepVGG-A0/deploy/8".
    pub models: HashMap<String, F>,
    /// The engines that ran the exported files.
    pub engines: Vec<EngineFigures<F>>,
    /// What was skipped, and why.
    pub notes: Vec<String>,
}

/// One deployment engine's latencies on the exported files.
pub(super) struct EngineFigures<F> {
    /// bench_torch.py's name for it: "openvino-default".
    pub key: &'static str,
    /// "ONNX Runtime 1.32.0 (f32)".
    pub label: String,
    /// By "RepVGG-A0/8".
    pub models: HashMap<String, F>,
}

impl TorchFigures<Latency> {
    /// The rounds' figures in one (none without a round): each latency over the rounds that
    /// measured it; version, threads, engines' labels and notes as the first round found them.
    pub fn over_rounds(rounds: &[TorchFigures<f64>]) -> Option<Self> {
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
    pub fn eager(&self, model: &str, form: &str, batch: usize) -> Option<Latency> {
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
pub(super) fn run_torch(args: &BenchArgs, onnx_dir: &Path) -> Result<TorchFigures<f64>> {
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
pub(super) fn run_bench_script(
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
