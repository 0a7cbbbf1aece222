//! The device of the backend-agnostic tests (the networks, the re-parameterization, PyTorch
//! parity, training steps): `REPVGG_TEST_DEVICE` names it (`cpu`, the default; `wgpu`; `cuda`
//! in a build with that feature), so that the same tests run unchanged on a GPU. Shared by the
//! crates' tests (`#[path]` include).
#![allow(dead_code)]

use burn::tensor::Device;
use repvgg_model::DeviceChoice;

/// The environment variable naming the device.
pub const TEST_DEVICE_VARIABLE: &str = "REPVGG_TEST_DEVICE";

/// The device `REPVGG_TEST_DEVICE` names (Burn's CPU backend when unset).
pub fn test_device() -> Device {
    let choice = DeviceChoice::from_env(TEST_DEVICE_VARIABLE)
        .unwrap_or_else(|err| panic!("{TEST_DEVICE_VARIABLE}: {err}"));
    choice
        .device()
        .unwrap_or_else(|err| panic!("{TEST_DEVICE_VARIABLE}={choice:?}: {err}"))
}
