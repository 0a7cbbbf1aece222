//! Decoding and the paper's augmentation: RandomResizedCrop + horizontal flip for training (and
//! the longer recipe's RandAugment and random erasing), resize + center crop for evaluation,
//! then ImageNet normalization.

use std::cell::RefCell;
use std::path::Path;

use fast_image_resize::images::{TypedCroppedImage, TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::imageops;
use image::{ColorType, DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use rand::RngExt;

use crate::{DataError, RandAugment, RandomErasing};

/// ImageNet per-channel mean (RGB, on pixel values scaled to [0, 1]).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The fraction of the resized image the evaluation crop keeps (timm's `crop_pct`) unless told
/// otherwise: 224 out of 256. RepVGG's published figures use it; RepVGGplus-L2pse and D2se are
/// tested at 320 with 1.0.
pub const DEFAULT_CROP_PCT: f64 = 0.875;

/// Decodes an image file to 8-bit RGB, whatever it holds (grayscale, RGBA, CMYK JPEG, 16-bit
/// PNG), guessing the format from the content rather than the extension.
pub fn decode_rgb(path: &Path) -> Result<RgbImage, DataError> {
    decode_rgb_reusing(path, Vec::new())
}

/// [`decode_rgb`], decoding 8-bit RGB files (most JPEGs) straight into `buffer`'s allocation,
/// grown if too small: a worker decoding image after image hands back the last image's buffer
/// (`RgbImage::into_raw`) rather than have fresh pages mapped and zeroed for every image. Other
/// colour types are decoded, then converted, as `decode_rgb` does.
pub fn decode_rgb_reusing(path: &Path, mut buffer: Vec<u8>) -> Result<RgbImage, DataError> {
    let decode = || -> Result<RgbImage, image::ImageError> {
        let decoder = ImageReader::open(path)?
            .with_guessed_format()?
            .into_decoder()?;
        // What `ImageReader::decode` checks: refuse a decompression bomb before allocating it.
        Limits::default().reserve(decoder.total_bytes())?;
        if decoder.color_type() != ColorType::Rgb8 {
            return Ok(DynamicImage::from_decoder(decoder)?.into_rgb8());
        }
        let (width, height) = decoder.dimensions();
        // Only the part past the old length is zeroed; the decoder overwrites all of it.
        buffer.resize(decoder.total_bytes() as usize, 0);
        decoder.read_image(&mut buffer)?;
        Ok(RgbImage::from_raw(width, height, buffer)
            .expect("the decoder filled width x height x 3 bytes"))
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

    /// This rectangle of `image` resized to `width x height` with an antialiased bilinear
    /// (triangle) filter, as PIL's `image.crop(box).resize(size, BILINEAR)` computes it (in
    /// fixed point, with SIMD; the filter does not reach past the rectangle), reading the
    /// rectangle in place rather than copying it out first.
    fn resize(self, image: &RgbImage, width: u32, height: u32) -> RgbImage {
        thread_local! {
            /// Each thread's resizer, whose scratch buffers are reused from image to image.
            static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
        }
        let whole = TypedImageRef::<U8x3>::from_buffer(image.width(), image.height(), image)
            .expect("an RgbImage holds width x height RGB pixels");
        let source = TypedCroppedImage::new(whole, self.left, self.top, self.width, self.height)
            .expect("the crop lies inside the image");
        let mut resized = RgbImage::new(width, height);
        let mut target = TypedImage::<U8x3>::from_buffer(width, height, &mut resized)
            .expect("an RgbImage holds width x height RGB pixels");
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        RESIZER
            .with_borrow_mut(|resizer| resizer.resize_typed(&source, &mut target, &options))
            .expect("same pixel type and non-empty images");
        resized
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

    /// Draws a crop of `image` ([`sample`](Self::sample)) and resizes it to `size x size`.
    pub fn apply(&self, image: &RgbImage, rng: &mut impl RngExt) -> RgbImage {
        self.sample(image.width(), image.height(), rng)
            .resize(image, self.size, self.size)
    }
}

/// The training augmentation: [`RandomResizedCrop`], then a horizontal flip with probability
/// `flip_probability`, then [`RandAugment`] if set (timm's order); [`RandomErasing`], if set,
/// works on the normalised image ([`TrainTransform::input`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTransform {
    pub crop: RandomResizedCrop,
    pub flip_probability: f64,
    /// RandAugment after the crop and flip (the longer recipe's; `None` in the paper's).
    pub rand_augment: Option<RandAugment>,
    /// Random erasing of the normalised image (`None`: none).
    pub random_erasing: Option<RandomErasing>,
}

impl TrainTransform {
    /// The paper's augmentation at `size x size` (flip probability 0.5, no RandAugment, no
    /// erasing).
    pub fn new(size: u32) -> Self {
        Self {
            crop: RandomResizedCrop::new(size),
            flip_probability: 0.5,
            rand_augment: None,
            random_erasing: None,
        }
    }

    /// The augmented image before normalisation (random erasing, which needs the normalised
    /// values, excepted). Every draw comes from `rng`.
    pub fn apply(&self, image: &RgbImage, rng: &mut impl RngExt) -> RgbImage {
        let mut image = self.crop.apply(image, rng);
        if rng.random_bool(self.flip_probability) {
            imageops::flip_horizontal_in_place(&mut image);
        }
        if let Some(policy) = &self.rand_augment {
            policy.apply(&mut image, rng);
        }
        image
    }

    /// The network's input: [`apply`](Self::apply), [`normalize`], then random erasing. Every
    /// draw comes from `rng`.
    pub fn input(&self, image: &RgbImage, rng: &mut impl RngExt) -> Vec<f32> {
        let size = self.crop.size as usize;
        let mut input = vec![0.0; 3 * size * size];
        self.input_into(image, rng, &mut input);
        input
    }

    /// [`input`](Self::input) written into `input`, `3 x size x size` values (a loader's slot of
    /// its batch, so that no per-image array is allocated and copied).
    pub fn input_into(&self, image: &RgbImage, rng: &mut impl RngExt, input: &mut [f32]) {
        let image = self.apply(image, rng);
        normalize_into(&image, input);
        if let Some(erasing) = &self.random_erasing {
            erasing.apply(input, image.height(), image.width(), rng);
        }
    }
}

/// `crop_pct` if it lies in (0, 1], else a message saying so (for flags and configs).
pub fn check_crop_pct(crop_pct: f64) -> Result<f64, String> {
    match crop_pct > 0.0 && crop_pct <= 1.0 {
        true => Ok(crop_pct),
        false => Err(format!("crop_pct must be in (0, 1], got {crop_pct}")),
    }
}

/// A crop fraction given as text (a `--crop-pct` flag), parsed and checked as
/// [`check_crop_pct`] does.
pub fn parse_crop_pct(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .map_err(|err| format!("{value:?} is not a number: {err}"))
        .and_then(check_crop_pct)
}

/// The evaluation transform, timm's: resize the shorter side to `floor(size / crop_pct)`
/// (bilinear with antialiasing, the longer side keeping the aspect ratio), then take the
/// central `size x size` crop. It agrees with timm's (PIL and torchvision) within a level of
/// 255 (tested against crops timm made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalTransform {
    pub size: u32,
    /// Length of the shorter side after resizing.
    pub resize: u32,
}

impl EvalTransform {
    /// The transform with the default crop fraction ([`DEFAULT_CROP_PCT`]).
    pub fn new(size: u32) -> Self {
        Self::with_crop_pct(size, DEFAULT_CROP_PCT)
    }

    /// The transform keeping `crop_pct` of the resized image: 1.0 resizes the shorter side to
    /// the crop itself. `crop_pct` is expected in (0, 1]; the resize never goes below `size`.
    pub fn with_crop_pct(size: u32, crop_pct: f64) -> Self {
        Self {
            size,
            resize: ((f64::from(size) / crop_pct).floor() as u32).max(size),
        }
    }

    pub fn apply(&self, image: &RgbImage) -> RgbImage {
        let (width, height) = image.dimensions();
        // torchvision's rule: the shorter side becomes `resize`, the longer one
        // `floor(resize * long / short)`.
        let (short, long) = (width.min(height), width.max(height));
        let scaled_long = (u64::from(self.resize) * u64::from(long) / u64::from(short)) as u32;
        let (new_width, new_height) = match width <= height {
            true => (self.resize, scaled_long),
            false => (scaled_long, self.resize),
        };
        let whole = Crop {
            top: 0,
            left: 0,
            height,
            width,
        };
        let resized = whole.resize(image, new_width, new_height);
        // torchvision's centre: `round((side - size) / 2)`, Python's round (ties to even).
        let offset = |side: u32| (f64::from(side - self.size) / 2.0).round_ties_even() as u32;
        Crop {
            top: offset(new_height),
            left: offset(new_width),
            height: self.size,
            width: self.size,
        }
        .apply(&resized)
    }
}

/// The image as a channels-first `[3, H, W]` float array, scaled to [0, 1] and normalised with
/// the ImageNet mean and standard deviation.
pub fn normalize(image: &RgbImage) -> Vec<f32> {
    let mut out = vec![0f32; 3 * image.width() as usize * image.height() as usize];
    normalize_into(image, &mut out);
    out
}

/// [`normalize`] written into `out`, which holds `3 x H x W` values.
pub fn normalize_into(image: &RgbImage, out: &mut [f32]) {
    // Every channel's 256 possible results, computed as the per-pixel formula would.
    let tables: [[f32; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|value| (value as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    });
    let plane = image.width() as usize * image.height() as usize;
    assert_eq!(
        out.len(),
        3 * plane,
        "normalize_into: output of the wrong size"
    );
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let planes = red.iter_mut().zip(green).zip(blue);
    for (pixel, ((red, green), blue)) in image.as_raw().chunks_exact(3).zip(planes) {
        *red = tables[0][usize::from(pixel[0])];
        *green = tables[1][usize::from(pixel[1])];
        *blue = tables[2][usize::from(pixel[2])];
    }
}
