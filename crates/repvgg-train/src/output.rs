//! What a run leaves in its output directory: the config it runs with (`training.json`, which is
//! all [`resume`](crate::run::resume) needs), checkpoints to resume from, and at the end the
//! training-time and deploy-time models (plus the EMA's), checked on the validation
//! set.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::config::Config;
use burn::data::dataloader::DataLoader;
use repvgg_data::{Evaluation, ImageBatch, evaluate};
use repvgg_deploy::{DeployModel, write_checkpoint};
use repvgg_model::{Weights, logit_difference};

use crate::checkpoint::{UnusableCheckpoint, last_checkpoint};
use crate::classifier::{Classifier, TrainableNetwork};
use crate::config::TrainingConfig;
use crate::ema::Ema;
use crate::error::TrainError;
use crate::finetune::InitialWeights;

/// The file of the run directory that keeps the run's [`TrainingConfig`].
pub(crate) const TRAINING_CONFIG_FILE: &str = "training.json";

/// What a finished run measured and wrote.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The config the run trained with (as `training.json` keeps it).
    pub config: TrainingConfig,
    /// The class names, output by output (the class folders, sorted).
    pub classes: Vec<String>,
    /// The run directory.
    pub output: PathBuf,
    /// The epoch the run continued after, when it was resumed.
    pub resumed_after: Option<usize>,
    /// The checkpoint the weights started from (`init.json`), when the run did not start from
    /// random weights.
    pub initial_weights: Option<InitialWeights>,
    /// Wall time of the training epochs run by this call (data loading and validation
    /// included).
    pub training_time: Duration,
    /// Wall time of the re-parameterization into the deploy model (with its CPU engine).
    pub conversion_time: Duration,
    /// The training-time model on the validation set (running BN statistics).
    pub validation: Evaluation,
    /// The re-parameterized model on the validation set.
    pub deploy_validation: Evaluation,
    /// Validation images whose top-1 class differs between the two forms.
    pub disagreements: usize,
    /// Largest |logit difference| between the two forms over the validation set, relative to
    /// the largest |logit|.
    pub max_relative_logit_difference: f64,
    /// The EMA, when the recipe keeps one.
    pub ema: Option<EmaReport>,
    /// The training-time model (`model.bpk`).
    pub model_path: PathBuf,
    /// The deploy-time model (`model-deploy.bpk`).
    pub deploy_path: PathBuf,
    /// Images that could not be decoded and were left out, with the reason.
    pub skipped_images: Vec<(PathBuf, String)>,
    /// Newer checkpoints passed over when the run resumed (unreadable or not this network's).
    pub unusable_checkpoints: Vec<UnusableCheckpoint>,
}

/// The moving average of the weights at the end of a run.
#[derive(Clone, Debug)]
pub struct EmaReport {
    /// Updates folded in (training steps).
    pub updates: usize,
    /// Its deploy form on the validation set.
    pub validation: Evaluation,
    /// Its training-time form (`model-ema.bpk`).
    pub model_path: PathBuf,
    /// Its deploy form (`model-ema-deploy.bpk`).
    pub deploy_path: PathBuf,
}

/// Creates the directory of a new run and saves its config there; refuses a directory that
/// holds another run's checkpoints.
pub(crate) fn start_run(output: &Path, config: &TrainingConfig) -> Result<(), TrainError> {
    fs::create_dir_all(output).map_err(TrainError::io(output))?;
    if let Some(epoch) = last_checkpoint(&output.join("checkpoint"))? {
        return Err(TrainError::OutputInUse {
            path: output.to_path_buf(),
            epoch,
        });
    }
    let path = output.join(TRAINING_CONFIG_FILE);
    config.save(&path).map_err(TrainError::io(path))
}

/// The config a run directory keeps.
pub(crate) fn saved_config(output: &Path) -> Result<TrainingConfig, TrainError> {
    let path = output.join(TRAINING_CONFIG_FILE);
    if !path.is_file() {
        return Err(TrainError::NotARun {
            path: output.to_path_buf(),
        });
    }
    TrainingConfig::load(&path).map_err(|source| TrainError::ConfigFile { path, source })
}

/// Writes the files that describe the trained network beside the checkpoints: `config.json`
/// (its `RepVggConfig`) and `classes.txt` (one class name per output).
pub(crate) fn describe_network(
    output: &Path,
    config: &TrainingConfig,
    classes: &[String],
) -> Result<(), TrainError> {
    let path = output.join("config.json");
    config.model.save(&path).map_err(TrainError::io(path))?;
    let path = output.join("classes.txt");
    fs::write(&path, classes.join("\n") + "\n").map_err(TrainError::io(path))
}

/// A run whose epochs are done: what [`finish`] converts, writes and checks.
pub(crate) struct Trained<'a, N: TrainableNetwork> {
    pub config: &'a TrainingConfig,
    pub output: &'a Path,
    pub classes: Vec<String>,
    pub model: Classifier<N>,
    pub val_loader: &'a dyn DataLoader<ImageBatch>,
    pub resumed_after: Option<usize>,
    pub initial_weights: Option<InitialWeights>,
    pub training_time: Duration,
    pub skipped_images: Vec<(PathBuf, String)>,
    pub unusable_checkpoints: Vec<UnusableCheckpoint>,
}

/// Writes the final training-time and deploy-time models (and the EMA's) and checks
/// on the validation set that the two forms agree.
pub(crate) fn finish<N: TrainableNetwork>(trained: Trained<N>) -> Result<TrainReport, TrainError> {
    let Trained {
        config,
        output,
        classes,
        model,
        val_loader,
        resumed_after,
        initial_weights,
        training_time,
        skipped_images,
        unusable_checkpoints,
    } = trained;
    let net = model.net.clone().valid();
    let converting = Instant::now();
    // The deploy model as applications run it (on the CPU backend: the CPU engine).
    let deploy = net.deploy()?;
    let conversion_time = converting.elapsed();
    let (model_path, deploy_path) = save_both_forms(output, "model", &net, &deploy, &classes)?;

    let comparison = compare_forms(val_loader, &net, &deploy)?;
    let ema = match &model.ema {
        Some(ema) => Some(finish_ema(ema, &net, output, &classes, val_loader)?),
        None => None,
    };
    Ok(TrainReport {
        config: config.clone(),
        classes,
        output: output.to_path_buf(),
        resumed_after,
        initial_weights,
        training_time,
        conversion_time,
        disagreements: comparison.disagreements(),
        validation: comparison.training,
        deploy_validation: comparison.deploy,
        max_relative_logit_difference: comparison.max_relative_difference,
        ema,
        model_path,
        deploy_path,
        skipped_images,
        unusable_checkpoints,
    })
}

/// Writes `<stem>.bpk` (training time) and `<stem>-deploy.bpk` with the config and the class
/// names; returns their paths.
fn save_both_forms<N: TrainableNetwork>(
    output: &Path,
    stem: &str,
    net: &N,
    deploy: &DeployModel,
    classes: &[String],
) -> Result<(PathBuf, PathBuf), TrainError> {
    let model_path = output.join(format!("{stem}.bpk"));
    let deploy_path = output.join(format!("{stem}-deploy.bpk"));
    let config = net.config();
    write_checkpoint(
        &Weights::from_module(net)?,
        config,
        Some(classes),
        &model_path,
    )?;
    write_checkpoint(
        &deploy.model().weights()?,
        config,
        Some(classes),
        &deploy_path,
    )?;
    Ok((model_path, deploy_path))
}

/// Both forms over the validation set.
struct Comparison {
    training: Evaluation,
    deploy: Evaluation,
    max_relative_difference: f64,
}

impl Comparison {
    /// Images whose top-1 class differs between the forms.
    fn disagreements(&self) -> usize {
        let pairs = self
            .training
            .predictions
            .iter()
            .zip(&self.deploy.predictions);
        pairs.filter(|(a, b)| a != b).count()
    }
}

/// Both forms on every validation batch, in one pass over the data: their accuracies and the
/// largest logit difference relative to the largest logit.
fn compare_forms<N: TrainableNetwork>(
    val_loader: &dyn DataLoader<ImageBatch>,
    net: &N,
    deploy: &DeployModel,
) -> Result<Comparison, TrainError> {
    let started = Instant::now();
    let (mut training, mut deployed) = (Evaluation::default(), Evaluation::default());
    let mut max_relative = 0f64;
    for batch in val_loader.iter() {
        let batch = batch.map_err(TrainError::Evaluation)?;
        let expected = net.forward(batch.images.clone());
        let actual = deploy.forward(batch.images);
        let difference =
            logit_difference(&actual.clone().into_data(), &expected.clone().into_data());
        max_relative = max_relative.max(f64::from(difference.relative));
        training.add(expected, batch.targets.clone());
        deployed.add(actual, batch.targets);
    }
    training.seconds = started.elapsed().as_secs_f64();
    deployed.seconds = training.seconds;
    Ok(Comparison {
        training,
        deploy: deployed,
        max_relative_difference: max_relative,
    })
}

/// Folds the final weights into the EMA, writes it in both forms and evaluates its deploy form.
fn finish_ema<N: TrainableNetwork>(
    ema: &Ema<N>,
    net: &N,
    output: &Path,
    classes: &[String],
    val_loader: &dyn DataLoader<ImageBatch>,
) -> Result<EmaReport, TrainError> {
    ema.update(net);
    let averaged = ema
        .model()
        .expect("the EMA holds the weights it was just updated with");
    let deploy = averaged.deploy()?;
    let (model_path, deploy_path) =
        save_both_forms(output, "model-ema", &averaged, &deploy, classes)?;
    let validation = evaluate(val_loader, |images| deploy.forward(images), |_, _| {})
        .map_err(TrainError::Evaluation)?;
    Ok(EmaReport {
        updates: ema.updates(),
        validation,
        model_path,
        deploy_path,
    })
}
