//! The network as burn-train sees it: a training-time RepVGG plus the training objective
//! (cross-entropy with optional label smoothing and mixup, optional "custom L2").

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{ExecutionError, Int, Tensor};
use burn::train::metric::{AccuracyInput, Adaptor, ItemLazy, LossInput, TopKAccuracyInput};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use repvgg_data::ImageBatch;
use repvgg_model::{RepVgg, RepVggBlock, bn_scale};

use crate::config::RecipeConfig;
use crate::ema::WeightAverage;
use crate::metric::AverageInput;

/// The terms of the training loss besides plain cross-entropy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objective {
    /// Label smoothing of the cross-entropy targets (0 = none).
    pub label_smoothing: f32,
    /// Weight decay applied through the "custom L2" regulariser of the reference instead of the
    /// optimizer (for the 3x3 and 1x1 kernels); `None` when the optimizer decays them.
    pub custom_l2: Option<f64>,
}

impl Objective {
    /// The recipe's loss terms: its label smoothing, and its weight decay as the custom L2 term
    /// when the recipe regularises that way.
    pub fn of(recipe: &RecipeConfig) -> Self {
        Self {
            label_smoothing: recipe.label_smoothing,
            custom_l2: recipe.custom_l2.then_some(recipe.weight_decay),
        }
    }
}

/// A training-time RepVGG classifier with its loss: what burn-train's learner trains.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The network being trained.
    pub net: RepVgg,
    /// The loss terms.
    #[module(skip)]
    pub objective: Objective,
    /// The moving average of the weights, when training keeps one.
    #[module(skip)]
    pub average: Option<WeightAverage>,
}

impl Classifier {
    /// `net` trained for `objective`, without a weight average.
    pub fn new(net: RepVgg, objective: Objective) -> Self {
        Self {
            net,
            objective,
            average: None,
        }
    }

    /// Keep a moving average of the weights, updated at every training step and evaluated
    /// beside the model.
    pub fn with_average(mut self, average: WeightAverage) -> Self {
        self.average = Some(average);
        self
    }

    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let smoothing = self.objective.label_smoothing;
        CrossEntropyLossConfig::new()
            .with_smoothing((smoothing > 0.0).then_some(smoothing))
            .init(&logits.device())
            .forward(logits, targets)
    }

    /// The training loss of a batch: cross-entropy (mixed when the batch is), plus the custom L2
    /// term when enabled.
    pub fn loss(&self, logits: Tensor<2>, batch: &ImageBatch) -> Tensor<1> {
        let mut loss = self.cross_entropy(logits.clone(), batch.targets.clone());
        if let Some(mixup) = &batch.mixup {
            let other = self.cross_entropy(logits, mixup.targets.clone());
            loss = loss.mul_scalar(mixup.lambda) + other.mul_scalar(1.0 - mixup.lambda);
        }
        if let Some(weight_decay) = self.objective.custom_l2 {
            loss = loss + custom_l2(&self.net).mul_scalar(weight_decay / 2.0);
        }
        loss
    }
}

impl TrainStep for Classifier {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        // The weights after the previous optimizer step.
        if let Some(average) = &self.average {
            average.update(&self.net);
        }
        let logits = self.net.forward(batch.images.clone());
        let loss = self.loss(logits.clone(), &batch);
        let grads = loss.backward();
        TrainOutput::new(
            self,
            grads,
            ClassificationOutput::new(loss, logits, batch.targets),
        )
    }
}

impl InferenceStep for Classifier {
    type Input = ImageBatch;
    type Output = ValidationOutput;

    fn step(&self, batch: ImageBatch) -> ValidationOutput {
        let average_logits = self
            .average
            .as_ref()
            .and_then(WeightAverage::average)
            .map(|average| average.forward(batch.images.clone()));
        let logits = self.net.forward(batch.images);
        let loss = self.cross_entropy(logits.clone(), batch.targets.clone());
        ValidationOutput {
            average_logits,
            model: ClassificationOutput::new(loss, logits, batch.targets),
        }
    }
}

/// A validation step's output: the model's, and the logits of the weight average if there is
/// one (for [`AverageAccuracy`](crate::metric::AverageAccuracy)).
pub struct ValidationOutput {
    /// The model's loss, logits and targets.
    pub model: ClassificationOutput,
    /// The weight average's logits, once it has been updated.
    pub average_logits: Option<Tensor<2>>,
}

impl ItemLazy for ValidationOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self {
            model: self.model.sync()?,
            average_logits: self.average_logits,
        })
    }
}

impl Adaptor<AccuracyInput> for ValidationOutput {
    fn adapt(&self) -> AccuracyInput {
        self.model.adapt()
    }
}

impl Adaptor<TopKAccuracyInput> for ValidationOutput {
    fn adapt(&self) -> TopKAccuracyInput {
        self.model.adapt()
    }
}

impl Adaptor<LossInput> for ValidationOutput {
    fn adapt(&self) -> LossInput {
        self.model.adapt()
    }
}

impl Adaptor<AverageInput> for ValidationOutput {
    fn adapt(&self) -> AverageInput {
        AverageInput {
            logits: self.average_logits.clone(),
            targets: self.model.targets.clone(),
        }
    }
}

/// The reference's "custom L2" over every block: the squared 3x3 kernel outside its centre, plus
/// the squared centre of the equivalent fused kernel normalised by the BN scales, so that decay
/// acts on the kernel the deploy model will have. BN scales are treated as constants.
pub fn custom_l2(net: &RepVgg) -> Tensor<1> {
    net.blocks()
        .map(block_l2)
        .reduce(|total, term| total + term)
        .expect("a RepVGG has a stem block")
}

fn block_l2(block: &RepVggBlock) -> Tensor<1> {
    let k3 = block.rbr_dense.conv.weight.val();
    let k1 = block.rbr_1x1.conv.weight.val();
    let [out_channels, ..] = k3.dims();
    let t3 = detached_scale(&block.rbr_dense.bn).reshape([out_channels, 1, 1, 1]);
    let t1 = detached_scale(&block.rbr_1x1.bn).reshape([out_channels, 1, 1, 1]);
    let centre = k3
        .clone()
        .slice([0..out_channels, 0..k1.dims()[1], 1..2, 1..2]);
    let l2_circle = k3.powi_scalar(2).sum() - centre.clone().powi_scalar(2).sum();
    let equivalent = centre * t3.clone() + k1 * t1.clone();
    let l2_eq = (equivalent.powi_scalar(2) / (t3.powi_scalar(2) + t1.powi_scalar(2))).sum();
    l2_circle + l2_eq
}

/// The BN's eval-mode scale ([`bn_scale`]), a constant for the loss: computed on detached
/// tensors.
fn detached_scale(bn: &BatchNorm) -> Tensor<1> {
    bn_scale(
        bn.gamma.val().detach(),
        bn.running_var.value().detach(),
        bn.epsilon,
    )
}
