//! One training run: the command-line options, the burn-train learner wired to the data
//! pipeline and the recipe, checkpoints and resumption, and the final training-time and
//! deploy-time models.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::module::Module;
use burn::tensor::{Device, FloatDType};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric, TopKAccuracyMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use clap::ValueEnum;
use repvgg_deploy::{Weights, logit_difference, reparameterize, write_checkpoint};
use repvgg_model::{RepVgg, RepVggArch, RepVggConfig};

use crate::classifier::{Classifier, Objective};
use crate::data::{
    Augmentation, EvalTransform, ImageFolder, ImageLoader, LoaderOptions, RandomResizedCrop,
    TrainTransform,
};
use crate::ema::{AverageCheckpoints, WeightAverage};
use crate::evaluate::{Evaluation, evaluate};
use crate::metric::{AverageAccuracy, ImagesPerSecond};
use crate::recipe::{WarmupCosine, scaled_lr, sgd};
use crate::renderer::LineRenderer;

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (flex).
    Cpu,
    /// Vulkan, Metal, DX12 or WebGPU through wgpu (build with `--features wgpu`).
    Wgpu,
    /// NVIDIA GPUs (build with `--features cuda`).
    Cuda,
}

impl Backend {
    /// The fastest backend this binary was built with.
    pub fn best_available() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else if cfg!(feature = "wgpu") {
            Self::Wgpu
        } else {
            Self::Cpu
        }
    }

    /// The devices to train on: `indices` selects GPUs (several for data-parallel training).
    pub fn devices(self, indices: &[usize]) -> Result<Vec<Device>> {
        let indices = if indices.is_empty() {
            &[0][..]
        } else {
            indices
        };
        match self {
            Self::Cpu => {
                ensure!(
                    indices == [0],
                    "--devices selects GPUs; the CPU is one device"
                );
                Ok(vec![Device::flex()])
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => {
                ensure!(
                    indices == [0],
                    "--devices with several devices is supported on CUDA only"
                );
                Ok(vec![Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)])
            }
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(indices.iter().map(|&i| Device::cuda(i)).collect()),
            #[allow(unreachable_patterns)]
            other => bail!(
                "this binary was built without the {name} backend: rebuild with `--features {name}`",
                name = format!("{other:?}").to_lowercase()
            ),
        }
    }
}

/// Floating-point precision of the weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    /// bfloat16 everywhere (no loss scaling needed), where the device computes in it.
    Bf16,
}

/// Options of a training run; the defaults are the paper's ImageNet recipe.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Data set root in ImageFolder layout: DATA/train/CLASS/IMAGE and DATA/val/CLASS/IMAGE.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Directory for checkpoints, logs, the config, the class list and the final models.
    #[arg(long, value_name = "DIR", default_value = "runs/repvgg")]
    pub output: PathBuf,
    /// Architecture preset (A0 ... D2se).
    #[arg(long, default_value = "A0", conflicts_with = "config")]
    pub arch: RepVggArch,
    /// A RepVggConfig JSON file instead of a preset (custom architectures).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Number of outputs; defaults to the number of class folders.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Side of the training crops and of the evaluation centre crop.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Smallest area fraction of RandomResizedCrop (0.08 as in the paper).
    #[arg(long, default_value_t = 0.08)]
    pub min_crop_scale: f64,
    #[arg(long, default_value_t = 120)]
    pub epochs: usize,
    /// Global batch size (split evenly across --devices).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Accumulate gradients over this many batches per optimizer step (when memory is short).
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Learning rate at an effective batch of 256; scaled linearly to batch x accumulation.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay on conv and linear weights (never on BN parameters or biases).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Epochs of linear warmup before the cosine decay.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Label smoothing of the cross-entropy targets (0.1 in the longer recipe).
    #[arg(long, default_value_t = 0.0)]
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
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seeds the weights, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Backend (default: the fastest this binary was built with).
    #[arg(long, value_enum, default_value_t = Backend::best_available())]
    pub device: Backend,
    /// GPU indices, comma separated; several train data-parallel (CUDA).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Continue the run in --output from its last checkpoint (same schedule position).
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    /// Options from command-line flags (`["--data", "DIR", "--epochs", "3"]`), the binary's
    /// defaults for the rest: how programs and tests set up a run.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            train: TrainArgs,
        }
        let program = std::iter::once(std::ffi::OsString::from("repvgg-train"));
        let flags = program.chain(flags.into_iter().map(Into::into));
        <Flags as clap::Parser>::try_parse_from(flags).map(|parsed| parsed.train)
    }
}

/// What a finished run measured.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub classes: Vec<String>,
    pub config: RepVggConfig,
    /// The training-time model on the validation set (running BN statistics).
    pub validation: Evaluation,
    /// The re-parameterized model on the validation set.
    pub deploy_validation: Evaluation,
    /// The weight average (`--ema`) on the validation set, re-parameterized.
    pub average_validation: Option<Evaluation>,
    /// Largest |logit difference| between the two models over the validation set, relative to
    /// the largest |logit|.
    pub max_relative_logit_difference: f64,
    pub model_path: PathBuf,
    pub deploy_path: PathBuf,
    pub skipped_images: Vec<(PathBuf, String)>,
}

/// Trains as `args` says, then writes `model.bpk` (training time) and `model-deploy.bpk`
/// (re-parameterized, agreement verified) to the output directory.
pub fn train(args: &TrainArgs) -> Result<TrainReport> {
    validate(args)?;
    let train_set = ImageFolder::open(&args.data.join("train")).context("training set")?;
    let val_set = ImageFolder::open(&args.data.join("val")).context("validation set")?;
    ensure!(
        train_set.classes == val_set.classes,
        "{} and {} hold different class folders",
        train_set.root.display(),
        val_set.root.display()
    );
    let classes = train_set.classes.clone();
    let config = model_config(args, classes.len())?;
    let devices = training_devices(args)?;
    let main_device = devices[0].clone();
    let resume_epoch = prepare_output(args)?;
    config
        .save(args.output.join("config.json"))
        .context("writing config.json")?;
    fs::write(args.output.join("classes.txt"), classes.join("\n") + "\n")
        .context("writing classes.txt")?;

    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let per_device_batch = args.batch_size / devices.len();
    let mut train_transform = TrainTransform::new(args.image_size);
    train_transform.crop = RandomResizedCrop {
        scale: (args.min_crop_scale, 1.0),
        ..RandomResizedCrop::new(args.image_size)
    };
    let options = LoaderOptions {
        batch_size: per_device_batch,
        workers,
        seed: args.seed,
        shuffle: true,
        mixup_alpha: args.mixup,
        prefetch: 2,
    };
    let train_loader = ImageLoader::new(
        train_set.samples.clone(),
        Augmentation::Train(train_transform),
        options.clone(),
        &main_device,
    )?
    .start_at_epoch(resume_epoch.unwrap_or(0));
    let skipped = train_loader.skipped();
    let eval_options = LoaderOptions {
        shuffle: false,
        mixup_alpha: None,
        batch_size: per_device_batch,
        ..options
    };
    let val_loader = Arc::new(ImageLoader::new(
        val_set.samples.clone(),
        Augmentation::Eval(EvalTransform::new(args.image_size)),
        eval_options,
        &main_device.clone().inner(),
    )?);

    // Optimizer steps per epoch, as burn-train steps the scheduler: one per accumulated step
    // on each device's share of the data.
    let share = train_set.len() / devices.len();
    let steps_per_epoch = share.div_ceil(per_device_batch).div_ceil(args.accumulation);
    let effective_batch = args.batch_size * args.accumulation;
    let lr = scaled_lr(args.lr, effective_batch);
    let schedule = WarmupCosine::new(
        lr,
        args.warmup_epochs * steps_per_epoch,
        args.epochs * steps_per_epoch,
    );
    let optimizer = sgd(
        args.momentum,
        args.nesterov,
        args.weight_decay,
        args.custom_l2,
    );
    let objective = Objective {
        label_smoothing: args.label_smoothing,
        custom_l2: args.custom_l2.then_some(args.weight_decay),
    };
    main_device.seed(args.seed);
    let mut model = Classifier::new(config.init(&main_device.clone().autodiff()), objective);
    if let Some(decay) = args.ema {
        let average =
            WeightAverage::new(decay, &main_device).with_checkpoints(AverageCheckpoints {
                directory: args.output.join("checkpoint"),
                updates_per_epoch: share.div_ceil(per_device_batch),
            });
        if let Some(epoch) = resume_epoch
            && !average.resume(epoch, model.net.clone()).map_err(|err| {
                anyhow::anyhow!("reading the weight average of epoch {epoch}: {err:?}")
            })?
        {
            println!("no weight average saved at epoch {epoch}: --ema starts a new one");
        }
        model = model.with_average(average);
    }

    println!(
        "training {} ({} classes, {} trainable parameters) on {} ({:?}, {:?})",
        architecture_name(args),
        config.num_classes,
        model.net.num_trainable_params(),
        device_description(&devices),
        args.precision,
        args.device,
    );
    println!(
        "data: {} training / {} validation images, {} workers; {} epochs x {} steps, \
         batch {} x {} accumulation, lr {:.4}",
        train_set.len(),
        val_set.len(),
        workers,
        args.epochs,
        steps_per_epoch,
        args.batch_size,
        args.accumulation,
        lr
    );
    if let Some(epoch) = resume_epoch {
        println!(
            "resuming after epoch {epoch} from {}",
            args.output.display()
        );
    }

    let mut training =
        SupervisedTraining::new(&args.output, Arc::new(train_loader), val_loader.clone())
            .metrics((
                AccuracyMetric::new(),
                TopKAccuracyMetric::new(5),
                LossMetric::new(),
                ImagesPerSecond::new(),
            ))
            .metric_train_numeric(LearningRateMetric::new())
            .with_default_checkpointers()
            .num_epochs(args.epochs)
            .summary();
    if args.accumulation > 1 {
        training = training.grads_accumulation(args.accumulation);
    }
    if args.ema.is_some() {
        training = training.metric_valid_numeric(AverageAccuracy::new());
    }
    if !std::io::stdout().is_terminal() {
        training = training.renderer(Box::new(LineRenderer::new(Duration::from_secs(10))));
    }
    if devices.len() > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::MultiDevice(devices.clone(), MultiDeviceOptim::OptimMainDevice)
                .into(),
        );
    }
    if let Some(epoch) = resume_epoch {
        training = training.checkpoint(epoch);
    }
    let started = Instant::now();
    let result = training.launch(Learner::new(model, optimizer, schedule));
    if let Some(error) = result.error {
        bail!("training failed: {error}");
    }
    if let Some(interruption) = result.interrupted {
        bail!(
            "training interrupted{}; continue with --resume",
            interruption
                .reason
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        );
    }
    drop(result.renderer);
    println!("trained in {:.1?}", started.elapsed());
    finish(
        args,
        result.model,
        config,
        classes,
        val_loader.as_ref(),
        skipped.list(),
    )
}

/// Writes the final training-time and deploy-time models and checks that they agree on the
/// validation set.
fn finish(
    args: &TrainArgs,
    model: Classifier,
    config: RepVggConfig,
    classes: Vec<String>,
    val_loader: &dyn DataLoader<crate::data::ImageBatch>,
    skipped_images: Vec<(PathBuf, String)>,
) -> Result<TrainReport> {
    let net = model.net.clone().valid();
    let device = net.devices()[0].clone();
    let weights = Weights::from_module(&net)?;
    let model_path = args.output.join("model.bpk");
    write_checkpoint(&weights, &config, Some(&classes), &model_path)?;

    let fusing = Instant::now();
    let deploy_weights = reparameterize(&weights, &config, &device)?;
    let deploy = deploy_weights.load_into(config.init_deploy(&device), "the deploy model")?;
    let fused_in = fusing.elapsed();
    let deploy_path = args.output.join("model-deploy.bpk");
    write_checkpoint(&deploy_weights, &config, Some(&classes), &deploy_path)?;

    let validation = evaluate(val_loader, |images| net.forward(images), |_, _| {})?;
    let mut max_relative_logit_difference = 0f64;
    let deploy_validation = evaluate(
        val_loader,
        |images| {
            let expected = net.forward(images.clone()).into_data();
            let logits = deploy.forward(images);
            let difference = logit_difference(&logits.clone().into_data(), &expected);
            max_relative_logit_difference =
                max_relative_logit_difference.max(f64::from(difference.relative));
            logits
        },
        |_, _| {},
    )?;
    let average_validation = match &model.average {
        Some(average) => Some(finish_average(
            args, average, &net, &config, &classes, val_loader,
        )?),
        None => None,
    };
    let disagreements = validation
        .predictions
        .iter()
        .zip(&deploy_validation.predictions)
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "validation ({} images): top-1 {:.2}%, top-5 {:.2}% (training-time model)",
        validation.images,
        100.0 * validation.top1(),
        100.0 * validation.top5()
    );
    println!(
        "re-parameterized in {fused_in:.2?}: deploy top-1 {:.2}%, top-5 {:.2}%, {} of {} top-1 \
         predictions differ, max logit difference {:.1e} of the largest logit",
        100.0 * deploy_validation.top1(),
        100.0 * deploy_validation.top5(),
        disagreements,
        validation.images,
        max_relative_logit_difference
    );
    println!(
        "wrote {} (training time) and {} (deploy), with config.json and classes.txt",
        model_path.display(),
        deploy_path.display()
    );
    if !skipped_images.is_empty() {
        println!("skipped {} unreadable images:", skipped_images.len());
        for (path, reason) in skipped_images.iter().take(10) {
            println!("  {}: {reason}", path.display());
        }
    }
    Ok(TrainReport {
        classes,
        config,
        validation,
        deploy_validation,
        average_validation,
        max_relative_logit_difference,
        model_path,
        deploy_path,
        skipped_images,
    })
}

/// Folds the final weights into the moving average, writes it in both forms and evaluates its
/// deploy form.
fn finish_average(
    args: &TrainArgs,
    average: &WeightAverage,
    net: &RepVgg,
    config: &RepVggConfig,
    classes: &[String],
    val_loader: &dyn DataLoader<crate::data::ImageBatch>,
) -> Result<Evaluation> {
    average.update(net);
    let averaged = average
        .average()
        .context("the weight average was never updated")?;
    let device = averaged.devices()[0].clone();
    let weights = Weights::from_module(&averaged)?;
    let deploy_weights = reparameterize(&weights, config, &device)?;
    let deploy = deploy_weights.load_into(config.init_deploy(&device), "the EMA deploy model")?;
    write_checkpoint(
        &weights,
        config,
        Some(classes),
        &args.output.join("model-ema.bpk"),
    )?;
    write_checkpoint(
        &deploy_weights,
        config,
        Some(classes),
        &args.output.join("model-ema-deploy.bpk"),
    )?;
    let evaluation = evaluate(val_loader, |images| deploy.forward(images), |_, _| {})?;
    println!(
        "weight average (decay {}, {} updates): deploy top-1 {:.2}%, top-5 {:.2}%; wrote \
         model-ema.bpk and model-ema-deploy.bpk",
        average.decay(),
        average.updates(),
        100.0 * evaluation.top1(),
        100.0 * evaluation.top5()
    );
    Ok(evaluation)
}

fn validate(args: &TrainArgs) -> Result<()> {
    ensure!(args.epochs > 0, "--epochs must be at least 1");
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(args.accumulation > 0, "--accumulation must be at least 1");
    ensure!(
        args.lr > 0.0 && args.lr.is_finite(),
        "--lr must be positive"
    );
    ensure!(
        (0.0..1.0).contains(&args.momentum),
        "--momentum must be in [0, 1)"
    );
    ensure!(
        args.weight_decay >= 0.0,
        "--weight-decay must not be negative"
    );
    ensure!(
        args.warmup_epochs <= args.epochs,
        "--warmup-epochs ({}) exceeds --epochs ({})",
        args.warmup_epochs,
        args.epochs
    );
    ensure!(
        (0.0..1.0).contains(&args.label_smoothing),
        "--label-smoothing must be in [0, 1)"
    );
    if let Some(decay) = args.ema {
        ensure!((0.0..1.0).contains(&decay), "--ema DECAY must be in [0, 1)");
    }
    if let Some(alpha) = args.mixup {
        ensure!(
            alpha > 0.0 && alpha.is_finite(),
            "--mixup ALPHA must be positive"
        );
    }
    ensure!(
        args.image_size >= 32,
        "--image-size must be at least 32 (RepVGG downsamples by 32)"
    );
    ensure!(
        args.min_crop_scale > 0.0 && args.min_crop_scale <= 1.0,
        "--min-crop-scale must be in (0, 1]"
    );
    ensure!(args.workers != Some(0), "--workers must be at least 1");
    let devices = args.devices.len().max(1);
    ensure!(
        args.batch_size.is_multiple_of(devices),
        "--batch-size {} does not split evenly over {devices} devices",
        args.batch_size
    );
    Ok(())
}

fn model_config(args: &TrainArgs, found_classes: usize) -> Result<RepVggConfig> {
    let config = match &args.config {
        Some(path) => RepVggConfig::load(path).map_err(|err| {
            anyhow::anyhow!("{}: not a RepVggConfig JSON file: {err}", path.display())
        })?,
        None => args.arch.config(),
    };
    let num_classes = args.num_classes.unwrap_or(found_classes);
    ensure!(
        num_classes >= found_classes,
        "--num-classes {num_classes} is smaller than the {found_classes} class folders"
    );
    let config = config.with_num_classes(num_classes);
    config.validate()?;
    Ok(config)
}

fn architecture_name(args: &TrainArgs) -> String {
    match &args.config {
        Some(path) => format!("custom RepVGG from {}", path.display()),
        None => args.arch.to_string(),
    }
}

fn device_description(devices: &[Device]) -> String {
    match devices {
        [device] => format!("{device:?}"),
        devices => format!("{} devices", devices.len()),
    }
}

fn training_devices(args: &TrainArgs) -> Result<Vec<Device>> {
    let mut devices = args.device.devices(&args.devices)?;
    if args.precision == Precision::Bf16 {
        for device in &mut devices {
            ensure!(
                device.supports_dtype(FloatDType::BF16),
                "{device:?} does not compute in bf16; use --precision f32"
            );
            device
                .configure(FloatDType::BF16)
                .map_err(|err| anyhow::anyhow!("cannot switch {device:?} to bf16: {err:?}"))?;
        }
    }
    Ok(devices)
}

/// Creates the output directory; returns the epoch to resume after with `--resume`. Refuses to
/// start a new run over the checkpoints of another.
fn prepare_output(args: &TrainArgs) -> Result<Option<usize>> {
    fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let last = last_checkpoint(&args.output.join("checkpoint"))?;
    match (args.resume, last) {
        (true, Some(epoch)) => {
            ensure!(
                epoch <= args.epochs,
                "{} holds a checkpoint of epoch {epoch}, beyond --epochs {}",
                args.output.display(),
                args.epochs
            );
            Ok(Some(epoch))
        }
        (true, None) => bail!(
            "--resume: {} holds no checkpoint to resume from",
            args.output.display()
        ),
        (false, Some(epoch)) => bail!(
            "{} already holds checkpoints (up to epoch {epoch}): pass --resume to continue that \
             run, or choose another --output",
            args.output.display()
        ),
        (false, None) => Ok(None),
    }
}

/// The last epoch with a complete checkpoint (model, optimizer and scheduler) in `dir`.
pub fn last_checkpoint(dir: &Path) -> Result<Option<usize>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let epoch_of = |name: &str| {
        name.strip_prefix("model-")?
            .strip_suffix(".bpk")?
            .parse::<usize>()
            .ok()
    };
    let mut last = None;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(epoch) = name.to_str().and_then(epoch_of) {
            let complete = ["optim", "scheduler"]
                .iter()
                .all(|part| dir.join(format!("{part}-{epoch}.bpk")).is_file());
            if complete && last < Some(epoch) {
                last = Some(epoch);
            }
        }
    }
    Ok(last)
}
