//! Every backend-agnostic test of the workspace in one binary (feature `gpu-suite`), for the
//! bundle that `scripts/gpu-build.sh` makes: the test binaries share most of their code (Burn,
//! CubeCL, LLVM), and one of them compressed fits beside the tools where nine would not. Each
//! module is one crate's test file, unchanged; `REPVGG_TEST_DEVICE` picks the device.
//!
//! Run one module per process (`gpu_suite training::`), as its own binary would run: the
//! modules' tests share a process-wide random generator only within themselves then.

// Each test file brings its own copy of the shared support modules, as in its own binary.
#![allow(clippy::duplicate_mod)]

#[path = "../../repvgg-model/tests/architectures.rs"]
mod architectures;
#[path = "../../repvgg-model/tests/forward.rs"]
mod forward;
#[path = "../../repvgg-model/tests/plus.rs"]
mod plus;
#[path = "../../repvgg-model/tests/reparam.rs"]
mod reparam;

#[path = "../../repvgg-deploy/tests/pytorch_parity.rs"]
mod pytorch_parity;

#[path = "ema.rs"]
mod ema;
#[path = "objective.rs"]
mod objective;
#[path = "recipe.rs"]
mod recipe;
#[path = "training.rs"]
mod training;
