//! A RepVGG variant of your own: describe it with a config, train it with the same code as the
//! ImageNet presets (here on a generated set, a minute on a CPU), and get its deploy form.
//!
//! ```sh
//! cargo run -p custom-arch
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use burn::tensor::Device;
use repvgg_data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_deploy::{ArchSource, DeployModel};
use repvgg_model::RepVggConfig;
use repvgg_train::{AugmentationConfig, RecipeConfig, TrainingConfig, train};

fn main() -> Result<()> {
    // Blocks per stage, width multipliers (of 64/128/256/512), 2-group convolutions on blocks
    // 2 and 4 (global block indices, the stem is 0), squeeze-excitation, ten classes.
    let model = RepVggConfig::new(vec![1, 2, 3, 1], vec![0.5, 0.5, 0.5, 1.0])
        .with_grouped_layers(BTreeMap::from([(2, 2), (4, 2)]))
        .with_use_se(true)
        .with_se_reduction(8)
        .with_num_classes(SYNTHETIC_CLASSES.len());
    model.validate()?;
    let params = model.num_params();
    let macs = model.macs(32, 32);
    println!(
        "custom RepVGG: {} parameters in training, {} deployed; {:.1} / {:.1} MMACs at 32x32",
        params.training,
        params.deploy,
        macs.training as f64 / 1e6,
        macs.deploy as f64 / 1e6
    );

    // The run: the paper's recipe, shortened to 8 epochs of small batches on 32x32 images.
    let config = TrainingConfig::new(model)
        .with_recipe(
            RecipeConfig::new()
                .with_epochs(8)
                .with_batch_size(50)
                .with_lr(0.5),
        )
        .with_augmentation(AugmentationConfig::new().with_image_size(32));

    let dir = Path::new("runs/custom-arch");
    write_synthetic_set(&dir.join("data"), 100, 20, 1)?;
    let run = dir.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run)?;
    }
    // The run directory keeps the config (training.json): `repvgg_train::resume(&run, ..)`
    // continues an interrupted run from it.
    let report = train(&config, &dir.join("data"), &[Device::flex()], &run)?;

    // Training wrote both forms; the deploy one is a plain stack of 3x3 convolutions (+ SE).
    let deploy = DeployModel::load(&report.deploy_path, &ArchSource::Auto, &Device::flex())?;
    println!(
        "deploy model: {} trainable parameters, top-1 {:.1}% on the held-out images",
        deploy.model().num_trainable_params(),
        100.0 * report.deploy_validation.top1()
    );
    Ok(())
}
