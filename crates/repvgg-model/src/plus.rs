//! RepVGGplus: the RepVGG blocks with SE after the ReLU, stage 3 split in two halves, and three
//! auxiliary classifiers that help train the training form and disappear from the deploy form.
//! One generic network serves both forms, as [`RepVggNetwork`](crate::RepVggNetwork) does for
//! RepVGG; the layout comes from a [`RepVggConfig`] with a [`PlusLayout`](crate::PlusLayout).
//!
//! Module paths are the reference's state-dict keys (`stage3_first.blocks.0.rbr_dense.conv.weight`,
//! `stage1.blocks.2.post_se.down.bias`, `linear.weight`), except inside the auxiliary heads:
//! the reference numbers their layers (`stage1_aux.0.conv.weight`, `stage1_aux.3.weight`) and
//! Burn modules have named fields (`stage1_aux.conv_bn.conv.weight`, `stage1_aux.linear.weight`);
//! the checkpoint readers and writers translate.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use repvgg_model::{PlusLayout, RepVggArch, RepVggConfig, RepVggPlus, Reparameterize};
//!
//! let device = Device::flex();
//! let l2pse = RepVggArch::L2pse.config(); // parameters are lazy: building it allocates nothing
//! assert_eq!(RepVggPlus::new(&l2pse, &device).num_trainable_params(), 146_062_864);
//!
//! let config = RepVggConfig::new(vec![1, 1, 2, 1], vec![0.25; 4])
//!     .with_se_reduction(4)
//!     .with_num_classes(10)
//!     .with_plus(Some(PlusLayout::new()));
//! let model = RepVggPlus::new(&config, &device); // `RepVggPlus`
//! let images = Tensor::<4>::random([2, 3, 64, 48], Distribution::Default, &device);
//! let output = model.forward_with_aux(images.clone()); // main [2, 10], aux 3 x [2, 10]
//! assert_eq!(output.aux.len(), 3);
//! let plain = model.reparameterize()?; // `RepVggPlusDeploy`: no aux heads, same main output
//! let difference = (output.main - plain.forward(images)).abs().max();
//! assert!(difference.into_scalar::<f32>() < 1e-4);
//! # Ok::<(), repvgg_model::WeightsError>(())
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::block::{Block, ConvBn, RepVggBlock, RepVggDeployBlock};
use crate::config::RepVggConfig;
use crate::network::{classify, global_average_pool};

/// The blocks of one stage (the reference's `nn.Module` with a `blocks` list).
#[derive(Module, Debug)]
pub struct PlusStage<B> {
    pub blocks: Vec<B>,
}

impl<B: Block> PlusStage<B> {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

/// An auxiliary classifier of the training form: `conv3x3(C -> C, stride 2) + BN + ReLU`, global
/// average, `Linear(C -> classes)`. No SE.
#[derive(Module, Debug)]
pub struct AuxHead {
    /// The reference's layer 0.
    pub conv_bn: ConvBn,
    /// The reference's layer 3.
    pub linear: Linear,
}

impl AuxHead {
    fn new(channels: usize, config: &RepVggConfig, device: &Device) -> Self {
        Self {
            conv_bn: ConvBn::new([channels, channels], 3, 2, 1, config, device),
            linear: LinearConfig::new(channels, config.num_classes).init(device),
        }
    }

    /// `[N, C, H, W]` (a stage's output) to `[N, classes]`.
    pub fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        let x = relu(self.conv_bn.forward(features));
        self.linear.forward(global_average_pool(x))
    }
}

/// The training form's outputs: the main logits, and the auxiliary heads' logits in the order
/// `stage1_aux`, `stage2_aux`, `stage3_first_aux` (empty without auxiliary heads).
#[derive(Clone, Debug)]
pub struct PlusOutput {
    pub main: Tensor<2>,
    pub aux: Vec<Tensor<2>>,
}

/// A RepVGGplus network over blocks of type `B`. `stage0` is the stem block; the stages hold
/// their blocks under `blocks`; stage 3 is `stage3_first` (the first half, stride 2) and
/// `stage3_second`. The auxiliary heads exist only in the training form (and only with a
/// classifier).
#[derive(Module, Debug)]
pub struct RepVggPlusNetwork<B> {
    pub stage0: B,
    pub stage1: PlusStage<B>,
    pub stage2: PlusStage<B>,
    pub stage3_first: PlusStage<B>,
    pub stage3_second: PlusStage<B>,
    pub stage4: PlusStage<B>,
    pub linear: Option<Linear>,
    pub stage1_aux: Option<AuxHead>,
    pub stage2_aux: Option<AuxHead>,
    pub stage3_first_aux: Option<AuxHead>,
    /// The architecture this network was built from (not part of the record).
    #[module(skip)]
    config: RepVggConfig,
}

/// Training-time RepVGGplus: multi-branch blocks and auxiliary heads.
pub type RepVggPlus = RepVggPlusNetwork<RepVggBlock>;

/// Deploy-time RepVGGplus: every block one 3x3 convolution with bias, ReLU, post-SE; no
/// auxiliary heads.
pub type RepVggPlusDeploy = RepVggPlusNetwork<RepVggDeployBlock>;

impl<B: Block> RepVggPlusNetwork<B> {
    /// Builds the network that `config` describes, with fresh weights on `device`.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`RepVggConfig::validate`]) or not a RepVGGplus one.
    pub fn new(config: &RepVggConfig, device: &Device) -> Self {
        assert!(
            config.is_plus(),
            "a RepVGG configuration (without `plus`) builds `RepVgg`: call `init`"
        );
        let mut stem = None;
        let mut stages: [Vec<B>; 5] = Default::default();
        for spec in config.block_specs() {
            let block = B::init(&spec, config, device);
            let stage = match spec.path.split(".blocks.").next() {
                Some("stage1") => 0,
                Some("stage2") => 1,
                Some("stage3_first") => 2,
                Some("stage3_second") => 3,
                Some("stage4") => 4,
                _ => {
                    stem = Some(block);
                    continue;
                }
            };
            stages[stage].push(block);
        }
        let [stage1, stage2, stage3_first, stage3_second, stage4] =
            stages.map(|blocks| PlusStage { blocks });
        let mut aux = config
            .aux_head_widths()
            .into_iter()
            .filter(|_| B::TRAINING)
            .map(|width| Some(AuxHead::new(width, config, device)))
            .chain(std::iter::repeat_with(|| None));
        Self {
            stage0: stem.expect("the stem block"),
            stage1,
            stage2,
            stage3_first,
            stage3_second,
            stage4,
            linear: config.has_head().then(|| {
                LinearConfig::new(config.feature_width(), config.num_classes).init(device)
            }),
            stage1_aux: aux.next().flatten(),
            stage2_aux: aux.next().flatten(),
            stage3_first_aux: aux.next().flatten(),
            config: config.clone(),
        }
    }

    /// The architecture the network was built from.
    pub fn config(&self) -> &RepVggConfig {
        &self.config
    }

    /// Class logits of the main head, `[N, 3, H, W]` to `[N, num_classes]` (the auxiliary heads
    /// are not computed); for a headless network the pooled features. Any `H, W >= 32` works,
    /// square or not (the SE pools globally, unlike the reference's).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let features = self
            .forward_features(images)
            .pop()
            .expect("at least the stem's output");
        classify(features, self.linear.as_ref())
    }

    /// The main logits and the auxiliary heads' logits (what training needs).
    pub fn forward_with_aux(&self, images: Tensor<4>) -> PlusOutput {
        let mut aux = Vec::with_capacity(3);
        let mut x = self.stage0.forward(images);
        x = self.stage1.forward(x);
        if let Some(head) = &self.stage1_aux {
            aux.push(head.forward(x.clone()));
        }
        x = self.stage2.forward(x);
        if let Some(head) = &self.stage2_aux {
            aux.push(head.forward(x.clone()));
        }
        x = self.stage3_first.forward(x);
        if let Some(head) = &self.stage3_first_aux {
            aux.push(head.forward(x.clone()));
        }
        x = self.stage4.forward(self.stage3_second.forward(x));
        PlusOutput {
            main: classify(x, self.linear.as_ref()),
            aux,
        }
    }

    /// The output of the stem and of stages 1 to 4 (stage 3 after both halves): five maps at
    /// strides 2, 4, 8, 16 and 32, as [`RepVggNetwork::forward_features`](crate::RepVggNetwork::forward_features).
    pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stage0.forward(images);
        let mut features = Vec::with_capacity(5);
        for stage in self.stages() {
            features.push(x.clone());
            x = stage.into_iter().fold(x, |x, block| block.forward(x));
        }
        features.push(x);
        features
    }

    /// The blocks of stages 1 to 4 (stage 3's two halves together), in order.
    pub fn stages(&self) -> [Vec<&B>; 4] {
        let stage3 = self.stage3_first.blocks.iter();
        [
            self.stage1.blocks.iter().collect(),
            self.stage2.blocks.iter().collect(),
            stage3.chain(&self.stage3_second.blocks).collect(),
            self.stage4.blocks.iter().collect(),
        ]
    }

    /// Every block in forward order, the stem first.
    pub fn blocks(&self) -> Vec<&B> {
        std::iter::once(&self.stage0)
            .chain(self.stages().into_iter().flatten())
            .collect()
    }

    /// Trainable parameters (batch-norm running statistics are not counted).
    pub fn num_trainable_params(&self) -> usize {
        crate::inspect::num_trainable_params(self)
    }
}
