//! RandAugment and random erasing: each pixel operation against its definition (exact for the
//! lookup-table ones, cutout and whole-pixel moves; within interpolation tolerance for rotations
//! and shears), each operation's magnitude-to-argument rule, the policy strings, the magnitude
//! draws, and the loader's batches with them, which still do not depend on the workers.

use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use image::{Rgb, RgbImage, imageops};
use rand::SeedableRng;
use rand::rngs::StdRng;
use repvgg_data::image_ops::{self, CUTOUT_FILL, Interpolation};
use repvgg_data::{
    AugmentOp, Augmentation, ImageBatch, ImageFolder, ImageLoader, LoaderOptions, Magnitude,
    PolicyProblem, RAND_INCREASING_OPS, RAND_OPS, RAUG15_OPS, REFERENCE_FILL, RandAugment,
    RandomErasing, TIMM_FILL, TrainTransform, write_synthetic_set,
};

const BOTH: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];
const FILL: [u8; 3] = [1, 2, 3];

/// A 16x16 image holding every value 0..=255 once per channel, each channel in another order.
fn every_value() -> RgbImage {
    RgbImage::from_fn(16, 16, |x, y| {
        let v = (y * 16 + x) as u8;
        Rgb([v, 255 - v, v.wrapping_mul(7)])
    })
}

/// A smooth image with detail in both directions (no value of it is [`FILL`] or the cutout's).
fn smooth_scene(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as f64, y as f64);
        Rgb([
            (60.0 + 2.5 * x + 1.5 * y) as u8,
            (128.0 + 60.0 * (x * 0.15).sin() * (y * 0.1).cos()) as u8,
            (40.0 + 0.02 * (x - 20.0) * (x - 20.0) + 2.0 * y) as u8,
        ])
    })
}

/// `image` with `change` applied to each value.
fn each_value(image: &RgbImage, change: impl Fn(u8) -> u8) -> RgbImage {
    let mut expected = image.clone();
    expected
        .iter_mut()
        .for_each(|value| *value = change(*value));
    expected
}

fn applied(image: &RgbImage, op: impl FnOnce(&mut RgbImage)) -> RgbImage {
    let mut image = image.clone();
    op(&mut image);
    image
}

#[test]
fn posterize_keeps_the_highest_bits() {
    let image = every_value();
    for bits in 0..=7u32 {
        let dropped = 8 - bits;
        let expected = each_value(&image, |v| ((u32::from(v) >> dropped) << dropped) as u8);
        assert_eq!(
            applied(&image, |i| image_ops::posterize(i, bits)),
            expected,
            "{bits} bits"
        );
    }
    assert_eq!(
        applied(&image, |i| image_ops::posterize(i, 0)).iter().max(),
        Some(&0)
    );
    for bits in [8, 9] {
        assert_eq!(applied(&image, |i| image_ops::posterize(i, bits)), image);
    }
}

#[test]
fn solarize_inverts_the_values_from_the_threshold_up() {
    let image = every_value();
    for threshold in [0u32, 1, 26, 128, 255, 256] {
        let expected = each_value(&image, |v| match u32::from(v) >= threshold {
            true => 255 - v,
            false => v,
        });
        let solarized = applied(&image, |i| image_ops::solarize(i, threshold));
        assert_eq!(solarized, expected, "threshold {threshold}");
    }
    assert_eq!(applied(&image, |i| image_ops::solarize(i, 256)), image);
}

#[test]
fn solarize_add_brightens_only_below_128_and_saturates() {
    let image = every_value();
    for addition in [0u32, 110, 154, 300] {
        let expected = each_value(&image, |v| match v < 128 {
            true => (u32::from(v) + addition).min(255) as u8,
            false => v,
        });
        let added = applied(&image, |i| image_ops::solarize_add(i, addition));
        assert_eq!(added, expected, "addition {addition}");
    }
    let mut dark = RgbImage::from_pixel(1, 1, Rgb([0, 127, 128]));
    image_ops::solarize_add(&mut dark, 110);
    assert_eq!(dark.get_pixel(0, 0), &Rgb([110, 237, 128]));
}

#[test]
fn invert_reverses_the_scale() {
    let image = every_value();
    assert_eq!(
        applied(&image, image_ops::invert),
        each_value(&image, |v| 255 - v)
    );
}

#[test]
fn equalize_maps_each_channel_through_its_cumulative_histogram() {
    // 1020 pixels. Red: 255 zeros, 255 ones, 510 twos, so step = (1020 - 510) / 255 = 2 and
    // value i maps to (1 + pixels below i) / 2: 0 -> 0, 1 -> 128, 2 -> 255.
    // Green: one value, left alone. Blue: 0..=254 four times each, so step = 1016 / 255 = 3
    // and v maps to (1 + 4 v) / 3, clipped to 255.
    let image = RgbImage::from_fn(255, 4, |x, y| {
        let i = y * 255 + x;
        let red = match i {
            0..255 => 0,
            255..510 => 1,
            _ => 2,
        };
        Rgb([red, 77, x as u8])
    });
    let equalized = applied(&image, image_ops::equalize);
    for (before, after) in image.pixels().zip(equalized.pixels()) {
        let red = [0, 128, 255][usize::from(before[0])];
        let blue = ((1 + 4 * u32::from(before[2])) / 3).min(255) as u8;
        assert_eq!(after, &Rgb([red, 77, blue]), "{before:?}");
    }
    // A flat image has nothing to equalize.
    let flat = RgbImage::from_pixel(9, 9, Rgb([3, 100, 250]));
    assert_eq!(applied(&flat, image_ops::equalize), flat);
}

#[test]
fn autocontrast_stretches_each_channel_to_the_full_range() {
    // Red spans 0..=51 (scale 5), green 10..=95 (scale 3, offset -30), blue is flat.
    let image = RgbImage::from_fn(30, 30, |x, y| {
        let i = y * 30 + x;
        Rgb([(i % 52) as u8, (10 + i % 86) as u8, 200])
    });
    let stretched = applied(&image, image_ops::autocontrast);
    for (before, after) in image.pixels().zip(stretched.pixels()) {
        let expected = Rgb([before[0] * 5, (before[1] - 10) * 3, 200]);
        assert_eq!(after, &expected);
    }
    let values: Vec<u8> = stretched.pixels().map(|p| p[0]).collect();
    assert_eq!(values.iter().min(), Some(&0));
    assert_eq!(values.iter().max(), Some(&255));
}

#[test]
fn enhances_blend_with_their_degenerate_image() {
    let image = smooth_scene(24, 20);
    let grey =
        |p: &Rgb<u8>| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    // Colour 0: the grey of each pixel (ITU-R 601-2 luma), in all three channels.
    let greyscale = applied(&image, |i| image_ops::color(i, 0.0));
    for (before, after) in image.pixels().zip(greyscale.pixels()) {
        assert!(after[0] == after[1] && after[1] == after[2]);
        assert!((f64::from(after[0]) - grey(before)).abs() <= 1.0);
    }
    // Brightness: a product with the factor, truncated and saturated.
    assert_eq!(
        applied(&image, |i| image_ops::brightness(i, 0.5)),
        each_value(&image, |v| v / 2)
    );
    assert_eq!(
        applied(&image, |i| image_ops::brightness(i, 2.0)),
        each_value(&image, |v| v.saturating_mul(2))
    );
    // Contrast 0: the mean grey everywhere.
    let mean = image.pixels().map(grey).sum::<f64>() / f64::from(24 * 20);
    let flat = applied(&image, |i| image_ops::contrast(i, 0.0));
    assert!(flat.iter().all(|&v| v == flat.as_raw()[0]));
    assert!((f64::from(flat.as_raw()[0]) - mean).abs() <= 1.0);
    // Sharpness 0: the 3x3 smoothing (centre weight 5, neighbours 1) inside, the border kept.
    let smoothed = applied(&image, |i| image_ops::sharpness(i, 0.0));
    for (x, y, pixel) in smoothed.enumerate_pixels() {
        let border = x == 0 || y == 0 || x == 23 || y == 19;
        for c in 0..3 {
            let expected = match border {
                true => f64::from(image.get_pixel(x, y)[c]),
                false => {
                    let mut sum = 4.0 * f64::from(image.get_pixel(x, y)[c]);
                    for (dx, dy) in (0..3).flat_map(|dx| (0..3).map(move |dy| (dx, dy))) {
                        sum += f64::from(image.get_pixel(x + dx - 1, y + dy - 1)[c]);
                    }
                    (sum / 13.0).round()
                }
            };
            assert!((f64::from(pixel[c]) - expected).abs() <= 1e-9, "({x}, {y})");
        }
    }
    // Factor 1 is the image itself for every enhance.
    for enhance in [
        image_ops::color,
        image_ops::contrast,
        image_ops::brightness,
        image_ops::sharpness,
    ] {
        assert_eq!(applied(&image, |i| enhance(i, 1.0)), image);
    }
}

#[test]
fn whole_pixel_translations_move_the_image_exactly() {
    let image = smooth_scene(20, 16);
    for interpolation in BOTH {
        let left = applied(&image, |i| {
            image_ops::translate_x(i, 5.0, interpolation, FILL)
        });
        let down = applied(&image, |i| {
            image_ops::translate_y(i, -3.0, interpolation, FILL)
        });
        for (x, y, pixel) in left.enumerate_pixels() {
            let expected = match x + 5 < 20 {
                true => *image.get_pixel(x + 5, y),
                false => Rgb(FILL),
            };
            assert_eq!(pixel, &expected, "x {x} {interpolation:?}");
        }
        for (x, y, pixel) in down.enumerate_pixels() {
            let expected = match y >= 3 {
                true => *image.get_pixel(x, y - 3),
                false => Rgb(FILL),
            };
            assert_eq!(pixel, &expected, "y {y} {interpolation:?}");
        }
    }
}

#[test]
fn quarter_turns_are_the_image_crate_s_rotations() {
    let image = smooth_scene(17, 17);
    for interpolation in BOTH {
        let rotate = |degrees| {
            applied(&image, |i| {
                image_ops::rotate(i, degrees, interpolation, FILL)
            })
        };
        // Positive angles turn counter-clockwise, as Pillow's do.
        assert_eq!(rotate(90.0), imageops::rotate270(&image));
        assert_eq!(rotate(-90.0), imageops::rotate90(&image));
        assert_eq!(rotate(180.0), imageops::rotate180(&image));
        assert_eq!(rotate(0.0), image);
        assert_eq!(rotate(360.0), image);
    }
}

/// The source image bilinearly at `(x, y)` (pixel centres at half-integers), computed from the
/// four neighbours' weights; `None` where a neighbour is outside.
fn bilinear_at(image: &RgbImage, x: f64, y: f64, c: usize) -> Option<f64> {
    let (x, y) = (x - 0.5, y - 0.5);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let inside = |x: f64, y: f64| {
        (0.0..f64::from(image.width())).contains(&x)
            && (0.0..f64::from(image.height())).contains(&y)
    };
    if !inside(x0, y0) || !inside(x0 + 1.0, y0 + 1.0) {
        return None;
    }
    let at = |dx: f64, dy: f64| f64::from(image.get_pixel((x0 + dx) as u32, (y0 + dy) as u32)[c]);
    Some(
        at(0.0, 0.0) * (1.0 - fx) * (1.0 - fy)
            + at(1.0, 0.0) * fx * (1.0 - fy)
            + at(0.0, 1.0) * (1.0 - fx) * fy
            + at(1.0, 1.0) * fx * fy,
    )
}

/// How far a warp is from the exact bilinear value of `image` at `source(x + 0.5, y + 0.5)`,
/// over the pixels whose source neighbours are all inside: the range of `exact - warped` and
/// how many values were compared. Pixels whose source point is off the image must be the fill.
fn compare_warp(
    image: &RgbImage,
    warped: &RgbImage,
    source: impl Fn(f64, f64) -> (f64, f64),
) -> ((f64, f64), usize) {
    let (mut range, mut compared) = ((f64::MAX, f64::MIN), 0);
    for (x, y, pixel) in warped.enumerate_pixels() {
        let (sx, sy) = source(f64::from(x) + 0.5, f64::from(y) + 0.5);
        let outside = sx < 0.0
            || sy < 0.0
            || sx >= f64::from(image.width())
            || sy >= f64::from(image.height());
        if outside {
            assert_eq!(pixel, &Rgb(FILL), "({x}, {y}) maps off the image");
            continue;
        }
        for c in 0..3 {
            if let Some(exact) = bilinear_at(image, sx, sy, c) {
                let difference = exact - f64::from(pixel[c]);
                range = (range.0.min(difference), range.1.max(difference));
                compared += 1;
            }
        }
    }
    (range, compared)
}

#[test]
fn rotations_and_shears_agree_with_a_direct_computation() {
    let image = smooth_scene(48, 40);
    let (cx, cy) = (24.0, 20.0);
    let mut worst = [0f64; 2];
    for (k, interpolation) in BOTH.into_iter().enumerate() {
        // Bilinear: the exact value truncated, as Pillow does. Bicubic: within what its cubic
        // through a smooth image differs from straight lines.
        let mut check = |what: String, ((lowest, highest), compared): ((f64, f64), usize)| {
            let within = match interpolation {
                Interpolation::Bilinear => lowest > -1e-6 && highest < 1.0,
                Interpolation::Bicubic => lowest > -3.0 && highest < 3.0,
            };
            assert!(
                within && compared > 2000,
                "{what} {interpolation:?}: {lowest} to {highest} over {compared}"
            );
            worst[k] = worst[k].max(-lowest).max(highest);
        };
        for degrees in [-23.0f64, 7.5, 30.0, 42.0] {
            let rotated = applied(&image, |i| {
                image_ops::rotate(i, degrees, interpolation, FILL)
            });
            // Counter-clockwise on screen (y down): output o takes the source at
            // c + [cos -sin; sin cos] (o - c).
            let (sin, cos) = degrees.to_radians().sin_cos();
            let source = |x: f64, y: f64| {
                let (dx, dy) = (x - cx, y - cy);
                (cx + cos * dx - sin * dy, cy + sin * dx + cos * dy)
            };
            check(
                format!("rotate {degrees}"),
                compare_warp(&image, &rotated, source),
            );
        }
        for factor in [-0.3f64, 0.12, 0.42] {
            let sheared = applied(&image, |i| {
                image_ops::shear_x(i, factor, interpolation, FILL)
            });
            let source = |x: f64, y: f64| (x + factor * y, y);
            check(
                format!("shear x {factor}"),
                compare_warp(&image, &sheared, source),
            );
            let sheared = applied(&image, |i| {
                image_ops::shear_y(i, factor, interpolation, FILL)
            });
            let source = |x: f64, y: f64| (x, y + factor * x);
            check(
                format!("shear y {factor}"),
                compare_warp(&image, &sheared, source),
            );
        }
        let shifted = applied(&image, |i| {
            image_ops::translate_x(i, -6.4, interpolation, FILL)
        });
        let source = |x: f64, y: f64| (x - 6.4, y);
        check(
            "translate -6.4".into(),
            compare_warp(&image, &shifted, source),
        );
    }
    eprintln!(
        "warps vs exact bilinear values: bilinear within {:.3}, bicubic within {:.3} (of 255)",
        worst[0], worst[1]
    );
}

#[test]
fn cutout_paints_the_reference_s_square_clipped_to_the_image() {
    let image = smooth_scene(40, 30);
    for ((cx, cy, size), columns, rows) in [
        ((10, 20, 9), 6..14, 16..24),
        ((1, 0, 10), 0..6, 0..5),
        ((39, 29, 40), 19..40, 9..30),
    ] {
        let cut = applied(&image, |i| image_ops::cutout(i, cx, cy, size));
        for (x, y, pixel) in cut.enumerate_pixels() {
            let expected = match columns.contains(&x) && rows.contains(&y) {
                true => Rgb(CUTOUT_FILL),
                false => *image.get_pixel(x, y),
            };
            assert_eq!(pixel, &expected, "({x}, {y}) of {cx},{cy} size {size}");
        }
    }
}

/// What `op` does at `magnitude` over 40 seeds: each result must be one of `candidates`;
/// returns which candidates were seen.
fn outcomes(op: AugmentOp, magnitude: f64, image: &RgbImage, candidates: &[RgbImage]) -> Vec<bool> {
    let mut seen = vec![false; candidates.len()];
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let result = applied(image, |i| op.apply(i, magnitude, FILL, &mut rng));
        let found = candidates.iter().position(|c| c == &result);
        let found = found.unwrap_or_else(|| panic!("{op:?} at {magnitude}: unexpected result"));
        seen[found] = true;
    }
    seen
}

#[test]
fn each_operation_takes_its_argument_from_the_magnitude() {
    let image = smooth_scene(32, 24);
    let exactly = |op: AugmentOp, magnitude: f64, expected: RgbImage| {
        assert_eq!(
            outcomes(op, magnitude, &image, &[expected]),
            [true],
            "{op:?}"
        );
    };
    use AugmentOp::*;
    exactly(
        Posterize,
        9.0,
        applied(&image, |i| image_ops::posterize(i, 3)),
    );
    exactly(
        Posterize,
        14.0,
        applied(&image, |i| image_ops::posterize(i, 5)),
    );
    exactly(
        PosterizeIncreasing,
        9.0,
        applied(&image, |i| image_ops::posterize(i, 1)),
    );
    exactly(
        PosterizeIncreasing,
        2.0,
        applied(&image, |i| image_ops::posterize(i, 4)),
    );
    exactly(
        Solarize,
        5.0,
        applied(&image, |i| image_ops::solarize(i, 128)),
    );
    exactly(Solarize, 14.0, image.clone());
    exactly(
        SolarizeIncreasing,
        9.0,
        applied(&image, |i| image_ops::solarize(i, 26)),
    );
    exactly(
        SolarizeAdd,
        10.0,
        applied(&image, |i| image_ops::solarize_add(i, 110)),
    );
    exactly(
        SolarizeAdd,
        14.0,
        applied(&image, |i| image_ops::solarize_add(i, 154)),
    );
    exactly(Color, 10.0, applied(&image, |i| image_ops::color(i, 1.9)));
    exactly(
        Contrast,
        0.0,
        applied(&image, |i| image_ops::contrast(i, 0.1)),
    );
    exactly(
        Brightness,
        5.0,
        applied(&image, |i| image_ops::brightness(i, 1.0)),
    );
    exactly(
        Sharpness,
        10.0,
        applied(&image, |i| image_ops::sharpness(i, 1.9)),
    );
    exactly(Invert, 3.0, applied(&image, image_ops::invert));
    exactly(Equalize, 3.0, applied(&image, image_ops::equalize));
    exactly(AutoContrast, 3.0, applied(&image, image_ops::autocontrast));

    // Increasing enhances: 1 +- 0.9 at magnitude 10 (0.1 or 1.9), either sign seen.
    type Enhance = fn(&mut RgbImage, f32);
    for (op, enhance) in [
        (ColorIncreasing, image_ops::color as Enhance),
        (ContrastIncreasing, image_ops::contrast),
        (BrightnessIncreasing, image_ops::brightness),
        (SharpnessIncreasing, image_ops::sharpness),
    ] {
        let both = [0.1, 1.9].map(|factor| applied(&image, |i| enhance(i, factor)));
        assert_eq!(outcomes(op, 10.0, &image, &both), [true, true], "{op:?}");
    }

    // Geometric: magnitude 10 is 30 degrees, shear 0.3, 0.45 of the side, either way, either
    // interpolation.
    type Warp = fn(&mut RgbImage, f64, Interpolation, [u8; 3]);
    for (op, warp, amount) in [
        (Rotate, image_ops::rotate as Warp, 30.0),
        (ShearX, image_ops::shear_x, 0.3),
        (ShearY, image_ops::shear_y, 0.3),
        (TranslateXRel, image_ops::translate_x, 0.45 * 32.0),
        (TranslateYRel, image_ops::translate_y, 0.45 * 24.0),
    ] {
        let candidates: Vec<RgbImage> = [amount, -amount]
            .into_iter()
            .flat_map(|amount| {
                BOTH.map(|interp| applied(&image, |i| warp(i, amount, interp, FILL)))
            })
            .collect();
        let seen = outcomes(op, 10.0, &image, &candidates);
        assert_eq!(seen, [true; 4], "{op:?}");
    }

    // Cutout at magnitude 5: a square of side 20 (less where clipped) of the reference's colour.
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let cut = applied(&image, |i| Cutout.apply(i, 5.0, FILL, &mut rng));
        let changed: Vec<(u32, u32)> = cut
            .enumerate_pixels()
            .filter(|&(x, y, pixel)| pixel != image.get_pixel(x, y))
            .map(|(x, y, pixel)| {
                assert_eq!(pixel, &Rgb(CUTOUT_FILL));
                (x, y)
            })
            .collect();
        let columns = changed.iter().map(|p| p.0).max().unwrap()
            - changed.iter().map(|p| p.0).min().unwrap()
            + 1;
        let rows = changed.iter().map(|p| p.1).max().unwrap()
            - changed.iter().map(|p| p.1).min().unwrap()
            + 1;
        assert!(columns <= 20 && rows <= 20 && changed.len() == (columns * rows) as usize);
    }
}

#[test]
fn policy_strings_parse_to_timm_s_and_the_reference_s_meaning() {
    let policy: RandAugment = "rand-m9-mstd0.5-inc1".parse().unwrap();
    assert_eq!(
        policy,
        RandAugment {
            ops: RAND_INCREASING_OPS.to_vec(),
            num_ops: 2,
            probability: 0.5,
            magnitude: Magnitude::Noisy {
                mean: 9.0,
                std: 0.5,
                max: 10.0
            },
            fill: TIMM_FILL,
        }
    );
    let policy: RandAugment = "rand-n3-p1.0-m7-mmax15-mstd101-inc0".parse().unwrap();
    assert_eq!(policy.ops, RAND_OPS);
    assert_eq!((policy.num_ops, policy.probability), (3, 1.0));
    assert_eq!(
        policy.magnitude,
        Magnitude::Noisy {
            mean: 7.0,
            std: f64::INFINITY,
            max: 15.0
        }
    );
    let defaults: RandAugment = "rand".parse().unwrap();
    assert_eq!((defaults.num_ops, defaults.probability), (2, 0.5));
    assert_eq!(
        defaults.magnitude,
        Magnitude::Noisy {
            mean: 10.0,
            std: 0.0,
            max: 10.0
        }
    );

    let raug15: RandAugment = "raug15".parse().unwrap();
    assert_eq!(raug15, RandAugment::raug15());
    assert_eq!(raug15.ops, RAUG15_OPS);
    assert_eq!(raug15.ops.len(), 16);
    assert!(raug15.ops.contains(&AugmentOp::Cutout));
    assert_eq!((raug15.num_ops, raug15.probability), (2, 1.0));
    assert_eq!(raug15.magnitude, Magnitude::UniformInteger { count: 15 });
    assert_eq!(raug15.fill, REFERENCE_FILL);
}

#[test]
fn bad_policy_strings_are_explained() {
    let problem = |policy: &str| policy.parse::<RandAugment>().unwrap_err().problem;
    assert_eq!(problem(""), PolicyProblem::UnknownName);
    assert_eq!(problem("augmix-m5"), PolicyProblem::UnknownName);
    assert_eq!(problem("RAUG15"), PolicyProblem::UnknownName);
    assert_eq!(problem("rand-x3"), PolicyProblem::UnknownKey("x3".into()));
    assert_eq!(
        problem("rand-tweights"),
        PolicyProblem::UnknownKey("tweights".into())
    );
    assert_eq!(problem("rand-m"), PolicyProblem::MissingValue("m".into()));
    assert_eq!(problem("rand-m9-m8"), PolicyProblem::Repeated("m".into()));
    for bad in [
        "rand-m9.5",
        "rand-p1.5",
        "rand-n0",
        "rand-mmax1.5",
        "rand-inc1x",
        "rand-mstd1.2.3",
    ] {
        assert!(
            matches!(problem(bad), PolicyProblem::BadValue { .. }),
            "{bad}: {:?}",
            problem(bad)
        );
    }
    let message = "rand-m9-x3".parse::<RandAugment>().unwrap_err().to_string();
    assert_eq!(
        message,
        "RandAugment policy `rand-m9-x3`: unknown section `x3` (the keys are m, n, p, mstd, mmax and inc)"
    );
    let message = "rand-p2".parse::<RandAugment>().unwrap_err().to_string();
    assert!(message.contains("a probability in [0, 1]"), "{message}");
}

#[test]
fn magnitudes_follow_their_distributions() {
    let mut rng = StdRng::seed_from_u64(5);
    let draws = |magnitude: Magnitude, rng: &mut StdRng| -> Vec<f64> {
        (0..20_000).map(|_| magnitude.draw(rng)).collect()
    };
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;

    // timm's mstd0.5 around 9, clipped to [0, 10].
    let noisy = draws(
        Magnitude::Noisy {
            mean: 9.0,
            std: 0.5,
            max: 10.0,
        },
        &mut rng,
    );
    assert!(noisy.iter().all(|m| (0.0..=10.0).contains(m)));
    let std = (noisy
        .iter()
        .map(|m| (m - mean(&noisy)).powi(2))
        .sum::<f64>()
        / 20_000.0)
        .sqrt();
    assert!((mean(&noisy) - 9.0).abs() < 0.03, "{}", mean(&noisy));
    assert!((std - 0.5).abs() < 0.03, "{std}");
    assert!(noisy.contains(&10.0), "the clip at 10 is reached");
    // Above 100, uniform in [0, m].
    let uniform = draws(
        Magnitude::Noisy {
            mean: 6.0,
            std: f64::INFINITY,
            max: 10.0,
        },
        &mut rng,
    );
    assert!(uniform.iter().all(|m| (0.0..=6.0).contains(m)));
    assert!((mean(&uniform) - 3.0).abs() < 0.1);
    // A fixed magnitude is clipped to the maximum.
    let fixed = Magnitude::Noisy {
        mean: 12.0,
        std: 0.0,
        max: 10.0,
    };
    assert_eq!(fixed.draw(&mut rng), 10.0);
    // raug15: the integers 0..=14, evenly.
    let integers = draws(Magnitude::UniformInteger { count: 15 }, &mut rng);
    for level in 0..15 {
        let share = integers.iter().filter(|&&m| m == f64::from(level)).count() as f64 / 20_000.0;
        assert!((share - 1.0 / 15.0).abs() < 0.01, "{level}: {share}");
    }
    assert!(
        integers
            .iter()
            .all(|m| m.fract() == 0.0 && (0.0..15.0).contains(m))
    );
}

#[test]
fn the_policy_draws_n_operations_each_applied_with_its_probability() {
    let image = smooth_scene(8, 8);
    let inverted = applied(&image, image_ops::invert);
    let only_invert = |num_ops, probability| RandAugment {
        ops: vec![AugmentOp::Invert],
        num_ops,
        probability,
        magnitude: Magnitude::UniformInteger { count: 15 },
        fill: REFERENCE_FILL,
    };
    let mut rng = StdRng::seed_from_u64(9);
    // Always applied: once inverts, twice restores.
    assert_eq!(
        applied(&image, |i| only_invert(1, 1.0).apply(i, &mut rng)),
        inverted
    );
    assert_eq!(
        applied(&image, |i| only_invert(2, 1.0).apply(i, &mut rng)),
        image
    );
    assert_eq!(
        applied(&image, |i| only_invert(3, 0.0).apply(i, &mut rng)),
        image
    );
    // With probability 0.3, about 30% of images are inverted.
    let policy = only_invert(1, 0.3);
    let count = (0..4000)
        .filter(|_| applied(&image, |i| policy.apply(i, &mut rng)) == inverted)
        .count();
    assert!((1080..1320).contains(&count), "{count} of 4000");
    // Operations are drawn uniformly with replacement: of two draws from invert and posterize,
    // only invert twice (a quarter of the time) gives the image back.
    let policy = RandAugment {
        ops: vec![AugmentOp::Invert, AugmentOp::Posterize],
        num_ops: 2,
        probability: 1.0,
        magnitude: Magnitude::Noisy {
            mean: 10.0,
            std: 0.0,
            max: 10.0,
        }, // posterize keeps 4 bits
        fill: TIMM_FILL,
    };
    let unchanged = (0..4000)
        .filter(|_| applied(&image, |i| policy.apply(i, &mut rng)) == image)
        .count();
    assert!((880..1120).contains(&unchanged), "{unchanged} of 4000");
}

#[test]
fn random_erasing_replaces_one_rectangle_with_standard_normal_noise() {
    let (height, width) = (64u32, 48u32);
    let plane = (height * width) as usize;
    let erasing = RandomErasing::new(1.0);
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..50 {
        let mut input = vec![7.0f32; 3 * plane];
        let erased = erasing
            .apply(&mut input, height, width, &mut rng)
            .expect("always erases");
        let area = f64::from(erased.height * erased.width) / f64::from(height * width);
        assert!((0.015..0.36).contains(&area), "{area}");
        assert!(erased.top + erased.height <= height && erased.left + erased.width <= width);
        let mut noise = Vec::new();
        for (i, &value) in input.iter().enumerate() {
            let (y, x) = ((i % plane) as u32 / width, (i % plane) as u32 % width);
            let inside = (erased.top..erased.top + erased.height).contains(&y)
                && (erased.left..erased.left + erased.width).contains(&x);
            match inside {
                true => noise.push(f64::from(value)),
                false => assert_eq!(value, 7.0),
            }
        }
        assert_eq!(noise.len(), 3 * (erased.height * erased.width) as usize);
        assert!(noise.iter().all(|&v| v != 7.0));
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let std =
            (noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
        assert!(
            mean.abs() < 0.35 && (0.75..1.25).contains(&std),
            "{mean} {std}"
        );
    }
    // Never with probability 0, about half the time with 0.5.
    let mut input = vec![7.0f32; 3 * plane];
    assert_eq!(
        RandomErasing::new(0.0).apply(&mut input, height, width, &mut rng),
        None
    );
    assert!(input.iter().all(|&v| v == 7.0));
    let half = RandomErasing::new(0.5);
    let count = (0..2000)
        .filter(|_| half.apply(&mut input, height, width, &mut rng).is_some())
        .count();
    assert!((900..1100).contains(&count), "{count}");
}

fn augmented_transform() -> TrainTransform {
    TrainTransform {
        rand_augment: Some(RandAugment::raug15()),
        random_erasing: Some(RandomErasing::new(0.5)),
        ..TrainTransform::new(32)
    }
}

#[test]
fn the_train_transform_draws_everything_from_its_rng() {
    let image = smooth_scene(80, 60);
    let transform = augmented_transform();
    let input = |seed| transform.input(&image, &mut StdRng::seed_from_u64(seed));
    assert_eq!(input(4), input(4));
    assert_ne!(input(4), input(5));
    assert_eq!(input(4).len(), 3 * 32 * 32);
    // Without RandAugment and erasing, the draws and the images are the paper's.
    let paper = TrainTransform::new(32);
    let plain = |transform: &TrainTransform| transform.apply(&image, &mut StdRng::seed_from_u64(8));
    let no_op = TrainTransform {
        rand_augment: Some(RandAugment {
            num_ops: 0,
            ..RandAugment::raug15()
        }),
        ..TrainTransform::new(32)
    };
    assert_eq!(plain(&paper), plain(&no_op));
    assert_ne!(plain(&paper), plain(&augmented_transform()));
}

fn batches(loader: &ImageLoader) -> Vec<ImageBatch> {
    loader.iter().map(Result::unwrap).collect()
}

#[test]
fn batches_with_rand_augment_do_not_depend_on_the_number_of_workers() {
    let root = tempfile::Builder::new()
        .prefix("repvgg-rand-augment-")
        .tempdir()
        .unwrap();
    write_synthetic_set(root.path(), 2, 1, 3).unwrap();
    let samples = ImageFolder::open(&root.path().join("train"))
        .unwrap()
        .samples;
    let loader = |transform: TrainTransform, workers| {
        let options = LoaderOptions {
            batch_size: 6,
            workers,
            seed: 11,
            shuffle: true,
            mixup_alpha: None,
            prefetch: 2,
        };
        ImageLoader::new(
            samples.clone(),
            Augmentation::Train(transform),
            options,
            &Device::flex(),
        )
        .unwrap()
    };
    let one = batches(&loader(augmented_transform(), 1));
    let three = batches(&loader(augmented_transform(), 3));
    assert_eq!(one.len(), 4); // 20 images in batches of 6
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.images.to_data(), b.images.to_data());
        assert_eq!(a.targets.to_data(), b.targets.to_data());
    }
    // The same crops and order as without RandAugment, but other images.
    let plain = batches(&loader(TrainTransform::new(32), 2));
    for (a, b) in one.iter().zip(&plain) {
        assert_eq!(a.targets.to_data(), b.targets.to_data());
        assert_ne!(a.images.to_data(), b.images.to_data());
    }
}
