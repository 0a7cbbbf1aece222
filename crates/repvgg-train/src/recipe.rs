//! The paper's optimisation recipe: SGD with PyTorch-style momentum, weight decay on conv and
//! linear weights only (and RepVGGplus's identity BN weights), and a per-iteration cosine
//! schedule with optional linear warmup.

use std::f64::consts::PI;

use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{LearningRate, ModuleOptimizer, SgdConfig};

use repvgg_model::RepVggConfig;

use crate::config::RecipeConfig;

/// The batch size the base learning rate is quoted for; it scales linearly with the batch.
pub const REFERENCE_BATCH: usize = 256;

/// Learning rate for `batch` images per step, from the rate quoted at a batch of 256.
pub fn scaled_lr(base_lr: f64, batch: usize) -> f64 {
    base_lr * batch as f64 / REFERENCE_BATCH as f64
}

/// The parameters the optimizer never decays, by path suffix: the branch BNs' `gamma` (the
/// identity branch's unless the rule says otherwise), every BN's `beta` and every bias.
const NO_DECAY_SUFFIXES: [&str; 3] = [".bn.gamma", ".beta", ".bias"];
/// The identity branch's BN weight: decayed by RepVGGplus's recipe, not by RepVGG's.
const IDENTITY_BN_WEIGHT: &str = ".rbr_identity.gamma";
/// The parameters the custom L2 loss term regularises instead of the optimizer, when it is on.
const CUSTOM_L2_SUFFIXES: [&str; 2] = ["rbr_dense.conv.weight", "rbr_1x1.conv.weight"];

/// Which parameters the optimizer's weight decay applies to: conv and linear weights (SE and
/// auxiliary heads included); never BN `beta` or a bias, nor a BN `gamma` except, in
/// RepVGGplus's recipe, the identity branch's (the reference decays every weight with more than
/// one dimension and `rbr_identity.weight`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecayRule {
    /// The 3x3 and 1x1 kernels are left to the custom L2 loss term instead.
    pub custom_l2: bool,
    /// The identity branch's BN weight decays too.
    pub identity_bn: bool,
}

impl DecayRule {
    /// The rule of `recipe` for the network `model` describes: RepVGGplus decays its identity
    /// BN weights.
    pub fn of(recipe: &RecipeConfig, model: &RepVggConfig) -> Self {
        Self {
            custom_l2: recipe.custom_l2,
            identity_bn: model.is_plus(),
        }
    }

    /// The path suffixes exempt from decay: the one list that [`decays`](Self::decays) and
    /// [`no_decay_group`](Self::no_decay_group) both read.
    fn exempt_suffixes(self) -> impl Iterator<Item = &'static str> {
        let custom = CUSTOM_L2_SUFFIXES
            .into_iter()
            .filter(move |_| self.custom_l2);
        let identity = std::iter::once(IDENTITY_BN_WEIGHT).filter(move |_| !self.identity_bn);
        NO_DECAY_SUFFIXES.into_iter().chain(identity).chain(custom)
    }

    /// Whether the optimizer's weight decay applies to the parameter at `path`.
    pub fn decays(self, path: &str) -> bool {
        !self.exempt_suffixes().any(|suffix| path.ends_with(suffix))
    }

    /// The parameters [`decays`](Self::decays) exempts, as an optimizer group.
    pub fn no_decay_group(self) -> ParamGroup {
        // The suffixes are dotted identifiers: with their dots escaped they match literally.
        let patterns: Vec<String> = self
            .exempt_suffixes()
            .map(|suffix| format!("{}$", suffix.replace('.', r"\.")))
            .collect();
        ParamGroup::from_any_regexes(patterns).expect("escaped identifiers are valid regexes")
    }
}

/// SGD as PyTorch does it (momentum without dampening, optional Nesterov), with the recipe's
/// weight decay on the parameters that `rule` decays and none on the others.
pub fn sgd(recipe: &RecipeConfig, rule: DecayRule) -> ModuleOptimizer {
    let momentum = MomentumConfig::new()
        .with_momentum(recipe.momentum)
        .with_dampening(0.0)
        .with_nesterov(recipe.nesterov);
    let without_decay = SgdConfig::new().with_momentum(Some(momentum.clone()));
    let with_decay = without_decay.clone().with_weight_decay(
        (recipe.weight_decay > 0.0).then(|| WeightDecayConfig::new(recipe.weight_decay as f32)),
    );
    with_decay
        .init()
        .with_group(rule.no_decay_group(), without_decay.build(), None)
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
