//! The devices tests run on: the device suite's, named by `REPVGG_TEST_DEVICE` (`cpu`, the
//! default; `wgpu`; `cuda` in a build with that feature), so that the same tests run unchanged
//! on a GPU; and a wgpu adapter for the tests that compare wgpu with the CPU.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{Device, DeviceKind, Tensor};
use repvgg_model::DeviceChoice;

/// The environment variable naming the device suite's device.
pub const TEST_DEVICE_VARIABLE: &str = "REPVGG_TEST_DEVICE";

/// The device `REPVGG_TEST_DEVICE` names (Burn's CPU backend when unset).
///
/// # Panics
/// If the variable names no device, or one this build cannot open.
pub fn test_device() -> Device {
    let choice = DeviceChoice::from_env(TEST_DEVICE_VARIABLE)
        .unwrap_or_else(|err| panic!("{TEST_DEVICE_VARIABLE}: {err}"));
    choice
        .device()
        .unwrap_or_else(|err| panic!("{TEST_DEVICE_VARIABLE}={choice:?}: {err}"))
}

/// A wgpu device, preferring a real GPU and falling back to a software (CPU) adapter, or `None`
/// (with a message) when the machine has no adapter at all.
///
/// # Panics
/// With no adapter when `REPVGG_REQUIRE_WGPU=1` (as in CI), so that the wgpu tests fail rather
/// than skip.
pub fn wgpu_device() -> Option<Device> {
    for kind in [DeviceKind::DefaultDevice, DeviceKind::Cpu] {
        let device = Device::wgpu(kind);
        let probe = catch_unwind(AssertUnwindSafe(|| {
            Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>()
        }));
        if matches!(probe, Ok(sum) if sum == 4.0) {
            return Some(device);
        }
    }
    let required = std::env::var("REPVGG_REQUIRE_WGPU").is_ok_and(|v| v == "1");
    assert!(!required, "REPVGG_REQUIRE_WGPU=1 but no wgpu adapter works");
    eprintln!("skipping: no wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1)");
    None
}
