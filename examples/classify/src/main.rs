//! Classify one image with RepVGG and print the five most likely classes.
//!
//! ```sh
//! cargo run -p classify -- cat.jpg --pretrained a0        # timm's ImageNet weights (downloaded once)
//! cargo run -p classify -- cat.jpg --weights runs/demo/run/model-deploy.bpk --image-size 32
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use clap::{Parser, ValueEnum};
use repvgg_deploy::{DeployModel, Form, infer_arch, pretrained, read_checkpoint};
use repvgg_model::RepVggArch;
use repvgg_train::data::{EvalTransform, decode_rgb, normalize};

/// The 1000 ImageNet class names, in the index order of ImageNet checkpoints.
const IMAGENET_CLASSES: &str = include_str!("../imagenet_classes.txt");

/// Classify an image: the top-5 classes and their probabilities.
///
/// Class names come from the weights file when training recorded them, else the ImageNet list
/// for 1000-class models.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The image (JPEG, PNG, ...).
    image: PathBuf,
    /// timm's pretrained ImageNet weights of this architecture (a0, b1g4, d2se, ...).
    #[arg(long, conflicts_with = "weights", required_unless_present = "weights")]
    pretrained: Option<RepVggArch>,
    /// A weights file (.bpk, .pth, .safetensors; training-time or deploy).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Architecture of --weights, when the file does not record it and its shapes are ambiguous.
    #[arg(long)]
    arch: Option<RepVggArch>,
    /// Centre crop fed to the network (after resizing the shorter side to size / 0.875).
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Cpu,
    Wgpu,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let device = match args.device {
        Backend::Cpu => Device::flex(),
        Backend::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
    };
    let images = load_image(&args.image, args.image_size, &device)?;
    let (logits, classes) = match (&args.weights, args.pretrained) {
        (Some(path), _) => classify_with_file(path, args.arch, images, &device)?,
        (None, Some(arch)) => {
            let model = pretrained(arch, Form::Deploy, &device)?
                .into_deploy()
                .map(DeployModel::new)
                .context("asked for the deploy form")?;
            (model.forward(images), None)
        }
        (None, None) => bail!("give --pretrained NAME or --weights FILE"),
    };
    let probabilities: Vec<f32> = softmax(logits, 1).into_data().iter::<f32>().collect();
    let names = class_names(classes, probabilities.len());
    let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("{}:", args.image.display());
    for (index, probability) in ranked.into_iter().take(5) {
        println!("  {:6.2}%  {}", 100.0 * probability, names[index]);
    }
    Ok(())
}

/// The image through the evaluation transform, as a `[1, 3, size, size]` batch.
fn load_image(path: &Path, size: u32, device: &Device) -> Result<Tensor<4>> {
    let image = decode_rgb(path)?;
    let pixels = normalize(&EvalTransform::new(size).apply(&image));
    let size = size as usize;
    Ok(Tensor::from_data(
        TensorData::new(pixels, [1, 3, size, size]),
        device,
    ))
}

/// Logits of the network in `path` (either form), and the class names it records.
fn classify_with_file(
    path: &Path,
    arch: Option<RepVggArch>,
    images: Tensor<4>,
    device: &Device,
) -> Result<(Tensor<2>, Option<Vec<String>>)> {
    let checkpoint = read_checkpoint(path)?;
    let config = match (arch, checkpoint.config) {
        (Some(arch), _) => {
            let classes = checkpoint
                .weights
                .get("linear.bias")
                .map_or(1000, |bias| bias.shape()[0]);
            arch.config().with_num_classes(classes)
        }
        (None, Some(config)) => config,
        (None, None) => infer_arch(&checkpoint.weights).context("give --arch")?.1,
    };
    let what = format!("{}", path.display());
    let logits = match checkpoint.form {
        Form::Training => checkpoint
            .weights
            .load_into(config.init(device), &what)?
            .forward(images),
        Form::Deploy => DeployModel::new(
            checkpoint
                .weights
                .load_into(config.init_deploy(device), &what)?,
        )
        .forward(images),
    };
    Ok((logits, checkpoint.classes))
}

/// Names for `count` outputs: the recorded ones, ImageNet's for 1000 outputs, else numbers.
fn class_names(recorded: Option<Vec<String>>, count: usize) -> Vec<String> {
    match recorded {
        Some(names) if names.len() >= count => names,
        _ if count == 1000 => IMAGENET_CLASSES.lines().map(str::to_string).collect(),
        _ => (0..count).map(|i| format!("class {i}")).collect(),
    }
}
