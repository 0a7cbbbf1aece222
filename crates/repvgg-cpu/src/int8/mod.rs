//! Int8 post-training quantization of the deploy network: per-output-channel s8 weights, u8
//! activations calibrated per layer on images ([`CalibrationRule`]), and a reference int8
//! forward pass ([`QuantizedNetwork::forward`]) in exact integer arithmetic, which faster
//! kernels are checked against. Layers can stay in f32 one by one, for the sensitivity analysis
//! and mixed precision.

mod calibrate;
mod network;

pub use calibrate::{ActivationScale, CalibrationRule};
pub use network::{ConvShape, QuantizeError, QuantizedConv, QuantizedNetwork};

/// Whether this CPU has AVX512_VNNI, which the int8 layers run on (elsewhere
/// [`QuantizedNetwork::forward`] falls back to the integer definition, many times slower).
pub fn vnni_supported() -> bool {
    crate::kernel::supported(crate::kernel::Element::U8S8)
}
