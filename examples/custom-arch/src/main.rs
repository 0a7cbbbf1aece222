//! A RepVGG variant of your own: describe it with a config, train it with the same code as the
//! ImageNet presets (here on a generated set, a minute on a CPU), and get its deploy form.
//!
//! ```sh
//! cargo run -p custom-arch
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use burn::config::Config;
use burn::tensor::Device;
use repvgg_deploy::read_checkpoint;
use repvgg_model::RepVggConfig;
use repvgg_train::data::{SYNTHETIC_CLASSES, write_synthetic_set};
use repvgg_train::run::{TrainArgs, train};

fn main() -> Result<()> {
    // Blocks per stage, width multipliers (of 64/128/256/512), 2-group convolutions on blocks
    // 2 and 4 (global block indices, the stem is 0), squeeze-excitation, ten classes.
    let config = RepVggConfig::new(vec![1, 2, 3, 1], vec![0.5, 0.5, 0.5, 1.0])
        .with_grouped_layers(BTreeMap::from([(2, 2), (4, 2)]))
        .with_use_se(true)
        .with_se_reduction(8)
        .with_num_classes(SYNTHETIC_CLASSES.len());
    config.validate()?;
    let params = config.num_params();
    let macs = config.macs(32, 32);
    println!(
        "custom RepVGG: {} parameters in training, {} deployed; {:.1} / {:.1} MMACs at 32x32",
        params.training,
        params.deploy,
        macs.training as f64 / 1e6,
        macs.deploy as f64 / 1e6
    );

    let dir = Path::new("runs/custom-arch");
    write_synthetic_set(&dir.join("data"), 100, 20, 1)?;
    config.save(dir.join("config.json"))?;
    let run = dir.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run)?;
    }
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let report = train(&TrainArgs::from_flags([
        "--data".to_string(),
        path(&dir.join("data")),
        "--config".into(),
        path(&dir.join("config.json")),
        "--output".into(),
        path(&run),
        "--image-size".into(),
        "32".into(),
        "--epochs".into(),
        "8".into(),
        "--batch-size".into(),
        "50".into(),
        "--lr".into(),
        "0.5".into(),
        "--device".into(),
        "cpu".into(),
    ])?)?;

    // Training wrote both forms; the deploy one is a plain stack of 3x3 convolutions (+ SE).
    let deployed = read_checkpoint(&report.deploy_path)?;
    let net = deployed
        .weights
        .load_into(config.init_deploy(&Device::flex()), "the deploy model")?;
    println!(
        "deploy model: {} trainable parameters, top-1 {:.1}% on the held-out images",
        net.num_trainable_params(),
        100.0 * report.deploy_validation.top1()
    );
    Ok(())
}
