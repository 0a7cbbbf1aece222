//! The network and recipe of the end-to-end demonstration (`repvgg-train demo`, the README's
//! first command): a small RepVGG trained on the generated set of [`repvgg_data`] at 32x32, on
//! the CPU, with the ImageNet code path.

use repvgg_data::SYNTHETIC_CLASSES;
use repvgg_model::RepVggConfig;

use crate::config::{AugmentationConfig, RecipeConfig, TrainingConfig};

/// The small architecture the demo trains: RepVGG-A's layout at a quarter of A0's depth and
/// half its width, one output per synthetic class.
pub fn demo_config() -> RepVggConfig {
    RepVggConfig::new(vec![1, 2, 2, 1], vec![0.5, 0.5, 0.5, 0.5])
        .with_num_classes(SYNTHETIC_CLASSES.len())
}

/// The demo's run: [`demo_config`] for `epochs` epochs on 32x32 crops, batch 64, one epoch of
/// warmup.
pub fn demo_training_config(epochs: usize) -> TrainingConfig {
    TrainingConfig::new(demo_config())
        .with_recipe(
            RecipeConfig::new()
                .with_epochs(epochs)
                .with_batch_size(64)
                .with_lr(0.4)
                .with_warmup_epochs(1),
        )
        .with_augmentation(
            AugmentationConfig::new()
                .with_image_size(32)
                .with_min_crop_scale(0.35),
        )
}
