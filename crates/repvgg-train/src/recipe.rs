//! The paper's optimisation recipe: SGD with PyTorch-style momentum, weight decay on conv and
//! linear weights only (and RepVGGplus's identity BN weights), and a per-iteration cosine
//! schedule with optional linear warmup.

use std::f64::consts::PI;

use burn::module::ParamGroup;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::{
    LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource, join_path,
};
use burn::tensor::{Device, Tensor};

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
    let without_decay = RecipeSgd {
        momentum: recipe.momentum,
        weight_decay: 0.0,
        nesterov: recipe.nesterov,
    };
    let with_decay = RecipeSgd {
        weight_decay: recipe.weight_decay,
        ..without_decay
    };
    ModuleOptimizer::from(with_decay).with_group(rule.no_decay_group(), without_decay, None)
}

/// SGD with PyTorch's momentum (no dampening, optional Nesterov) and weight decay, as Burn's
/// `Sgd` computes it, in one pass over each parameter (repvgg-ops' step: on Burn's CPU backend
/// fused and in place, elsewhere Burn's tensor operations). Its state is recorded under the
/// names Burn's `Sgd` uses (`momentum.velocity`), so checkpoints of either load into the other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecipeSgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// [`RecipeSgd`]'s state for one parameter: its velocity, after the first step.
#[derive(Clone)]
pub struct SgdState<const D: usize> {
    pub velocity: Option<Tensor<D>>,
}

/// The record group Burn's `Sgd` keeps its velocity in.
const MOMENTUM: &str = "momentum";

impl<const D: usize> RecordState for SgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(velocity) = &self.velocity {
            let group = join_path(prefix, MOMENTUM);
            out.push_tensor(&group, "velocity", velocity.to_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let velocity = src.take_tensor(&join_path(prefix, MOMENTUM), "velocity");
        Some(Self {
            velocity: velocity.map(|data| Tensor::from_data(data, device)),
        })
    }
}

impl Optimizer for RecipeSgd {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SgdState<D>>,
    ) -> (Tensor<D>, Option<SgdState<D>>) {
        let sgd = repvgg_ops::Sgd {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        };
        let velocity = state.and_then(|state| state.velocity);
        let (tensor, velocity) = repvgg_ops::sgd_step(tensor, grad, velocity, sgd);
        let velocity = Some(velocity);
        (tensor, Some(SgdState { velocity }))
    }

    fn to_device<const D: usize>(state: SgdState<D>, device: &Device) -> SgdState<D> {
        SgdState {
            velocity: state.velocity.map(|velocity| velocity.to_device(device)),
        }
    }
}

/// Linear warmup from `base_lr / warmup_steps` to `base_lr` over `warmup_steps` iterations,
/// then cosine decay to zero over the remaining iterations, stepped once per iteration.
///
/// burn-optim's schedulers compose nearly the same curve, `SequentialLrScheduler` of
/// `LinearLrScheduler(base_lr / warmup_steps, base_lr, warmup_steps - 1)` and
/// `CosineAnnealingLrScheduler(base_lr, total_steps - warmup_steps)` (a test compares them at
/// every step), but not every schedule a recipe asks for, so the recipe keeps this one:
/// - they refuse a rate above 1, and the rate here scales with the batch (0.1 at 256 is 1.6 at
///   4,096, the large-batch recipes' range);
/// - they refuse a warmup as long as the run (the cosine phase would have no iteration);
/// - during the warmup the linear scheduler's rate is `final - step_size * remaining`, a few
///   ulps (up to about 1e-14 relative) from `base_lr * (step + 1) / warmup_steps`, so resuming a
///   run checkpointed under one with the other would change its curve in the last digits. The
///   cosine phase is bit-identical.
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

#[cfg(test)]
mod tests {
    use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
    use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
    use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;

    use super::*;

    /// The schedule composed from burn-optim's schedulers, where they can express it.
    fn burn_schedule(
        base_lr: f64,
        warmup_steps: usize,
        total_steps: usize,
    ) -> Result<ModuleLrScheduler, String> {
        let cosine = CosineAnnealingLrSchedulerConfig::new(base_lr, total_steps - warmup_steps);
        if warmup_steps == 0 {
            return cosine.init();
        }
        let warmup_start = base_lr / warmup_steps as f64;
        let linear = LinearLrSchedulerConfig::new(warmup_start, base_lr, (warmup_steps - 1).max(1));
        SequentialLrSchedulerConfig::new(vec![linear.into(), cosine.into()], vec![warmup_steps])
            .init()
    }

    #[test]
    fn burns_schedulers_give_the_same_curve_but_for_rounding_in_the_warmup() {
        for (base_lr, warmup_steps, total_steps) in [
            (0.1, 0, 1_000),
            (0.05, 1, 50),
            (0.1, 5, 100),
            (0.2, 30, 500),
            (0.4, 100, 1_100),
        ] {
            let ours = WarmupCosine::new(base_lr, warmup_steps, total_steps);
            let mut burn = burn_schedule(base_lr, warmup_steps, total_steps).unwrap();
            for step in 0..total_steps {
                let (expected, actual) = (ours.lr_at(step), burn.step().base());
                let case = format!("lr {base_lr}, warmup {warmup_steps}, step {step}");
                if step < warmup_steps {
                    let relative = (actual - expected).abs() / expected;
                    assert!(relative < 1e-14, "{case}: {actual} vs {expected}");
                } else {
                    assert_eq!(actual.to_bits(), expected.to_bits(), "{case}");
                }
            }
        }
        // The warmup does differ in the last digits: the reason the recipe keeps its own.
        let ours = WarmupCosine::new(0.2, 30, 500);
        let mut burn = burn_schedule(0.2, 30, 500).unwrap();
        assert!((0..30).any(|step| ours.lr_at(step) != burn.step().base()));
    }

    #[test]
    fn burns_schedulers_refuse_schedules_the_recipe_runs() {
        // 0.1 at a batch of 256 is 1.6 at 4,096.
        let large_batch = scaled_lr(0.1, 4_096);
        assert!(burn_schedule(large_batch, 5, 100).is_err());
        let mut ours = WarmupCosine::new(large_batch, 5, 100);
        assert_eq!(ours.step(), large_batch / 5.0);
        // A warmup as long as the run leaves the cosine scheduler no iteration.
        assert!(burn_schedule(0.1, 10, 10).is_err());
        let ours = WarmupCosine::new(0.1, 10, 10);
        assert_eq!(ours.lr_at(9), 0.1);
    }
}
