//! Fine-tuning: the weights a run starts from ([`WeightsInit`]), checked against the run's
//! network as conversion checks them and given a fresh classifier when the classes differ; and
//! the parts of the network a run trains (frozen stages, the backbone's learning rate).

use std::fs::File;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use burn::module::ParamGroup;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::serde::{Deserialize, Serialize};
use burn::tensor::Device;
use repvgg_deploy::{Form, ResolvedCheckpoint, read_checkpoint};
use repvgg_model::{RepVgg, RepVggPlus, TrainingNetwork, Weights};
use sha2::{Digest, Sha256};

use crate::classifier::TrainableNetwork;
use crate::config::{LAST_STAGE, TrainingConfig, WeightsInit};
use crate::error::TrainError;
use crate::recipe::WarmupCosine;
use crate::run::architecture_name;

/// The file of the run directory that records where the weights started.
pub(crate) const INIT_FILE: &str = "init.json";

/// Where a run's weights came from, as its `init.json` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct InitialWeights {
    /// The source as configured: a path, or `pretrained:a0`.
    pub source: String,
    /// The file read (for `pretrained:`, the downloaded copy in the cache).
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The file's SHA-256, in hex: what identifies the starting point later.
    pub sha256: String,
    /// The network the weights were checked against and loaded into.
    pub network: String,
    /// Why the classifier was replaced by a fresh one, when it was.
    pub replaced_head: Option<String>,
}

/// The network a new run of `config` starts with, for a data set of `classes`: fresh weights,
/// or those `config.init` names (checked against `config.model`, with a fresh classifier when
/// the checkpoint's classes are not `classes`), with `recipe.freeze_stages` frozen; and where
/// the weights came from. `device` is an autodiff device for training (seed it first: a fresh
/// classifier draws from it). What [`train`](crate::train) starts from, for programs that run
/// their own training loop.
pub fn starting_network(
    config: &TrainingConfig,
    classes: &[String],
    device: &Device,
) -> Result<(TrainingNetwork, Option<InitialWeights>), TrainError> {
    let network = architecture_name(&config.model);
    let freeze = config.recipe.freeze_stages;
    Ok(match config.model.is_plus() {
        true => {
            let (net, weights) = initial_network::<RepVggPlus>(config, classes, &network, device)?;
            (
                TrainingNetwork::Plus(Box::new(freeze_stages(net, freeze))),
                weights,
            )
        }
        false => {
            let (net, weights) = initial_network::<RepVgg>(config, classes, &network, device)?;
            (
                TrainingNetwork::RepVgg(Box::new(freeze_stages(net, freeze))),
                weights,
            )
        }
    })
}

/// The network a new run starts with, on `device` (an autodiff device, seeded by the caller):
/// fresh weights, or those `config.init` names, checked against `config.model` and with a fresh
/// classifier when the checkpoint's classes are not the data set's `classes`.
pub(crate) fn initial_network<N: TrainableNetwork>(
    config: &TrainingConfig,
    classes: &[String],
    network: &str,
    device: &Device,
) -> Result<(N, Option<InitialWeights>), TrainError> {
    // Drawn first in every case, so that a replaced classifier starts as a scratch run's does.
    let fresh = N::init(&config.model, device);
    let Some(init) = &config.init else {
        return Ok((fresh, None));
    };
    let path = match init {
        WeightsInit::Checkpoint(path) => path.clone(),
        WeightsInit::Pretrained(_) => pretrained_file(init)?,
    };
    let source = init.to_string();
    let failed = |error| TrainError::InitialWeights {
        init: source.clone(),
        source: Box::new(error),
    };
    let checkpoint = read_checkpoint(&path).map_err(failed)?;
    if checkpoint.form == Form::Deploy {
        return Err(TrainError::DeployFormInit { path });
    }
    // A classifier of another shape is kept as the run's, for the load to name it.
    let file_classes = checkpoint
        .weights
        .num_classes()
        .unwrap_or(config.model.num_classes);
    let replaced_head = head_change(
        (file_classes, checkpoint.classes.as_deref()),
        (config.model.num_classes, classes),
    );
    // The run's network with the checkpoint's classifier: every tensor is checked, strictly,
    // with conversion's messages (what the file looks like when it is another architecture).
    let resolved = ResolvedCheckpoint {
        checkpoint,
        config: config.model.clone().with_num_classes(file_classes),
        description: format!("the run's network ({network})"),
    };
    let loaded = resolved.into_model(device).map_err(failed)?;
    let loaded = loaded
        .into_training()
        .and_then(N::from_loaded)
        .expect("a training-time checkpoint loads as the run's family");
    let net = match &replaced_head {
        None => loaded,
        Some(_) => with_fresh_head(loaded, fresh)?,
    };
    let (bytes, sha256) = digest(&path).map_err(TrainError::io(&path))?;
    let record = InitialWeights {
        source,
        path,
        bytes,
        sha256,
        network: network.to_string(),
        replaced_head,
    };
    Ok((net, Some(record)))
}

/// Writes `init.json` into the run directory.
pub(crate) fn record_initial_weights(
    output: &Path,
    weights: &InitialWeights,
) -> Result<(), TrainError> {
    let path = output.join(INIT_FILE);
    let text = serde_json::to_string_pretty(weights).expect("plain fields serialize");
    std::fs::write(&path, text + "\n").map_err(TrainError::io(path))
}

/// What a run directory's `init.json` records, if it has one. A damaged record does not stop
/// a resume (the weights come from the checkpoint): it is reported and left out.
pub(crate) fn recorded_initial_weights(output: &Path) -> Option<InitialWeights> {
    let path = output.join(INIT_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text)
        .inspect_err(|error| log::warn!("{}: unreadable ({error}); left out", path.display()))
        .ok()
}

/// The cached file of the pretrained weights `init` names, downloaded on first use.
#[cfg(feature = "pretrained")]
fn pretrained_file(init: &WeightsInit) -> Result<PathBuf, TrainError> {
    let arch = init
        .pretrained_arch()
        .expect("a pretrained source")
        .map_err(TrainError::Config)?;
    let options = repvgg_deploy::PretrainedOptions::from_env();
    repvgg_deploy::download_pretrained(arch, &options).map_err(|error| TrainError::InitialWeights {
        init: init.to_string(),
        source: Box::new(error),
    })
}

#[cfg(not(feature = "pretrained"))]
fn pretrained_file(init: &WeightsInit) -> Result<PathBuf, TrainError> {
    Err(TrainError::PretrainedUnavailable {
        init: init.to_string(),
    })
}

/// Why the checkpoint's classifier cannot serve the run, if it cannot: `(outputs, class names
/// if recorded)` of the file, then `(outputs, class folders)` of the run.
fn head_change(
    (file_outputs, file_classes): (usize, Option<&[String]>),
    (run_outputs, run_classes): (usize, &[String]),
) -> Option<String> {
    if file_outputs == 0 {
        return Some(format!(
            "the checkpoint has no classifier: a fresh one with {run_outputs} outputs"
        ));
    }
    if file_outputs != run_outputs {
        return Some(format!(
            "its {file_outputs}-class classifier replaced by a fresh one with {run_outputs} outputs"
        ));
    }
    match file_classes {
        Some(names) if names != run_classes => Some(format!(
            "its classifier replaced by a fresh one: the checkpoint's classes ({}) are not the \
             data set's ({})",
            brief(names),
            brief(run_classes)
        )),
        _ => None,
    }
}

/// Up to five names, or the first four and how many in all.
fn brief(names: &[String]) -> String {
    match names.len() {
        0..=5 => names.join(", "),
        n => format!("{}, ... {} in all", names[..4].join(", "), n),
    }
}

/// Whether a tensor belongs to a classifier: the main one or an auxiliary head's linear layer
/// (RepVGGplus), the tensors whose shapes follow the classes.
fn is_classifier(name: &str) -> bool {
    name.starts_with("linear.") || name.contains("_aux.linear.")
}

/// `loaded` with the classifiers of `fresh`.
fn with_fresh_head<N: TrainableNetwork>(loaded: N, fresh: N) -> Result<N, TrainError> {
    let mut weights = Weights::from_module(&loaded)?;
    for (name, data) in Weights::from_module(&fresh)?.iter() {
        if is_classifier(name) {
            weights.insert(name, data.clone());
        }
    }
    Ok(weights.load_into(fresh, "the run's network with a fresh classifier")?)
}

/// The size and SHA-256 (hex) of the file at `path`.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut File::open(path)?, &mut hasher)?;
    let hex = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((bytes, hex))
}

/// The parameters (and batch-norm flags) of the stem and stages `stages`, by module path below
/// `prefix` (`""` for the network itself, `"net."` inside the classifier).
fn stage_group<N: TrainableNetwork>(stages: RangeInclusive<usize>, prefix: &str) -> ParamGroup {
    let names: Vec<&str> = stages.flat_map(N::stage_modules).copied().collect();
    let pattern = format!("^{}({})\\.", prefix.replace('.', r"\."), names.join("|"));
    ParamGroup::from_regex(pattern).expect("module names are plain identifiers")
}

/// `net` with `stage0` (the stem) through `stage{last}` frozen, when `last` is given: no
/// gradients, hence no optimizer state, and batch norms that normalize with (and keep) their
/// running statistics.
pub(crate) fn freeze_stages<N: TrainableNetwork>(net: N, last: Option<usize>) -> N {
    match last {
        None => net,
        Some(last) => net.freeze_group(stage_group::<N>(0..=last, "")),
    }
}

/// The schedule of the classifier, and of the stem and stages at `backbone_lr_scale` times its
/// rate (the learner's parameters are the classifier's, below `net.`).
pub(crate) fn scheduler<N: TrainableNetwork>(
    schedule: WarmupCosine,
    backbone_lr_scale: Option<f64>,
) -> ModuleLrScheduler {
    let Some(backbone_lr_scale) = backbone_lr_scale else {
        return schedule.into();
    };
    let backbone = WarmupCosine {
        base_lr: schedule.base_lr * backbone_lr_scale,
        ..schedule.clone()
    };
    ModuleLrScheduler::new(schedule).with_group(stage_group::<N>(0..=LAST_STAGE, "net."), backbone)
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::{Distribution, Tensor, TensorData};
    use repvgg_model::{PlusLayout, RepVggConfig};

    use super::*;
    use crate::classifier::{Classifier, Objective};
    use crate::recipe::RecipeSgd;

    /// Every parameter's path and whether it trains.
    #[derive(Default)]
    struct Trains {
        path: Vec<String>,
        params: Vec<(String, bool)>,
    }

    impl ModuleVisitor for Trains {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            self.params.push((path, param.is_require_grad()));
        }
    }

    #[test]
    fn freezing_through_stage3_of_repvggplus_freezes_both_its_halves() {
        let config = RepVggConfig::new(vec![1, 1, 4, 1], vec![0.125; 4])
            .with_se_reduction(4)
            .with_num_classes(7)
            .with_plus(Some(PlusLayout::new()));
        let net = RepVggPlus::init(&config, &Device::flex().autodiff());
        let net = freeze_stages(net, Some(3));
        let mut trains = Trains::default();
        net.visit(&mut trains);
        let frozen = [
            "stage0.",
            "stage1.",
            "stage2.",
            "stage3_first.",
            "stage3_second.",
        ];
        // Running statistics are never trained: the parameters are the rest.
        trains
            .params
            .retain(|(path, _)| !path.contains(".running_"));
        for (path, trains) in &trains.params {
            let expected = !frozen.iter().any(|stage| path.starts_with(stage));
            assert_eq!(*trains, expected, "{path}");
        }
        let trained = trains.params.iter().filter(|(_, trains)| *trains);
        let trained: Vec<&str> = trained.map(|(path, _)| path.as_str()).collect();
        for module in ["stage4.", "linear.", "stage1_aux.", "stage3_first_aux."] {
            assert!(
                trained.iter().any(|path| path.starts_with(module)),
                "{module}"
            );
        }
    }

    #[test]
    fn the_backbone_learns_at_its_fraction_of_the_classifiers_rate() {
        let device = Device::flex().autodiff();
        let config = RepVggConfig::new(vec![1, 1, 1, 1], vec![0.25; 4]).with_num_classes(3);
        let model = Classifier::new(RepVgg::init(&config, &device), Objective::default());
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
        let grads = model.net.forward(images).sum().backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let floats = |data: TensorData| data.try_to_vec::<f32>().unwrap();
        let parameters = |model: &Classifier<RepVgg>| {
            let (backbone, head) = (
                &model.net.stage1[0].rbr_dense.conv.weight,
                &model.net.linear.as_ref().unwrap().weight,
            );
            (
                backbone.id,
                head.id,
                floats(backbone.val().into_data()),
                floats(head.val().into_data()),
            )
        };
        let (backbone, head, backbone_before, head_before) = parameters(&model);
        let backbone_grad = floats(grads.get::<4>(backbone).unwrap().into_data());
        let head_grad = floats(grads.get::<2>(head).unwrap().into_data());

        // Plain SGD (no momentum, no decay): a parameter moves by its rate times its gradient.
        let mut schedule = scheduler::<RepVgg>(WarmupCosine::new(0.5, 0, 10), Some(0.1));
        let sgd = RecipeSgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        let model = ModuleOptimizer::from(sgd).step(schedule.step(), model, grads);
        let (_, _, backbone_after, head_after) = parameters(&model);
        let rate = |before: Vec<f32>, after: Vec<f32>, grad: Vec<f32>| {
            let moved: f32 = before.iter().zip(&after).map(|(b, a)| (b - a).abs()).sum();
            moved / grad.iter().map(|g| g.abs()).sum::<f32>()
        };
        let head_rate = rate(head_before, head_after, head_grad);
        let backbone_rate = rate(backbone_before, backbone_after, backbone_grad);
        assert!((head_rate - 0.5).abs() < 1e-4, "classifier at {head_rate}");
        assert!(
            (backbone_rate - 0.05).abs() < 1e-5,
            "backbone at {backbone_rate}"
        );
    }

    #[test]
    fn a_head_is_replaced_when_its_classes_are_not_the_runs() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        let digits = names(&["0", "1", "2"]);
        assert_eq!(head_change((3, None), (3, &digits)), None);
        assert_eq!(head_change((3, Some(&digits)), (3, &digits)), None);
        let replaced = |file, run| head_change(file, run).unwrap();
        assert!(replaced((1000, None), (3, &digits)).contains("1000-class classifier"));
        assert!(replaced((0, None), (3, &digits)).contains("no classifier"));
        let letters = names(&["a", "b", "c"]);
        let reason = replaced((3, Some(&letters)), (3, &digits));
        assert!(
            reason.contains("(a, b, c) are not the data set's (0, 1, 2)"),
            "{reason}"
        );
    }
}
