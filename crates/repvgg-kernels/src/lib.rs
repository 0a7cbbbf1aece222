//! The matrix kernels of RepVGG's CPU paths: products whose right-hand side is packed into
//! panels of 16-column vectors (`depth x columns`, a word of depth per row of a panel), with a
//! left-hand side read in place, one value (f32), pair (bf16) or quad (u8) broadcast at a time.
//! AVX-512 f32 multiply-adds, AVX512_BF16 pair products with f32 accumulation, and AVX512_VNNI
//! u8 x s8 products with exact i32 accumulation, chosen at run time from the CPU's features.
//!
//! The inference engine (`repvgg-cpu`) packs a layer's weights once and streams pixels through
//! them; the training ops (`repvgg-ops`) pack im2col columns or gradients per call for bf16
//! products with f32 accumulation. [`reference_product`] is the scalar definition the float
//! kernels are held to.

mod kernel;
mod matrix;

pub use kernel::{
    Element, Lhs, PackedRhs, multiply, multiply_scaled, reference_product, supported, to_bf16,
    to_bf16_rows,
};
pub use matrix::{MatMut, MatRef, SendPtr};
