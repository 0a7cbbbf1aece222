//! RepVGG training: the ImageNet data pipeline (ImageFolder layout, decoding of whatever
//! ImageNet-like folders hold, the paper's augmentation) and the optimisation recipe (SGD with
//! decay on conv and linear weights only, per-iteration warmup + cosine schedule).

pub mod data;
pub mod recipe;
