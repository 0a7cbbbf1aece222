//! One training run: the burn-train learner wired to the data pipeline, the recipe and the
//! devices; its options are in [`crate::options`], what it writes in [`crate::output`].

use std::fs;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::config::Config;
use burn::tensor::{Device, FloatDType};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric, TopKAccuracyMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use repvgg_model::RepVggConfig;

use crate::classifier::{Classifier, Objective};
use crate::data::{
    Augmentation, EvalTransform, ImageFolder, ImageLoader, LoaderOptions, RandomResizedCrop,
    TrainTransform,
};
use crate::ema::{AverageCheckpoints, WeightAverage};
use crate::metric::{AverageAccuracy, ImagesPerSecond};
pub use crate::options::{Backend, Precision, TrainArgs};
pub use crate::output::{TrainReport, last_checkpoint};
use crate::output::{finish, prepare_output};
use crate::recipe::{WarmupCosine, scaled_lr, sgd};
use crate::renderer::LineRenderer;

/// Trains as `args` says, then writes `model.bpk` (training time) and `model-deploy.bpk`
/// (re-parameterized, agreement verified) to the output directory.
pub fn train(args: &TrainArgs) -> Result<TrainReport> {
    args.validate()?;
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
