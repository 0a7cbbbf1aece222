//! `cargo xtask convert`: any supported checkpoint in, the deploy-time model out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use repvgg_deploy::{
    Form, Format, LogitDifference, Weights, logit_difference, read_checkpoint, reparameterize,
    write_checkpoint,
};
use repvgg_model::{RepVggArch, RepVggConfig};

use crate::thousands;
use crate::weights_file::{Backend, architecture, explain_mismatch, parse_arch};

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

pub fn run(args: ConvertArgs) -> Result<()> {
    check_paths(&args.input, &args.output)?;
    let started = Instant::now();
    let checkpoint = read_checkpoint(&args.input)?;
    let form = checkpoint.form;
    let (name, config) = architecture(
        args.arch,
        args.config.as_deref(),
        &checkpoint.weights,
        checkpoint.config,
    )?;
    let params = config.num_params();
    println!(
        "read {} ({form}, {} tensors) as {name} in {:.2?}",
        args.input.display(),
        checkpoint.weights.len(),
        started.elapsed()
    );

    let device = args.device.device()?;
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
