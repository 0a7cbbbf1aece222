//! The options of a training run, as flags of the `repvgg-train` binary: defaults are the
//! paper's ImageNet recipe.

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use burn::tensor::Device;
use clap::ValueEnum;
use repvgg_model::RepVggArch;

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (flex).
    Cpu,
    /// Vulkan, Metal, DX12 or WebGPU through wgpu (build with `--features wgpu`).
    Wgpu,
    /// NVIDIA GPUs (build with `--features cuda`).
    Cuda,
}

impl Backend {
    /// The fastest backend this binary was built with.
    pub fn best_available() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else if cfg!(feature = "wgpu") {
            Self::Wgpu
        } else {
            Self::Cpu
        }
    }

    /// The devices to train on: `indices` selects GPUs (several for data-parallel training).
    pub fn devices(self, indices: &[usize]) -> Result<Vec<Device>> {
        let indices = if indices.is_empty() {
            &[0][..]
        } else {
            indices
        };
        match self {
            Self::Cpu => {
                ensure!(
                    indices == [0],
                    "--devices selects GPUs; the CPU is one device"
                );
                Ok(vec![Device::flex()])
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => {
                ensure!(
                    indices == [0],
                    "--devices with several devices is supported on CUDA only"
                );
                Ok(vec![Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)])
            }
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(indices.iter().map(|&i| Device::cuda(i)).collect()),
            #[allow(unreachable_patterns)]
            other => bail!(
                "this binary was built without the {name} backend: rebuild with `--features {name}`",
                name = format!("{other:?}").to_lowercase()
            ),
        }
    }
}

/// Floating-point precision of the weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    /// bfloat16 everywhere (no loss scaling needed), where the device computes in it.
    Bf16,
}

/// Options of a training run; the defaults are the paper's ImageNet recipe.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Data set root in ImageFolder layout: DATA/train/CLASS/IMAGE and DATA/val/CLASS/IMAGE.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Directory for checkpoints, logs, the config, the class list and the final models.
    #[arg(long, value_name = "DIR", default_value = "runs/repvgg")]
    pub output: PathBuf,
    /// Architecture preset (A0 ... D2se).
    #[arg(long, default_value = "A0", conflicts_with = "config")]
    pub arch: RepVggArch,
    /// A RepVggConfig JSON file instead of a preset (custom architectures).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Number of outputs; defaults to the number of class folders.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Side of the training crops and of the evaluation centre crop.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Smallest area fraction of RandomResizedCrop (0.08 as in the paper).
    #[arg(long, default_value_t = 0.08)]
    pub min_crop_scale: f64,
    #[arg(long, default_value_t = 120)]
    pub epochs: usize,
    /// Global batch size (split evenly across --devices).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Accumulate gradients over this many batches per optimizer step (when memory is short).
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Learning rate at an effective batch of 256; scaled linearly to batch x accumulation.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay on conv and linear weights (never on BN parameters or biases).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Epochs of linear warmup before the cosine decay.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Label smoothing of the cross-entropy targets (0.1 in the longer recipe).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Mixup with lambda ~ Beta(ALPHA, ALPHA) (0.2 in the longer recipe).
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay per batch (e.g.
    /// 0.9998; with --accumulation, per accumulated batch), evaluated every epoch beside the model
    /// and saved as model-ema*.bpk.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Regularise the 3x3 and 1x1 kernels with the reference's "custom L2" on the equivalent
    /// kernel instead of plain weight decay.
    #[arg(long)]
    pub custom_l2: bool,
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seeds the weights, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Backend (default: the fastest this binary was built with).
    #[arg(long, value_enum, default_value_t = Backend::best_available())]
    pub device: Backend,
    /// GPU indices, comma separated; several train data-parallel (CUDA).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Continue the run in --output from its last checkpoint (same schedule position).
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    /// Options from command-line flags (`["--data", "DIR", "--epochs", "3"]`), the binary's
    /// defaults for the rest: how programs and tests set up a run.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            train: TrainArgs,
        }
        let program = std::iter::once(std::ffi::OsString::from("repvgg-train"));
        let flags = program.chain(flags.into_iter().map(Into::into));
        <Flags as clap::Parser>::try_parse_from(flags).map(|parsed| parsed.train)
    }
}

impl TrainArgs {
    /// Checks the options that clap cannot (ranges, combinations).
    pub fn validate(&self) -> Result<()> {
        let args = self;
        ensure!(args.epochs > 0, "--epochs must be at least 1");
        ensure!(args.batch_size > 0, "--batch-size must be at least 1");
        ensure!(args.accumulation > 0, "--accumulation must be at least 1");
        ensure!(
            args.lr > 0.0 && args.lr.is_finite(),
            "--lr must be positive"
        );
        ensure!(
            (0.0..1.0).contains(&args.momentum),
            "--momentum must be in [0, 1)"
        );
        ensure!(
            args.weight_decay >= 0.0,
            "--weight-decay must not be negative"
        );
        ensure!(
            args.warmup_epochs <= args.epochs,
            "--warmup-epochs ({}) exceeds --epochs ({})",
            args.warmup_epochs,
            args.epochs
        );
        ensure!(
            (0.0..1.0).contains(&args.label_smoothing),
            "--label-smoothing must be in [0, 1)"
        );
        if let Some(decay) = args.ema {
            ensure!((0.0..1.0).contains(&decay), "--ema DECAY must be in [0, 1)");
        }
        if let Some(alpha) = args.mixup {
            ensure!(
                alpha > 0.0 && alpha.is_finite(),
                "--mixup ALPHA must be positive"
            );
        }
        ensure!(
            args.image_size >= 32,
            "--image-size must be at least 32 (RepVGG downsamples by 32)"
        );
        ensure!(
            args.min_crop_scale > 0.0 && args.min_crop_scale <= 1.0,
            "--min-crop-scale must be in (0, 1]"
        );
        ensure!(args.workers != Some(0), "--workers must be at least 1");
        let devices = args.devices.len().max(1);
        ensure!(
            args.batch_size.is_multiple_of(devices),
            "--batch-size {} does not split evenly over {devices} devices",
            args.batch_size
        );
        Ok(())
    }
}
