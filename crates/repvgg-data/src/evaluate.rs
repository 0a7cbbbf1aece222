//! Top-1 / top-5 accuracy of any classifier over a loader of labelled batches.

use std::time::Instant;

use burn::data::dataloader::{DataLoader, Progress};
use burn::tensor::{Int, Tensor};

use crate::ImageBatch;

/// Accuracy counts over a data set, and every image's top-1 class in loader order (to compare
/// two models image by image).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub images: usize,
    pub top1_correct: usize,
    pub top5_correct: usize,
    pub predictions: Vec<i64>,
    pub seconds: f64,
}

impl Evaluation {
    pub fn top1(&self) -> f64 {
        ratio(self.top1_correct, self.images)
    }

    pub fn top5(&self) -> f64 {
        ratio(self.top5_correct, self.images)
    }

    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(f64::EPSILON)
    }

    /// Adds one batch of logits `[N, classes]` with its targets `[N]`.
    pub fn add(&mut self, logits: Tensor<2>, targets: Tensor<1, Int>) {
        let [count, classes] = logits.dims();
        let targets = targets.reshape([count, 1]);
        let top = logits.clone().argmax(1);
        let top_k = logits.topk_with_indices(5.min(classes), 1).1;
        let hit_k = top_k.equal(targets.clone()).int().sum_dim(1);
        self.top1_correct += top.clone().equal(targets).int().sum().into_scalar::<i64>() as usize;
        self.top5_correct += hit_k.sum().into_scalar::<i64>() as usize;
        self.predictions
            .extend(top.into_data().iter::<i64>().collect::<Vec<_>>());
        self.images += count;
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Runs `forward` over every batch of `loader`, calling `on_batch` with the counts so far and
/// the loader's progress after each batch (for progress bars).
pub fn evaluate(
    loader: &dyn DataLoader<ImageBatch>,
    mut forward: impl FnMut(Tensor<4>) -> Tensor<2>,
    mut on_batch: impl FnMut(&Evaluation, &Progress),
) -> Result<Evaluation, burn::data::dataset::DatasetError> {
    let started = Instant::now();
    let mut evaluation = Evaluation::default();
    let mut batches = loader.iter();
    while let Some(batch) = batches.next() {
        let batch = batch?;
        evaluation.add(forward(batch.images), batch.targets);
        evaluation.seconds = started.elapsed().as_secs_f64();
        on_batch(&evaluation, &batches.progress());
    }
    evaluation.seconds = started.elapsed().as_secs_f64();
    Ok(evaluation)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    #[test]
    fn top1_and_top5_are_counted_per_image() {
        let device = Device::flex();
        // Six classes; image 0 is right at top-1, image 1 only within the top 5, image 2 ranks its
        // class last.
        let logits = Tensor::<2>::from_data(
            TensorData::new(
                vec![
                    9.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, //
                    9.0, 8.0, 7.0, 6.0, 5.0, 4.0, //
                    1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
                ],
                [3, 6],
            ),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 4, 0], [3]), &device);
        let mut evaluation = Evaluation::default();
        evaluation.add(logits, targets);
        assert_eq!(evaluation.images, 3);
        assert_eq!(evaluation.top1_correct, 1);
        assert_eq!(evaluation.top5_correct, 2);
        assert_eq!(evaluation.predictions, vec![0, 0, 5]);
        assert!((evaluation.top1() - 1.0 / 3.0).abs() < 1e-12);
    }
}
