//! Random erasing as timm applies it by default (`--reprob P`, `--remode pixel`,
//! `--recount 1`): on the normalised image, so that the noise has the statistics of the
//! network's inputs (mean 0, standard deviation 1) whatever the data set's mean and spread.

use rand::RngExt;
use rand_distr::StandardNormal;

use crate::Crop;

/// With probability `probability`, replaces one rectangle of a normalised channels-first image
/// by standard normal noise, drawn per pixel and channel. The rectangle covers a fraction of
/// the image drawn uniformly from `area` with an aspect ratio (height / width) drawn
/// log-uniformly from `aspect`; of ten draws, the first that fits strictly inside the image is
/// taken (timm's `RandomErasing`).
#[derive(Clone, Debug, PartialEq)]
pub struct RandomErasing {
    /// Probability that an image is erased (timm's `--reprob`).
    pub probability: f64,
    /// Smallest and largest fraction of the image erased (timm: 0.02 and 1/3).
    pub area: (f64, f64),
    /// Smallest and largest height / width (timm: 0.3 and 1 / 0.3).
    pub aspect: (f64, f64),
}

impl RandomErasing {
    /// timm's erasing with probability `probability`.
    pub fn new(probability: f64) -> Self {
        Self {
            probability,
            area: (0.02, 1.0 / 3.0),
            aspect: (0.3, 1.0 / 0.3),
        }
    }

    /// Erases in place `input`, a normalised `[C, height, width]` image, with draws from `rng`
    /// only; returns the rectangle erased, if any.
    pub fn apply(
        &self,
        input: &mut [f32],
        height: u32,
        width: u32,
        rng: &mut impl RngExt,
    ) -> Option<Crop> {
        if rng.random::<f64>() >= self.probability {
            return None;
        }
        let plane = height as usize * width as usize;
        let image_area = f64::from(height) * f64::from(width);
        let log_aspect = (self.aspect.0.ln(), self.aspect.1.ln());
        for _ in 0..10 {
            let target_area = image_area * uniform(rng, self.area);
            let aspect = uniform(rng, log_aspect).exp();
            // Python's round: ties to even.
            let h = (target_area * aspect).sqrt().round_ties_even() as u32;
            let w = (target_area / aspect).sqrt().round_ties_even() as u32;
            if w < width && h < height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                for channel in input.chunks_mut(plane) {
                    for y in top..top + h {
                        let row = y as usize * width as usize;
                        for value in &mut channel[row + left as usize..row + (left + w) as usize] {
                            *value = rng.sample(StandardNormal);
                        }
                    }
                }
                return Some(Crop {
                    top,
                    left,
                    height: h,
                    width: w,
                });
            }
        }
        None
    }
}

/// A draw uniform in `[low, high]` (Python's `random.uniform`), whatever the order of the two.
fn uniform(rng: &mut impl RngExt, (low, high): (f64, f64)) -> f64 {
    low + (high - low) * rng.random::<f64>()
}
