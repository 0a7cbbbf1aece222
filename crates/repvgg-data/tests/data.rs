//! The data pipeline: class indexing, decoding odd files, and the augmentation's bounds.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use repvgg_data::{
    DataError, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, ImageFolder, RandomResizedCrop,
    TrainTransform, decode_rgb, normalize,
};
use repvgg_testing::scratch;

fn image_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(name)
}

/// A `width x height` image whose pixel `(x, y)` is `(x, y, 7)`.
fn coordinates(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 7]))
}

#[test]
fn classes_are_numbered_in_sorted_order() {
    let scratch = scratch("classes");
    let root = scratch.path();
    for (class, files) in [
        ("zebra", &["b.jpg", "a.JPEG"][..]),
        ("apple", &["x.png", "notes.txt"][..]),
        ("Mango", &["m.webp"][..]),
    ] {
        std::fs::create_dir(root.join(class)).unwrap();
        for file in files {
            std::fs::write(root.join(class).join(file), b"").unwrap();
        }
    }
    std::fs::write(root.join("stray.jpg"), b"").unwrap();
    let folder = ImageFolder::open(root).unwrap();
    assert_eq!(folder.classes, ["Mango", "apple", "zebra"]);
    let samples: Vec<(String, usize)> = folder
        .samples
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_str().unwrap().to_string(),
                s.label,
            )
        })
        .collect();
    assert_eq!(
        samples,
        [
            ("m.webp".to_string(), 0),
            ("x.png".to_string(), 1),
            ("a.JPEG".to_string(), 2),
            ("b.jpg".to_string(), 2)
        ]
    );
}

#[test]
fn unusable_folders_are_explained() {
    let scratch = scratch("unusable");
    let root = scratch.path();
    let err = ImageFolder::open(&root.join("missing")).unwrap_err();
    assert!(matches!(err, DataError::NotAFolder(_)), "{err}");
    let err = ImageFolder::open(root).unwrap_err();
    assert!(err.to_string().contains("no class subdirectories"), "{err}");
    std::fs::create_dir(root.join("cat")).unwrap();
    std::fs::write(root.join("cat").join("readme.md"), b"").unwrap();
    let err = ImageFolder::open(root).unwrap_err();
    assert!(err.to_string().contains("hold no images"), "{err}");
}

#[test]
fn awkward_folders_are_reported_not_fatal() {
    use std::os::unix::fs::symlink;
    let scratch = scratch("awkward");
    let root = scratch.path();
    let (cat, dog) = (root.join("cat"), root.join("dog"));
    std::fs::create_dir(&cat).unwrap();
    std::fs::create_dir(&dog).unwrap();
    std::fs::copy(image_file("rgba.png"), cat.join("a.png")).unwrap();
    std::fs::write(cat.join("empty.jpg"), b"").unwrap();
    // A class folder that is a link to itself, an image that is one, and one leading nowhere.
    symlink(root.join("loop"), root.join("loop")).unwrap();
    symlink(cat.join("self.jpg"), cat.join("self.jpg")).unwrap();
    symlink(root.join("nowhere.jpg"), cat.join("dangling.jpg")).unwrap();

    let folder = ImageFolder::open(root).unwrap();
    assert_eq!(folder.classes, ["cat", "dog"]);
    assert_eq!(folder.empty_classes(), ["dog"]);
    let samples: Vec<&Path> = folder.samples.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(samples, [cat.join("a.png"), cat.join("empty.jpg")]);
    let mut unreadable: Vec<&Path> = folder.unreadable.iter().map(|(p, _)| p.as_path()).collect();
    unreadable.sort();
    assert_eq!(
        unreadable,
        [
            cat.join("dangling.jpg"),
            cat.join("self.jpg"),
            root.join("loop")
        ]
    );
    assert!(
        folder
            .unreadable
            .iter()
            .any(|(_, why)| why.contains("symbolic links")),
        "{:?}",
        folder.unreadable
    );
    // The zero-byte file is a sample whose decoding fails, naming it.
    let err = decode_rgb(&cat.join("empty.jpg")).unwrap_err();
    assert!(err.to_string().contains("empty.jpg"), "{err}");
}

#[test]
fn a_decompression_bomb_is_refused_before_it_is_allocated() {
    // A valid PNG header declaring 30000 x 30000 RGB pixels (2.7 GB decoded), then a few bytes.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(30000u32.to_be_bytes());
    ihdr.extend(30000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, adaptive filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32fast::hash(&ihdr).to_be_bytes());
    png.extend([0, 0, 0, 2, b'I', b'D', b'A', b'T', 0x78, 0x9c, 0, 0, 0, 0]);
    let scratch = scratch("bomb");
    let bomb = scratch.path().join("bomb.png");
    std::fs::write(&bomb, &png).unwrap();
    let started = std::time::Instant::now();
    let err = decode_rgb(&bomb).unwrap_err();
    assert!(err.to_string().contains("bomb.png"), "{err}");
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn odd_image_files_decode_to_rgb() {
    for name in [
        "rgb.jpg",
        "gray.jpg",
        "cmyk.jpg",
        "rgba.png",
        "gray16.png",
        "png_named.JPEG",
    ] {
        let image = decode_rgb(&image_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(image.dimensions(), (40, 30), "{name}");
        // The top-left quarter is bright in every file; the top-right corner is not.
        let bright = image.get_pixel(5, 5);
        assert!(bright.0.iter().all(|&c| c > 200), "{name}: {bright:?}");
        let dark = image.get_pixel(35, 5);
        assert!(dark.0.iter().any(|&c| c < 120), "{name}: {dark:?}");
    }
    // Colour survives the CMYK round trip: pixel (35, 25) was (210, 200, 90).
    let cmyk = decode_rgb(&image_file("cmyk.jpg")).unwrap();
    let pixel = cmyk.get_pixel(35, 25).0;
    for (got, want) in pixel.iter().zip([210u8, 200, 90]) {
        assert!(got.abs_diff(want) < 30, "CMYK pixel {pixel:?}");
    }
}

#[test]
fn corrupt_and_missing_files_are_errors_naming_the_file() {
    for name in ["truncated.jpg", "does-not-exist.jpg"] {
        let err = decode_rgb(&image_file(name)).unwrap_err();
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    let scratch = scratch("corrupt");
    let dir = scratch.path();
    let noise = dir.join("noise.png");
    std::fs::write(&noise, [0x89, b'P', b'N', b'G', 1, 2, 3, 4, 5]).unwrap();
    assert!(decode_rgb(&noise).is_err());
}

#[test]
fn random_resized_crops_stay_within_the_paper_bounds() {
    let crop = RandomResizedCrop::new(224);
    let mut rng = StdRng::seed_from_u64(3);
    let (width, height) = (500u32, 375u32);
    let mut smallest: f64 = 1.0;
    for _ in 0..2000 {
        let c = crop.sample(width, height, &mut rng);
        assert!(c.width > 0 && c.height > 0);
        assert!(
            c.left + c.width <= width && c.top + c.height <= height,
            "{c:?}"
        );
        let area = f64::from(c.width * c.height) / f64::from(width * height);
        let ratio = f64::from(c.width) / f64::from(c.height);
        // Rounding to whole pixels moves both a little past the continuous bounds.
        assert!((0.075..=1.0).contains(&area), "area {area} of {c:?}");
        assert!((0.74..=1.35).contains(&ratio), "ratio {ratio} of {c:?}");
        smallest = smallest.min(area);
    }
    assert!(
        smallest < 0.1,
        "the small end of the scale range is never drawn"
    );
    let out = crop.apply(&coordinates(width, height), &mut rng);
    assert_eq!(out.dimensions(), (224, 224));
}

#[test]
fn extreme_aspect_ratios_fall_back_to_a_centre_crop() {
    let crop = RandomResizedCrop::new(32);
    let mut rng = StdRng::seed_from_u64(0);
    let c = crop.sample(1000, 10, &mut rng);
    assert_eq!((c.width, c.height), (13, 10));
    assert_eq!((c.left, c.top), ((1000 - 13) / 2, 0));
}

#[test]
fn flips_mirror_the_image() {
    let image = coordinates(40, 30);
    let whole = RandomResizedCrop {
        size: 40,
        scale: (1.0, 1.0),
        ratio: (40.0 / 30.0, 40.0 / 30.0),
    };
    let mut rng = StdRng::seed_from_u64(1);
    let never = TrainTransform {
        crop: whole.clone(),
        flip_probability: 0.0,
        ..TrainTransform::new(40)
    };
    let always = TrainTransform {
        crop: whole,
        flip_probability: 1.0,
        ..TrainTransform::new(40)
    };
    let straight = never.apply(&image, &mut rng);
    let flipped = always.apply(&image, &mut rng);
    assert_eq!(straight.dimensions(), (40, 40));
    for (x, y, pixel) in straight.enumerate_pixels() {
        assert_eq!(flipped.get_pixel(39 - x, y), pixel);
    }
    assert!(straight.get_pixel(0, 0)[0] < straight.get_pixel(39, 0)[0]);
}

#[test]
fn augmentation_is_reproducible_from_a_seed() {
    let image = coordinates(200, 150);
    let transform = TrainTransform::new(64);
    let draw = |seed| transform.apply(&image, &mut StdRng::seed_from_u64(seed));
    assert_eq!(draw(11), draw(11));
    assert_ne!(draw(11), draw(12));
}

#[test]
fn evaluation_resizes_the_shorter_side_and_crops_the_centre() {
    assert_eq!(EvalTransform::new(224).resize, 256);
    // timm floors: 32 / 0.875 = 36.57 -> 36.
    assert_eq!(EvalTransform::new(32).resize, 36);
    assert_eq!(EvalTransform::with_crop_pct(320, 1.0).resize, 320);
    let out = EvalTransform::new(224).apply(&coordinates(500, 375));
    assert_eq!(out.dimensions(), (224, 224));
    // 500x375 becomes 341x256; the crop starts at (58.5, 16) there, i.e. about (86, 23) in
    // the original coordinates, which the pixel values hold.
    let corner = out.get_pixel(0, 0);
    assert!((84..=89).contains(&corner[0]), "{corner:?}");
    assert!((21..=26).contains(&corner[1]), "{corner:?}");
    let tall = EvalTransform::new(32).apply(&coordinates(40, 90));
    assert_eq!(tall.dimensions(), (32, 32));
}

/// The crops timm's evaluation transform made (`scripts/make_fixtures.py`): real-sized images,
/// landscape, portrait and square, at four (size, crop_pct) cases.
#[test]
fn evaluation_agrees_with_timm() {
    let folder = image_file("eval_transform");
    let mut worst = (0u8, 0f64);
    for source in ["500x375", "375x500", "333x333"] {
        let image = decode_rgb(&folder.join(format!("source_{source}.png"))).unwrap();
        for (size, crop_pct) in [(224, "0.875"), (224, "1.0"), (320, "1.0"), (57, "0.9")] {
            let transform = EvalTransform::with_crop_pct(size, crop_pct.parse().unwrap());
            let ours = transform.apply(&image);
            let timm =
                decode_rgb(&folder.join(format!("timm_{source}_{size}_{crop_pct}.png"))).unwrap();
            assert_eq!(
                ours.dimensions(),
                timm.dimensions(),
                "{source} {size} {crop_pct}"
            );
            let differences: Vec<u8> = ours
                .as_raw()
                .iter()
                .zip(timm.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let max = *differences.iter().max().unwrap();
            let mean =
                differences.iter().map(|&d| f64::from(d)).sum::<f64>() / differences.len() as f64;
            // Both resample with an antialiased triangle filter in fixed point (PIL's, and
            // fast_image_resize's port of it): a level apart at most, rarely.
            assert!(
                max <= 1 && mean <= 0.1,
                "{source} at {size}/{crop_pct}: max {max}, mean {mean:.3} (of 255)"
            );
            worst = (worst.0.max(max), worst.1.max(mean));
        }
    }
    eprintln!(
        "evaluation transform vs timm: largest difference {} of 255, largest mean {:.3}",
        worst.0, worst.1
    );
}

#[test]
fn normalization_uses_the_imagenet_statistics_channels_first() {
    let image = RgbImage::from_fn(2, 1, |x, _| match x {
        0 => Rgb([255, 0, 128]),
        _ => Rgb([0, 255, 0]),
    });
    let values = normalize(&image);
    assert_eq!(values.len(), 6);
    let expected = |value: f32, c: usize| (value / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    let want = [
        expected(255.0, 0),
        expected(0.0, 0),
        expected(0.0, 1),
        expected(255.0, 1),
        expected(128.0, 2),
        expected(0.0, 2),
    ];
    for (got, want) in values.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{values:?}");
    }
    assert!((values[0] - 2.2489).abs() < 1e-3);
}
