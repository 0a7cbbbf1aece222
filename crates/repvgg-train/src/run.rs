//! A training run from a [`TrainingConfig`]: [`train`] starts one, [`resume`] continues one from
//! its directory. Each goes through the same steps: open the data, set up the devices, build the
//! loaders and the model, run burn-train's learner, then convert and check the result
//! ([`crate::output`]).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::distributed::{DistributedConfig, ReduceOperation};
use burn::tensor::{Device, FloatDType};
use burn::train::logger::FileMetricLogger;
use burn::train::metric::{
    AccuracyMetric, LearningRateMetric, LossMetric, Metric, TopKAccuracyMetric,
};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use repvgg_data::{Augmentation, ImageFolder, ImageLoader, LoaderOptions, SkippedImages};
use repvgg_model::{RepVgg, RepVggArch, RepVggConfig, RepVggPlus};
use repvgg_ops::{Products, bf16_products_supported, set_products};

use crate::checkpoint::{UnusableCheckpoint, resume_point};
use crate::classifier::{Classifier, Objective, TrainableNetwork};
use crate::config::{Precision, TrainingConfig};
use crate::ema::{Ema, EmaCheckpoints};
use crate::error::TrainError;
use crate::finetune::{
    InitialWeights, freeze_stages, initial_network, record_initial_weights,
    recorded_initial_weights, scheduler,
};
use crate::metric::{EmaAccuracy, ImagesPerSecond};
use crate::output::{TrainReport, Trained, describe_network, finish, saved_config, start_run};
use crate::recipe::{DecayRule, WarmupCosine, scaled_lr, sgd};
use crate::recorder::{EpochRecorder, MetricNames};
use crate::renderer::LineRenderer;

/// Trains the network `config` describes on the ImageFolder set at `data` (`data/train/CLASS/*`
/// and `data/val/CLASS/*`), on `devices` (several train data-parallel; autodiff is added here),
/// and writes to `output`: `training.json` (the config, all [`resume`] needs), checkpoints and
/// the training curves (`metrics.csv`, `curves.svg`: [`crate::curves`]) every epoch, then
/// `model.bpk` (training time) and `model-deploy.bpk` (re-parameterized, agreement checked on
/// the validation set), `config.json` and `classes.txt`.
///
/// Refuses an `output` that holds another run's checkpoints. Progress is shown by burn-train's
/// renderer (its TUI on a terminal, otherwise lines on stdout); everything else is logged
/// (`log`) and returned in the report.
pub fn train(
    config: &TrainingConfig,
    data: &Path,
    devices: &[Device],
    output: &Path,
) -> Result<TrainReport, TrainError> {
    train_with(config, data, devices, DataParallel::MultiDevice, output)
}

/// [`train`], with several devices sharing the work as `data_parallel` says.
pub fn train_with(
    config: &TrainingConfig,
    data: &Path,
    devices: &[Device],
    data_parallel: DataParallel,
    output: &Path,
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    let data = DataSets::open(data, &config.model)?;
    let devices = training_devices(devices, config)?;
    start_run(output, config)?;
    Run {
        config,
        output,
        data,
        devices,
        data_parallel,
        resume_after: None,
        unusable_checkpoints: Vec::new(),
    }
    .execute()
}

/// Continues the run in `output` from its last checkpoint, with the config it kept
/// (`training.json`): the same schedule position, data order, augmentation and EMA,
/// so that the result is the one the uninterrupted run would have had. `data` and `devices` are
/// as for [`train`]. `metrics.csv` keeps its rows up to the checkpoint's epoch (later ones,
/// which a crash may have left, are dropped) and continues, its wall time too; `curves.svg` is
/// redrawn from it.
pub fn resume(output: &Path, data: &Path, devices: &[Device]) -> Result<TrainReport, TrainError> {
    resume_with(output, data, devices, DataParallel::MultiDevice)
}

/// [`resume`], with several devices sharing the work as `data_parallel` says (the devices and
/// how they share the work may differ from the interrupted run's).
pub fn resume_with(
    output: &Path,
    data: &Path,
    devices: &[Device],
    data_parallel: DataParallel,
) -> Result<TrainReport, TrainError> {
    let config = saved_config(output)?;
    config.validate()?;
    let (epoch, unusable_checkpoints) = resume_point(output, &config)?;
    let data = DataSets::open(data, &config.model)?;
    let devices = training_devices(devices, &config)?;
    Run {
        config: &config,
        output,
        data,
        devices,
        data_parallel,
        resume_after: Some(epoch),
        unusable_checkpoints,
    }
    .execute()
}

/// The training and validation folders of a data set.
struct DataSets {
    train: ImageFolder,
    val: ImageFolder,
}

impl DataSets {
    /// Indexes `root/train` and `root/val` and checks that they suit the network: the same
    /// classes, and no more of them than the network has outputs.
    fn open(root: &Path, model: &RepVggConfig) -> Result<Self, TrainError> {
        let train = ImageFolder::open(&root.join("train"))?;
        let val = ImageFolder::open(&root.join("val"))?;
        if train.classes != val.classes {
            let missing_from = |folder: &ImageFolder, classes: &[String]| {
                classes
                    .iter()
                    .filter(|class| !folder.classes.contains(class))
                    .cloned()
                    .collect()
            };
            return Err(TrainError::ClassMismatch {
                only_train: missing_from(&val, &train.classes),
                only_val: missing_from(&train, &val.classes),
                train: train.root,
                val: val.root,
            });
        }
        for (split, folder) in [("training", &train), ("validation", &val)] {
            let empty = folder.empty_classes();
            if !empty.is_empty() {
                log::warn!(
                    "{} classes have no {split} images in {}: {}",
                    empty.len(),
                    folder.root.display(),
                    empty.join(", ")
                );
            }
        }
        if model.num_classes < train.classes.len() {
            return Err(TrainError::TooFewOutputs {
                num_classes: model.num_classes,
                found: train.classes.len(),
                data: train.root,
            });
        }
        Ok(Self { train, val })
    }
}

/// The devices to train on, without autodiff, switched to the config's precision; checks that
/// the batch splits evenly over them.
fn training_devices(
    devices: &[Device],
    config: &TrainingConfig,
) -> Result<Vec<Device>, TrainError> {
    if devices.is_empty() {
        return Err(TrainError::NoDevices);
    }
    let batch_size = config.recipe.batch_size;
    if !batch_size.is_multiple_of(devices.len()) {
        return Err(TrainError::BatchSplit {
            batch_size,
            devices: devices.len(),
        });
    }
    let mut devices: Vec<Device> = devices.iter().map(|d| d.clone().inner()).collect();
    let mixed = config.precision == Precision::Bf16Mixed;
    if mixed {
        if let Some(device) = devices.iter().find(|device| !repvgg_ops::runs_here(device)) {
            return Err(TrainError::MixedPrecisionDevice {
                device: format!("{device:?}"),
            });
        }
        if !bf16_products_supported() {
            return Err(TrainError::MixedPrecisionCpu);
        }
    }
    let products = if mixed { Products::Bf16 } else { Products::F32 };
    set_products(products).expect("bf16 products checked above");
    if config.precision == Precision::Bf16 {
        for device in &mut devices {
            if !device.supports_dtype(FloatDType::BF16) {
                return Err(TrainError::PrecisionUnsupported {
                    device: format!("{device:?}"),
                });
            }
            device
                .configure(FloatDType::BF16)
                .map_err(|source| TrainError::PrecisionSetup {
                    device: format!("{device:?}"),
                    source,
                })?;
        }
    }
    Ok(devices)
}

/// How several devices share a run's training steps. Each device takes its share of every
/// batch either way; they differ in how the gradients meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataParallel {
    /// The gradients are moved to the first device, which steps the optimizer (burn-train's
    /// `MultiDevice`): works on every backend.
    #[default]
    MultiDevice,
    /// Every device keeps a replica and the gradients are all-reduced between them (burn-train's
    /// `DistributedDataParallel`, NCCL): CUDA devices only, the way large runs train. With one
    /// device it runs the same code path (a smoke test of it).
    Ddp,
}

/// A run whose config, data and devices are checked and whose directory is ready.
struct Run<'a> {
    config: &'a TrainingConfig,
    output: &'a Path,
    data: DataSets,
    devices: Vec<Device>,
    data_parallel: DataParallel,
    /// The epoch whose checkpoint the run continues from.
    resume_after: Option<usize>,
    /// Newer checkpoints passed over because they could not be used.
    unusable_checkpoints: Vec<UnusableCheckpoint>,
}

/// The data pipeline of a run.
struct Loaders {
    train: ImageLoader,
    val: Arc<ImageLoader>,
    skipped: Arc<SkippedImages>,
    workers: usize,
}

/// How an epoch divides into steps on each device.
#[derive(Clone, Copy)]
struct Steps {
    /// Batches (training steps) per epoch: what the EMA counts.
    batches: usize,
    /// Optimizer steps per epoch (one per `accumulation` batches): what the scheduler counts.
    optimizer: usize,
}

impl Run<'_> {
    /// Trains the family of network the config describes.
    fn execute(self) -> Result<TrainReport, TrainError> {
        match self.config.model.is_plus() {
            true => self.execute_with::<RepVggPlus>(),
            false => self.execute_with::<RepVgg>(),
        }
    }

    fn execute_with<N: TrainableNetwork>(self) -> Result<TrainReport, TrainError> {
        let classes = self.data.train.classes.clone();
        describe_network(self.output, self.config, &classes)?;
        let loaders = self.loaders()?;
        let steps = self.steps();
        let (model, initial_weights) = self.model::<N>()?;
        let model = self.with_ema(model, steps)?;
        let schedule = self.schedule(steps);
        self.log_start(&model, &loaders, steps, schedule.base_lr);

        let (val_loader, skipped) = (loaders.val.clone(), loaders.skipped.clone());
        let training = self.learning(loaders, steps);
        let optimizer = sgd(
            &self.config.recipe,
            DecayRule::of(&self.config.recipe, &self.config.model),
        );
        let schedule = scheduler::<N>(schedule, self.config.recipe.backbone_lr_scale);
        let started = Instant::now();
        let model = launch(training, Learner::new(model, optimizer, schedule))?;
        finish(Trained {
            config: self.config,
            output: self.output,
            classes,
            model,
            val_loader: val_loader.as_ref(),
            resumed_after: self.resume_after,
            initial_weights,
            training_time: started.elapsed(),
            skipped_images: skipped.list(),
            unusable_checkpoints: self.unusable_checkpoints,
        })
    }

    /// The training loader (augmented, shuffled, mixed up if the recipe says so, positioned at
    /// the epoch the run continues with) and the validation loader, each batch on the main device.
    fn loaders(&self) -> Result<Loaders, TrainError> {
        let config = self.config;
        let workers = config.loader.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        });
        let train_transform = config.augmentation.train_transform()?;
        let options = LoaderOptions {
            batch_size: self.per_device_batch(),
            workers,
            seed: config.seed,
            shuffle: true,
            mixup_alpha: config.recipe.mixup_alpha,
            prefetch: 2,
        };
        let eval_options = LoaderOptions {
            shuffle: false,
            mixup_alpha: None,
            ..options.clone()
        };
        let main_device = &self.devices[0];
        let train = ImageLoader::new(
            self.data.train.samples.clone(),
            Augmentation::Train(train_transform),
            options,
            main_device,
        )?
        .start_at_epoch(self.resume_after.unwrap_or(0));
        let val = ImageLoader::new(
            self.data.val.samples.clone(),
            Augmentation::Eval(config.augmentation.eval_transform()),
            eval_options,
            main_device,
        )?;
        Ok(Loaders {
            skipped: train.skipped(),
            train,
            val: Arc::new(val),
            workers,
        })
    }

    fn per_device_batch(&self) -> usize {
        self.config.recipe.batch_size / self.devices.len()
    }

    /// Steps per epoch as burn-train takes them: each device steps through its share of the
    /// training set.
    fn steps(&self) -> Steps {
        let share = self.data.train.len() / self.devices.len();
        let batches = share.div_ceil(self.per_device_batch());
        Steps {
            batches,
            optimizer: batches.div_ceil(self.config.recipe.accumulation),
        }
    }

    /// The learning rate, scaled to the effective batch, warmed up and then decayed over the
    /// run's optimizer steps.
    fn schedule(&self, steps: Steps) -> WarmupCosine {
        let recipe = &self.config.recipe;
        let lr = scaled_lr(recipe.lr, recipe.batch_size * recipe.accumulation);
        WarmupCosine::new(
            lr,
            recipe.warmup_epochs * steps.optimizer,
            recipe.epochs * steps.optimizer,
        )
    }

    /// The seeded network with its loss, its frozen stages frozen. A new run starts from the
    /// weights `init` names (recorded in `init.json`); a resumed one is given its checkpoint's
    /// by the learner.
    fn model<N: TrainableNetwork>(
        &self,
    ) -> Result<(Classifier<N>, Option<InitialWeights>), TrainError> {
        let device = &self.devices[0];
        device.seed(self.config.seed);
        let autodiff = device.clone().autodiff();
        if self.resume_after.is_some() {
            let net = N::init(&self.config.model, &autodiff);
            let net = freeze_stages(net, self.config.recipe.freeze_stages);
            let model = Classifier::new(net, Objective::of(&self.config.recipe));
            return Ok((model, recorded_initial_weights(self.output)));
        }
        let network = architecture_name(&self.config.model);
        let classes = &self.data.train.classes;
        let (net, initial_weights) =
            initial_network::<N>(self.config, classes, &network, &autodiff)?;
        if let Some(weights) = &initial_weights {
            record_initial_weights(self.output, weights)?;
            log::info!(
                "initial weights: {} (sha256 {}){}",
                weights.path.display(),
                weights.sha256,
                weights
                    .replaced_head
                    .as_ref()
                    .map(|reason| format!("; {reason}"))
                    .unwrap_or_default()
            );
        }
        let net = freeze_stages(net, self.config.recipe.freeze_stages);
        Ok((
            Classifier::new(net, Objective::of(&self.config.recipe)),
            initial_weights,
        ))
    }

    /// `model` with the EMA when the recipe keeps one (continued from its checkpoint when the
    /// run resumes).
    fn with_ema<N: TrainableNetwork>(
        &self,
        model: Classifier<N>,
        steps: Steps,
    ) -> Result<Classifier<N>, TrainError> {
        let Some(decay) = self.config.recipe.ema_decay else {
            return Ok(model);
        };
        let average = Ema::new(decay, &self.devices[0]).with_checkpoints(EmaCheckpoints {
            directory: self.output.join("checkpoint"),
            updates_per_epoch: steps.batches,
        });
        if let Some(epoch) = self.resume_after {
            let resumed = average
                .resume(epoch, model.net.clone())
                .map_err(|source| TrainError::AverageCheckpoint { epoch, source })?;
            if !resumed {
                log::warn!("no EMA saved at epoch {epoch}: it starts anew");
            }
        }
        Ok(model.with_ema(average))
    }

    fn log_start<N: TrainableNetwork>(
        &self,
        model: &Classifier<N>,
        loaders: &Loaders,
        steps: Steps,
        lr: f64,
    ) {
        let (config, recipe) = (self.config, &self.config.recipe);
        let devices = match (self.devices.as_slice(), self.data_parallel) {
            ([device], DataParallel::MultiDevice) => format!("{device:?}"),
            ([device], DataParallel::Ddp) => format!("{device:?} (DDP)"),
            (devices, DataParallel::MultiDevice) => format!("{} devices", devices.len()),
            (devices, DataParallel::Ddp) => format!("{} devices (DDP)", devices.len()),
        };
        log::info!(
            "training {} ({} classes, {} trainable parameters) on {devices} ({})",
            architecture_name(&config.model),
            config.model.num_classes,
            model.net.num_trainable_params(),
            config.precision.name(),
        );
        log::info!(
            "data: {} training / {} validation images, {} workers; {} epochs x {} steps, \
             batch {} x {} accumulation, lr {lr:.4}",
            self.data.train.len(),
            self.data.val.len(),
            loaders.workers,
            recipe.epochs,
            steps.optimizer,
            recipe.batch_size,
            recipe.accumulation,
        );
        if let Some(epoch) = self.resume_after {
            log::info!(
                "resuming after epoch {epoch} from {}",
                self.output.display()
            );
        }
    }

    /// burn-train's supervised training: metrics, checkpoints every epoch, the progress display,
    /// accumulation, the multi-device strategy, and the checkpoint to continue from.
    fn learning<N: TrainableNetwork>(
        &self,
        loaders: Loaders,
        steps: Steps,
    ) -> SupervisedTraining<Classifier<N>> {
        let recipe = &self.config.recipe;
        let accuracy = AccuracyMetric::new();
        // Top-5, or top-k of all the classes of a smaller problem (burn-train's metric panics
        // when k exceeds the classes).
        let top_k = TopKAccuracyMetric::new(5.min(self.config.model.num_classes));
        let (loss, speed, lr) = (
            LossMetric::new(),
            ImagesPerSecond::new(),
            LearningRateMetric::new(),
        );
        // metrics.csv and curves.svg, from the same metrics' epoch values.
        let curves = EpochRecorder::start(
            self.output,
            self.resume_after,
            steps.batches,
            MetricNames {
                loss: loss.name(),
                top1: accuracy.name(),
                top5: top_k.name(),
                lr: lr.name(),
                images_per_second: speed.name(),
            },
        );
        let mut training =
            SupervisedTraining::new(self.output, Arc::new(loaders.train), loaders.val)
                .metrics((accuracy, top_k, loss, speed))
                .metric_train_numeric(lr)
                // burn-train's own logger (the per-iteration `.log` files, which its checkpoint
                // strategy and summary read back) first: registering any logger replaces it.
                .with_metric_logger(FileMetricLogger::new(self.output))
                .with_metric_logger(curves)
                .with_default_checkpointers()
                // burn-train would install a process-wide tracing subscriber (experiment.log); a
                // library leaves the choice of logger to the application.
                .with_application_logger(None)
                .num_epochs(recipe.epochs)
                .summary();
        if recipe.accumulation > 1 {
            training = training.grads_accumulation(recipe.accumulation);
        }
        if recipe.ema_decay.is_some() {
            training = training.metric_valid_numeric(EmaAccuracy::new());
        }
        if !std::io::stdout().is_terminal() {
            training = training.renderer(Box::new(LineRenderer::new(Duration::from_secs(10))));
        }
        let devices = self.devices.clone();
        match self.data_parallel {
            DataParallel::Ddp => {
                let config = DistributedConfig {
                    all_reduce_op: ReduceOperation::Mean,
                };
                training =
                    training.with_training_strategy(ExecutionStrategy::ddp(devices, config).into());
            }
            DataParallel::MultiDevice if devices.len() > 1 => {
                let strategy =
                    ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice);
                training = training.with_training_strategy(strategy.into());
            }
            DataParallel::MultiDevice => {}
        }
        if let Some(epoch) = self.resume_after {
            training = training.checkpoint(epoch);
        }
        training
    }
}

/// Runs the learner to its last epoch; the trained model, or why there is none.
fn launch<N: TrainableNetwork>(
    training: SupervisedTraining<Classifier<N>>,
    learner: Learner<Classifier<N>>,
) -> Result<Classifier<N>, TrainError> {
    let result = training.launch(learner);
    if let Some(error) = result.error {
        return Err(TrainError::Failed(error));
    }
    if let Some(interruption) = result.interrupted {
        return Err(TrainError::Interrupted {
            reason: interruption.reason,
        });
    }
    // Dropping the renderer hands the terminal back (burn-train's TUI) before anything else
    // is shown.
    drop(result.renderer);
    Ok(result.model)
}

/// "RepVGG-A0" for a preset (with any number of classes), "a custom RepVGG" (or RepVGGplus)
/// otherwise.
pub(crate) fn architecture_name(config: &RepVggConfig) -> String {
    RepVggArch::ALL
        .into_iter()
        .find(|arch| arch.config().with_num_classes(config.num_classes) == *config)
        .map_or_else(
            || match config.is_plus() {
                true => "a custom RepVGGplus".to_string(),
                false => "a custom RepVGG".to_string(),
            },
            |arch| arch.to_string(),
        )
}
