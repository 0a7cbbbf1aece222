//! A small synthetic image set in ImageFolder layout, so that the whole pipeline (decoding,
//! augmentation, training, conversion) can run with nothing to download.

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::DataError;

/// The classes: five shapes and five textures, each drawn in random colours, at a random place
/// and size, over noise.
pub const SYNTHETIC_CLASSES: [&str; 10] = [
    "checkerboard",
    "circle",
    "cross",
    "diagonal-stripes",
    "dots",
    "horizontal-stripes",
    "ring",
    "square",
    "triangle",
    "vertical-stripes",
];

/// Writes `train_per_class` and `val_per_class` images of every class to `root/train/<class>/`
/// and `root/val/<class>/` (JPEG, with every tenth image a PNG), sizes between 40 and 72
/// pixels a side. The same `seed` writes the same files.
pub fn write_synthetic_set(
    root: &Path,
    train_per_class: usize,
    val_per_class: usize,
    seed: u64,
) -> Result<(), DataError> {
    let mut rng = StdRng::seed_from_u64(seed);
    for (split, count) in [("train", train_per_class), ("val", val_per_class)] {
        for (label, class) in SYNTHETIC_CLASSES.iter().enumerate() {
            let dir = root.join(split).join(class);
            fs::create_dir_all(&dir).map_err(|source| DataError::Io {
                path: dir.clone(),
                source,
            })?;
            for i in 0..count {
                let image = draw(label, &mut rng);
                let extension = if i % 10 == 9 { "png" } else { "jpg" };
                let path = dir.join(format!("{class}-{i:04}.{extension}"));
                image.save(&path).map_err(|err| DataError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(err),
                })?;
            }
        }
    }
    Ok(())
}

/// One image of class `label`.
fn draw(label: usize, rng: &mut StdRng) -> RgbImage {
    let width = rng.random_range(40..=72u32);
    let height = rng.random_range(40..=72u32);
    let (foreground, background) = contrasting_colours(rng);
    let side = f64::from(width.min(height));
    let radius = rng.random_range(0.25..0.45) * side;
    let centre_x = f64::from(width) / 2.0 + rng.random_range(-0.15..0.15) * side;
    let centre_y = f64::from(height) / 2.0 + rng.random_range(-0.15..0.15) * side;
    let period = rng.random_range(6.0..12.0);
    let phase = rng.random_range(0.0..period);
    let class = SYNTHETIC_CLASSES[label];
    RgbImage::from_fn(width, height, |x, y| {
        let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
        let (dx, dy) = ((px - centre_x) / radius, (py - centre_y) / radius);
        let stripe = |t: f64| (t + phase).rem_euclid(period) < period / 2.0;
        let inside = match class {
            "checkerboard" => stripe(px) ^ stripe(py),
            "circle" => dx * dx + dy * dy <= 1.0,
            "cross" => (dx.abs() <= 0.3 && dy.abs() <= 1.0) || (dy.abs() <= 0.3 && dx.abs() <= 1.0),
            "diagonal-stripes" => stripe(px + py),
            "dots" => {
                let (u, v) = (
                    (px + phase).rem_euclid(period),
                    (py + phase).rem_euclid(period),
                );
                let (u, v) = (u - period / 2.0, v - period / 2.0);
                u * u + v * v <= (period / 4.0).powi(2)
            }
            "horizontal-stripes" => stripe(py),
            "ring" => (0.55..=1.0).contains(&(dx * dx + dy * dy).sqrt()),
            "square" => dx.abs() <= 0.8 && dy.abs() <= 0.8,
            "triangle" => dy <= 0.8 && dy >= -1.0 + 2.0 * dx.abs() * 0.9,
            "vertical-stripes" => stripe(px),
            _ => unreachable!("every class is drawn"),
        };
        let colour = if inside { foreground } else { background };
        let noise = rng.random_range(-20i16..=20);
        Rgb(colour.map(|c| (i16::from(c) + noise).clamp(0, 255) as u8))
    })
}

/// Two random colours far enough apart to be told apart after JPEG compression.
fn contrasting_colours(rng: &mut StdRng) -> ([u8; 3], [u8; 3]) {
    loop {
        let a: [u8; 3] = [rng.random(), rng.random(), rng.random()];
        let b: [u8; 3] = [rng.random(), rng.random(), rng.random()];
        let distance: u32 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| u32::from(x.abs_diff(y)))
            .sum();
        if distance >= 240 {
            return (a, b);
        }
    }
}
