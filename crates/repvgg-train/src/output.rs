//! What a run leaves in its output directory: checkpoints to resume from, and at the end the
//! training-time and deploy-time models (plus the weight average's), checked on the validation
//! set.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::data::dataloader::DataLoader;
use burn::module::Module;
use repvgg_deploy::{DeployModel, Weights, logit_difference, reparameterize, write_checkpoint};
use repvgg_model::{RepVgg, RepVggConfig};

use crate::classifier::Classifier;
use crate::data::ImageBatch;
use crate::ema::WeightAverage;
use crate::evaluate::{Evaluation, evaluate};
use crate::options::TrainArgs;

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

/// Writes the final training-time and deploy-time models and checks that they agree on the
/// validation set.
pub(crate) fn finish(
    args: &TrainArgs,
    model: Classifier,
    config: RepVggConfig,
    classes: Vec<String>,
    val_loader: &dyn DataLoader<ImageBatch>,
    skipped_images: Vec<(PathBuf, String)>,
) -> Result<TrainReport> {
    let net = model.net.clone().valid();
    let device = net.devices()[0].clone();
    let weights = Weights::from_module(&net)?;
    let model_path = args.output.join("model.bpk");
    write_checkpoint(&weights, &config, Some(&classes), &model_path)?;

    let fusing = Instant::now();
    let deploy_weights = reparameterize(&weights, &config, &device)?;
    // The deploy model as applications run it (on the CPU backend: the CPU deploy path).
    let deploy = DeployModel::new(
        deploy_weights.load_into(config.init_deploy(&device), "the deploy model")?,
    );
    let fused_in = fusing.elapsed();
    let deploy_path = args.output.join("model-deploy.bpk");
    write_checkpoint(&deploy_weights, &config, Some(&classes), &deploy_path)?;

    let (validation, deploy_validation, max_relative_logit_difference) =
        compare_forms(val_loader, &net, &deploy)?;
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

/// Both forms on every validation batch, in one pass over the data: their accuracies and the
/// largest logit difference relative to the largest logit.
fn compare_forms(
    val_loader: &dyn DataLoader<ImageBatch>,
    net: &RepVgg,
    deploy: &DeployModel,
) -> Result<(Evaluation, Evaluation, f64)> {
    let started = Instant::now();
    let (mut training, mut deployed) = (Evaluation::default(), Evaluation::default());
    let mut max_relative = 0f64;
    for batch in val_loader.iter() {
        let batch = batch?;
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
    Ok((training, deployed, max_relative))
}

/// Folds the final weights into the moving average, writes it in both forms and evaluates its
/// deploy form.
fn finish_average(
    args: &TrainArgs,
    average: &WeightAverage,
    net: &RepVgg,
    config: &RepVggConfig,
    classes: &[String],
    val_loader: &dyn DataLoader<ImageBatch>,
) -> Result<Evaluation> {
    average.update(net);
    let averaged = average
        .average()
        .context("the weight average was never updated")?;
    let device = averaged.devices()[0].clone();
    let weights = Weights::from_module(&averaged)?;
    let deploy_weights = reparameterize(&weights, config, &device)?;
    let deploy = DeployModel::new(
        deploy_weights.load_into(config.init_deploy(&device), "the EMA deploy model")?,
    );
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

/// Creates the output directory; returns the epoch to resume after with `--resume`. Refuses to
/// start a new run over the checkpoints of another.
pub(crate) fn prepare_output(args: &TrainArgs) -> Result<Option<usize>> {
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
