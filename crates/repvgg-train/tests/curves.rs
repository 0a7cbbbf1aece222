//! A real run's training curves: `train` writes `metrics.csv` (one row per epoch, the values
//! burn-train logged) and `curves.svg`; `resume` after a crash that left a row past the last
//! checkpoint drops that row, continues the file and redraws the picture.

use std::fs;
use std::path::Path;

use burn::tensor::Device;
use repvgg_data::write_synthetic_set;
use repvgg_testing::svg::Svg;
use repvgg_testing::{copy_dir, scratch};
use repvgg_train::curves::{CURVES_FILE, METRICS_FILE, MetricsLog};
use repvgg_train::{AugmentationConfig, LoaderConfig, RecipeConfig, TrainingConfig, resume, train};

/// The values burn-train's file logger wrote for `metric` in `epoch` of `split`: each batch's,
/// and the epoch's final value.
fn logged(run: &Path, split: &str, epoch: usize, metric: &str) -> (Vec<f64>, f64) {
    let path = run
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{metric}.log"));
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut batches = Vec::new();
    let mut last = None;
    for line in text.lines() {
        let (value, weight) = line.rsplit_once(',').unwrap();
        match weight {
            "final" => last = Some(value.parse().unwrap()),
            _ => batches.push(value.parse().unwrap()),
        }
    }
    (batches, last.expect("a final value"))
}

fn epochs(log: &MetricsLog) -> Vec<usize> {
    log.epochs().iter().map(|row| row.epoch).collect()
}

#[test]
fn a_run_keeps_its_curves_and_a_resumed_run_continues_them() {
    let scratch = scratch("train-curves");
    let (data, run) = (scratch.path().join("data"), scratch.path().join("a0-tiny"));
    // 40 training images in batches of 16: 3 steps an epoch.
    write_synthetic_set(&data, 4, 2, 5).unwrap();
    let config = TrainingConfig::new(
        repvgg_model::RepVggConfig::new(vec![1, 1], vec![0.25, 0.25])
            .with_num_classes(repvgg_data::SYNTHETIC_CLASSES.len()),
    )
    .with_recipe(
        RecipeConfig::new()
            .with_epochs(3)
            .with_batch_size(16)
            .with_warmup_epochs(1),
    )
    .with_augmentation(AugmentationConfig::new().with_image_size(32))
    .with_loader(LoaderConfig::new().with_workers(Some(2)));
    train(&config, &data, &[Device::flex()], &run).unwrap();

    let log = MetricsLog::read(&run.join(METRICS_FILE)).unwrap();
    assert_eq!(epochs(&log), [1, 2, 3]);
    for row in log.epochs() {
        let epoch = row.epoch;
        assert_eq!(
            row.step,
            3 * epoch,
            "global steps at the end of epoch {epoch}"
        );
        // The epoch's values as burn-train computed them.
        for (split, metrics) in [("train", &row.train), ("valid", &row.val)] {
            assert_eq!(metrics.loss, Some(logged(&run, split, epoch, "Loss").1));
            assert_eq!(metrics.top1, Some(logged(&run, split, epoch, "Accuracy").1));
            let top5 = metrics.top5.unwrap();
            assert!(top5 >= metrics.top1.unwrap() && top5 <= 100.0, "{row:?}");
        }
        let rates = logged(&run, "train", epoch, "Learning_Rate").0;
        assert_eq!(rates.len(), 3);
        assert_eq!(row.lr, rates.last().copied(), "the epoch's last rate");
        assert!(row.images_per_second.unwrap() > 0.0, "{row:?}");
    }
    let walls: Vec<f64> = log.epochs().iter().map(|row| row.wall_seconds).collect();
    assert!(
        walls[0] > 0.0 && walls.windows(2).all(|w| w[0] <= w[1]),
        "{walls:?}"
    );

    let svg = Svg::read(&run.join(CURVES_FILE));
    let texts = svg.texts();
    for label in ["a0-tiny train", "a0-tiny val", "a0-tiny learning rate"] {
        assert!(texts.contains(&label), "{label}: {texts:?}");
    }
    // Lines through `points` epochs, but the training lines' dashes (width 2), a few of which
    // bend at an epoch.
    let series_of = |svg: &Svg, points: usize| {
        svg.all("polyline")
            .filter(|line| line.points().len() == points && line.attribute("stroke-width") != "2")
            .count()
    };
    // Validation and learning rate in both panels, three epochs each.
    assert_eq!(series_of(&svg, 3), 4);

    // Killed after epoch 3's row was written, before its checkpoint: the row stays on disk,
    // and resuming from epoch 2 must not keep it twice.
    let killed = scratch.path().join("killed");
    copy_dir(&run, &killed);
    for part in ["model", "optim", "scheduler"] {
        fs::remove_file(killed.join(format!("checkpoint/{part}-3.bpk"))).unwrap();
    }
    let resumed = resume(&killed, &data, &[Device::flex()]).unwrap();
    assert_eq!(resumed.resumed_after, Some(2));
    let continued = MetricsLog::read(&killed.join(METRICS_FILE)).unwrap();
    assert_eq!(epochs(&continued), [1, 2, 3], "no epoch twice");
    assert_eq!(
        continued.epochs()[..2],
        log.epochs()[..2],
        "the kept rows unchanged"
    );
    let again = &continued.epochs()[2];
    assert_eq!(again.step, 9);
    assert_eq!(again.lr, log.epochs()[2].lr, "the same schedule position");
    assert!(again.val.loss.is_some());
    assert!(
        again.wall_seconds > log.epochs()[1].wall_seconds,
        "the wall time continues from epoch 2's: {again:?}"
    );
    let svg = Svg::read(&killed.join(CURVES_FILE));
    assert_eq!(series_of(&svg, 3), 4, "redrawn from the whole file");

    // A new run in the same place starts its own curves.
    fs::remove_dir_all(run.join("checkpoint")).unwrap();
    let recipe = config.recipe.clone().with_epochs(1);
    let config = config.with_recipe(recipe);
    train(&config, &data, &[Device::flex()], &run).unwrap();
    let fresh = MetricsLog::read(&run.join(METRICS_FILE)).unwrap();
    assert_eq!(epochs(&fresh), [1]);
}
