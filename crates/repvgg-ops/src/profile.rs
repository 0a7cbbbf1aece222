//! Where a training step's time goes inside this crate's ops: wall-clock time per phase (im2col,
//! the products, the batch-norm passes, col2im, copies, the SGD step), summed over calls while
//! profiling is on. What a step spends outside them (Burn's other ops, the autodiff graph,
//! allocation) is the step's time less their sum, which `cargo xtask bench-train --profile`
//! reports beside them.
//!
//! Off by default; when off a phase costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A phase of this crate's ops. `Block*` phases are parts of the fused block op; the
/// `*Op` phases are whole ops, so that their time less their parts' is what the op spends on
/// copies and allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The whole fused block op, forward.
    BlockForwardOp,
    /// im2col of a block's input (padded planes, then the columns), forward.
    BlockIm2col,
    /// The 3x3 and 1x1 products, forward.
    BlockProducts,
    /// Statistics, the three normalized branches' sum and the ReLU, in one pass per channel.
    BlockNorm,
    /// The whole fused block op, backward.
    BlockBackwardOp,
    /// The gradient through the ReLU and the three batch norms.
    BlockNormBackward,
    /// im2col of the block's input again, for the weight gradients.
    BlockIm2colBackward,
    /// The weight gradients' products (3x3 and 1x1).
    BlockWeightGrads,
    /// The column gradients' products (3x3 and 1x1).
    BlockColumnGrads,
    /// Column gradients folded back onto the input's gradient.
    BlockCol2im,
    /// The identity branch's share of the input gradient.
    BlockIdentityGrad,
    /// A stand-alone convolution (frozen and SE blocks), forward.
    ConvForward,
    /// A stand-alone convolution's input and weight gradients.
    ConvBackward,
    /// A stand-alone batch norm, forward.
    NormForward,
    /// A stand-alone batch norm, backward.
    NormBackward,
    /// The SGD step, every parameter.
    Sgd,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 16] = [
        Phase::BlockForwardOp,
        Phase::BlockIm2col,
        Phase::BlockProducts,
        Phase::BlockNorm,
        Phase::BlockBackwardOp,
        Phase::BlockNormBackward,
        Phase::BlockIm2colBackward,
        Phase::BlockWeightGrads,
        Phase::BlockColumnGrads,
        Phase::BlockCol2im,
        Phase::BlockIdentityGrad,
        Phase::ConvForward,
        Phase::ConvBackward,
        Phase::NormForward,
        Phase::NormBackward,
        Phase::Sgd,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::BlockForwardOp => "block op, forward (whole)",
            Phase::BlockIm2col => "  im2col",
            Phase::BlockProducts => "  3x3 + 1x1 products",
            Phase::BlockNorm => "  batch norms, sum, ReLU",
            Phase::BlockBackwardOp => "block op, backward (whole)",
            Phase::BlockNormBackward => "  ReLU and batch norms",
            Phase::BlockIm2colBackward => "  im2col again",
            Phase::BlockWeightGrads => "  weight-gradient products",
            Phase::BlockColumnGrads => "  column-gradient products",
            Phase::BlockCol2im => "  col2im",
            Phase::BlockIdentityGrad => "  identity branch",
            Phase::ConvForward => "other convolutions, forward",
            Phase::ConvBackward => "other convolutions, backward",
            Phase::NormForward => "other batch norms, forward",
            Phase::NormBackward => "other batch norms, backward",
            Phase::Sgd => "SGD step",
        }
    }

    /// Whether the phase is a part of another one (its time is inside that one's).
    pub fn is_part(self) -> bool {
        self.name().starts_with(' ')
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];
static CALLS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];

/// Turns the timers on or off (they keep their sums).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// One phase's sum since the last [`take`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseTime {
    pub phase: Phase,
    pub seconds: f64,
    pub calls: u64,
}

/// Every phase's sum since the last call, and resets them.
pub fn take() -> Vec<PhaseTime> {
    Phase::ALL
        .iter()
        .enumerate()
        .map(|(i, &phase)| PhaseTime {
            phase,
            seconds: NANOS[i].swap(0, Ordering::Relaxed) as f64 * 1e-9,
            calls: CALLS[i].swap(0, Ordering::Relaxed),
        })
        .collect()
}

/// Adds the time from its start to its drop to a phase, when profiling is on.
pub(crate) struct Timer {
    phase: Phase,
    started: Option<Instant>,
}

impl Timer {
    pub fn start(phase: Phase) -> Self {
        let started = ENABLED.load(Ordering::Relaxed).then(Instant::now);
        Self { phase, started }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let index = self.phase as usize;
            NANOS[index].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}
