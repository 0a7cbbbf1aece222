//! `repvgg train`: the flags (defaults: the paper's ImageNet recipe, taken from
//! [`TrainingConfig`]'s), their mapping onto a [`TrainingConfig`], and the run.
//!
//! `--config-file FILE` runs a saved config instead of the recipe flags; `--resume` continues
//! the run in `--output` with the config it saved (`training.json`). Both refuse the flags that
//! would change the config ([`RecipeArgs`], one clap group), so that what runs is what the file
//! says.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use burn::config::Config;
use repvgg_data::{ImageFolder, InvalidPolicy, RandAugment};
use repvgg_model::{DeviceChoice, RepVggArch, RepVggConfig};
use repvgg_train::{
    AugmentationConfig, DataParallel, LoaderConfig, Precision, RecipeConfig, TrainingConfig,
    WeightsInit, resume_with, train_with,
};

use crate::report::print_report;

/// Train RepVGG on an ImageFolder data set with the paper's ImageNet recipe (the defaults),
/// then write the training-time and the re-parameterized deploy-time model.
///
/// Example: repvgg train --data /data/imagenet --arch A0
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Data set root in ImageFolder layout: DATA/train/CLASS/IMAGE and DATA/val/CLASS/IMAGE.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Directory for checkpoints, logs, the config, the class list and the final models.
    #[arg(long, value_name = "DIR", default_value = "runs/repvgg")]
    pub output: PathBuf,
    /// A saved TrainingConfig (e.g. a run's training.json) instead of the flags that set the
    /// network and the recipe.
    #[arg(long, value_name = "FILE", conflicts_with_all = [RECIPE, "resume"])]
    pub config_file: Option<PathBuf>,
    /// Continue the run in --output from its last checkpoint (same schedule position), with the
    /// config it saved (training.json); the flags that set the network and the recipe are
    /// refused with it.
    #[arg(long, conflicts_with = RECIPE)]
    pub resume: bool,
    /// Backend: cpu, wgpu or cuda (default: cuda in a build with CUDA, else cpu).
    #[arg(long, default_value_t = DeviceChoice::training_default())]
    pub device: DeviceChoice,
    /// GPU indices, comma separated; several train data-parallel (CUDA).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// How several devices share the work: ddp (replicas whose gradients are all-reduced with
    /// NCCL; CUDA only) or multi-device (gradients gathered on the first device; any backend).
    /// Default: ddp for several CUDA devices, multi-device otherwise. `--data-parallel ddp` on
    /// one GPU runs the DDP code path alone (a smoke test).
    #[arg(long, value_name = "STRATEGY", value_parser = parse_data_parallel)]
    pub data_parallel: Option<DataParallel>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// The id of [`RecipeArgs`]' clap group: every flag that sets the network or the recipe.
const RECIPE: &str = "recipe";

/// The flags that set the network and the recipe, one clap group: what `--config-file` and
/// `--resume` refuse, since their config comes from a file.
#[derive(clap::Args, Clone, Debug)]
#[group(id = RECIPE, multiple = true)]
pub struct RecipeArgs {
    /// Architecture preset (A0 ... D2se, or RepVGGplus-L2pse).
    #[arg(long, default_value = "A0", conflicts_with = "config")]
    pub arch: RepVggArch,
    /// A RepVggConfig JSON file instead of a preset (custom architectures).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Build the network of QARepVGG's blocks (no BN on the 1x1 and identity branches, one on
    /// their sum), whose deploy weights quantize to int8 without RepVGG's accuracy loss.
    #[arg(long)]
    pub quantization_aware: bool,
    /// Number of outputs; defaults to the number of class folders.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Side of the training crops and of the evaluation centre crop.
    #[arg(long, default_value_t = AugmentationConfig::new().image_size)]
    pub image_size: u32,
    /// Smallest area fraction of RandomResizedCrop (0.08 as in the paper).
    #[arg(long, default_value_t = AugmentationConfig::new().min_crop_scale)]
    pub min_crop_scale: f64,
    /// Side of the evaluation centre crop, when it differs from --image-size (e.g. train 256,
    /// test 320).
    #[arg(long, value_name = "SIZE")]
    pub eval_image_size: Option<u32>,
    /// Fraction of the resized image the evaluation crop keeps: the shorter side is resized to
    /// floor(size / crop_pct) (timm's rule; default 0.875, 1.0 for RepVGGplus and D2se).
    #[arg(long, value_parser = repvgg_data::parse_crop_pct)]
    pub crop_pct: Option<f64>,
    /// RandAugment after the crop and flip: timm's policy (e.g. rand-m9-mstd0.5-inc1) or the
    /// reference's raug15 (RepVGGplus-L2pse's: 2 of 16 operations, magnitudes 0 to 14).
    #[arg(long = "aa", visible_alias = "rand-augment", value_name = "POLICY",
          value_parser = rand_augment_policy)]
    pub rand_augment: Option<String>,
    /// Probability of random erasing (timm's --reprob: a rectangle of per-pixel noise on the
    /// normalised image).
    #[arg(long = "reprob", value_name = "PROBABILITY")]
    pub random_erasing: Option<f64>,
    #[arg(long, default_value_t = RecipeConfig::new().epochs)]
    pub epochs: usize,
    /// Global batch size (split evenly across --devices).
    #[arg(long, default_value_t = RecipeConfig::new().batch_size)]
    pub batch_size: usize,
    /// Accumulate gradients over this many batches per optimizer step (when memory is short).
    #[arg(long, default_value_t = RecipeConfig::new().accumulation)]
    pub accumulation: usize,
    /// Learning rate at an effective batch of 256; scaled linearly to batch x accumulation.
    #[arg(long, default_value_t = RecipeConfig::new().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = RecipeConfig::new().momentum)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay on conv and linear weights (never on BN parameters or biases).
    #[arg(long, default_value_t = RecipeConfig::new().weight_decay)]
    pub weight_decay: f64,
    /// Epochs of linear warmup before the cosine decay.
    #[arg(long, default_value_t = RecipeConfig::new().warmup_epochs)]
    pub warmup_epochs: usize,
    /// Label smoothing of the cross-entropy targets (0.1 in the longer recipe).
    #[arg(long, default_value_t = RecipeConfig::new().label_smoothing)]
    pub label_smoothing: f32,
    /// Mixup with lambda ~ Beta(ALPHA, ALPHA) (0.2 in the longer recipe).
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay per batch (e.g.
    /// 0.9998; with --accumulation, per accumulated batch), evaluated every epoch beside the model
    /// and saved as model-ema*.bpk.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Regularise the 3x3 and 1x1 kernels with the reference's "custom L2" on the equivalent
    /// kernel instead of plain weight decay.
    #[arg(long)]
    pub custom_l2: bool,
    /// Fine-tune: start from a training-time checkpoint (ours .bpk, the reference's .pth,
    /// timm's .safetensors) or pretrained:ARCH (timm's ImageNet weights, e.g. pretrained:a0)
    /// instead of random weights. A classifier whose classes are not the data set's is
    /// replaced by a fresh one.
    #[arg(long, value_name = "FILE|pretrained:ARCH")]
    pub init: Option<WeightsInit>,
    /// Freeze stage0 (the stem) through stageK (0 to 4; 4 trains the classifier alone): no
    /// gradients, no optimizer state, fixed batch-norm statistics.
    #[arg(long, value_name = "K")]
    pub freeze_stages: Option<usize>,
    /// The stem's and stages' learning rate as a fraction of the classifier's (e.g. 0.1 when
    /// fine-tuning; default: one rate).
    #[arg(long, value_name = "SCALE")]
    pub backbone_lr_scale: Option<f64>,
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seeds the weights, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// f32; bf16 where the device computes in it (no loss scaling needed); or bf16-mixed on the
    /// CPU with AVX512_BF16 (bf16 products, f32 weights and activations).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl TrainArgs {
    /// The run these flags describe: `--config-file`'s, or the network (`--arch`/`--config`,
    /// with `--num-classes` or one output per class folder) with the recipe flags.
    pub fn training_config(&self) -> Result<TrainingConfig> {
        match &self.config_file {
            Some(path) => TrainingConfig::load(path).map_err(|err| {
                anyhow!("{}: not a TrainingConfig JSON file: {err}", path.display())
            }),
            None => self.recipe.training_config(&self.data),
        }
    }

    /// How the devices share the work: as asked, else DDP for several CUDA devices (NCCL has the
    /// collectives) and multi-device otherwise. DDP elsewhere than on CUDA is refused: the other
    /// backends have no all-reduce.
    pub fn data_parallel(&self) -> Result<DataParallel> {
        let cuda = self.device == DeviceChoice::Cuda;
        match self.data_parallel {
            Some(DataParallel::Ddp) if !cuda => Err(anyhow!(
                "--data-parallel ddp needs --device cuda (NCCL all-reduce); {} has no collectives: \
                 use --data-parallel multi-device",
                self.device
            )),
            Some(choice) => Ok(choice),
            None if cuda && self.devices.len() > 1 => Ok(DataParallel::Ddp),
            None => Ok(DataParallel::MultiDevice),
        }
    }
}

impl RecipeArgs {
    /// The network (`--arch`/`--config`, with `--num-classes` or one output per class folder of
    /// `data`) with the recipe flags.
    fn training_config(&self, data: &Path) -> Result<TrainingConfig> {
        let model = match &self.config {
            Some(path) => RepVggConfig::load(path).map_err(|err| {
                anyhow!("{}: not a RepVggConfig JSON file: {err}", path.display())
            })?,
            None => self.arch.config(),
        };
        let model = match self.quantization_aware {
            true => model.quantization_aware(),
            false => model,
        };
        let num_classes = match self.num_classes {
            Some(count) => count,
            None => ImageFolder::open(&data.join("train"))?.classes.len(),
        };
        let recipe = RecipeConfig::new()
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_accumulation(self.accumulation)
            .with_lr(self.lr)
            .with_momentum(self.momentum)
            .with_nesterov(self.nesterov)
            .with_weight_decay(self.weight_decay)
            .with_warmup_epochs(self.warmup_epochs)
            .with_label_smoothing(self.label_smoothing)
            .with_mixup_alpha(self.mixup)
            .with_ema_decay(self.ema)
            .with_custom_l2(self.custom_l2)
            .with_freeze_stages(self.freeze_stages)
            .with_backbone_lr_scale(self.backbone_lr_scale);
        let augmentation = AugmentationConfig::new()
            .with_image_size(self.image_size)
            .with_min_crop_scale(self.min_crop_scale)
            .with_eval_image_size(self.eval_image_size)
            .with_crop_pct(self.crop_pct)
            .with_rand_augment(self.rand_augment.clone())
            .with_random_erasing(self.random_erasing);
        Ok(TrainingConfig::new(model.with_num_classes(num_classes))
            .with_recipe(recipe)
            .with_augmentation(augmentation)
            .with_loader(LoaderConfig::new().with_workers(self.workers))
            .with_init(self.init.clone())
            .with_seed(self.seed)
            .with_precision(self.precision))
    }
}

/// A `--aa` policy, refused here if the config would refuse it.
fn rand_augment_policy(policy: &str) -> Result<String, InvalidPolicy> {
    policy.parse::<RandAugment>().map(|_| policy.to_string())
}

/// `ddp` or `multi-device`.
fn parse_data_parallel(name: &str) -> Result<DataParallel, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "ddp" => Ok(DataParallel::Ddp),
        "multi-device" | "multi" => Ok(DataParallel::MultiDevice),
        _ => Err(format!("`{name}`: use ddp or multi-device")),
    }
}

/// Trains (or resumes) as the flags say and prints the report.
pub fn run(args: &TrainArgs) -> Result<()> {
    let data_parallel = args.data_parallel()?;
    let devices = args.device.devices(&args.devices)?;
    let report = if args.resume {
        resume_with(&args.output, &args.data, &devices, data_parallel)?
    } else {
        let config = args.training_config()?;
        train_with(&config, &args.data, &devices, data_parallel, &args.output)?
    };
    print_report(&report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn parse(flags: &[&str]) -> Result<TrainArgs, clap::Error> {
        let program = std::iter::once("repvgg");
        Flags::try_parse_from(program.chain(flags.iter().copied())).map(|flags| flags.train)
    }

    #[test]
    fn quantization_aware_builds_qarepvgg_blocks_and_refuses_custom_l2() {
        let flags = [
            "--data",
            "unused",
            "--num-classes",
            "10",
            "--quantization-aware",
        ];
        let config = parse(&flags).unwrap().training_config().unwrap();
        let expected = RepVggArch::A0
            .config()
            .with_num_classes(10)
            .quantization_aware();
        assert_eq!(config.model, expected);
        config.validate().unwrap();
        let with_l2 = parse(&[&flags[..], &["--custom-l2"]].concat()).unwrap();
        let error = with_l2.training_config().unwrap().validate().unwrap_err();
        assert!(error.to_string().contains("QARepVGG"), "{error}");
    }

    #[test]
    fn the_defaults_are_the_configs_defaults() {
        let args = parse(&["--data", "unused", "--num-classes", "10"]).unwrap();
        assert_eq!(
            args.training_config().unwrap(),
            TrainingConfig::new(RepVggArch::A0.config().with_num_classes(10))
        );
        assert!(!args.resume);
    }

    #[test]
    fn every_recipe_flag_reaches_the_config() {
        let args = parse(&[
            "--data=unused",
            "--arch=B1g2",
            "--num-classes=7",
            "--image-size=64",
            "--min-crop-scale=0.5",
            "--aa=rand-m9-mstd0.5-inc1",
            "--reprob=0.25",
            "--epochs=3",
            "--batch-size=32",
            "--accumulation=2",
            "--lr=0.2",
            "--momentum=0.8",
            "--nesterov",
            "--weight-decay=5e-5",
            "--warmup-epochs=1",
            "--label-smoothing=0.1",
            "--mixup=0.2",
            "--ema=0.999",
            "--custom-l2",
            "--workers=3",
            "--init=runs/digits/model.bpk",
            "--freeze-stages=2",
            "--backbone-lr-scale=0.1",
            "--seed=9",
            "--precision=bf16",
        ])
        .unwrap();
        let expected = TrainingConfig::new(RepVggArch::B1g2.config().with_num_classes(7))
            .with_recipe(
                RecipeConfig::new()
                    .with_epochs(3)
                    .with_batch_size(32)
                    .with_accumulation(2)
                    .with_lr(0.2)
                    .with_momentum(0.8)
                    .with_nesterov(true)
                    .with_weight_decay(5e-5)
                    .with_warmup_epochs(1)
                    .with_label_smoothing(0.1)
                    .with_mixup_alpha(Some(0.2))
                    .with_ema_decay(Some(0.999))
                    .with_custom_l2(true)
                    .with_freeze_stages(Some(2))
                    .with_backbone_lr_scale(Some(0.1)),
            )
            .with_augmentation(
                AugmentationConfig::new()
                    .with_image_size(64)
                    .with_min_crop_scale(0.5)
                    .with_rand_augment(Some("rand-m9-mstd0.5-inc1".into()))
                    .with_random_erasing(Some(0.25)),
            )
            .with_loader(LoaderConfig::new().with_workers(Some(3)))
            .with_init(Some(WeightsInit::Checkpoint(
                "runs/digits/model.bpk".into(),
            )))
            .with_seed(9)
            .with_precision(Precision::Bf16);
        assert_eq!(args.training_config().unwrap(), expected);
    }

    #[test]
    fn a_bad_rand_augment_policy_is_refused_with_the_reason() {
        let error = parse(&["--data=d", "--aa=rand-m9-x3"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            error.to_string().contains("unknown section `x3`"),
            "{error}"
        );
        let args = parse(&["--data=d", "--num-classes=2", "--rand-augment=raug15"]).unwrap();
        let config = args.training_config().unwrap();
        assert_eq!(config.augmentation.rand_augment.as_deref(), Some("raug15"));
    }

    #[test]
    fn unknown_pretrained_weights_are_refused_with_the_name() {
        let error = parse(&["--data=d", "--init=pretrained:a9"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("pretrained:a9"), "{error}");
    }

    #[test]
    fn a_config_file_replaces_the_recipe_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("training.json");
        let saved = TrainingConfig::new(RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]))
            .with_recipe(RecipeConfig::new().with_epochs(2));
        saved.save(&path).unwrap();
        let file = path.to_str().unwrap();
        let args = parse(&[
            "--data=d",
            "--config-file",
            file,
            "--output=o",
            "--device=cpu",
        ]);
        assert_eq!(args.unwrap().training_config().unwrap(), saved);

        for flag in [
            "--epochs=3",
            "--arch=A1",
            "--workers=2",
            "--nesterov",
            "--resume",
        ] {
            let error = parse(&["--data=d", "--config-file", file, flag]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag}"
            );
        }
    }

    #[test]
    fn ddp_is_the_default_for_several_cuda_devices_and_refused_off_cuda() {
        let choice = |flags: &[&str]| parse(flags).unwrap().data_parallel();
        assert_eq!(
            choice(&["--data=d", "--device=cpu"]).unwrap(),
            DataParallel::MultiDevice
        );
        assert_eq!(
            choice(&["--data=d", "--device=cpu", "--data-parallel=multi-device"]).unwrap(),
            DataParallel::MultiDevice
        );
        let error = choice(&["--data=d", "--device=cpu", "--data-parallel=ddp"]).unwrap_err();
        assert!(error.to_string().contains("needs --device cuda"), "{error}");
        assert!(parse(&["--data=d", "--data-parallel=ring"]).is_err());
        #[cfg(feature = "cuda")]
        {
            let several = ["--data=d", "--device=cuda", "--devices=0,1"];
            assert_eq!(choice(&several).unwrap(), DataParallel::Ddp);
            let one = ["--data=d", "--device=cuda", "--data-parallel=ddp"];
            assert_eq!(choice(&one).unwrap(), DataParallel::Ddp);
        }
    }

    #[test]
    fn resume_and_a_config_file_refuse_every_recipe_flag() {
        // Every flag of the recipe group, with a value it accepts: its default, else one that
        // parses.
        let command = Flags::command();
        let group = command.get_groups().find(|group| group.get_id() == RECIPE);
        let members: Vec<_> = group.expect("the recipe group").get_args().collect();
        assert!(members.len() > 20, "{members:?}");
        let recipe_flags = command
            .get_arguments()
            .filter(|arg| members.contains(&arg.get_id()));
        for arg in recipe_flags {
            let long = arg.get_long().expect("recipe flags are long flags");
            let flag = match arg.get_action().takes_values() {
                false => format!("--{long}"),
                true => {
                    let value = match arg.get_default_values().first() {
                        Some(default) => default.to_string_lossy().into_owned(),
                        None if long == "aa" => "raug15".into(),
                        None => "1".into(),
                    };
                    format!("--{long}={value}")
                }
            };
            parse(&["--data=d", &flag]).expect(&flag);
            for refusing in ["--resume", "--config-file=training.json"] {
                let error = parse(&["--data=d", refusing, &flag]).unwrap_err();
                assert_eq!(
                    error.kind(),
                    clap::error::ErrorKind::ArgumentConflict,
                    "{refusing} {flag}: {error}"
                );
            }
        }
    }

    #[test]
    fn resume_takes_the_saved_config_and_refuses_recipe_flags() {
        let args = parse(&[
            "--data=d",
            "--output=o",
            "--resume",
            "--device=cpu",
            "--devices=0",
        ]);
        assert!(args.unwrap().resume);
        for flag in [
            "--lr=0.2",
            "--num-classes=5",
            "--ema=0.9",
            "--precision=f32",
        ] {
            let error = parse(&["--data=d", "--resume", flag]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag}"
            );
        }
    }
}
