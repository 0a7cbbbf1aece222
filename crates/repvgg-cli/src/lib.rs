//! The commands of the `repvgg` tool, as a library so that `cargo xtask convert` and `eval` run
//! the very same code: [`convert`], [`eval`], [`classify`] and [`archs`]. Each takes its clap
//! arguments, does its work through the library crates (`repvgg-deploy`, `repvgg-data`,
//! `repvgg-model`) and prints what a user needs to read.

pub mod archs;
pub mod classify;
pub mod convert;
pub mod eval;

use std::path::PathBuf;

use repvgg_data::{DEFAULT_CROP_PCT, EvalTransform};
use repvgg_deploy::{ArchSource, CpuOptions, CpuPrecision, DeployModel, DeployNetwork};
use repvgg_model::RepVggArch;

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
/// keeps.
#[derive(clap::Args, Clone, Debug)]
pub struct CropArgs {
    /// Centre crop size, the network's input (after resizing the shorter side to
    /// floor(size / crop_pct)).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..))]
    pub image_size: u32,

    /// Fraction of the resized image the centre crop keeps, timm's rule (1.0 for
    /// RepVGGplus-L2pse and D2se at 320).
    #[arg(long, default_value_t = DEFAULT_CROP_PCT, value_parser = repvgg_data::parse_crop_pct)]
    pub crop_pct: f64,
}

impl CropArgs {
    /// The evaluation transform the flags describe.
    pub fn transform(&self) -> EvalTransform {
        EvalTransform::with_crop_pct(self.image_size, self.crop_pct)
    }
}

/// The deploy network ready for inference in `precision`: bf16 runs the CPU deploy path in
/// bf16 (CPU device, AVX512_BF16), f32 every device's own path.
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
