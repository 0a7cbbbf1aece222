//! `repvgg classify`: the five most likely classes of an image.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use repvgg_data::{EvalTransform, decode_rgb, normalize};
use repvgg_deploy::{CpuPrecision, DeployModel, ResolvedCheckpoint};
use repvgg_model::DeviceChoice;
#[cfg(feature = "pretrained")]
use repvgg_model::RepVggArch;

use crate::{ArchArgs, CropArgs, deploy_model};

/// The 1000 ImageNet class names, in the index order of ImageNet checkpoints.
const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// Classify an image: the top-5 classes and their probabilities.
///
/// Class names come from the weights file when training recorded them, else the ImageNet list
/// for 1000-class models.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// The image (JPEG, PNG, ...).
    pub image: PathBuf,

    /// timm's pretrained ImageNet weights of this architecture (a0, b1g4, d2se, ...), from
    /// the Hugging Face cache (downloaded there once; HF_ENDPOINT, HF_HUB_CACHE, HF_HOME,
    /// HF_HUB_OFFLINE and HF_TOKEN apply), evaluated as timm evaluates them.
    #[cfg(feature = "pretrained")]
    #[arg(long, conflicts_with = "weights", required_unless_present = "weights")]
    pub pretrained: Option<RepVggArch>,

    /// A weights file (.bpk, .pth, .safetensors; training-time or deploy).
    #[arg(long)]
    pub weights: Option<PathBuf>,

    #[command(flatten)]
    pub arch: ArchArgs,

    #[command(flatten)]
    pub crop: CropArgs,

    /// Where the network runs: cpu, wgpu or cuda.
    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,

    /// Precision of the CPU deploy path: f32, or bf16 (weights and activations rounded to
    /// bfloat16, f32 accumulation: about twice as fast on CPUs with AVX512_BF16, refused
    /// elsewhere; a training-time checkpoint is converted first).
    #[arg(long, default_value_t = CpuPrecision::F32)]
    pub precision: CpuPrecision,
}

/// One class and its probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub class: String,
    pub probability: f32,
}

/// Classifies as `args` say and prints the top five.
pub fn run(args: ClassifyArgs) -> Result<()> {
    let predictions = classify(&args)?;
    println!("{}:", args.image.display());
    for prediction in predictions.iter().take(5) {
        println!(
            "  {:6.2}%  {}",
            100.0 * prediction.probability,
            prediction.class
        );
    }
    Ok(())
}

/// Every class of the image's prediction, most likely first.
pub fn classify(args: &ClassifyArgs) -> Result<Vec<Prediction>> {
    let device = args.device.device()?;
    let images = load_image(&args.image, &eval_transform(args)?, &device)?;
    let (model, classes) = match &args.weights {
        Some(path) => {
            let resolved = ResolvedCheckpoint::read(path, &args.arch.source())?;
            let classes = resolved.checkpoint.classes.clone();
            let net = resolved.into_model(&device)?.into_deploy()?;
            (deploy_model(net, args.precision)?, classes)
        }
        None => (pretrained_model(args, &device)?, None),
    };
    if !model.config().has_head() {
        bail!("the network is headless (no classifier): nothing to classify with");
    }
    let probabilities: Vec<f32> = softmax(model.forward(images), 1)
        .into_data()
        .iter::<f32>()
        .collect();
    let names = class_names(classes, probabilities.len());
    let mut ranked: Vec<Prediction> = probabilities
        .into_iter()
        .zip(names)
        .map(|(probability, class)| Prediction { class, probability })
        .collect();
    ranked.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    Ok(ranked)
}

/// The crop the flags give, completed by the pretrained weights' own evaluation setup (timm's:
/// D2se at 320 with no crop) or the defaults.
fn eval_transform(args: &ClassifyArgs) -> Result<EvalTransform> {
    #[cfg(feature = "pretrained")]
    if let (None, Some(arch)) = (&args.weights, args.pretrained) {
        let setup = repvgg_deploy::PretrainedEval::of(arch)?;
        return Ok(args.crop.transform_or(setup.input_size, setup.crop_pct));
    }
    Ok(args.crop.transform())
}

#[cfg(feature = "pretrained")]
fn pretrained_model(args: &ClassifyArgs, device: &Device) -> Result<DeployModel> {
    match args.pretrained {
        Some(arch) => {
            let model = repvgg_deploy::pretrained(arch, repvgg_deploy::Form::Deploy, device)?;
            deploy_model(model.into_deploy()?, args.precision)
        }
        None => bail!("give --pretrained NAME or --weights FILE"),
    }
}

#[cfg(not(feature = "pretrained"))]
fn pretrained_model(_: &ClassifyArgs, _: &Device) -> Result<DeployModel> {
    bail!("give --weights FILE (this build has no pretrained weights)")
}

/// The image through the evaluation transform, as a `[1, 3, size, size]` batch.
fn load_image(path: &Path, transform: &EvalTransform, device: &Device) -> Result<Tensor<4>> {
    let image = decode_rgb(path)?;
    let pixels = normalize(&transform.apply(&image));
    let size = transform.size as usize;
    Ok(Tensor::from_data(
        TensorData::new(pixels, [1, 3, size, size]),
        device,
    ))
}

/// Names for `count` outputs: the recorded ones, ImageNet's for 1000 outputs, else numbers.
fn class_names(recorded: Option<Vec<String>>, count: usize) -> Vec<String> {
    match recorded {
        Some(names) if names.len() >= count => names,
        _ if count == 1000 => IMAGENET_CLASSES.lines().map(str::to_string).collect(),
        _ => (0..count).map(|i| format!("class {i}")).collect(),
    }
}

#[cfg(all(test, feature = "pretrained"))]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ClassifyArgs,
    }

    fn transform(flags: &[&str]) -> EvalTransform {
        let args = Command::parse_from(["classify", "image.png"].iter().chain(flags)).args;
        eval_transform(&args).unwrap()
    }

    #[test]
    fn pretrained_weights_are_evaluated_as_timm_evaluates_them_unless_the_flags_say_otherwise() {
        let setup = |transform: EvalTransform| (transform.size, transform.resize);
        // timm: D2se at 320 with no crop, the others at 224 from a 256 resize.
        assert_eq!(setup(transform(&["--pretrained", "d2se"])), (320, 320));
        assert_eq!(setup(transform(&["--pretrained", "a0"])), (224, 256));
        // Explicit flags win, each on its own.
        assert_eq!(
            setup(transform(&["--pretrained", "d2se", "--image-size", "224"])),
            (224, 224)
        );
        assert_eq!(
            setup(transform(&["--pretrained", "d2se", "--crop-pct", "0.875"])),
            (320, 365)
        );
        // A weights file has no recorded setup: the defaults.
        assert_eq!(setup(transform(&["--weights", "a.bpk"])), (224, 256));
    }
}
