//! RepVGG as the backbone of another Burn model (detection, segmentation): `forward_features`
//! gives the stem's and every stage's output; a small FPN-style neck turns the last three into
//! maps of one width, top-down. The deploy form serves the same features, faster.
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
use repvgg_deploy::{DeployModel, Weights, reparameterize};
use repvgg_model::{RepVggArch, RepVggDeploy};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "A0")]
    arch: RepVggArch,
    /// Input size, WIDTHxHEIGHT or one number for a square.
    #[arg(long, default_value = "224")]
    size: String,
    /// Channels of every neck output.
    #[arg(long, default_value_t = 64)]
    neck_width: usize,
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
    let (width, height) = match args.size.split_once('x') {
        Some((w, h)) => (w.parse()?, h.parse()?),
        None => (args.size.parse()?, args.size.parse()?),
    };
    let device = Device::flex();
    let config = args.arch.config();
    // A trained backbone would come from `read_checkpoint` or `pretrained`; random weights show
    // the shapes. The deploy form is what a detector runs; `DeployModel` runs it through the CPU
    // path here (and through Burn's generic ops on a GPU).
    let training = config.init(&device);
    let weights = Weights::from_module(&training)?;
    let backbone: RepVggDeploy = reparameterize(&weights, &config, &device)?
        .load_into(config.init_deploy(&device), "backbone")?;
    let backbone = DeployModel::new(backbone);

    let images = Tensor::<4>::random([1, 3, height, width], Distribution::Default, &device);
    let features = backbone.forward_features(images);
    println!("{} features of a 1x3x{height}x{width} input:", args.arch);
    let names = ["stem (stage0)", "stage1", "stage2", "stage3", "stage4"];
    for (name, feature) in names.iter().zip(&features) {
        println!("  {name:14} {:?}", feature.dims());
    }

    // Strides 8, 16 and 32: the levels detection necks usually take.
    let taken: Vec<Tensor<4>> = features[2..].to_vec();
    let channels: Vec<usize> = taken.iter().map(|f| f.dims()[1]).collect();
    let neck = Neck::new(&channels, args.neck_width, &device);
    println!("neck outputs ({} channels each):", args.neck_width);
    for (stride, output) in [8, 16, 32].iter().zip(neck.forward(taken)) {
        println!("  stride {stride:2}      {:?}", output.dims());
    }
    Ok(())
}
