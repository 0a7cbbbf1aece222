//! The EMA: an exponential moving average of the network's weights (and BN statistics), kept
//! beside the trained model, evaluated alongside it and written as `model-ema*.bpk`
//! (`--ema DECAY`, `RecipeConfig::ema_decay`).

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::RecordError;
use burn::tensor::{Device, Tensor};
use repvgg_model::RepVgg;

use crate::classifier::TrainableNetwork;

/// The moving average `ema = d * ema + (1 - d) * weights`, with timm's warmup of the decay
/// (`d = min(decay, (1 + n) / (10 + n))` at update `n`) so that early weights fade quickly.
///
/// Cloning shares the average: burn-train clones the model for every step and for validation,
/// and all the clones must see one average.
#[derive(Clone, Debug)]
pub struct Ema<N = RepVgg> {
    decay: f64,
    /// The device whose training steps update the average (the main one with several devices).
    device: Device,
    state: Arc<Mutex<EmaState<N>>>,
    checkpoints: Option<EmaCheckpoints>,
}

/// Where and when the average is saved: as `ema-<epoch>.bpk` beside burn-train's checkpoints,
/// when the updates of an epoch are complete, so that a resumed run continues the same average.
#[derive(Clone, Debug)]
pub struct EmaCheckpoints {
    pub directory: PathBuf,
    /// Training steps (batches) per epoch on the average's device.
    pub updates_per_epoch: usize,
}

#[derive(Debug)]
struct EmaState<N> {
    ema: Option<N>,
    updates: usize,
}

impl<N> Default for EmaState<N> {
    fn default() -> Self {
        Self {
            ema: None,
            updates: 0,
        }
    }
}

impl<N: TrainableNetwork> Ema<N> {
    /// An average updated by the training steps that run on `device`.
    pub fn new(decay: f64, device: &Device) -> Self {
        Self {
            decay,
            device: device.clone().inner(),
            state: Arc::default(),
            checkpoints: None,
        }
    }

    /// Save the average at the end of every epoch (keeping the last two) so that a resumed run
    /// continues it.
    pub fn with_checkpoints(mut self, checkpoints: EmaCheckpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Continues the average saved after `epoch` epochs; `Ok(false)` if there is none (the run
    /// was started without one), and it then starts afresh.
    pub fn resume(&self, epoch: usize, template: N) -> Result<bool, RecordError> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(false);
        };
        let path = checkpoints.path(epoch);
        if !path.is_file() {
            return Ok(false);
        }
        let average = template.valid().try_load_file(&path)?;
        let mut state = self.state.lock().expect("EMA poisoned");
        state.ema = Some(average);
        state.updates = epoch * checkpoints.updates_per_epoch;
        Ok(true)
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Folds `net` into the average if it lives on the average's device (with several devices,
    /// every worker sees the same weights: one of them updates).
    pub fn update(&self, net: &N) {
        let current = net.clone().valid();
        if current.devices().first() != Some(&self.device) {
            return;
        }
        let mut state = self.state.lock().expect("EMA poisoned");
        let updates = state.updates;
        let decay = self
            .decay
            .min((1.0 + updates as f64) / (10.0 + updates as f64));
        state.ema = Some(match state.ema.take() {
            None => current,
            Some(average) => blend(average, &current, decay),
        });
        state.updates += 1;
        // Update `n` folds in the weights after `n - 1` optimizer steps: after the last update of
        // epoch `e`, the next one brings the weights that epoch `e`'s checkpoint holds.
        if let (Some(checkpoints), Some(average)) = (&self.checkpoints, &state.ema)
            && state
                .updates
                .is_multiple_of(checkpoints.updates_per_epoch.max(1))
        {
            let epoch = state.updates / checkpoints.updates_per_epoch.max(1);
            checkpoints.save(average.clone(), epoch);
        }
    }

    /// The averaged network (inference device), once at least one update happened.
    pub fn model(&self) -> Option<N> {
        self.state.lock().expect("EMA poisoned").ema.clone()
    }

    /// Number of updates folded in.
    pub fn updates(&self) -> usize {
        self.state.lock().expect("EMA poisoned").updates
    }
}

/// `decay * average + (1 - decay) * current`, tensor by tensor (parameters and BN statistics).
fn blend<N: Module>(average: N, current: &N, decay: f64) -> N {
    let mut collector = FloatTensors::default();
    current.visit(&mut collector);
    average.map(&mut Blend {
        current: collector.tensors.into_iter(),
        decay,
    })
}

/// Every float tensor of a module, flattened, in visiting order.
#[derive(Default)]
struct FloatTensors {
    tensors: Vec<Tensor<1>>,
}

impl ModuleVisitor for FloatTensors {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let count = value.shape().num_elements();
        self.tensors.push(value.reshape([count]));
    }
}

struct Blend<I> {
    current: I,
    decay: f64,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Blend<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self
            .current
            .next()
            .expect("the average and the network have the same structure");
        let decay = self.decay;
        param.map(|average| {
            let current = current.reshape(average.shape());
            average.mul_scalar(decay) + current.mul_scalar(1.0 - decay)
        })
    }
}

impl EmaCheckpoints {
    fn path(&self, epoch: usize) -> PathBuf {
        self.directory.join(format!("ema-{epoch}.bpk"))
    }

    fn save<N: Module>(&self, average: N, epoch: usize) {
        let written = fs::create_dir_all(&self.directory)
            .map_err(|err| err.to_string())
            .and_then(|()| {
                average
                    .save_file(self.path(epoch))
                    .map_err(|err| format!("{err:?}"))
            });
        match written {
            Ok(()) if epoch > 2 => {
                let _ = fs::remove_file(self.path(epoch - 2));
            }
            Ok(()) => {}
            // A lost average checkpoint only costs a restarted average on resume: warn, go on.
            Err(err) => log::warn!(
                "cannot save the EMA to {}: {err}",
                self.path(epoch).display()
            ),
        }
    }
}
