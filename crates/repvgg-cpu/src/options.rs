//! What an engine is asked for: the precision of its matrix products and the algorithm of its
//! stride-1 layers.

use crate::kernel;
use crate::winograd::WinogradTile;

/// Options this CPU cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A precision the CPU has no instructions for.
    #[error("{precision} is not available on this CPU: it lacks {missing}; use f32")]
    UnsupportedPrecision {
        precision: &'static str,
        missing: &'static str,
    },
}

/// The precision of the CPU engine's matrix products (the convolutions; everything else is f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuPrecision {
    /// f32 throughout.
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 for the products, accumulated in f32: twice
    /// f32's multiply rate on CPUs with AVX512_BF16 (and half the weight traffic), with logits
    /// within 4e-4 to 7e-3 of f32's, relative to the largest (docs/cpu-engine.md). Refused on
    /// CPUs without AVX512_BF16.
    Bf16,
}

impl CpuPrecision {
    /// The name used on command lines and in reports: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// Whether this CPU can compute in it (bf16: AVX-512 with AVX512_BF16).
    pub fn is_supported(self) -> bool {
        match self {
            Self::F32 => true,
            Self::Bf16 => kernel::supported(kernel::Element::Bf16),
        }
    }
}

impl std::fmt::Display for CpuPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CpuPrecision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown precision {name:?}: f32 or bf16")),
        }
    }
}

/// How the stride-1 layers are computed (the strided ones always by im2col, but for the stem,
/// which reads the images in place where the CPU has the f32 kernels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// Chosen per layer from its shape and the call's batch and image size: im2col under 64
    /// input channels per group, Winograd F(2x2) where F(4x4) would have fewer than 32 tiles,
    /// F(4x4) elsewhere (the choices `cargo xtask bench-layers` measured fastest).
    #[default]
    Auto,
    /// Winograd with the given output tile.
    Winograd(WinogradTile),
    /// im2col + matrix product, as the strided layers.
    Im2col,
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Winograd(WinogradTile::F4x4) => "winograd4",
            Self::Winograd(WinogradTile::F2x2) => "winograd2",
            Self::Im2col => "im2col",
        })
    }
}

impl std::str::FromStr for ConvAlgorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "winograd4" => Ok(Self::Winograd(WinogradTile::F4x4)),
            "winograd2" => Ok(Self::Winograd(WinogradTile::F2x2)),
            "im2col" => Ok(Self::Im2col),
            _ => Err(format!(
                "unknown algorithm {name:?}: auto, winograd4, winograd2 or im2col"
            )),
        }
    }
}

/// How [`CpuEngine`](crate::CpuEngine) computes: precision and algorithm.
///
/// ```
/// use repvgg_cpu::{CpuOptions, CpuPrecision};
///
/// let options = CpuOptions::default().with_precision(CpuPrecision::Bf16);
/// assert_eq!(options.precision, CpuPrecision::Bf16);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuOptions {
    pub precision: CpuPrecision,
    pub algorithm: ConvAlgorithm,
}

impl CpuOptions {
    pub fn with_precision(self, precision: CpuPrecision) -> Self {
        Self { precision, ..self }
    }

    pub fn with_algorithm(self, algorithm: ConvAlgorithm) -> Self {
        Self { algorithm, ..self }
    }

    /// An error naming why this CPU cannot run these options, if it cannot.
    pub fn check(&self) -> Result<(), CpuError> {
        if self.precision.is_supported() {
            return Ok(());
        }
        Err(CpuError::UnsupportedPrecision {
            precision: self.precision.name(),
            missing: "AVX512_BF16 (bf16 products with f32 accumulation)",
        })
    }
}
