//! `repvgg convert`: any supported checkpoint in, the deploy-time
//! model out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use repvgg_deploy::onnx::{OPSET, OnnxOptions, write_onnx};
use repvgg_deploy::{Form, Format, ResolvedCheckpoint, read_checkpoint, write_checkpoint};
use repvgg_model::{
    DeployNetwork, DeviceChoice, LogitDifference, RepVggConfig, Weights, logit_difference,
};

use crate::{ArchArgs, thousands};

/// Convert a RepVGG checkpoint into the plain deploy-time model.
///
/// Reads our burnpack files (.bpk), PyTorch files of the reference implementation (.pth/.pt:
/// plain state dicts or wrapped under `state_dict`/`model`, with or without `module.`) and timm
/// safetensors, training-time or deploy-time. Writes .bpk (Burn), .safetensors (the
/// reference's deploy naming, loadable by its deploy model with `strict=True`) or .onnx (opset
/// 17: Conv + Relu per block, input `images` [batch, 3, height, width], output `logits`, for
/// ONNX Runtime, OpenVINO, TensorRT), atomically.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint to read (.bpk, .pth, .pt, .safetensors).
    #[arg(long)]
    pub input: PathBuf,

    /// Where to write the deploy-time model (.bpk, .safetensors or .onnx); never the input.
    #[arg(long)]
    pub output: PathBuf,

    /// ONNX output only: leave the classifier out; the graph outputs `features`, the globally
    /// pooled last feature map [batch, channels].
    #[arg(long)]
    pub without_head: bool,

    /// ONNX output only: add the stem's and every stage's feature map as outputs `stage0`,
    /// `stage1`, ... (for detection and segmentation necks).
    #[arg(long)]
    pub stage_outputs: bool,

    #[command(flatten)]
    pub arch: ArchArgs,

    /// Where the fusion math runs: cpu, wgpu or cuda.
    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,

    /// Compare both models' logits on a random batch and fail if they differ by more than
    /// --tolerance (relative to the largest logit).
    #[arg(long)]
    pub verify: bool,

    /// Largest accepted max |train - deploy| / max |logit| for --verify.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f32,

    /// Input height and width of the --verify batch.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    pub verify_size: u32,
}

/// Converts as `args` say and prints what was done.
pub fn run(args: ConvertArgs) -> Result<()> {
    check_paths(&args.input, &args.output)?;
    let started = Instant::now();
    let resolved = ResolvedCheckpoint::read(&args.input, &args.arch.source())?;
    let form = resolved.form();
    let params = resolved.config.num_params();
    println!(
        "read {} ({form}, {} tensors) as {} in {:.2?}",
        args.input.display(),
        resolved.checkpoint.weights.len(),
        resolved.description,
        started.elapsed()
    );

    let device = args.device.device()?;
    let converting = Instant::now();
    let deploy = resolved.deploy_weights(&device)?;
    match form {
        Form::Training => println!(
            "re-parameterized on {} in {:.2?}: {} -> {} parameters",
            args.device.description(),
            converting.elapsed(),
            thousands(params.training),
            thousands(params.deploy)
        ),
        Form::Deploy => println!(
            "already deploy-time ({} parameters): re-saving",
            thousands(params.deploy)
        ),
    }

    match onnx_options(&args)? {
        Some(options) => {
            write_onnx(&deploy, &resolved.config, &options, &args.output)?;
            describe_graph(&resolved.config, &options);
        }
        None => write_checkpoint(
            &deploy,
            &resolved.config,
            resolved.checkpoint.classes.as_deref(),
            &args.output,
        )?,
    }
    let size = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    println!(
        "wrote {} ({:.1} MB) in {:.2?} total",
        args.output.display(),
        size as f64 / 1e6,
        started.elapsed()
    );

    if args.verify {
        let deploy = deploy.into_owned();
        verify(&args, resolved, deploy, &device)?;
    }
    Ok(())
}

/// Whether `path` names an ONNX file.
fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("onnx"))
}

/// The graph's options for an ONNX output; `None` for a checkpoint, which takes neither flag.
fn onnx_options(args: &ConvertArgs) -> Result<Option<OnnxOptions>> {
    let options = OnnxOptions {
        without_head: args.without_head,
        stage_outputs: args.stage_outputs,
    };
    match is_onnx(&args.output) {
        true => Ok(Some(options)),
        false if options != OnnxOptions::default() => {
            bail!("--without-head and --stage-outputs shape an ONNX graph: write a .onnx file")
        }
        false => Ok(None),
    }
}

/// Prints the exported graph's inputs and outputs.
fn describe_graph(config: &RepVggConfig, options: &OnnxOptions) {
    let specs = config.block_specs();
    let mut outputs = Vec::new();
    if config.has_head() && !options.without_head {
        outputs.push(format!("logits [batch, {}]", config.num_classes));
    } else {
        let width = specs.last().map_or(0, |spec| spec.out_channels);
        outputs.push(format!("features [batch, {width}]"));
    }
    if options.stage_outputs {
        let mut stride = 1;
        for (i, spec) in specs.iter().enumerate() {
            stride *= spec.stride;
            if specs.get(i + 1).is_none_or(|next| next.stage != spec.stage) {
                outputs.push(format!(
                    "stage{} [batch, {}, height/{stride}, width/{stride}]",
                    spec.stage, spec.out_channels
                ));
            }
        }
    }
    println!(
        "ONNX opset {OPSET}: input images [batch, 3, height, width] (f32, ImageNet-normalised); \
         outputs {}",
        outputs.join(", ")
    );
}

/// Refuses an output that is the input, that lies in a directory that does not exist, or whose
/// format cannot be written.
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
    if is_onnx(output) {
        return Ok(());
    }
    if Format::of(output)? == Format::Pytorch {
        return Err(repvgg_deploy::DeployError::PthOutput {
            path: output.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

/// Runs the input network and the written file, reloaded, on one random batch and checks that
/// their outputs agree. An ONNX file is not read back (that takes an ONNX runtime): the deploy
/// weights written into it are checked instead.
fn verify(
    args: &ConvertArgs,
    input: ResolvedCheckpoint,
    deploy: Weights,
    device: &Device,
) -> Result<()> {
    let size = args.verify_size as usize;
    let images = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let config = input.config.clone();
    let reference = input.into_model(device)?.forward(images.clone());
    let (written, what) = match is_onnx(&args.output) {
        true => (deploy, "the deploy weights in the graph"),
        false => (
            read_checkpoint(&args.output)?.weights,
            "the written file reloaded",
        ),
    };
    let deployed =
        DeployNetwork::load(&written, &config, device, "the written deploy-time network")?;
    let LogitDifference { max_abs, relative } = logit_difference(
        &deployed.forward(images).into_data(),
        &reference.into_data(),
    );
    println!(
        "verify ({size}x{size} random batch of 2, {what}): max |logit difference| \
         {max_abs:.3e}, relative {relative:.3e} (tolerance {:.0e})",
        args.tolerance
    );
    if relative > args.tolerance || !relative.is_finite() {
        bail!(
            "verification failed: relative logit difference {relative:.3e} exceeds {:.0e}",
            args.tolerance
        );
    }
    Ok(())
}
