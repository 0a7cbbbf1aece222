//! The pixel operations of RandAugment on 8-bit RGB images, each computing what timm's
//! `auto_augment.py` gets from Pillow: the lookup tables of `ImageOps` (posterize, solarize,
//! invert, equalize, autocontrast), the blends of `ImageEnhance` with their truncation, the 3x3
//! smoothing behind sharpness, and `Image.transform`'s affine warp sampled at pixel centres.
//!
//! They are written out rather than taken from `image::imageops`, whose rotation is by quarter
//! turns only and whose filters round differently, and which has no shear, posterize or
//! equalize; `imageproc` would be a new dependency for a few of them.

use image::{Rgb, RgbImage};

/// The colour of the reference's Cutout square.
pub const CUTOUT_FILL: [u8; 3] = [125, 122, 113];

/// How a geometric operation samples the source image (Pillow's transform filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Two taps per axis, the result truncated to an integer.
    Bilinear,
    /// Cubic convolution with `a = -1` over four taps per axis, clamped and truncated.
    Bicubic,
}

/// Replaces every value `v` by `lut(v)`, in all three channels.
fn map_values(image: &mut RgbImage, lut: impl Fn(u8) -> u8) {
    let table: [u8; 256] = std::array::from_fn(|value| lut(value as u8));
    for value in image.iter_mut() {
        *value = table[usize::from(*value)];
    }
}

/// Replaces every value of channel `c` by `tables[c][value]`.
fn map_channels(image: &mut RgbImage, tables: &[[u8; 256]; 3]) {
    for pixel in image.pixels_mut() {
        for (value, table) in pixel.0.iter_mut().zip(tables) {
            *value = table[usize::from(*value)];
        }
    }
}

/// How many pixels hold each value, per channel.
fn histograms(image: &RgbImage) -> [[u64; 256]; 3] {
    let mut counts = [[0u64; 256]; 3];
    for pixel in image.pixels() {
        for (count, &value) in counts.iter_mut().zip(&pixel.0) {
            count[usize::from(value)] += 1;
        }
    }
    counts
}

const IDENTITY: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut value = 0;
    while value < 256 {
        table[value] = value as u8;
        value += 1;
    }
    table
};

/// `255 - v` (`ImageOps.invert`).
pub fn invert(image: &mut RgbImage) {
    map_values(image, |value| 255 - value);
}

/// Keeps the `bits` highest bits of every value (`ImageOps.posterize`); 0 bits give black, 8
/// or more leave the image as it is.
pub fn posterize(image: &mut RgbImage, bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    map_values(image, |value| value & mask);
}

/// Inverts the values at or above `threshold` (`ImageOps.solarize`); 256 changes nothing.
pub fn solarize(image: &mut RgbImage, threshold: u32) {
    map_values(image, |value| match u32::from(value) < threshold {
        true => value,
        false => 255 - value,
    });
}

/// Adds `addition` to the values below 128, saturating at 255 (timm's `solarize_add`).
pub fn solarize_add(image: &mut RgbImage, addition: u32) {
    map_values(image, |value| match value < 128 {
        true => (u32::from(value) + addition).min(255) as u8,
        false => value,
    });
}

/// Stretches each channel so that its darkest value becomes 0 and its lightest 255
/// (`ImageOps.autocontrast` without cutoff): `v -> int(v * scale + offset)` with
/// `scale = 255 / (hi - lo)` and `offset = -lo * scale`, as Pillow computes it. A channel of
/// one value is left alone.
pub fn autocontrast(image: &mut RgbImage) {
    let tables = histograms(image).map(|counts| {
        let lowest = counts.iter().position(|&count| count > 0);
        let highest = counts.iter().rposition(|&count| count > 0);
        match (lowest, highest) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                // `as u8` saturates: Pillow's clamp of int() to [0, 255].
                std::array::from_fn(|value| (value as f64 * scale + offset) as u8)
            }
            _ => IDENTITY,
        }
    });
    map_channels(image, &tables);
}

/// Equalizes each channel's histogram (`ImageOps.equalize`): with `step` the pixel count less
/// that of the highest value present, divided by 255, value `i` maps to
/// `(step / 2 + pixels below i) / step`. A channel of one value, or with `step` 0, is left
/// alone.
pub fn equalize(image: &mut RgbImage) {
    let tables = histograms(image).map(|counts| {
        let present: Vec<u64> = counts.iter().copied().filter(|&count| count > 0).collect();
        let (Some(&last), true) = (present.last(), present.len() > 1) else {
            return IDENTITY;
        };
        let step = (present.iter().sum::<u64>() - last) / 255;
        if step == 0 {
            return IDENTITY;
        }
        let mut below = step / 2;
        std::array::from_fn(|value| {
            let mapped = (below / step).min(255) as u8;
            below += counts[value];
            mapped
        })
    });
    map_channels(image, &tables);
}

/// Pillow's `Image.blend(degenerate, image, factor)` for one value: `degenerate + factor *
/// (value - degenerate)` in single precision, truncated, clamped when extrapolating.
fn blend(degenerate: u8, value: u8, factor: f32) -> u8 {
    let (degenerate, value) = (f32::from(degenerate), f32::from(value));
    // `as u8` truncates and saturates, as Pillow's clip does.
    (degenerate + factor * (value - degenerate)) as u8
}

/// Pillow's RGB to grey conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded).
fn luma(pixel: &Rgb<u8>) -> u8 {
    let [r, g, b] = pixel.0.map(u32::from);
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

/// Blends each pixel with its grey (`ImageEnhance.Color`): 0 is greyscale, 1 the image.
pub fn color(image: &mut RgbImage, factor: f32) {
    for pixel in image.pixels_mut() {
        let grey = luma(pixel);
        for value in pixel.0.iter_mut() {
            *value = blend(grey, *value, factor);
        }
    }
}

/// Blends the image with its mean grey (`ImageEnhance.Contrast`): 0 is a flat grey, 1 the
/// image.
pub fn contrast(image: &mut RgbImage, factor: f32) {
    let pixels = u64::from(image.width()) * u64::from(image.height());
    let total: u64 = image.pixels().map(|pixel| u64::from(luma(pixel))).sum();
    let mean = (total as f64 / pixels.max(1) as f64 + 0.5) as u8;
    map_values(image, |value| blend(mean, value, factor));
}

/// Blends the image with black (`ImageEnhance.Brightness`): 0 is black, 1 the image.
pub fn brightness(image: &mut RgbImage, factor: f32) {
    map_values(image, |value| blend(0, value, factor));
}

/// Blends the image with its smoothed self (`ImageEnhance.Sharpness`): 0 is
/// [`smooth`]ed, 1 the image, 2 sharpened.
pub fn sharpness(image: &mut RgbImage, factor: f32) {
    let smoothed = smooth(image);
    for (value, &degenerate) in image.iter_mut().zip(smoothed.iter()) {
        *value = blend(degenerate, *value, factor);
    }
}

/// Pillow's `ImageFilter.SMOOTH`: the 3x3 kernel `[1 1 1; 1 5 1; 1 1 1] / 13` (weights in
/// single precision, summed row below, row, row above), rounded; the border rows and columns
/// keep their values, and an image under 3x3 is returned as it is.
pub fn smooth(image: &RgbImage) -> RgbImage {
    const SIDE: f32 = 1.0 / 13.0;
    const CENTRE: f32 = 5.0 / 13.0;
    let (width, height) = image.dimensions();
    let mut out = image.clone();
    if width < 3 || height < 3 {
        return out;
    }
    let stride = width as usize * 3;
    let source = image.as_raw();
    let target: &mut [u8] = &mut out;
    for y in 1..height as usize - 1 {
        let [above, row, below] = [y - 1, y, y + 1].map(|y| &source[y * stride..][..stride]);
        let out_row = &mut target[y * stride..][..stride];
        // Every channel of the columns 1..width - 1; a neighbour is 3 values away.
        for i in 3..stride - 3 {
            let taps = |row: &[u8], centre: f32| {
                f32::from(row[i - 3]) * SIDE
                    + f32::from(row[i]) * centre
                    + f32::from(row[i + 3]) * SIDE
            };
            let mut sum = 0.5;
            sum += taps(below, SIDE);
            sum += taps(row, CENTRE);
            sum += taps(above, SIDE);
            out_row[i] = sum as u8;
        }
    }
    out
}

/// Pillow's `Image.transform(size, AFFINE, matrix, resample, fillcolor)`: output pixel
/// `(x, y)` takes the source at `(a x' + b y' + c, d x' + e y' + f)`, `(x', y')` being its
/// centre `(x + 0.5, y + 0.5)`, sampled with `interpolation`; a point outside the source takes
/// `fill`.
pub fn affine(image: &mut RgbImage, matrix: [f64; 6], interpolation: Interpolation, fill: [u8; 3]) {
    let [a, b, c, d, e, f] = matrix;
    let (width, height) = image.dimensions();
    let source = Source {
        raw: image.as_raw(),
        width,
        height,
    };
    let mut warped = RgbImage::new(width, height);
    for (y, row) in warped.chunks_exact_mut(width as usize * 3).enumerate() {
        let y = y as f64 + 0.5;
        for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
            let x = x as f64 + 0.5;
            let (x_in, y_in) = (a * x + b * y + c, d * x + e * y + f);
            let inside =
                (0.0..f64::from(width)).contains(&x_in) && (0.0..f64::from(height)).contains(&y_in);
            pixel.copy_from_slice(&match (inside, interpolation) {
                (false, _) => fill,
                (true, Interpolation::Bilinear) => source.bilinear(x_in, y_in),
                (true, Interpolation::Bicubic) => source.bicubic(x_in, y_in),
            });
        }
    }
    *image = warped;
}

/// The integer part of a sample position (shifted from pixel edges to centres) and the
/// fraction past it.
fn split(position: f64) -> (i64, f64) {
    let shifted = position - 0.5;
    // The floor, without `f64::floor`: a library call on baseline x86-64, in the innermost loop.
    let truncated = shifted as i64;
    let floor = truncated - i64::from((truncated as f64) > shifted);
    (floor, shifted - floor as f64)
}

/// Index `i` clamped to `0..size`, as Pillow's `XCLIP`/`YCLIP`.
fn clip(i: i64, size: u32) -> usize {
    i.clamp(0, i64::from(size) - 1) as usize
}

/// An RGB image's values, row after row, to sample from.
struct Source<'a> {
    raw: &'a [u8],
    width: u32,
    height: u32,
}

impl Source<'_> {
    /// Row `y`'s values.
    fn row(&self, y: usize) -> &[u8] {
        let stride = self.width as usize * 3;
        &self.raw[y * stride..][..stride]
    }

    /// Row `y` if it is inside the image.
    fn row_inside(&self, y: i64) -> Option<&[u8]> {
        (0..i64::from(self.height))
            .contains(&y)
            .then(|| self.row(y as usize))
    }

    /// Pillow's bilinear transform filter at a point inside the image.
    fn bilinear(&self, x: f64, y: f64) -> [u8; 3] {
        let ((x, dx), (y, dy)) = (split(x), split(y));
        let [x0, x1] = [x, x + 1].map(|x| clip(x, self.width) * 3);
        let top = self.row(clip(y, self.height));
        // Past the last row, Pillow repeats the row above.
        let bottom = self.row_inside(y + 1).unwrap_or(top);
        std::array::from_fn(|c| {
            let lerp = |row: &[u8]| {
                let (left, right) = (f64::from(row[x0 + c]), f64::from(row[x1 + c]));
                left + (right - left) * dx
            };
            let (top, bottom) = (lerp(top), lerp(bottom));
            (top + (bottom - top) * dy) as u8
        })
    }

    /// Pillow's bicubic transform filter at a point inside the image.
    fn bicubic(&self, x: f64, y: f64) -> [u8; 3] {
        let ((x, dx), (y, dy)) = (split(x), split(y));
        let columns = [x - 1, x, x + 1, x + 2].map(|x| clip(x, self.width) * 3);
        // A row interpolated along x, for the three channels at once. At a fraction of 0 the
        // cubic is exactly its second tap: shears and translations sample on pixel centres
        // along one axis, and skip the other taps of that axis.
        let along_x = |row: &[u8]| -> [f64; 3] {
            let tap = |x: usize| [row[x], row[x + 1], row[x + 2]].map(f64::from);
            if dx == 0.0 {
                return tap(columns[1]);
            }
            let [t1, t2, t3, t4] = columns.map(tap);
            std::array::from_fn(|c| cubic(t1[c], t2[c], t3[c], t4[c], dx))
        };
        // `as u8` clamps to [0, 255] and truncates, as Pillow does.
        if dy == 0.0 {
            return along_x(self.row(clip(y, self.height))).map(|value| value as u8);
        }
        // Rows outside the image repeat the one before, as Pillow's do.
        let mut rows = [self.row(clip(y - 1, self.height)); 4];
        for k in 1..4 {
            rows[k] = self.row_inside(y - 1 + k as i64).unwrap_or(rows[k - 1]);
        }
        let [v1, v2, v3, v4] = rows.map(along_x);
        std::array::from_fn(|c| cubic(v1[c], v2[c], v3[c], v4[c], dy) as u8)
    }
}

/// Pillow's cubic through four taps at fraction `d` past the second (`a = -1`).
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// Rotates the image `degrees` counter-clockwise about its centre, keeping its size
/// (`Image.rotate`, whose matrix entries are rounded to 15 decimals so that quarter turns
/// land on pixel centres).
pub fn rotate(image: &mut RgbImage, degrees: f64, interpolation: Interpolation, fill: [u8; 3]) {
    let round = |value: f64| (value * 1e15).round() / 1e15;
    let angle = -degrees.rem_euclid(360.0).to_radians();
    let (cos, sin) = (round(angle.cos()), round(angle.sin()));
    let (cx, cy) = (
        f64::from(image.width()) / 2.0,
        f64::from(image.height()) / 2.0,
    );
    let c = cos * -cx + sin * -cy + cx;
    let f = -sin * -cx + cos * -cy + cy;
    affine(image, [cos, sin, c, -sin, cos, f], interpolation, fill);
}

/// Shears along x: output `(x, y)` takes the source at `(x + factor * y, y)` (timm's
/// `shear_x`, about the top-left corner).
pub fn shear_x(image: &mut RgbImage, factor: f64, interpolation: Interpolation, fill: [u8; 3]) {
    affine(
        image,
        [1.0, factor, 0.0, 0.0, 1.0, 0.0],
        interpolation,
        fill,
    );
}

/// Shears along y: output `(x, y)` takes the source at `(x, y + factor * x)`.
pub fn shear_y(image: &mut RgbImage, factor: f64, interpolation: Interpolation, fill: [u8; 3]) {
    affine(
        image,
        [1.0, 0.0, 0.0, factor, 1.0, 0.0],
        interpolation,
        fill,
    );
}

/// Output `(x, y)` takes the source at `(x + pixels, y)`: the content moves left for positive
/// `pixels` (timm's `translate_x_abs`).
pub fn translate_x(image: &mut RgbImage, pixels: f64, interpolation: Interpolation, fill: [u8; 3]) {
    affine(
        image,
        [1.0, 0.0, pixels, 0.0, 1.0, 0.0],
        interpolation,
        fill,
    );
}

/// Output `(x, y)` takes the source at `(x, y + pixels)`: the content moves up for positive
/// `pixels`.
pub fn translate_y(image: &mut RgbImage, pixels: f64, interpolation: Interpolation, fill: [u8; 3]) {
    affine(
        image,
        [1.0, 0.0, 0.0, 0.0, 1.0, pixels],
        interpolation,
        fill,
    );
}

/// The reference's Cutout: paints [`CUTOUT_FILL`] over columns
/// `centre_x - size / 2 .. centre_x + size / 2` and the same rows around `centre_y`, clipped
/// to the image (a square of even side `2 * (size / 2)`).
pub fn cutout(image: &mut RgbImage, centre_x: u32, centre_y: u32, size: u32) {
    let half = size / 2;
    let columns = centre_x.saturating_sub(half)..centre_x.saturating_add(half).min(image.width());
    let rows = centre_y.saturating_sub(half)..centre_y.saturating_add(half).min(image.height());
    for y in rows {
        for x in columns.clone() {
            image.put_pixel(x, y, Rgb(CUTOUT_FILL));
        }
    }
}
