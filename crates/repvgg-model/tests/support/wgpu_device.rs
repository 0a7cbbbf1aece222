//! Finding a wgpu adapter for tests; shared by the crates' wgpu tests (`#[path]` include).

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{Device, DeviceKind, Tensor};

/// A wgpu device, preferring a real GPU and falling back to a software (CPU) adapter, or `None`
/// when the machine has no adapter at all.
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
