//! The paper's optimisation recipe: SGD with PyTorch-style momentum, weight decay on conv and
//! linear weights only, and a per-iteration cosine schedule with optional linear warmup.

use std::f64::consts::PI;

use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{LearningRate, ModuleOptimizer, SgdConfig};

use crate::config::RecipeConfig;

/// The batch size the base learning rate is quoted for; it scales linearly with the batch.
pub const REFERENCE_BATCH: usize = 256;

/// Learning rate for `batch` images per step, from the rate quoted at a batch of 256.
pub fn scaled_lr(base_lr: f64, batch: usize) -> f64 {
    base_lr * batch as f64 / REFERENCE_BATCH as f64
}

/// The parameters the optimizer never decays, by path suffix: BN `gamma`/`beta` (the identity
/// branch's too) and every bias.
const NO_DECAY_SUFFIXES: [&str; 3] = [".gamma", ".beta", ".bias"];
/// The parameters the custom L2 loss term regularises instead of the optimizer, when it is on.
const CUSTOM_L2_SUFFIXES: [&str; 2] = ["rbr_dense.conv.weight", "rbr_1x1.conv.weight"];

/// The path suffixes exempt from the optimizer's weight decay: the one rule that [`decays`]
/// and [`no_decay_group`] both read.
fn exempt_suffixes(custom_l2: bool) -> impl Iterator<Item = &'static str> {
    let custom = CUSTOM_L2_SUFFIXES.into_iter().filter(move |_| custom_l2);
    NO_DECAY_SUFFIXES.into_iter().chain(custom)
}

/// Whether the optimizer's weight decay applies to the parameter at `path`: conv and linear
/// weights decay; BN `gamma`/`beta` (the identity branch's too) and every bias do not. With
/// `custom_l2`, the 3x3 and 1x1 kernels are left to the custom L2 loss term instead.
pub fn decays(path: &str, custom_l2: bool) -> bool {
    !exempt_suffixes(custom_l2).any(|suffix| path.ends_with(suffix))
}

/// The parameters [`decays`] exempts, as an optimizer group.
pub fn no_decay_group(custom_l2: bool) -> ParamGroup {
    // The suffixes are dotted identifiers: with their dots escaped they match literally.
    let patterns: Vec<String> = exempt_suffixes(custom_l2)
        .map(|suffix| format!("{}$", suffix.replace('.', r"\.")))
        .collect();
    ParamGroup::from_any_regexes(patterns).expect("escaped identifiers are valid regexes")
}

/// SGD as PyTorch does it (momentum without dampening, optional Nesterov), with the recipe's
/// weight decay on the parameters that [`decays`] and none on the others.
pub fn sgd(recipe: &RecipeConfig) -> ModuleOptimizer {
    let momentum = MomentumConfig::new()
        .with_momentum(recipe.momentum)
        .with_dampening(0.0)
        .with_nesterov(recipe.nesterov);
    let without_decay = SgdConfig::new().with_momentum(Some(momentum.clone()));
    let with_decay = without_decay.clone().with_weight_decay(
        (recipe.weight_decay > 0.0).then(|| WeightDecayConfig::new(recipe.weight_decay as f32)),
    );
    with_decay.init().with_group(
        no_decay_group(recipe.custom_l2),
        without_decay.build(),
        None,
    )
}

/// Linear warmup from `base_lr / warmup_steps` to `base_lr` over `warmup_steps` iterations,
/// then cosine decay to zero over the remaining iterations, stepped once per iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupCosine {
    /// The peak rate, reached at the end of the warmup.
    pub base_lr: f64,
    /// Iterations of linear warmup.
    pub warmup_steps: usize,
    /// Iterations of the whole schedule, warmup included.
    pub total_steps: usize,
    /// Iterations already taken.
    pub step: usize,
}

impl WarmupCosine {
    /// The schedule at its first iteration (the warmup is cut to `total_steps`).
    pub fn new(base_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self {
            base_lr,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
            step: 0,
        }
    }

    /// The learning rate of iteration `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        0.5 * self.base_lr * (1.0 + (PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    fn step(&mut self) -> LearningRate {
        let lr = self.lr_at(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}
