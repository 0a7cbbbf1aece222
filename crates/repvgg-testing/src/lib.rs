//! What the workspace's tests share (not published): the devices they run on ([`test_device`],
//! [`wgpu_device`]), networks with random weights and batch-norm statistics, the PyTorch
//! fixtures that `scripts/make_fixtures.py` writes ([`fixture`]), damaged checkpoints for the
//! mutation tests ([`mutation`]), Hugging Face caches as Python lays them out
//! ([`place_in_hf_cache`]), SVG pictures parsed for checking ([`svg`]) and scratch directories.
//!
//! Its own test target, `tests/device_suite`, holds every test that runs on any backend: the
//! networks, the re-parameterization, PyTorch parity and training steps. They take their device
//! from `REPVGG_TEST_DEVICE`, so the one binary runs them on the CPU in CI and on CUDA on a GPU
//! machine (`scripts/gpu-build.sh` carries it there).

mod device;
mod hf_cache;
pub mod mutation;
mod random_model;
pub mod svg;

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub use device::{TEST_DEVICE_VARIABLE, test_device, wgpu_device};
pub use hf_cache::{HF_CACHE_COMMIT, place_in_hf_cache};
pub use random_model::{random_plus_model, random_training_model, relative_difference};

/// The demo's small network (`repvgg demo`): RepVGG-A's layout at a quarter of A0's depth and
/// half its width, with `classes` outputs; what the tests that train a whole run train.
pub fn small_network(classes: usize) -> repvgg_model::RepVggConfig {
    repvgg_model::RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5; 4]).with_num_classes(classes)
}

/// A file of the PyTorch fixtures (`crates/repvgg-testing/fixtures`, written by
/// `scripts/make_fixtures.py`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A fresh directory for one test, named after it, removed when the guard is dropped.
pub fn scratch(test: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("repvgg-{test}-"))
        .tempdir()
        .expect("a temporary directory")
}

/// Copies the directory tree `from` to `to` (a run directory, to damage or resume a copy).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
