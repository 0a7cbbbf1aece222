//! The batch loader: per-epoch global shuffles, device shares, reproducible augmentation
//! whatever the number of workers, skipped unreadable files, mixup.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use repvgg_data::{
    Augmentation, EvalTransform, ImageBatch, ImageFolder, ImageLoader, LoaderOptions, Sample,
    TrainTransform, write_synthetic_set,
};
use tempfile::TempDir;

/// A synthetic set in a fresh directory, removed when the returned guard is dropped.
fn synthetic_samples(name: &str, per_class: usize) -> (TempDir, Vec<Sample>) {
    let root = tempfile::Builder::new()
        .prefix(&format!("repvgg-loader-{name}-"))
        .tempdir()
        .unwrap();
    write_synthetic_set(root.path(), per_class, 1, 3).unwrap();
    let samples = ImageFolder::open(&root.path().join("train"))
        .unwrap()
        .samples;
    (root, samples)
}

fn options(batch_size: usize, workers: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size,
        workers,
        seed: 11,
        shuffle: true,
        mixup_alpha: None,
        prefetch: 2,
    }
}

fn loader(samples: &[Sample], options: LoaderOptions) -> ImageLoader {
    ImageLoader::new(
        samples.to_vec(),
        Augmentation::Train(TrainTransform::new(32)),
        options,
        &Device::flex(),
    )
    .unwrap()
}

fn batches(loader: &dyn DataLoader<ImageBatch>) -> Vec<ImageBatch> {
    loader.iter().map(Result::unwrap).collect()
}

#[test]
fn every_epoch_is_a_fresh_permutation_of_the_whole_set() {
    let samples: Vec<Sample> = (0..100)
        .map(|i| Sample {
            path: PathBuf::from(format!("{i}.jpg")),
            label: i % 7,
        })
        .collect();
    let loader = loader(&samples, options(8, 1));
    let epochs: Vec<Vec<usize>> = (0..3).map(|epoch| loader.epoch_order(epoch)).collect();
    for order in &epochs {
        assert_eq!(order.iter().copied().collect::<BTreeSet<_>>().len(), 100);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    // Not merely rotated within fixed partitions: the first quarter mixes with the rest.
    let first: BTreeSet<_> = epochs[0][..25].iter().collect();
    let second: BTreeSet<_> = epochs[1][..25].iter().collect();
    assert!(first.intersection(&second).count() < 20);
    // The same seed gives the same order.
    let again = self::loader(&samples, options(8, 1));
    assert_eq!(again.epoch_order(1), epochs[1]);
}

#[test]
fn device_shares_split_each_epoch_permutation() {
    let (_root, samples) = synthetic_samples("shares", 3);
    let whole = loader(&samples, options(4, 2));
    let order = whole.epoch_order(0);
    let first = whole.slice(0, 13);
    let second = whole.slice(13, samples.len());
    assert_eq!(first.num_items() + second.num_items(), samples.len());
    let labels = |loader: &dyn DataLoader<ImageBatch>| -> Vec<i64> {
        batches(loader)
            .into_iter()
            .flat_map(|batch| batch.targets.into_data().iter::<i64>().collect::<Vec<_>>())
            .collect()
    };
    let expected: Vec<i64> = order.iter().map(|&i| samples[i].label as i64).collect();
    let mut together = labels(first.as_ref());
    together.extend(labels(second.as_ref()));
    assert_eq!(together, expected);
}

#[test]
fn batches_do_not_depend_on_the_number_of_workers() {
    let (_root, samples) = synthetic_samples("workers", 2);
    let one = batches(&loader(&samples, options(6, 1)));
    let three = batches(&loader(&samples, options(6, 3)));
    assert_eq!(one.len(), 4); // 20 images in batches of 6
    assert_eq!(one.len(), three.len());
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.images.dims(), b.images.dims());
        assert_eq!(a.images.to_data(), b.images.to_data());
        assert_eq!(a.targets.to_data(), b.targets.to_data());
    }
    assert_eq!(one[0].images.dims(), [6, 3, 32, 32]);
    assert_eq!(one[3].images.dims(), [2, 3, 32, 32]);
    // A second epoch draws other crops.
    let loader = loader(&samples, options(20, 2));
    let epoch0 = batches(&loader);
    let epoch1 = batches(&loader);
    assert_ne!(epoch0[0].images.to_data(), epoch1[0].images.to_data());
}

#[test]
fn unreadable_images_are_skipped_counted_and_reported_once() {
    let (scratch, mut samples) = synthetic_samples("corrupt", 1);
    let root = scratch.path();
    let broken = root.join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    samples.push(Sample {
        path: broken.clone(),
        label: 0,
    });
    samples.push(Sample {
        path: root.join("missing.jpg"),
        label: 1,
    });
    let loader = ImageLoader::new(
        samples.clone(),
        Augmentation::Eval(EvalTransform::new(32)),
        LoaderOptions {
            shuffle: false,
            ..options(4, 2)
        },
        &Device::flex(),
    )
    .unwrap();
    for _ in 0..2 {
        let images: usize = batches(&loader).iter().map(|b| b.targets.dims()[0]).sum();
        assert_eq!(images, samples.len() - 2);
    }
    let skipped = loader.skipped().list();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, broken);
    assert!(skipped[0].1.contains("broken.jpg"), "{}", skipped[0].1);
}

#[test]
fn mixup_blends_each_image_with_its_mirror_in_the_batch() {
    let (_root, samples) = synthetic_samples("mixup", 1);
    let plain = batches(&loader(&samples, options(10, 2)));
    let mixed = batches(&loader(
        &samples,
        LoaderOptions {
            mixup_alpha: Some(0.4),
            ..options(10, 2)
        },
    ));
    let (plain, mixed) = (&plain[0], &mixed[0]);
    let mixup = mixed.mixup.as_ref().expect("mixup targets");
    assert!((0.0..=1.0).contains(&mixup.lambda));
    let targets: Vec<i64> = plain.targets.to_data().iter::<i64>().collect();
    let reversed: Vec<i64> = targets.iter().rev().copied().collect();
    assert_eq!(
        mixed.targets.to_data().iter::<i64>().collect::<Vec<_>>(),
        targets
    );
    assert_eq!(
        mixup.targets.to_data().iter::<i64>().collect::<Vec<_>>(),
        reversed
    );
    let lambda = mixup.lambda;
    let expected = plain.images.clone().mul_scalar(lambda)
        + plain.images.clone().flip([0]).mul_scalar(1.0 - lambda);
    let difference = (expected - mixed.images.clone())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(difference < 1e-5, "{difference}");
}
