//! RandAugment, as timm's `rand-...` policy strings and the reference's `raug15` preset define
//! it: for each image, `n` operations drawn uniformly (with replacement) from a list, each
//! applied with a probability at a magnitude on timm's scale, where 10 is the strongest of the
//! ranges below (`magnitude / 10` of rotate 30 degrees, shear 0.3, translate 0.45 of the side,
//! enhance factor 0.1 + 1.8, posterize 4 bits, solarize 256, solarize-add 110, cutout 40).
//!
//! - `rand-m9-mstd0.5-inc1` (timm): keys `m` magnitude (10), `n` operations (2), `p`
//!   probability of each (0.5), `mstd` gaussian noise on the magnitude (0; above 100, uniform
//!   in [0, m]), `mmax` the clip of the noisy magnitude (10), `inc` the operations whose
//!   strength increases with the magnitude (posterize, solarize and the enhances). The 15
//!   operations are timm's `_RAND_TRANSFORMS` / `_RAND_INCREASING_TRANSFORMS`.
//! - `raug15` (the reference's `RandAugPolicy(magnitude=15)`, RepVGGplus-L2pse): 2 operations
//!   of 16 (timm's 15 with the TPU posterize, and Cutout), always applied, each at a magnitude
//!   drawn uniformly from the integers 0..=14, not clipped (so rotations reach 42 degrees).
//!
//! Geometric operations sample bilinearly or bicubically at random, as both do by default
//! (timm's `--train-interpolation random`), and fill what they uncover with the ImageNet mean
//! (124, 116, 104) for timm's policies (what timm's `create_transform` passes) or with
//! (128, 128, 128) for `raug15` (the reference's default). Where the two differ, solarize-add
//! follows the reference: timm caps its addition at 128, which only `mmax` above 10 reaches.
//! timm turns `inc` on for any value, `inc0` included; here `inc0` means off.

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use rand::RngExt;
use rand_distr::StandardNormal;

use crate::image_ops::{self, Interpolation};

/// Magnitudes are divided by this to scale each operation's range (timm's `_LEVEL_DENOM`).
pub const LEVEL_DENOM: f64 = 10.0;

/// Fill of timm's policies: the ImageNet mean in 8 bits, as timm's training transform passes.
pub const TIMM_FILL: [u8; 3] = [124, 116, 104];
/// Fill of `raug15`: the reference's (and `auto_augment.py`'s own) default grey.
pub const REFERENCE_FILL: [u8; 3] = [128, 128, 128];

/// One operation of RandAugment, by timm's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AugmentOp {
    AutoContrast,
    Equalize,
    Invert,
    /// Up to 30 degrees either way.
    Rotate,
    /// Keeps `int(level * 4)` bits: the strongest at magnitude 0 (timm's and the TPU's).
    Posterize,
    /// Keeps `4 - int(level * 4)` bits.
    PosterizeIncreasing,
    /// Threshold `int(level * 256)`: the strongest at magnitude 0.
    Solarize,
    /// Threshold `256 - int(level * 256)`.
    SolarizeIncreasing,
    /// Adds `int(level * 110)` below 128.
    SolarizeAdd,
    /// Factor `level * 1.8 + 0.1`.
    Color,
    /// Factor `1 +- level * 0.9`, at least 0.1.
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    /// Up to 0.3 either way.
    ShearX,
    ShearY,
    /// Up to 0.45 of the width either way.
    TranslateXRel,
    TranslateYRel,
    /// The reference's square of side `max(2, level * 40)` at a uniformly drawn centre.
    Cutout,
}

/// timm's `_RAND_TRANSFORMS`.
pub const RAND_OPS: [AugmentOp; 15] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::SolarizeAdd,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateXRel,
    AugmentOp::TranslateYRel,
];

/// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`).
pub const RAND_INCREASING_OPS: [AugmentOp; 15] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::PosterizeIncreasing,
    AugmentOp::SolarizeIncreasing,
    AugmentOp::SolarizeAdd,
    AugmentOp::ColorIncreasing,
    AugmentOp::ContrastIncreasing,
    AugmentOp::BrightnessIncreasing,
    AugmentOp::SharpnessIncreasing,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateXRel,
    AugmentOp::TranslateYRel,
];

/// The reference's 16 operations (`train/randaug.py`): timm's 15 and Cutout.
pub const RAUG15_OPS: [AugmentOp; 16] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::SolarizeAdd,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateXRel,
    AugmentOp::TranslateYRel,
    AugmentOp::Cutout,
];

/// `value` or `-value`, evenly.
fn randomly_negate(value: f64, rng: &mut impl RngExt) -> f64 {
    match rng.random_bool(0.5) {
        true => -value,
        false => value,
    }
}

/// timm's factor of the increasing enhances: `1 +- level * 0.9`, at least 0.1.
fn increasing_factor(level: f64, rng: &mut impl RngExt) -> f32 {
    (1.0 + randomly_negate(level * 0.9, rng)).max(0.1) as f32
}

/// Bilinear or bicubic, evenly (timm's and the reference's default for geometric operations).
fn random_interpolation(rng: &mut impl RngExt) -> Interpolation {
    match rng.random_bool(0.5) {
        true => Interpolation::Bilinear,
        false => Interpolation::Bicubic,
    }
}

impl AugmentOp {
    /// Applies the operation at `magnitude` (divided by [`LEVEL_DENOM`] to scale its range),
    /// drawing from `rng` what the operation leaves to chance: the sign of rotations, shears,
    /// translations and increasing enhances, the interpolation, the cutout's centre. `fill`
    /// colours what geometric operations uncover.
    pub fn apply(self, image: &mut RgbImage, magnitude: f64, fill: [u8; 3], rng: &mut impl RngExt) {
        let level = magnitude / LEVEL_DENOM;
        let enhance = (level * 1.8 + 0.1) as f32;
        let posterize_bits = (level * 4.0) as u32;
        let solarize_threshold = ((level * 256.0) as u32).min(256);
        let (width, height) = (f64::from(image.width()), f64::from(image.height()));
        match self {
            Self::AutoContrast => image_ops::autocontrast(image),
            Self::Equalize => image_ops::equalize(image),
            Self::Invert => image_ops::invert(image),
            Self::Rotate => {
                let degrees = randomly_negate(level * 30.0, rng);
                image_ops::rotate(image, degrees, random_interpolation(rng), fill);
            }
            Self::Posterize => image_ops::posterize(image, posterize_bits),
            Self::PosterizeIncreasing => {
                image_ops::posterize(image, 4u32.saturating_sub(posterize_bits));
            }
            Self::Solarize => image_ops::solarize(image, solarize_threshold),
            Self::SolarizeIncreasing => image_ops::solarize(image, 256 - solarize_threshold),
            Self::SolarizeAdd => image_ops::solarize_add(image, (level * 110.0) as u32),
            Self::Color => image_ops::color(image, enhance),
            Self::ColorIncreasing => image_ops::color(image, increasing_factor(level, rng)),
            Self::Contrast => image_ops::contrast(image, enhance),
            Self::ContrastIncreasing => image_ops::contrast(image, increasing_factor(level, rng)),
            Self::Brightness => image_ops::brightness(image, enhance),
            Self::BrightnessIncreasing => {
                image_ops::brightness(image, increasing_factor(level, rng))
            }
            Self::Sharpness => image_ops::sharpness(image, enhance),
            Self::SharpnessIncreasing => image_ops::sharpness(image, increasing_factor(level, rng)),
            Self::ShearX => {
                let factor = randomly_negate(level * 0.3, rng);
                image_ops::shear_x(image, factor, random_interpolation(rng), fill);
            }
            Self::ShearY => {
                let factor = randomly_negate(level * 0.3, rng);
                image_ops::shear_y(image, factor, random_interpolation(rng), fill);
            }
            Self::TranslateXRel => {
                let pixels = randomly_negate(level * 0.45, rng) * width;
                image_ops::translate_x(image, pixels, random_interpolation(rng), fill);
            }
            Self::TranslateYRel => {
                let pixels = randomly_negate(level * 0.45, rng) * height;
                image_ops::translate_y(image, pixels, random_interpolation(rng), fill);
            }
            Self::Cutout => {
                let size = (level * 40.0).max(2.0) as u32;
                let x = rng.random_range(0..image.width().max(1));
                let y = rng.random_range(0..image.height().max(1));
                image_ops::cutout(image, x, y, size);
            }
        }
    }
}

/// How each operation's magnitude is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Magnitude {
    /// timm's: `mean`, plus gaussian noise of standard deviation `std` when positive (uniform
    /// in [0, mean] when infinite), clipped to [0, max].
    Noisy { mean: f64, std: f64, max: f64 },
    /// The reference's: an integer drawn uniformly below `count`, not clipped.
    UniformInteger { count: u32 },
}

impl Magnitude {
    /// A magnitude for one operation.
    pub fn draw(self, rng: &mut impl RngExt) -> f64 {
        match self {
            Self::Noisy { mean, std, max } => {
                let magnitude = if std == f64::INFINITY {
                    mean * rng.random::<f64>()
                } else if std > 0.0 {
                    mean + std * rng.sample::<f64, _>(StandardNormal)
                } else {
                    mean
                };
                magnitude.min(max).max(0.0)
            }
            Self::UniformInteger { count } => f64::from(rng.random_range(0..count.max(1))),
        }
    }
}

/// A RandAugment policy: parse one from timm's strings or `raug15` (`"raug15".parse()`).
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    /// The operations drawn from, uniformly and with replacement.
    pub ops: Vec<AugmentOp>,
    /// Operations drawn per image (timm's `n`).
    pub num_ops: usize,
    /// Probability that a drawn operation is applied (timm's `p`).
    pub probability: f64,
    /// How each applied operation's magnitude is drawn.
    pub magnitude: Magnitude,
    /// Colour of what geometric operations uncover.
    pub fill: [u8; 3],
}

impl RandAugment {
    /// The reference's `raug15`: 2 of [`RAUG15_OPS`], always applied, magnitudes 0..=14.
    pub fn raug15() -> Self {
        Self {
            ops: RAUG15_OPS.to_vec(),
            num_ops: 2,
            probability: 1.0,
            magnitude: Magnitude::UniformInteger { count: 15 },
            fill: REFERENCE_FILL,
        }
    }

    /// Augments `image` in place with draws from `rng` only, so that a seeded `rng` repeats it.
    pub fn apply(&self, image: &mut RgbImage, rng: &mut impl RngExt) {
        if self.ops.is_empty() {
            return;
        }
        for _ in 0..self.num_ops {
            let op = self.ops[rng.random_range(0..self.ops.len())];
            if self.probability < 1.0 && rng.random::<f64>() >= self.probability {
                continue;
            }
            let magnitude = self.magnitude.draw(rng);
            op.apply(image, magnitude, self.fill, rng);
        }
    }
}

/// A policy string that is neither timm's `rand-...` nor `raug15`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("RandAugment policy `{policy}`: {problem}")]
pub struct InvalidPolicy {
    /// The string given.
    pub policy: String,
    /// What is wrong with it.
    pub problem: PolicyProblem,
}

/// What is wrong with a policy string.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyProblem {
    /// It starts with neither `rand` nor is `raug15`.
    UnknownName,
    /// A `-` section whose key timm does not know (or that this crate leaves out).
    UnknownKey(String),
    /// A section with a key and no number.
    MissingValue(String),
    /// A value that does not parse or lies outside its range.
    BadValue {
        section: String,
        expected: &'static str,
    },
    /// A key given twice.
    Repeated(String),
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownName => f.write_str(
                "expected timm's `rand-...` (e.g. rand-m9-mstd0.5-inc1) or the reference's `raug15`",
            ),
            Self::UnknownKey(section) => write!(
                f,
                "unknown section `{section}` (the keys are m, n, p, mstd, mmax and inc)"
            ),
            Self::MissingValue(section) => write!(f, "section `{section}` has no number"),
            Self::BadValue { section, expected } => {
                write!(f, "section `{section}`: expected {expected}")
            }
            Self::Repeated(key) => write!(f, "`{key}` is given twice"),
        }
    }
}

impl FromStr for RandAugment {
    type Err = InvalidPolicy;

    fn from_str(policy: &str) -> Result<Self, Self::Err> {
        let error = |problem| InvalidPolicy {
            policy: policy.to_string(),
            problem,
        };
        if policy == "raug15" {
            return Ok(Self::raug15());
        }
        let mut sections = policy.split('-');
        if sections.next() != Some("rand") {
            return Err(error(PolicyProblem::UnknownName));
        }
        let mut mean = 10u32;
        let mut num_ops = 2usize;
        let mut probability = 0.5f64;
        let mut std = 0f64;
        let mut max = 10u32;
        let mut increasing = false;
        let mut seen: Vec<&str> = Vec::new();
        for section in sections.filter(|section| !section.is_empty()) {
            // timm's split: the key runs up to the first digit, the value from it.
            let digit = section.find(|c: char| c.is_ascii_digit());
            let (key, value) = section.split_at(digit.unwrap_or(section.len()));
            if !["m", "n", "p", "mstd", "mmax", "inc"].contains(&key) {
                return Err(error(PolicyProblem::UnknownKey(section.to_string())));
            }
            if value.is_empty() {
                return Err(error(PolicyProblem::MissingValue(section.to_string())));
            }
            if seen.contains(&key) {
                return Err(error(PolicyProblem::Repeated(key.to_string())));
            }
            seen.push(key);
            let bad = |expected| {
                error(PolicyProblem::BadValue {
                    section: section.to_string(),
                    expected,
                })
            };
            match key {
                "m" => {
                    mean = value
                        .parse()
                        .map_err(|_| bad("a whole magnitude, e.g. m9"))?
                }
                "n" => {
                    num_ops = value
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad("a number of operations of at least 1, e.g. n2"))?;
                }
                "p" => {
                    probability = value
                        .parse()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| bad("a probability in [0, 1], e.g. p0.5"))?;
                }
                "mstd" => {
                    std = value
                        .parse::<f64>()
                        .ok()
                        .filter(|std| *std >= 0.0)
                        .ok_or_else(|| bad("a standard deviation, e.g. mstd0.5"))?;
                    // timm: above 100 means uniform in [0, m].
                    if std > 100.0 {
                        std = f64::INFINITY;
                    }
                }
                "mmax" => {
                    max = value
                        .parse()
                        .map_err(|_| bad("a whole magnitude, e.g. mmax10"))?
                }
                _ => {
                    increasing = value.parse::<u32>().map_err(|_| bad("0 or 1, e.g. inc1"))? != 0;
                }
            }
        }
        Ok(Self {
            ops: match increasing {
                true => RAND_INCREASING_OPS.to_vec(),
                false => RAND_OPS.to_vec(),
            },
            num_ops,
            probability,
            magnitude: Magnitude::Noisy {
                mean: f64::from(mean),
                std,
                max: f64::from(max),
            },
            fill: TIMM_FILL,
        })
    }
}
