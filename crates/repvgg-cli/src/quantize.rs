//! `repvgg quantize`: a trained model to an int8 model file, calibrated on images, with an
//! accuracy report against f32 and the option to leave the layers that suffer most in f32.

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use burn::data::dataloader::DataLoader;
use burn::tensor::{Device, Tensor};
use clap::Args;
use repvgg_data::{EvalTransform, Evaluation, ImageFolder, evaluate};
use repvgg_deploy::int8::{CalibrationRule, QuantizedNetwork};
use repvgg_deploy::{Int8Model, ResolvedCheckpoint, write_int8};
use repvgg_model::DeployNetwork;

use crate::{ArchArgs, CropArgs, evaluation_loader, open_split};

/// Quantize a trained model to int8: weights per output channel, each layer's input calibrated
/// on images, written as one .safetensors file that `repvgg eval` runs.
///
/// The int8 layers run on AVX512_VNNI; measuring accuracy (--data) needs it.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The trained model (.bpk, .pth, .safetensors; training-time or deploy).
    #[arg(long)]
    pub weights: PathBuf,

    /// Calibration images: an ImageFolder (DIR/train is used when present).
    #[arg(long)]
    pub calibration: PathBuf,

    /// Where the int8 model goes (.safetensors).
    #[arg(long)]
    pub output: PathBuf,

    /// Also write the model as QDQ ONNX (QuantizeLinear/DequantizeLinear around each int8
    /// convolution), which ONNX Runtime and OpenVINO run in int8.
    #[arg(long, value_name = "FILE.onnx")]
    pub onnx: Option<PathBuf>,

    /// How each layer's input range is chosen: minmax, percentile (99.99), percentile:P or
    /// mse.
    #[arg(long, default_value = "mse", value_parser = parse_rule)]
    pub rule: CalibrationRule,

    /// Calibration images used (the first ones, in folder order).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub images: u64,

    /// A labelled validation set (ImageFolder; DIR/val when present): report top-1 in f32 and
    /// int8.
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Leave this many layers in f32: the ones whose int8 costs the most top-1 alone on --data
    /// (measured layer by layer, and printed).
    #[arg(long, default_value_t = 0, requires = "data")]
    pub float_layers: usize,

    #[command(flatten)]
    pub arch: ArchArgs,

    #[command(flatten)]
    pub crop: CropArgs,
}

fn parse_rule(text: &str) -> Result<CalibrationRule, String> {
    text.parse()
}

/// A network's forward pass, as the accuracy measurements take it.
type Forward<'a> = &'a dyn Fn(Tensor<4>) -> Tensor<2>;

/// Top-1 on the validation set of a forward pass.
type Top1<'a> = &'a dyn Fn(Forward<'_>) -> Result<f64>;

/// Quantizes as `args` say, reports, and writes the file.
pub fn run(args: QuantizeArgs) -> Result<()> {
    let device = Device::flex();
    let resolved = ResolvedCheckpoint::read(&args.weights, &args.arch.source())?;
    let (config, classes) = (resolved.config.clone(), resolved.checkpoint.classes.clone());
    let description = resolved.description.clone();
    let network = match resolved.into_model(&device)?.into_deploy()? {
        DeployNetwork::RepVgg(network) => network,
        DeployNetwork::Plus(_) => bail!("int8 quantization does not cover RepVGGplus yet"),
    };
    let transform = args.crop.transform();
    let calibration_folder = open_split(&args.calibration, "train")?;
    let calibration_images = first_batches(&calibration_folder, &transform, args.images, &device)?;
    let count: usize = calibration_images.iter().map(|b| b.dims()[0]).sum();
    eprintln!(
        "calibrating {description} ({} layers) with {} on {count} images of {}",
        network.blocks().count(),
        args.rule,
        calibration_folder.root.display()
    );
    let mut quantized = QuantizedNetwork::calibrate(&network, calibration_images, args.rule)?;
    if let Some(data) = &args.data {
        ensure!(
            repvgg_deploy::int8::vnni_supported(),
            "this CPU lacks AVX512_VNNI, which the int8 layers run on: quantize without --data \
             and evaluate the file on a CPU that has it"
        );
        let folder = open_split(data, "val")?;
        let loader = evaluation_loader(&folder, &transform, 32, None, &device)?;
        let top1 = |forward: Forward<'_>| -> Result<f64> {
            let evaluation: Evaluation = evaluate(&loader, forward, |_, _| {})?;
            Ok(evaluation.top1())
        };
        let f32_top1 = top1(&|images| network.forward(images))?;
        if args.float_layers > 0 {
            quantized = leave_in_f32(quantized, args.float_layers, f32_top1, &top1)?;
        }
        let int8_top1 = top1(&|images| quantized.forward(images))?;
        println!(
            "{}: top-1 {:.2}% in f32, {:.2}% in int8 ({:+.2})",
            folder.root.display(),
            100.0 * f32_top1,
            100.0 * int8_top1,
            100.0 * (int8_top1 - f32_top1)
        );
    }
    let model = Int8Model {
        network: quantized,
        config,
        classes,
        calibration: format!("{}, {count} images", args.rule),
    };
    write_int8(&model, &args.output)?;
    if let Some(path) = &args.onnx {
        repvgg_deploy::onnx::write_int8_onnx(&model, path)?;
        println!("wrote {} (QDQ ONNX)", path.display());
    }
    let int8_layers = model.network.layers().iter().filter(|l| l.int8).count();
    println!(
        "wrote {} ({int8_layers} of {} layers in int8)",
        args.output.display(),
        model.network.layers().len()
    );
    Ok(())
}

/// The network with its `count` most sensitive layers in f32: each layer alone in int8 (the
/// others in f32) on the validation set, the largest top-1 losses first.
fn leave_in_f32(
    quantized: QuantizedNetwork,
    count: usize,
    f32_top1: f64,
    top1: Top1<'_>,
) -> Result<QuantizedNetwork> {
    let layers = quantized.layers().len();
    ensure!(
        count < layers,
        "--float-layers {count}: the network has {layers} layers"
    );
    let all_f32 = (0..layers).try_fold(quantized.clone(), |q, i| q.with_layer_in_int8(i, false))?;
    println!("layer sensitivity (top-1 with that layer alone in int8):");
    let mut costs = Vec::with_capacity(layers);
    for index in 0..layers {
        let alone = all_f32.clone().with_layer_in_int8(index, true)?;
        let accuracy = top1(&|images| alone.forward(images))?;
        println!(
            "  layer {index:>2}: {:.2}% ({:+.2})",
            100.0 * accuracy,
            100.0 * (accuracy - f32_top1)
        );
        costs.push((f32_top1 - accuracy, index));
    }
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let kept: Vec<usize> = costs.iter().take(count).map(|&(_, index)| index).collect();
    println!("left in f32: layers {kept:?}");
    kept.into_iter()
        .try_fold(quantized, |q, index| q.with_layer_in_int8(index, false))
        .map_err(Into::into)
}

/// The first `limit` images of `folder`, in batches.
fn first_batches(
    folder: &ImageFolder,
    transform: &EvalTransform,
    limit: u64,
    device: &Device,
) -> Result<Vec<Tensor<4>>> {
    let loader = evaluation_loader(folder, transform, 32, None, device)?;
    let mut batches = Vec::new();
    let mut taken = 0u64;
    for batch in loader.iter() {
        if taken >= limit {
            break;
        }
        let images = batch?.images;
        let size = images.dims()[0] as u64;
        let keep = size.min(limit - taken) as usize;
        taken += keep as u64;
        batches.push(images.narrow(0, 0, keep));
    }
    ensure!(
        taken > 0,
        "no calibration images in {}",
        folder.root.display()
    );
    Ok(batches)
}
