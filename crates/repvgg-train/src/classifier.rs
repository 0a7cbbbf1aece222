//! The network as burn-train sees it: a training-time RepVGG or RepVGGplus plus the training
//! objective (cross-entropy with optional label smoothing and mixup, RepVGGplus's auxiliary
//! losses, optional "custom L2").

use burn::module::{Module, ModuleDisplay};
use burn::nn::BatchNorm;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, ExecutionError, Int, Tensor};
use burn::train::metric::{AccuracyInput, Adaptor, ItemLazy, LossInput, TopKAccuracyInput};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use repvgg_data::ImageBatch;
use repvgg_deploy::{DeployError, DeployModel};
use repvgg_model::{
    PlusOutput, RepVgg, RepVggBlock, RepVggConfig, RepVggPlus, TrainingNetwork, bn_scale,
};

use crate::config::RecipeConfig;
use crate::ema::Ema;
use crate::metric::EmaInput;

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

/// Weight of each auxiliary head's loss in RepVGGplus's objective (the reference's `main.py`).
pub const AUX_LOSS_WEIGHT: f64 = 0.1;

/// What training needs from a training-time network, whichever family: [`RepVgg`] or
/// [`RepVggPlus`].
pub trait TrainableNetwork: Module + ModuleDisplay + 'static {
    /// The network `config` describes, with fresh weights on `device`.
    fn init(config: &RepVggConfig, device: &Device) -> Self;

    /// The network a checkpoint held, if it is of this family.
    fn from_loaded(net: TrainingNetwork) -> Option<Self>;

    /// The module names of the stem (`stage` 0) and of the stages 1 to 4: what fine-tuning
    /// freezes and gives the backbone's learning rate.
    fn stage_modules(stage: usize) -> &'static [&'static str];

    /// The architecture.
    fn config(&self) -> &RepVggConfig;

    /// The main logits and any auxiliary heads' logits (none for RepVGG).
    fn forward_with_aux(&self, images: Tensor<4>) -> PlusOutput;

    /// The main logits only (what validation and the deploy form compute).
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;

    /// Every block, the stem first (what the custom L2 term regularises).
    fn blocks(&self) -> Vec<&RepVggBlock>;

    /// Trainable parameters (BN running statistics excluded).
    fn num_trainable_params(&self) -> usize;

    /// The deploy model (re-parameterized; auxiliary heads dropped), prepared for inference.
    fn deploy(&self) -> Result<DeployModel, DeployError>;
}

impl TrainableNetwork for RepVgg {
    fn init(config: &RepVggConfig, device: &Device) -> Self {
        config.init(device)
    }

    fn from_loaded(net: TrainingNetwork) -> Option<Self> {
        match net {
            TrainingNetwork::RepVgg(net) => Some(*net),
            TrainingNetwork::Plus(_) => None,
        }
    }

    fn stage_modules(stage: usize) -> &'static [&'static str] {
        [
            &["stage0"][..],
            &["stage1"],
            &["stage2"],
            &["stage3"],
            &["stage4"],
        ][stage]
    }

    fn config(&self) -> &RepVggConfig {
        RepVgg::config(self)
    }

    fn forward_with_aux(&self, images: Tensor<4>) -> PlusOutput {
        PlusOutput {
            main: RepVgg::forward(self, images),
            aux: Vec::new(),
        }
    }

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        RepVgg::forward(self, images)
    }

    fn blocks(&self) -> Vec<&RepVggBlock> {
        RepVgg::blocks(self).collect()
    }

    fn num_trainable_params(&self) -> usize {
        RepVgg::num_trainable_params(self)
    }

    fn deploy(&self) -> Result<DeployModel, DeployError> {
        DeployModel::from_training(self)
    }
}

impl TrainableNetwork for RepVggPlus {
    fn init(config: &RepVggConfig, device: &Device) -> Self {
        RepVggPlus::new(config, device)
    }

    fn from_loaded(net: TrainingNetwork) -> Option<Self> {
        match net {
            TrainingNetwork::Plus(net) => Some(*net),
            TrainingNetwork::RepVgg(_) => None,
        }
    }

    fn stage_modules(stage: usize) -> &'static [&'static str] {
        // The third stage is two modules, each followed by an auxiliary head of its own.
        [
            &["stage0"][..],
            &["stage1"],
            &["stage2"],
            &["stage3_first", "stage3_second"],
            &["stage4"],
        ][stage]
    }

    fn config(&self) -> &RepVggConfig {
        RepVggPlus::config(self)
    }

    fn forward_with_aux(&self, images: Tensor<4>) -> PlusOutput {
        RepVggPlus::forward_with_aux(self, images)
    }

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        RepVggPlus::forward(self, images)
    }

    fn blocks(&self) -> Vec<&RepVggBlock> {
        RepVggPlus::blocks(self)
    }

    fn num_trainable_params(&self) -> usize {
        RepVggPlus::num_trainable_params(self)
    }

    fn deploy(&self) -> Result<DeployModel, DeployError> {
        DeployModel::from_training(self)
    }
}

/// A training-time classifier with its loss: what burn-train's learner trains. (`A` is always
/// `Ema<N>`: Burn's derive wants the skipped field's type to have its own parameter.)
#[derive(Module, Debug)]
pub struct Classifier<N: TrainableNetwork = RepVgg, A = Ema<N>> {
    /// The network being trained.
    pub net: N,
    /// The loss terms.
    #[module(skip)]
    pub objective: Objective,
    /// The moving average of the weights, when training keeps one.
    #[module(skip)]
    pub ema: Option<A>,
}

impl<N: TrainableNetwork> Classifier<N> {
    /// `net` trained for `objective`, without an EMA.
    pub fn new(net: N, objective: Objective) -> Self {
        Self {
            net,
            objective,
            ema: None,
        }
    }

    /// Keep a moving average of the weights, updated at every training step and evaluated
    /// beside the model.
    pub fn with_ema(mut self, average: Ema<N>) -> Self {
        self.ema = Some(average);
        self
    }

    fn cross_entropy(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let smoothing = self.objective.label_smoothing;
        CrossEntropyLossConfig::new()
            .with_smoothing((smoothing > 0.0).then_some(smoothing))
            .init(&logits.device())
            .forward(logits, targets)
    }

    /// The cross-entropy of `logits` against the batch's targets, mixed when the batch is (with
    /// the label smoothing of the objective).
    fn classification_loss(&self, logits: Tensor<2>, batch: &ImageBatch) -> Tensor<1> {
        let loss = self.cross_entropy(logits.clone(), batch.targets.clone());
        match &batch.mixup {
            Some(mixup) => {
                let other = self.cross_entropy(logits, mixup.targets.clone());
                loss.mul_scalar(mixup.lambda) + other.mul_scalar(1.0 - mixup.lambda)
            }
            None => loss,
        }
    }

    /// The training loss of a batch: cross-entropy (mixed when the batch is) of the main
    /// logits, plus [`AUX_LOSS_WEIGHT`] times that of each auxiliary head (RepVGGplus), plus
    /// the custom L2 term when enabled.
    pub fn loss(&self, output: &PlusOutput, batch: &ImageBatch) -> Tensor<1> {
        let mut loss = self.classification_loss(output.main.clone(), batch);
        for aux in &output.aux {
            let aux_loss = self.classification_loss(aux.clone(), batch);
            loss = loss + aux_loss.mul_scalar(AUX_LOSS_WEIGHT);
        }
        if let Some(weight_decay) = self.objective.custom_l2 {
            loss = loss + custom_l2(&self.net).mul_scalar(weight_decay / 2.0);
        }
        loss
    }
}

impl<N: TrainableNetwork> TrainStep for Classifier<N> {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        // The weights after the previous optimizer step.
        if let Some(average) = &self.ema {
            average.update(&self.net);
        }
        let output = self.net.forward_with_aux(batch.images.clone());
        let loss = self.loss(&output, &batch);
        let grads = loss.backward();
        TrainOutput::new(
            self,
            grads,
            ClassificationOutput::new(loss, output.main, batch.targets),
        )
    }
}

impl<N: TrainableNetwork> InferenceStep for Classifier<N> {
    type Input = ImageBatch;
    type Output = ValidationOutput;

    fn step(&self, batch: ImageBatch) -> ValidationOutput {
        let ema_logits = self
            .ema
            .as_ref()
            .and_then(Ema::model)
            .map(|average| average.forward(batch.images.clone()));
        let logits = self.net.forward(batch.images);
        let loss = self.cross_entropy(logits.clone(), batch.targets.clone());
        ValidationOutput {
            ema_logits,
            model: ClassificationOutput::new(loss, logits, batch.targets),
        }
    }
}

/// A validation step's output: the model's, and the logits of the EMA if there is
/// one (for [`EmaAccuracy`](crate::metric::EmaAccuracy)).
pub struct ValidationOutput {
    /// The model's loss, logits and targets.
    pub model: ClassificationOutput,
    /// The EMA's logits, once it has been updated.
    pub ema_logits: Option<Tensor<2>>,
}

impl ItemLazy for ValidationOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self {
            model: self.model.sync()?,
            ema_logits: self.ema_logits,
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

impl Adaptor<EmaInput> for ValidationOutput {
    fn adapt(&self) -> EmaInput {
        EmaInput {
            logits: self.ema_logits.clone(),
            targets: self.model.targets.clone(),
        }
    }
}

/// The reference's "custom L2" over every block: the squared 3x3 kernel outside its centre, plus
/// the squared centre of the equivalent fused kernel normalised by the BN scales, so that decay
/// acts on the kernel the deploy model will have. BN scales are treated as constants.
pub fn custom_l2<N: TrainableNetwork>(net: &N) -> Tensor<1> {
    net.blocks()
        .into_iter()
        .map(block_l2)
        .reduce(|total, term| total + term)
        .expect("a RepVGG has a stem block")
}

fn block_l2(block: &RepVggBlock) -> Tensor<1> {
    let k3 = block.rbr_dense.conv.weight.val();
    let k1 = block.rbr_1x1.conv.weight.val();
    let [out_channels, ..] = k3.dims();
    let scale = |bn: &Option<BatchNorm>| match bn {
        Some(bn) => detached_scale(bn).reshape([out_channels, 1, 1, 1]),
        // A branch without its batch norm (QARepVGG's 1x1, which config validation keeps
        // away from this term) has the scale 1.
        None => Tensor::ones([out_channels, 1, 1, 1], &k3.device()),
    };
    let (t3, t1) = (scale(&block.rbr_dense.bn), scale(&block.rbr_1x1.bn));
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
