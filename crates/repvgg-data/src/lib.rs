//! RepVGG's image data, for training and for inference alike: ImageFolder indexing, decoding of
//! whatever ImageNet-like folders hold, the paper's augmentation (with the longer recipe's
//! RandAugment and random erasing) and timm's evaluation transform, a parallel loader of batches on any device, top-1/top-5 evaluation over it, and a synthetic
//! set for runs with nothing to download. It needs no burn-train and no autodiff, so that
//! applications that only classify images do not build them.
//!
//! ```
//! use repvgg_data::{EvalTransform, IMAGENET_MEAN};
//!
//! let transform = EvalTransform::new(224); // shorter side to 256, centre crop 224
//! assert_eq!(transform.size, 224);
//! assert_eq!(IMAGENET_MEAN[0], 0.485);
//! ```

mod erasing;
mod evaluate;
mod folder;
pub mod image_ops;
mod loader;
mod rand_augment;
mod synthetic;
mod transform;

use std::path::PathBuf;

pub use erasing::RandomErasing;
pub use evaluate::{Evaluation, evaluate};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder, Sample};
pub use loader::{
    Augmentation, ImageBatch, ImageLoader, LoaderOptions, MixedTargets, SkippedImages,
};
pub use rand_augment::{
    AugmentOp, InvalidPolicy, LEVEL_DENOM, Magnitude, PolicyProblem, RAND_INCREASING_OPS, RAND_OPS,
    RAUG15_OPS, REFERENCE_FILL, RandAugment, TIMM_FILL,
};
pub use synthetic::{SYNTHETIC_CLASSES, write_synthetic_set};
pub use transform::{
    Crop, DEFAULT_CROP_PCT, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, RandomResizedCrop,
    TrainTransform, check_crop_pct, decode_rgb, decode_rgb_reusing, normalize, normalize_into,
    parse_crop_pct,
};

/// A data set that cannot be read, or an image that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a directory (expected ROOT/<class>/<image> folders)")]
    NotAFolder(PathBuf),
    #[error("{0}: no class subdirectories (expected ROOT/<class>/<image> folders)")]
    NoClasses(PathBuf),
    #[error("{0}: the class subdirectories hold no images (.jpg, .jpeg, .png, ...)")]
    NoImages(PathBuf),
    #[error("{path}: cannot decode the image: {message}")]
    Decode { path: PathBuf, message: String },
}
