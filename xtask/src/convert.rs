//! `cargo xtask convert`: any supported checkpoint in, the deploy-time model out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::config::Config;
use burn::tensor::{Device, DeviceKind, Distribution, Tensor};
use clap::{Args, ValueEnum};
use repvgg_deploy::{
    DeployError, Form, Format, LogitDifference, Weights, infer_arch, logit_difference,
    read_checkpoint, reparameterize, write_checkpoint,
};
use repvgg_model::{RepVggArch, RepVggConfig};

use crate::thousands;

/// Convert a RepVGG checkpoint into the plain deploy-time model.
///
/// Reads our burnpack files (.bpk), PyTorch files of the reference implementation (.pth/.pt:
/// plain state dicts or wrapped under `state_dict`/`model`, with or without `module.`) and timm
/// safetensors, training-time or deploy-time. Writes .bpk (Burn) or .safetensors (the
/// reference's deploy naming, loadable by its deploy model with `strict=True`), atomically.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint to read (.bpk, .pth, .pt, .safetensors).
    #[arg(long)]
    input: PathBuf,

    /// Where to write the deploy-time weights (.bpk or .safetensors); never the input.
    #[arg(long)]
    output: PathBuf,

    /// Reference architecture of the input (A0 ... D2se); inferred from the tensor shapes when
    /// neither this nor --config is given.
    #[arg(long, value_parser = parse_arch, conflicts_with = "config")]
    arch: Option<RepVggArch>,

    /// Architecture config JSON (as written by `RepVggConfig::save`), for custom networks.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Where the fusion math runs.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,

    /// Compare both models' logits on a random batch and fail if they differ by more than
    /// --tolerance (relative to the largest logit).
    #[arg(long)]
    verify: bool,

    /// Largest accepted max |train - deploy| / max |logit| for --verify.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,

    /// Input height and width of the --verify batch.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    verify_size: u32,
}

/// Where tensor math runs.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (flex).
    Cpu,
    /// A GPU (or software Vulkan) through wgpu.
    Wgpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "the CPU (flex)",
            Backend::Wgpu => "wgpu",
        }
    }

    fn device(self) -> Device {
        match self {
            Backend::Cpu => Device::flex(),
            Backend::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
        }
    }
}

fn parse_arch(name: &str) -> Result<RepVggArch, String> {
    RepVggArch::from_name(name).map_err(|err| err.to_string())
}

pub fn run(args: ConvertArgs) -> Result<()> {
    check_paths(&args.input, &args.output)?;
    let started = Instant::now();
    let checkpoint = read_checkpoint(&args.input)?;
    let form = checkpoint.form;
    let (name, config) = architecture(&args, &checkpoint.weights, checkpoint.config)?;
    let params = config.num_params();
    println!(
        "read {} ({form}, {} tensors) as {name} in {:.2?}",
        args.input.display(),
        checkpoint.weights.len(),
        started.elapsed()
    );

    let device = args.device.device();
    let what = format!("{name}, {form} form");
    let converting = Instant::now();
    let deploy = match form {
        Form::Training => reparameterize(&checkpoint.weights, &config, &device)
            .map_err(|err| explain_mismatch(err, &checkpoint.weights))?,
        Form::Deploy => {
            checkpoint
                .weights
                .check_layout(
                    &repvgg_model::tensor_infos(&config.init_deploy(&device)),
                    &what,
                )
                .map_err(|err| explain_mismatch(err, &checkpoint.weights))?;
            checkpoint.weights.clone()
        }
    };
    match form {
        Form::Training => println!(
            "re-parameterized on {} in {:.2?}: {} -> {} parameters",
            args.device.name(),
            converting.elapsed(),
            thousands(params.training),
            thousands(params.deploy)
        ),
        Form::Deploy => println!(
            "already deploy-time ({} parameters): re-saving",
            thousands(params.deploy)
        ),
    }

    write_checkpoint(
        &deploy,
        &config,
        checkpoint.classes.as_deref(),
        &args.output,
    )?;
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "wrote {} ({:.1} MB) in {:.2?} total",
        args.output.display(),
        size as f64 / 1e6,
        started.elapsed()
    );

    if args.verify {
        verify(&args, &checkpoint.weights, form, &config, &device)?;
    }
    Ok(())
}

/// Refuses an output that is the input, or that lies in a directory that does not exist.
fn check_paths(input: &Path, output: &Path) -> Result<()> {
    let input_canonical = input
        .canonicalize()
        .with_context(|| format!("cannot read the input {}", input.display()))?;
    let output_dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let output_dir = output_dir.canonicalize().with_context(|| {
        format!(
            "the output directory {} does not exist",
            output_dir.display()
        )
    })?;
    let output_canonical = output_dir.join(output.file_name().unwrap_or_default());
    if output_canonical == input_canonical
        || output.canonicalize().is_ok_and(|o| o == input_canonical)
    {
        bail!(
            "the output {} is the input; choose another file name",
            output.display()
        );
    }
    if Format::of(output)? == Format::Pytorch {
        bail!(
            "{}: writing .pth is not supported; write .safetensors (PyTorch reads it with \
             safetensors.torch.load_file) or .bpk",
            output.display()
        );
    }
    Ok(())
}

/// The architecture: from --config, --arch (with the checkpoint's class count), the file's own
/// record, or the tensor shapes.
fn architecture(
    args: &ConvertArgs,
    weights: &Weights,
    recorded: Option<RepVggConfig>,
) -> Result<(String, RepVggConfig)> {
    let num_classes = weights.get("linear.bias").map(|bias| bias.shape()[0]);
    if let Some(path) = &args.config {
        let config = RepVggConfig::load(path)
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        config.validate()?;
        return Ok((format!("the network of {}", path.display()), config));
    }
    if let Some(arch) = args.arch {
        let config = arch.config();
        let config = match num_classes {
            Some(n) => config.with_num_classes(n),
            None => config,
        };
        return Ok((arch.to_string(), config));
    }
    if let Some(config) = recorded {
        return Ok(("the network recorded in the file".into(), config));
    }
    let (arch, config) = infer_arch(weights)?;
    Ok((format!("{arch} (inferred from the tensor shapes)"), config))
}

/// Adds what the weights look like to a layout mismatch, when they match a known architecture.
fn explain_mismatch(err: DeployError, weights: &Weights) -> anyhow::Error {
    match (&err, infer_arch(weights)) {
        (DeployError::Mismatch { .. }, Ok((arch, _))) => {
            anyhow::anyhow!("{err}\n(the checkpoint looks like {arch})")
        }
        _ => err.into(),
    }
}

/// Runs both models on one random batch and checks that their logits agree.
fn verify(
    args: &ConvertArgs,
    input_weights: &Weights,
    form: Form,
    config: &RepVggConfig,
    device: &Device,
) -> Result<()> {
    let size = args.verify_size as usize;
    let images = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let reference = match form {
        Form::Training => input_weights
            .load_into(config.init(device), "the training-time network")?
            .forward(images.clone()),
        Form::Deploy => input_weights
            .load_into(config.init_deploy(device), "the deploy-time network")?
            .forward(images.clone()),
    };
    let written = read_checkpoint(&args.output)?;
    let deployed = written.weights.load_into(
        config.init_deploy(device),
        "the written deploy-time network",
    )?;
    let LogitDifference { max_abs, relative } = logit_difference(
        &deployed.forward(images).into_data(),
        &reference.into_data(),
    );
    println!(
        "verify ({}x{} random batch of 2, the written file reloaded): max |logit difference| \
         {max_abs:.3e}, relative {relative:.3e} (tolerance {:.0e})",
        size, size, args.tolerance
    );
    if relative > args.tolerance || !relative.is_finite() {
        bail!(
            "verification failed: relative logit difference {relative:.3e} exceeds {:.0e}",
            args.tolerance
        );
    }
    Ok(())
}
