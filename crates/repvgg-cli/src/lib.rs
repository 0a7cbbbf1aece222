//! `repvgg`, the command-line tool: [`train`] (and its [`demo`]), [`convert`], [`eval`],
//! [`classify`], [`quantize`], [`archs`] and [`curves`]. Each command maps its flags onto the
//! library crates' configs (`repvgg-train`, `repvgg-deploy`, `repvgg-data`, `repvgg-model`),
//! does its work through them and prints what a user needs to read. [`Cli`] is the whole tool,
//! so that another binary (the GPU bundle's `xtask`) can carry it as one subcommand.

pub mod archs;
pub mod classify;
pub mod convert;
pub mod curves;
pub mod demo;
pub mod eval;
pub mod quantize;
mod report;
pub mod train;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_data::{
    Augmentation, DEFAULT_CROP_PCT, EvalTransform, ImageFolder, ImageLoader, LoaderOptions,
};
use repvgg_deploy::{ArchSource, CpuOptions, CpuPrecision, DeployModel};
use repvgg_model::{DeployNetwork, RepVggArch};

/// RepVGG for Burn: train, convert training checkpoints (ours, the PyTorch reference's, timm's)
/// into the fast plain model, evaluate weights, classify images, quantize to int8, draw training
/// curves.
#[derive(Parser, Debug)]
#[command(name = "repvgg", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The tool's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    Train(Box<train::TrainArgs>),
    Demo(demo::DemoArgs),
    Convert(convert::ConvertArgs),
    Eval(eval::EvalArgs),
    Classify(classify::ClassifyArgs),
    Quantize(quantize::QuantizeArgs),
    /// Print the architecture table: parameters and compute of every reference architecture.
    Archs {
        /// Square input size the compute is counted at.
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
        size: u32,
    },
    Curves(curves::CurvesArgs),
}

impl Cli {
    /// Runs the command, printing an error (with its causes) on failure: exit code 1.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Train(args) => train::run(&args),
            Command::Demo(args) => demo::run(&args),
            Command::Convert(args) => convert::run(args),
            Command::Eval(args) => eval::run(args),
            Command::Classify(args) => classify::run(args),
            Command::Archs { size } => {
                print!("{}", archs::table(size as usize));
                Ok(())
            }
            Command::Curves(args) => curves::run(&args),
            Command::Quantize(args) => quantize::run(args),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Shows the libraries' `log` lines on stderr: this project's at `info` (as plain lines: the
/// trainer's progress, downloads, skipped images), every other crate's from `warn` (burn-train
/// logs every iteration at `info`); `RUST_LOG` overrides.
pub fn init_logger() {
    let filter = env_logger::Env::default().default_filter_or("warn,repvgg=info");
    env_logger::Builder::from_env(filter)
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "{}", record.args()),
            level => {
                let style = out.default_level_style(level);
                let label = match level {
                    log::Level::Warn => "warning",
                    other => other.as_str(),
                };
                writeln!(out, "{style}{label}{style:#}: {}", record.args())
            }
        })
        .init();
}

/// How a command is told the architecture of a weights file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ArchArgs {
    /// Reference architecture of the weights (A0 ... D2se, L2pse); by default the one the file records,
    /// else detected from the tensor shapes.
    #[arg(long, conflicts_with = "config")]
    pub arch: Option<RepVggArch>,

    /// Architecture config JSON (as `RepVggConfig::save` writes it), for custom networks.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ArchArgs {
    /// The flags as the library's architecture rule takes them.
    pub fn source(&self) -> ArchSource {
        match (&self.config, self.arch) {
            (Some(path), _) => ArchSource::ConfigFile(path.clone()),
            (None, Some(arch)) => ArchSource::Preset(arch),
            (None, None) => ArchSource::Auto,
        }
    }
}

/// The evaluation crop of `eval` and `classify`: its size and how much of the resized image it
/// keeps. What the flags leave out comes from the weights' own setup (timm's, for
/// `--pretrained`) or the defaults, 224 and 0.875.
#[derive(clap::Args, Clone, Debug)]
pub struct CropArgs {
    /// Centre crop size, the network's input (after resizing the shorter side to
    /// floor(size / crop_pct)) [default: 224; --pretrained: the weights' own, 320 for d2se].
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..))]
    pub image_size: Option<u32>,

    /// Fraction of the resized image the centre crop keeps, timm's rule [default: 0.875;
    /// --pretrained: the weights' own, 1.0 for d2se; use 1.0 for RepVGGplus-L2pse].
    #[arg(long, value_parser = repvgg_data::parse_crop_pct)]
    pub crop_pct: Option<f64>,
}

impl CropArgs {
    /// The evaluation transform the flags describe, with the defaults 224 and 0.875.
    pub fn transform(&self) -> EvalTransform {
        self.transform_or(DEFAULT_IMAGE_SIZE, DEFAULT_CROP_PCT)
    }

    /// The evaluation transform the flags describe, with `image_size` and `crop_pct` where
    /// they are left out.
    pub fn transform_or(&self, image_size: u32, crop_pct: f64) -> EvalTransform {
        EvalTransform::with_crop_pct(
            self.image_size.unwrap_or(image_size),
            self.crop_pct.unwrap_or(crop_pct),
        )
    }
}

/// `dir/split` (`val`, `train`) when it exists, a data set's root, else `dir` itself, as an
/// ImageFolder.
pub fn open_split(dir: &std::path::Path, split: &str) -> anyhow::Result<ImageFolder> {
    let nested = dir.join(split);
    let root = if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    ImageFolder::open(&root)
        .map_err(|err| anyhow::anyhow!("cannot read {} as an image folder: {err}", root.display()))
}

/// `folder`'s images through the evaluation `transform`, in folder order, `batch_size` a batch,
/// decoded on `workers` threads (default: all cores).
pub fn evaluation_loader(
    folder: &ImageFolder,
    transform: &EvalTransform,
    batch_size: usize,
    workers: Option<usize>,
    device: &burn::tensor::Device,
) -> anyhow::Result<ImageLoader> {
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    anyhow::ensure!(workers > 0, "--workers must be at least 1");
    let options = LoaderOptions {
        batch_size,
        workers,
        seed: 0,
        shuffle: false,
        mixup_alpha: None,
        prefetch: 2,
    };
    let augmentation = Augmentation::Eval(transform.clone());
    Ok(ImageLoader::new(
        folder.samples.clone(),
        augmentation,
        options,
        device,
    )?)
}

/// The evaluation input size when neither the flags nor the weights give one.
pub const DEFAULT_IMAGE_SIZE: u32 = 224;

/// The deploy network ready for inference in `precision`: bf16 runs the CPU engine in bf16
/// (CPU device, AVX512_BF16), f32 every device's own path.
pub fn deploy_model(net: DeployNetwork, precision: CpuPrecision) -> anyhow::Result<DeployModel> {
    Ok(match precision {
        CpuPrecision::F32 => DeployModel::new(net),
        precision => {
            DeployModel::with_options(net, CpuOptions::default().with_precision(precision))?
        }
    })
}

/// `9108968` as `9,108,968`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
