//! RepVGG training: the ImageNet data pipeline (ImageFolder layout, decoding of whatever
//! ImageNet-like folders hold, the paper's augmentation, a parallel per-epoch-shuffled loader),
//! the optimisation recipe (SGD with decay on conv and linear weights only, per-iteration warmup +
//! cosine schedule), the burn-train learner around a training-time RepVGG, and the final
//! conversion to the deploy-time model.

pub mod classifier;
pub mod data;
pub mod demo;
pub mod ema;
pub mod evaluate;
pub mod metric;
pub mod options;
pub mod output;
pub mod recipe;
pub mod renderer;
pub mod run;
pub mod throughput;
