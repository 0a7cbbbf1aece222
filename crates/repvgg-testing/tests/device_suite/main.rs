//! Every test that runs on any backend, in one binary: the networks and their parameter counts,
//! the re-parameterization, RepVGGplus, parity with PyTorch, the training objective, the recipe,
//! the EMA and whole training runs. `REPVGG_TEST_DEVICE` picks the device (`cpu` by
//! default, `wgpu`, or `cuda` with the `cuda` feature): CI runs them on the CPU, and
//! `scripts/gpu-check.sh` runs this same binary on CUDA.

mod architectures;
mod ema;
mod forward;
mod objective;
mod plus;
mod pytorch_parity;
mod recipe;
mod reparam;
mod training;
