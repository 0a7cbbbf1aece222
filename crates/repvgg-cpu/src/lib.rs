//! A CPU inference engine for RepVGG's deploy-time network (RepVGG or RepVGGplus): the plain
//! stack of 3x3 convolutions prepared once and run with channels-last activations kept from
//! layer to layer, none of the per-layer layout conversions of a general-purpose backend.
//!
//! - Stride-1 layers run as Winograd F(4x4, 3x3) or F(2x2, 3x3) convolutions (`winograd.rs`) or
//!   im2col (`im2col.rs`), chosen per layer and call ([`ConvAlgorithm::Auto`]); strided layers as
//!   blocked im2col, but for the stem, which multiplies the padded images where they lie
//!   (`stem.rs`).
//! - Every matrix product runs on the project's own AVX-512 kernels (`repvgg-kernels`) over weights
//!   packed once, in f32 or in bf16 with f32 accumulation ([`CpuPrecision`]); gemm's f32 kernels
//!   on CPUs without AVX-512.
//! - Bias, ReLU and squeeze-excitation are applied as each layer's output is written.
//!
//! Most applications reach it through `repvgg_deploy::DeployModel`, which takes this engine for
//! models on Burn's CPU backend. Directly:
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use repvgg_cpu::{CpuEngine, CpuOptions, CpuPrecision};
//! use repvgg_model::RepVggConfig;
//!
//! let device = Device::flex();
//! let network = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(5).init_deploy(&device);
//! let engine = CpuEngine::new(&network);
//! let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
//! assert_eq!(engine.forward(images).dims(), [2, 5]);
//!
//! // bf16 products where the CPU has AVX512_BF16; elsewhere an error that names it.
//! let bf16 = CpuOptions::default().with_precision(CpuPrecision::Bf16);
//! match CpuEngine::with_options(&network, bf16) {
//!     Ok(engine) => assert_eq!(engine.options().precision, CpuPrecision::Bf16),
//!     Err(err) => assert!(err.to_string().contains("AVX512_BF16")),
//! }
//! ```

mod engine;
/// The matrix kernels, which the engine shares with the training ops.
use repvgg_kernels as kernel;
mod im2col;
pub mod int8;
mod layer;
mod ops;
mod options;
mod product;
mod stem;
mod winograd;

pub use engine::{CpuEngine, LayerTime, NetworkLayers};
pub use options::{ConvAlgorithm, CpuError, CpuOptions, CpuPrecision};
pub use winograd::WinogradTile;
