//! A training run as a Burn config: the network, the recipe, the augmentation, the loader and
//! the precision, saved as `training.json` in the run directory. The defaults are the paper's
//! ImageNet recipe.
//!
//! ```
//! use repvgg_model::RepVggArch;
//! use repvgg_train::{RecipeConfig, TrainingConfig};
//!
//! let config = TrainingConfig::new(RepVggArch::A0.config().with_num_classes(100))
//!     .with_recipe(RecipeConfig::new().with_epochs(300).with_warmup_epochs(5));
//! config.validate()?;
//! assert_eq!(config.recipe.batch_size, 256);
//! # Ok::<(), repvgg_train::InvalidTrainingConfig>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use burn::config::Config;
use burn::serde;
use repvgg_data::{
    DEFAULT_CROP_PCT, EvalTransform, InvalidPolicy, RandAugment, RandomErasing, RandomResizedCrop,
    TrainTransform, check_crop_pct,
};
use repvgg_model::{InvalidConfig, RepVggArch, RepVggConfig};

/// Everything a training run needs besides its data, devices and output directory.
#[derive(Config, Debug, PartialEq)]
pub struct TrainingConfig {
    /// The network to train (with a classifier head of at least as many classes as the data
    /// set has class folders).
    pub model: RepVggConfig,
    /// The optimisation recipe.
    #[config(default = "RecipeConfig::new()")]
    pub recipe: RecipeConfig,
    /// The training augmentation and the evaluation size.
    #[config(default = "AugmentationConfig::new()")]
    pub augmentation: AugmentationConfig,
    /// How images are loaded.
    #[config(default = "LoaderConfig::new()")]
    pub loader: LoaderConfig,
    /// Fine-tuning: the checkpoint whose weights the run starts from; `None` draws fresh
    /// weights from the seed.
    pub init: Option<WeightsInit>,
    /// Seeds the weights, the shuffling, the augmentation and the mixup draws.
    #[config(default = 0)]
    pub seed: u64,
    /// Floating-point precision of the weights and activations.
    #[config(default = "Precision::F32")]
    pub precision: Precision,
}

/// The optimisation recipe: SGD with momentum, weight decay on conv and linear weights only, a
/// per-iteration cosine schedule with optional linear warmup, and the regularisers of the
/// longer recipe.
#[derive(Config, Debug, PartialEq)]
pub struct RecipeConfig {
    /// Epochs over the training set.
    #[config(default = 120)]
    pub epochs: usize,
    /// Global batch size (split evenly across the devices).
    #[config(default = 256)]
    pub batch_size: usize,
    /// Batches whose gradients are accumulated per optimizer step (when memory is short).
    #[config(default = 1)]
    pub accumulation: usize,
    /// Learning rate at an effective batch of 256, scaled linearly to
    /// `batch_size * accumulation`.
    #[config(default = 0.1)]
    pub lr: f64,
    /// SGD momentum (PyTorch semantics: no dampening).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[config(default = false)]
    pub nesterov: bool,
    /// Weight decay on conv and linear weights (never on BN parameters or biases).
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// Epochs of linear warmup before the cosine decay.
    #[config(default = 0)]
    pub warmup_epochs: usize,
    /// Label smoothing of the cross-entropy targets (0.1 in the longer recipe).
    #[config(default = 0.0)]
    pub label_smoothing: f32,
    /// Mixup with `lambda ~ Beta(alpha, alpha)` (0.2 in the longer recipe).
    pub mixup_alpha: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay per batch (e.g.
    /// 0.9998; with accumulation, per accumulated batch), evaluated every epoch beside the model
    /// and saved as `model-ema*.bpk`.
    pub ema_decay: Option<f64>,
    /// Regularise the 3x3 and 1x1 kernels with the reference's "custom L2" on the equivalent
    /// kernel instead of plain weight decay.
    #[config(default = false)]
    pub custom_l2: bool,
    /// Fine-tuning: `Some(k)` freezes `stage0` (the stem) through `stage{k}` (0: the stem
    /// alone; 4: all but the classifier, a linear probe); `None` trains everything. Frozen
    /// parameters get no gradient and no optimizer state, and their batch norms normalize with
    /// (and keep) their running statistics.
    pub freeze_stages: Option<usize>,
    /// Fine-tuning: the learning rate of the stem and the stages as a fraction of the
    /// classifier's; `None` gives the whole network one rate.
    pub backbone_lr_scale: Option<f64>,
}

/// The last stage of every network (`stage4`; the stem is `stage0`): the most
/// [`RecipeConfig::freeze_stages`] can freeze.
pub const LAST_STAGE: usize = 4;

/// The checkpoint a fine-tuning run starts from ([`TrainingConfig::init`]).
///
/// As text (the `--init` flag): `pretrained:NAME` or the path of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(crate = "burn::serde", rename_all = "snake_case")]
pub enum WeightsInit {
    /// A training-time checkpoint in any format conversion reads: ours (`.bpk`), the
    /// reference's `.pth`, timm's `.safetensors`.
    Checkpoint(PathBuf),
    /// timm's ImageNet weights of an architecture (`a0`, `b1g4`, ...), from the Hugging Face
    /// cache that Python's `huggingface_hub` shares, downloaded there once (needs the
    /// `pretrained` feature).
    Pretrained(String),
}

impl WeightsInit {
    /// The architecture a `Pretrained` source names.
    pub fn pretrained_arch(&self) -> Option<Result<RepVggArch, InvalidTrainingConfig>> {
        match self {
            Self::Pretrained(name) => {
                Some(name.parse().map_err(|_| InvalidTrainingConfig::OutOfRange {
                    field: "init",
                    value: self.to_string(),
                    allowed: "pretrained:ARCH with a reference architecture (a0 ... d2se)",
                }))
            }
            _ => None,
        }
    }
}

impl fmt::Display for WeightsInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checkpoint(path) => write!(f, "{}", path.display()),
            Self::Pretrained(name) => write!(f, "pretrained:{name}"),
        }
    }
}

impl FromStr for WeightsInit {
    type Err = InvalidTrainingConfig;

    /// `pretrained:NAME` (the name checked), or a path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let init = match text.strip_prefix("pretrained:") {
            Some(name) => Self::Pretrained(name.trim().to_ascii_lowercase()),
            None => Self::Checkpoint(PathBuf::from(text)),
        };
        init.pretrained_arch().transpose()?;
        Ok(init)
    }
}

/// The paper's augmentation: RandomResizedCrop + flip for training, resize + centre crop for
/// evaluation; the longer recipe adds RandAugment and random erasing for training.
#[derive(Config, Debug, PartialEq)]
pub struct AugmentationConfig {
    /// Side of the training crops and of the evaluation centre crop.
    #[config(default = 224)]
    pub image_size: u32,
    /// Smallest area fraction of RandomResizedCrop (0.08 as in the paper).
    #[config(default = 0.08)]
    pub min_crop_scale: f64,
    /// Side of the evaluation centre crop when it differs from `image_size` (timm's
    /// `--eval-image-size`: RepVGGplus-L2pse trains at 256 and is tested at 320).
    pub eval_image_size: Option<u32>,
    /// Fraction of the resized image the evaluation crop keeps (timm's `crop_pct`; `None`:
    /// 0.875, i.e. 224 out of 256).
    pub crop_pct: Option<f64>,
    /// RandAugment after the crop and flip: timm's policy string (`rand-m9-mstd0.5-inc1`) or
    /// the reference's `raug15` (RepVGGplus-L2pse); `None`: the paper's augmentation.
    pub rand_augment: Option<String>,
    /// Probability of timm's random erasing (`--reprob`, per-pixel noise on the normalised
    /// image); `None`: no erasing.
    pub random_erasing: Option<f64>,
}

impl AugmentationConfig {
    /// The training set's transform: RandomResizedCrop from `min_crop_scale` and flip, then
    /// RandAugment and random erasing when set.
    pub fn train_transform(&self) -> Result<TrainTransform, InvalidTrainingConfig> {
        let size = self.image_size;
        let rand_augment = self.rand_augment.as_deref().map(str::parse).transpose()?;
        Ok(TrainTransform {
            crop: RandomResizedCrop {
                scale: (self.min_crop_scale, 1.0),
                ..RandomResizedCrop::new(size)
            },
            rand_augment,
            random_erasing: self.random_erasing.map(RandomErasing::new),
            ..TrainTransform::new(size)
        })
    }

    /// The validation set's transform: resize to `floor(eval size / crop_pct)`, centre crop.
    pub fn eval_transform(&self) -> EvalTransform {
        let size = self.eval_image_size.unwrap_or(self.image_size);
        EvalTransform::with_crop_pct(size, self.crop_pct.unwrap_or(DEFAULT_CROP_PCT))
    }
}

/// How images are decoded and batched.
#[derive(Config, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Image decoding threads (`None`: all cores).
    pub workers: Option<usize>,
}

/// Floating-point precision of the weights and activations.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats.
    F32,
    /// bfloat16 everywhere (no loss scaling needed), where the device computes in it.
    Bf16,
    /// Mixed precision: the convolutions' matrix products in bf16 with f32 sums, the weights,
    /// activations, batch statistics and optimizer in f32 (PyTorch's autocast). On Burn's CPU
    /// backend, on CPUs with AVX512_BF16 (repvgg-ops' kernels).
    Bf16Mixed,
}

impl Precision {
    /// The lower-case name (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Bf16Mixed => "bf16-mixed",
        }
    }
}

/// A precision name that is neither `f32` nor `bf16`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}`; use f32, bf16 or bf16-mixed")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Self::F32, Self::Bf16, Self::Bf16Mixed]
            .into_iter()
            .find(|precision| precision.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownPrecision(name.to_string()))
    }
}

/// A [`TrainingConfig`] that cannot be trained: each names the field concerned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidTrainingConfig {
    /// The network itself is not buildable.
    #[error("model: {0}")]
    Model(#[from] InvalidConfig),
    /// A headless network (`num_classes` 0) has no classes to train.
    #[error("model.num_classes is 0 (a headless backbone): training needs the classifier head")]
    Headless,
    /// A field outside its range.
    #[error("{field} is {value}; it must be {allowed}")]
    OutOfRange {
        /// The field's path in the JSON file (`recipe.epochs`).
        field: &'static str,
        /// The value found.
        value: String,
        /// The range it must lie in, in words.
        allowed: &'static str,
    },
    /// `augmentation.rand_augment` is not a policy.
    #[error("augmentation.rand_augment: {0}")]
    RandAugment(#[from] InvalidPolicy),
    /// More warmup than training.
    #[error("recipe.warmup_epochs ({warmup_epochs}) exceeds recipe.epochs ({epochs})")]
    WarmupBeyondEpochs {
        /// The warmup asked for.
        warmup_epochs: usize,
        /// The epochs of the run.
        epochs: usize,
    },
    /// The custom L2 term weighs RepVGG's branches by their batch norms, which QARepVGG's
    /// 1x1 branch does not have.
    #[error(
        "recipe.custom_l2 is RepVGG's regularizer; QARepVGG (model.block \"qa_rep_vgg\") trains \
         with plain weight decay, as its paper does: turn one of them off"
    )]
    CustomL2WithQaRepVgg,
}

impl TrainingConfig {
    /// Checks what the types cannot: the network is buildable, every number is in its range,
    /// the warmup fits in the run.
    pub fn validate(&self) -> Result<(), InvalidTrainingConfig> {
        self.model.validate()?;
        if !self.model.has_head() {
            return Err(InvalidTrainingConfig::Headless);
        }
        let count = |field, value: usize| check(field, value, value > 0, "at least 1");
        let positive =
            |field, value: f64| check(field, value, value > 0.0 && value.is_finite(), "positive");
        let fraction =
            |field, value: f64| check(field, value, (0.0..1.0).contains(&value), "in [0, 1)");
        let recipe = &self.recipe;
        count("recipe.epochs", recipe.epochs)?;
        count("recipe.batch_size", recipe.batch_size)?;
        count("recipe.accumulation", recipe.accumulation)?;
        // Bounds far beyond any real run, so that a damaged config file is refused before a
        // batch of its size is allocated.
        let batch = recipe.batch_size;
        check(
            "recipe.batch_size",
            batch,
            batch <= 1 << 16,
            "at most 65536",
        )?;
        positive("recipe.lr", recipe.lr)?;
        fraction("recipe.momentum", recipe.momentum)?;
        let decay = recipe.weight_decay;
        let non_negative = decay >= 0.0 && decay.is_finite();
        check(
            "recipe.weight_decay",
            decay,
            non_negative,
            "zero or positive",
        )?;
        if recipe.custom_l2 && self.model.is_quantization_aware() {
            return Err(InvalidTrainingConfig::CustomL2WithQaRepVgg);
        }
        if recipe.warmup_epochs > recipe.epochs {
            return Err(InvalidTrainingConfig::WarmupBeyondEpochs {
                warmup_epochs: recipe.warmup_epochs,
                epochs: recipe.epochs,
            });
        }
        fraction("recipe.label_smoothing", recipe.label_smoothing.into())?;
        if let Some(alpha) = recipe.mixup_alpha {
            positive("recipe.mixup_alpha", alpha)?;
        }
        if let Some(decay) = recipe.ema_decay {
            fraction("recipe.ema_decay", decay)?;
        }
        if let Some(stage) = recipe.freeze_stages {
            check(
                "recipe.freeze_stages",
                stage,
                stage <= LAST_STAGE,
                "from 0 (the stem) to 4 (all but the classifier)",
            )?;
        }
        if let Some(scale) = recipe.backbone_lr_scale {
            positive("recipe.backbone_lr_scale", scale)?;
        }
        if let Some(init) = &self.init {
            init.pretrained_arch().transpose()?;
        }
        let augmentation = &self.augmentation;
        let size = augmentation.image_size;
        check(
            "augmentation.image_size",
            size,
            (32..=8192).contains(&size),
            "from 32 (RepVGG downsamples by 32) to 8192",
        )?;
        if let Some(size) = augmentation.eval_image_size {
            check(
                "augmentation.eval_image_size",
                size,
                (32..=8192).contains(&size),
                "from 32 to 8192",
            )?;
        }
        if let Some(crop_pct) = augmentation.crop_pct {
            let in_range = check_crop_pct(crop_pct).is_ok();
            check("augmentation.crop_pct", crop_pct, in_range, "in (0, 1]")?;
        }
        let scale = augmentation.min_crop_scale;
        let in_range = scale > 0.0 && scale <= 1.0;
        check("augmentation.min_crop_scale", scale, in_range, "in (0, 1]")?;
        if let Some(policy) = &augmentation.rand_augment {
            policy.parse::<RandAugment>()?;
        }
        if let Some(probability) = augmentation.random_erasing {
            let in_range = (0.0..=1.0).contains(&probability);
            check(
                "augmentation.random_erasing",
                probability,
                in_range,
                "in [0, 1]",
            )?;
        }
        if let Some(workers) = self.loader.workers {
            let in_range = (1..=1024).contains(&workers);
            check("loader.workers", workers, in_range, "from 1 to 1024")?;
        }
        Ok(())
    }
}

/// `Ok` if `valid`, else the [`InvalidTrainingConfig::OutOfRange`] error of `field`.
fn check(
    field: &'static str,
    value: impl fmt::Display,
    valid: bool,
    allowed: &'static str,
) -> Result<(), InvalidTrainingConfig> {
    match valid {
        true => Ok(()),
        false => Err(InvalidTrainingConfig::OutOfRange {
            field,
            value: value.to_string(),
            allowed,
        }),
    }
}
