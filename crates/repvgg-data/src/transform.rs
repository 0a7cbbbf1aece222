//! Decoding and the paper's augmentation: RandomResizedCrop + horizontal flip for training,
//! resize + center crop for evaluation, then ImageNet normalization.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageReader, RgbImage};
use rand::RngExt;

use crate::DataError;

/// ImageNet per-channel mean (RGB, on pixel values scaled to [0, 1]).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Evaluation resizes the shorter side to `size / EVAL_CROP_FRACTION` (256 for 224).
pub const EVAL_CROP_FRACTION: f64 = 0.875;

/// Decodes an image file to 8-bit RGB, whatever it holds (grayscale, RGBA, CMYK JPEG, 16-bit
/// PNG), guessing the format from the content rather than the extension.
pub fn decode_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let decode = || -> Result<RgbImage, image::ImageError> {
        Ok(ImageReader::open(path)?
            .with_guessed_format()?
            .decode()?
            .to_rgb8())
    };
    decode().map_err(|source| DataError::Decode {
        path: path.to_path_buf(),
        message: source.to_string(),
    })
}

/// A rectangle of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

impl Crop {
    fn apply(self, image: &RgbImage) -> RgbImage {
        imageops::crop_imm(image, self.left, self.top, self.width, self.height).to_image()
    }
}

/// Crops a random region covering `scale` of the image's area with an aspect ratio within
/// `ratio` (log-uniform), then resizes it to `size x size` bilinearly. The sampling follows
/// torchvision: ten tries, then a centre crop with the ratio clamped.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomResizedCrop {
    pub size: u32,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// The paper's parameters: scale (0.08, 1), ratio (3/4, 4/3).
    pub fn new(size: u32) -> Self {
        Self {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// Draws the crop rectangle for an image of `width x height`.
    pub fn sample(&self, width: u32, height: u32, rng: &mut impl RngExt) -> Crop {
        let area = f64::from(width) * f64::from(height);
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * rng.random_range(self.scale.0..=self.scale.1);
            let aspect = rng.random_range(log_ratio.0..=log_ratio.1).exp();
            let w = (target_area * aspect).sqrt().round() as u32;
            let h = (target_area / aspect).sqrt().round() as u32;
            if 0 < w && w <= width && 0 < h && h <= height {
                return Crop {
                    top: rng.random_range(0..=height - h),
                    left: rng.random_range(0..=width - w),
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = f64::from(width) / f64::from(height);
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, (f64::from(width) / self.ratio.0).round() as u32)
        } else if in_ratio > self.ratio.1 {
            ((f64::from(height) * self.ratio.1).round() as u32, height)
        } else {
            (width, height)
        };
        Crop {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    pub fn apply(&self, image: &RgbImage, rng: &mut impl RngExt) -> RgbImage {
        let crop = self.sample(image.width(), image.height(), rng).apply(image);
        imageops::resize(&crop, self.size, self.size, FilterType::Triangle)
    }
}

/// The training augmentation: [`RandomResizedCrop`], then a horizontal flip with probability
/// `flip_probability`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTransform {
    pub crop: RandomResizedCrop,
    pub flip_probability: f64,
}

impl TrainTransform {
    /// The paper's augmentation at `size x size` (flip probability 0.5).
    pub fn new(size: u32) -> Self {
        Self {
            crop: RandomResizedCrop::new(size),
            flip_probability: 0.5,
        }
    }

    pub fn apply(&self, image: &RgbImage, rng: &mut impl RngExt) -> RgbImage {
        let mut image = self.crop.apply(image, rng);
        if rng.random_bool(self.flip_probability) {
            imageops::flip_horizontal_in_place(&mut image);
        }
        image
    }
}

/// The evaluation transform: resize the shorter side to `round(size / 0.875)` (bilinear,
/// keeping the aspect ratio), then take the central `size x size` crop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalTransform {
    pub size: u32,
    /// Length of the shorter side after resizing.
    pub resize: u32,
}

impl EvalTransform {
    pub fn new(size: u32) -> Self {
        Self {
            size,
            resize: (f64::from(size) / EVAL_CROP_FRACTION).round() as u32,
        }
    }

    pub fn apply(&self, image: &RgbImage) -> RgbImage {
        let (width, height) = image.dimensions();
        let scale = f64::from(self.resize) / f64::from(width.min(height));
        // The shorter side becomes exactly `resize`; the longer one keeps the aspect ratio.
        let (new_width, new_height) = if width <= height {
            (self.resize, (f64::from(height) * scale) as u32)
        } else {
            ((f64::from(width) * scale) as u32, self.resize)
        };
        let resized = imageops::resize(
            image,
            new_width.max(self.size),
            new_height.max(self.size),
            FilterType::Triangle,
        );
        let (width, height) = resized.dimensions();
        Crop {
            top: ((f64::from(height - self.size)) / 2.0).round() as u32,
            left: ((f64::from(width - self.size)) / 2.0).round() as u32,
            height: self.size,
            width: self.size,
        }
        .apply(&resized)
    }
}

/// The image as a channels-first `[3, H, W]` float array, scaled to [0, 1] and normalised with
/// the ImageNet mean and standard deviation.
pub fn normalize(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(pixel[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}
