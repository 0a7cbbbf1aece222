//! The developers' measurements: `bench` (inference beside PyTorch and the deployment engines),
//! `bench-train` (training steps beside PyTorch), `bench-layers` (the CPU engine layer by
//! layer), `bench-precision` (bf16 against f32) and `bench-loader` (the data pipeline). Each
//! writes or prints a markdown report that names its machine.

pub mod inference;
pub mod int8;
pub mod layers;
pub mod loader;
mod machine;
pub mod memory;
pub mod precision;
mod python;
mod report;
mod resnet;
pub mod training;

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::{Device, Distribution, Tensor};
use repvgg_model::RepVggArch;

/// A latency measured in each round: the median over the rounds of each round's median, and the
/// range of those per-round medians.
#[derive(Clone, Copy, Debug)]
pub(super) struct Latency {
    /// With an even number of rounds, the mean of the middle two.
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// How many rounds measured it.
    pub rounds: usize,
}

impl Latency {
    /// The latency of per-round medians `ms` (at least one).
    pub fn over_rounds(mut ms: Vec<f64>) -> Self {
        assert!(!ms.is_empty(), "a latency needs at least one round");
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        Latency {
            median_ms: (ms[(n - 1) / 2] + ms[n / 2]) / 2.0,
            min_ms: ms[0],
            max_ms: ms[n - 1],
            rounds: n,
        }
    }
}

/// The benchmarks (and their PyTorch side) cover RepVGG: refuse RepVGGplus by name rather than
/// fail inside.
pub(super) fn ensure_repvgg(archs: &[RepVggArch]) -> Result<()> {
    match archs.iter().find(|arch| arch.config().is_plus()) {
        Some(arch) => anyhow::bail!(
            "{arch}: the benchmarks cover the RepVGG architectures; RepVGGplus is not benchmarked"
        ),
        None => Ok(()),
    }
}

/// A batch of random images, `[batch, 3, size, size]`.
pub(super) fn random_images(batch: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// The workspace's root directory (where `scripts/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
