//! Batches for burn-train: decoded and augmented on a pool of worker threads while the device
//! works, a fresh shuffle of the whole training set every epoch, reproducible for a seed whatever
//! the number of workers.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};
use rayon::prelude::*;

use crate::{EvalTransform, Sample, TrainTransform, decode_rgb_reusing, normalize_into};

/// How images are turned into network inputs.
#[derive(Clone, Debug)]
pub enum Augmentation {
    /// Random resized crop and flip (and RandAugment and random erasing when set), a new draw
    /// every epoch.
    Train(TrainTransform),
    /// Resize and centre crop, the same every time.
    Eval(EvalTransform),
}

impl Augmentation {
    fn size(&self) -> usize {
        match self {
            Self::Train(transform) => transform.crop.size as usize,
            Self::Eval(transform) => transform.size as usize,
        }
    }
}

/// Batching options of an [`ImageLoader`].
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Threads decoding and augmenting images.
    pub workers: usize,
    /// Seeds the per-epoch shuffle, each image's augmentation and the mixup draws.
    pub seed: u64,
    /// Visit the images in a new random order every epoch (training) or in folder order.
    pub shuffle: bool,
    /// Mixup with `lambda ~ Beta(alpha, alpha)` when set (training only).
    pub mixup_alpha: Option<f64>,
    /// Batches prepared ahead of the one the device works on.
    pub prefetch: usize,
}

/// A batch of normalised images `[N, 3, S, S]` and their class indices.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub images: Tensor<4>,
    pub targets: Tensor<1, Int>,
    /// Present when the images are mixed with another batch order.
    pub mixup: Option<MixedTargets>,
}

/// Mixup of a batch with itself reversed: `images = lambda * x + (1 - lambda) * x.flip(0)`.
#[derive(Clone, Debug)]
pub struct MixedTargets {
    /// Class indices of the reversed batch.
    pub targets: Tensor<1, Int>,
    /// Weight of the original targets.
    pub lambda: f32,
}

/// Images that could not be decoded: each is reported once, counted and left out of its batch.
#[derive(Debug, Default)]
pub struct SkippedImages {
    failures: Mutex<BTreeMap<PathBuf, String>>,
}

impl SkippedImages {
    fn record(&self, path: PathBuf, message: String) {
        let mut failures = self.failures.lock().expect("skipped-image list poisoned");
        if let std::collections::btree_map::Entry::Vacant(entry) = failures.entry(path) {
            log::warn!(
                "skipping unreadable image {}: {message}",
                entry.key().display()
            );
            entry.insert(message);
        }
    }

    /// Distinct files skipped so far, with the reason.
    pub fn list(&self) -> Vec<(PathBuf, String)> {
        let failures = self.failures.lock().expect("skipped-image list poisoned");
        failures
            .iter()
            .map(|(path, message)| (path.clone(), message.clone()))
            .collect()
    }
}

/// A burn [`DataLoader`] over labelled image files.
///
/// Every call to `iter` is one epoch. With `shuffle`, epoch `e` visits the whole set in the
/// order of a permutation drawn from `(seed, e)`; [`DataLoader::slice`] (used by burn-train to
/// split the data between devices) takes a range of positions of that permutation, so every
/// device still sees a fresh share of the whole set each epoch. Each image's augmentation is drawn
/// from `(seed, epoch, position)`, so the batches do not depend on the number of workers.
pub struct ImageLoader {
    samples: Arc<[Sample]>,
    positions: Range<usize>,
    augmentation: Arc<Augmentation>,
    options: LoaderOptions,
    device: Device,
    pool: Arc<rayon::ThreadPool>,
    epoch: AtomicUsize,
    skipped: Arc<SkippedImages>,
}

impl ImageLoader {
    pub fn new(
        samples: Vec<Sample>,
        augmentation: Augmentation,
        options: LoaderOptions,
        device: &Device,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.workers.max(1))
            .thread_name(|i| format!("image-loader-{i}"))
            .build()?;
        let len = samples.len();
        Ok(Self {
            samples: samples.into(),
            positions: 0..len,
            augmentation: Arc::new(augmentation),
            options,
            device: device.clone(),
            pool: Arc::new(pool),
            epoch: AtomicUsize::new(0),
            skipped: Arc::default(),
        })
    }

    /// Make the next `iter` epoch `epoch` (0-based), as when resuming a training run.
    pub fn start_at_epoch(self, epoch: usize) -> Self {
        self.epoch.store(epoch, Ordering::Relaxed);
        self
    }

    /// The images skipped so far because they could not be decoded.
    pub fn skipped(&self) -> Arc<SkippedImages> {
        self.skipped.clone()
    }

    /// The indices into `samples` of this loader's share of epoch `epoch`, in visiting order.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.options.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(stream_seed(
                self.options.seed,
                epoch,
                Stream::Shuffle,
            )));
        }
        order[self.positions.clone()].to_vec()
    }

    fn share(&self, positions: Range<usize>, device: &Device) -> Self {
        Self {
            samples: self.samples.clone(),
            positions,
            augmentation: self.augmentation.clone(),
            options: self.options.clone(),
            device: device.clone(),
            pool: self.pool.clone(),
            epoch: AtomicUsize::new(self.epoch.load(Ordering::Relaxed)),
            skipped: self.skipped.clone(),
        }
    }
}

impl DataLoader<ImageBatch> for ImageLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch> + 'a> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let order = self.epoch_order(epoch);
        let items_total = order.len();
        let (sender, receiver) = sync_channel(self.options.prefetch.max(1));
        let producer = BatchProducer {
            samples: self.samples.clone(),
            augmentation: self.augmentation.clone(),
            options: self.options.clone(),
            device: self.device.clone(),
            skipped: self.skipped.clone(),
            epoch,
            first_position: self.positions.start,
        };
        let pool = self.pool.clone();
        std::thread::Builder::new()
            .name("image-batches".into())
            .spawn(move || {
                let batch_size = producer.options.batch_size.max(1);
                for (index, chunk) in order.chunks(batch_size).enumerate() {
                    let batch = pool.install(|| producer.batch(index * batch_size, chunk));
                    // A closed channel means the epoch was abandoned: stop decoding.
                    if sender.send(batch).is_err() {
                        return;
                    }
                }
            })
            .expect("cannot start the batch producer thread");
        Box::new(ImageLoaderIter {
            receiver,
            items_processed: 0,
            items_total,
        })
    }

    fn num_items(&self) -> usize {
        self.positions.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(self.share(self.positions.clone(), device))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        let start = (self.positions.start + start).min(self.positions.end);
        let end = (self.positions.start + end).clamp(start, self.positions.end);
        Arc::new(self.share(start..end, &self.device))
    }
}

/// What a batch carries back to the iterator: the tensors (if any image survived) and how many
/// positions it covered.
struct LoadedBatch {
    batch: Option<ImageBatch>,
    positions: usize,
}

struct BatchProducer {
    samples: Arc<[Sample]>,
    augmentation: Arc<Augmentation>,
    options: LoaderOptions,
    device: Device,
    skipped: Arc<SkippedImages>,
    epoch: usize,
    first_position: usize,
}

impl BatchProducer {
    /// Decodes and augments the images of `chunk` (indices into `samples`) in parallel, each
    /// straight into its slot of the batch, and makes the tensors; `offset` is the chunk's first
    /// position in this loader's epoch order.
    fn batch(&self, offset: usize, chunk: &[usize]) -> LoadedBatch {
        let image_len = 3 * self.augmentation.size() * self.augmentation.size();
        let mut pixels = vec![0f32; chunk.len() * image_len];
        let labels: Vec<Option<usize>> = pixels
            .par_chunks_mut(image_len)
            .zip(chunk)
            .enumerate()
            .map(|(i, (slot, &sample_index))| {
                let position = self.first_position + offset + i;
                self.load(sample_index, position, slot)
            })
            .collect();
        // Close the gaps the skipped images left, keeping the order.
        let mut kept = Vec::with_capacity(labels.len());
        for (slot, label) in labels.into_iter().enumerate() {
            if let Some(label) = label {
                let start = slot * image_len;
                pixels.copy_within(start..start + image_len, kept.len() * image_len);
                kept.push(label as i64);
            }
        }
        pixels.truncate(kept.len() * image_len);
        LoadedBatch {
            batch: (!kept.is_empty()).then(|| self.stack(pixels, kept, offset)),
            positions: chunk.len(),
        }
    }

    /// Decodes sample `sample_index` and writes its network input, drawn for `position` of the
    /// epoch, into `slot`; returns its class, or `None` (recorded) if it cannot be decoded.
    fn load(&self, sample_index: usize, position: usize, slot: &mut [f32]) -> Option<usize> {
        thread_local! {
            /// Each worker's decoded-image buffer, reused from image to image (it keeps the size
            /// of the largest image decoded).
            static DECODED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
        }
        let sample = &self.samples[sample_index];
        let image = match decode_rgb_reusing(&sample.path, DECODED.take()) {
            Ok(image) => image,
            Err(error) => {
                self.skipped.record(sample.path.clone(), error.to_string());
                return None;
            }
        };
        match self.augmentation.as_ref() {
            Augmentation::Train(transform) => {
                let seed = stream_seed(self.options.seed, self.epoch, Stream::Image(position));
                transform.input_into(&image, &mut StdRng::seed_from_u64(seed), slot);
            }
            Augmentation::Eval(transform) => normalize_into(&transform.apply(&image), slot),
        }
        DECODED.set(image.into_raw());
        Some(sample.label)
    }

    /// The batch tensors from `pixels`, `labels.len()` normalised images back to back, with
    /// mixup applied when set.
    fn stack(&self, mut pixels: Vec<f32>, labels: Vec<i64>, offset: usize) -> ImageBatch {
        let size = self.augmentation.size();
        let count = labels.len();
        let lambda = self.options.mixup_alpha.map(|alpha| {
            let seed = stream_seed(self.options.seed, self.epoch, Stream::Mixup(offset));
            let beta = Beta::new(alpha, alpha).expect("mixup alpha is validated positive");
            beta.sample(&mut StdRng::seed_from_u64(seed)) as f32
        });
        let mixup = lambda.map(|lambda| {
            mix_with_reversed(&mut pixels, count, lambda);
            let reversed: Vec<i64> = labels.iter().rev().copied().collect();
            MixedTargets {
                targets: Tensor::from_data(TensorData::new(reversed, [count]), &self.device),
                lambda,
            }
        });
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [count, 3, size, size]),
                &self.device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [count]), &self.device),
            mixup,
        }
    }
}

/// `x = lambda * x + (1 - lambda) * x.flip(0)` over `count` equal-sized images stored back to back.
fn mix_with_reversed(pixels: &mut [f32], count: usize, lambda: f32) {
    let original = pixels.to_vec();
    let image_len = pixels.len() / count;
    for (i, image) in pixels.chunks_mut(image_len).enumerate() {
        let partner = &original[(count - 1 - i) * image_len..][..image_len];
        for (value, other) in image.iter_mut().zip(partner) {
            *value = lambda * *value + (1.0 - lambda) * other;
        }
    }
}

/// The independent random streams a loader draws from.
enum Stream {
    Shuffle,
    Image(usize),
    Mixup(usize),
}

fn stream_seed(seed: u64, epoch: usize, stream: Stream) -> u64 {
    let (kind, index) = match stream {
        Stream::Shuffle => (0u64, 0usize),
        Stream::Image(position) => (1, position),
        Stream::Mixup(offset) => (2, offset),
    };
    // SplitMix64 finaliser over the packed coordinates: nearby inputs give unrelated seeds.
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ kind.wrapping_mul(0x94D0_49BB_1331_11EB);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct ImageLoaderIter {
    receiver: Receiver<LoadedBatch>,
    items_processed: usize,
    items_total: usize,
}

impl Iterator for ImageLoaderIter {
    type Item = Result<ImageBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let loaded = self.receiver.recv().ok()?;
            self.items_processed += loaded.positions;
            if let Some(batch) = loaded.batch {
                return Some(Ok(batch));
            }
        }
    }
}

impl DataLoaderIterator<ImageBatch> for ImageLoaderIter {
    fn progress(&self) -> Progress {
        Progress::new(
            self.items_processed,
            self.items_total,
            Some("images".into()),
        )
    }
}
