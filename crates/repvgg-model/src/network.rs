//! The RepVGG network: a stem block, up to four stages of blocks, global average pooling and
//! (unless the config leaves it out) a linear classifier. One generic definition serves both
//! forms; [`RepVgg`] (training-time) and [`RepVggDeploy`] (deploy-time) are distinct module types
//! with different record paths.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::block::{Block, RepVggBlock, RepVggDeployBlock};
use crate::config::RepVggConfig;

/// A RepVGG network over blocks of type `B`. Field names give the reference checkpoint paths:
/// `stage0.*`, `stage{1..4}.{i}.*`, `linear.*`. Stages a configuration does not use are empty;
/// a headless network (`RepVggConfig::with_num_classes(0)`) has no `linear`.
#[derive(Module, Debug)]
pub struct RepVggNetwork<B> {
    pub stage0: B,
    pub stage1: Vec<B>,
    pub stage2: Vec<B>,
    pub stage3: Vec<B>,
    pub stage4: Vec<B>,
    pub linear: Option<Linear>,
    /// The architecture this network was built from (not part of the record): what
    /// re-parameterization and the CPU engine read the layout from.
    #[module(skip)]
    config: RepVggConfig,
}

/// Training-time RepVGG: every block has 3x3, 1x1 and (where shapes allow) identity branches.
pub type RepVgg = RepVggNetwork<RepVggBlock>;

/// Deploy-time RepVGG: every block is one 3x3 convolution with bias, then ReLU.
pub type RepVggDeploy = RepVggNetwork<RepVggDeployBlock>;

impl<B: Block> RepVggNetwork<B> {
    /// Builds the network that `config` describes, with fresh weights on `device`.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`RepVggConfig::validate`]) or a RepVGGplus one
    /// (which builds [`RepVggPlusNetwork`](crate::RepVggPlusNetwork)).
    pub fn new(config: &RepVggConfig, device: &Device) -> Self {
        assert!(
            !config.is_plus(),
            "a RepVGGplus configuration builds `RepVggPlus` (`RepVggPlus::new`, or `TrainingNetwork::new` for either family)"
        );
        let mut stages: [Vec<B>; 5] = Default::default();
        for spec in config.block_specs() {
            stages[spec.stage].push(B::init(&spec, config, device));
        }
        let [stage0, stage1, stage2, stage3, stage4] = stages;
        Self {
            stage0: stage0.into_iter().next().expect("the stem block"),
            stage1,
            stage2,
            stage3,
            stage4,
            linear: config.has_head().then(|| {
                LinearConfig::new(config.feature_width(), config.num_classes).init(device)
            }),
            config: config.clone(),
        }
    }

    /// The architecture the network was built from.
    pub fn config(&self) -> &RepVggConfig {
        &self.config
    }

    /// Class logits, `[N, 3, H, W]` to `[N, num_classes]`; for a headless network the pooled
    /// features, `[N, feature_width]` (as timm's models with `num_classes=0`). Any `H, W >= 32`
    /// works.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let features = self
            .forward_features(images)
            .pop()
            .expect("at least the stem's output");
        classify(features, self.linear.as_ref())
    }

    /// The output of the stem and of every stage (five maps for the reference architectures, at
    /// strides 2, 4, 8, 16 and 32), for use as a detection or segmentation backbone.
    pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stage0.forward(images);
        let mut features = Vec::with_capacity(5);
        for stage in self.stages() {
            features.push(x.clone());
            x = stage.iter().fold(x, |x, block| block.forward(x));
        }
        features.push(x);
        features
    }

    /// Trainable parameters (batch-norm running statistics are not counted, unlike
    /// `Module::num_params`).
    pub fn num_trainable_params(&self) -> usize {
        crate::inspect::num_trainable_params(self)
    }

    /// The non-empty stages after the stem, in order.
    pub fn stages(&self) -> impl Iterator<Item = &[B]> {
        [&self.stage1, &self.stage2, &self.stage3, &self.stage4]
            .into_iter()
            .map(Vec::as_slice)
            .filter(|stage| !stage.is_empty())
    }

    /// Every block in forward order, the stem first.
    pub fn blocks(&self) -> impl Iterator<Item = &B> {
        std::iter::once(&self.stage0).chain(self.stages().flatten())
    }
}

/// The head of both families: the last feature map pooled, then the linear classifier if there
/// is one (a headless network gives the pooled features).
pub(crate) fn classify(features: Tensor<4>, linear: Option<&Linear>) -> Tensor<2> {
    let pooled = global_average_pool(features);
    match linear {
        Some(linear) => linear.forward(pooled),
        None => pooled,
    }
}

/// `[N, C, H, W]` to `[N, C]`: the mean over all spatial positions.
pub fn global_average_pool(features: Tensor<4>) -> Tensor<2> {
    let [batch, channels, _, _] = features.dims();
    features.mean_dim(2).mean_dim(3).reshape([batch, channels])
}

impl RepVggConfig {
    /// Builds the training-time network.
    pub fn init(&self, device: &Device) -> RepVgg {
        RepVgg::new(self, device)
    }

    /// Builds the deploy-time network (fresh weights; load fused ones into it).
    pub fn init_deploy(&self, device: &Device) -> RepVggDeploy {
        RepVggDeploy::new(self, device)
    }
}
