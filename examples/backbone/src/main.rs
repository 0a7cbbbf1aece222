//! RepVGG as the backbone of another Burn model (detection, segmentation): a headless RepVGG
//! (`with_num_classes(0)`) whose `forward_features` gives the stem's and every stage's output, and a
//! small FPN-style neck that turns the last three into maps of one width, top-down. The whole
//! detector-like model is trained in its training form and converted in one call
//! (`reparameterize_nested`): the backbone's blocks are fused, the neck is carried over, and both
//! forms give the same outputs.
//!
//! ```sh
//! cargo run -p backbone                       # A0 at 224x224
//! cargo run -p backbone -- --arch B1 --size 512x384
//! ```

use anyhow::Result;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use repvgg_deploy::DeployModel;
use repvgg_model::{
    ImageSize, RepVgg, RepVggArch, RepVggDeploy, logit_difference, reparameterize_nested,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "A0")]
    arch: RepVggArch,
    /// Input size: `224` (square) or WIDTHxHEIGHT (`512x384`), each at least 32.
    #[arg(long, default_value = "224")]
    size: ImageSize,
    /// Channels of every neck output.
    #[arg(long, default_value_t = 64)]
    neck_width: usize,
}

/// A detector's feature extractor: a RepVGG backbone of either form (`B` = [`RepVgg`] in
/// training, [`RepVggDeploy`] deployed) and a neck on its strides 8, 16 and 32.
#[derive(Module, Debug)]
struct FeatureExtractor<B> {
    backbone: B,
    neck: Neck,
}

impl FeatureExtractor<RepVgg> {
    fn forward(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        self.neck
            .forward(self.backbone.forward_features(images)[2..].to_vec())
    }
}

impl FeatureExtractor<RepVggDeploy> {
    fn forward(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        self.neck
            .forward(self.backbone.forward_features(images)[2..].to_vec())
    }
}

/// Lateral 1x1 convolutions to a common width, summed top-down with nearest upsampling, then a
/// 3x3 smoothing convolution per level: the outputs a detection head would read.
#[derive(Module, Debug)]
struct Neck {
    lateral: Vec<Conv2d>,
    smooth: Vec<Conv2d>,
}

impl Neck {
    fn new(in_channels: &[usize], width: usize, device: &Device) -> Self {
        let lateral = in_channels
            .iter()
            .map(|&c| Conv2dConfig::new([c, width], [1, 1]).init(device))
            .collect();
        let smooth = in_channels
            .iter()
            .map(|_| {
                Conv2dConfig::new([width, width], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device)
            })
            .collect();
        Self { lateral, smooth }
    }

    /// `features`: finest first.
    fn forward(&self, features: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let mut outputs: Vec<Tensor<4>> = Vec::with_capacity(features.len());
        let mut above: Option<Tensor<4>> = None;
        for (i, feature) in features.into_iter().enumerate().rev() {
            let mut level = self.lateral[i].forward(feature);
            if let Some(coarser) = above {
                let [_, _, h, w] = level.dims();
                let options =
                    InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]);
                level = level + interpolate(coarser, options);
            }
            above = Some(level.clone());
            outputs.push(self.smooth[i].forward(level));
        }
        outputs.reverse();
        outputs
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ImageSize { width, height } = args.size;
    let device = Device::flex();
    // No classifier: the backbone ends at the last stage.
    let config = args.arch.config().with_num_classes(0);
    let widths = config.stage_widths();
    let neck_inputs = &widths[widths.len() - 3..];

    // The model as it would be trained (random weights here: the shapes and the conversion are
    // what this shows). A trained one would come from `load_checkpoint` or `pretrained`.
    let training = FeatureExtractor {
        backbone: config.init(&device),
        neck: Neck::new(neck_inputs, args.neck_width, &device),
    };
    let images = Tensor::<4>::random([1, 3, height, width], Distribution::Default, &device);
    let features = training.backbone.forward_features(images.clone());
    println!(
        "{} backbone features of a 1x3x{height}x{width} input:",
        args.arch
    );
    let names = ["stem (stage0)", "stage1", "stage2", "stage3", "stage4"];
    for (name, feature) in names.iter().zip(&features) {
        println!("  {name:14} {:?}", feature.dims());
    }

    // One call converts the whole model: the RepVGG under `backbone` is re-parameterized, the
    // neck's tensors are carried over, and the result is loaded strictly into the deploy type.
    let target = FeatureExtractor {
        backbone: config.init_deploy(&device),
        neck: Neck::new(neck_inputs, args.neck_width, &device),
    };
    let deployed = reparameterize_nested(&training, "backbone", &config, target)?;
    println!(
        "neck outputs ({} channels each), training form vs deployed:",
        args.neck_width
    );
    let expected = training.forward(images.clone());
    let actual = deployed.forward(images.clone());
    for ((stride, expected), actual) in [8, 16, 32].iter().zip(expected).zip(actual) {
        let difference = logit_difference(&actual.clone().into_data(), &expected.into_data());
        println!(
            "  stride {stride:2}      {:?}  max relative difference {:.1e}",
            actual.dims(),
            difference.relative
        );
        anyhow::ensure!(difference.relative < 1e-4, "the forms disagree");
    }

    // A deployed backbone alone runs through `DeployModel`, which takes the CPU engine here.
    let fast = DeployModel::new(deployed.backbone);
    let maps = fast.forward_features(images);
    println!(
        "DeployModel backbone (CPU engine: {}): last map {:?}",
        fast.uses_cpu_engine(),
        maps.last().map(Tensor::dims)
    );
    Ok(())
}
