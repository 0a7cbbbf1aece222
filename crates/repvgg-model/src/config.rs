//! Architecture description: the [`RepVggConfig`] that both networks are built from, and the
//! per-block layout ([`BlockSpec`]) derived from it.

use std::collections::BTreeMap;
use std::fmt;

use burn::config::Config;
use burn::serde;

/// Channel widths of stages 1-4 before the width multipliers are applied.
const BASE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// The stem never gets wider than this, whatever the multiplier.
const MAX_STEM_WIDTH: usize = 64;

// Bounds on what a config (often read from a file) may ask for, far beyond every published
// RepVGG (the largest, RepVGGplus-L2pse, has 146 million parameters and 2560 channels), so
// that a damaged or hostile file is refused before anything is allocated for it.
/// Most blocks in one stage.
pub const MAX_BLOCKS_PER_STAGE: usize = 1024;
/// Most channels of one stage.
pub const MAX_CHANNELS: usize = 1 << 16;
/// Most classes of the head.
pub const MAX_CLASSES: usize = 1 << 24;
/// Most trainable parameters of the training-time network (16 GiB of f32).
pub const MAX_PARAMS: usize = 1 << 32;

/// Input channels (RGB images).
pub const IN_CHANNELS: usize = 3;

/// Describes one RepVGG architecture.
///
/// The network is a stem block (`stage0`, stride 2) followed by one to four stages; the first
/// block of every stage has stride 2. Stage `i` (1-based) is `int(BASE[i] * width_multipliers[i])`
/// channels wide with `BASE = [64, 128, 256, 512]`, the stem `min(64, int(64 * width_multipliers[0]))`.
/// The reference architectures are available through [`RepVggArch`].
#[derive(Config, Debug, PartialEq)]
pub struct RepVggConfig {
    /// Number of blocks in each stage after the stem (one entry per stage, at most four).
    pub num_blocks: Vec<usize>,
    /// Width multiplier of each stage (same length as `num_blocks`).
    pub width_multipliers: Vec<f64>,
    /// Global block index (stem = 0, first block of stage 1 = 1, ...) to convolution groups, for
    /// the blocks whose 3x3 and 1x1 convolutions are grouped. Blocks not listed use one group.
    #[config(default = "BTreeMap::new()")]
    pub grouped_layers: BTreeMap<usize, usize>,
    /// Squeeze-and-excitation after the branch sum of every block (RepVGG-D2se).
    #[config(default = false)]
    pub use_se: bool,
    /// SE bottleneck: the hidden width is `channels / se_reduction`.
    #[config(default = 16)]
    pub se_reduction: usize,
    /// Number of classes of the linear head. 0 builds the network without the classifier (as
    /// timm's `num_classes=0`): a backbone whose `forward` gives the pooled features and
    /// `forward_features` the stage maps.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Batch-norm epsilon; also used by the train-to-deploy fusion.
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
    /// Batch-norm momentum in PyTorch's convention (`running = (1 - m) * running + m * batch`).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// The RepVGGplus layout (`None`: RepVGG). Such a configuration builds
    /// [`RepVggPlus`](crate::RepVggPlus) and [`RepVggPlusDeploy`](crate::RepVggPlusDeploy)
    /// rather than `RepVgg`; [`TrainingNetwork::new`](crate::TrainingNetwork::new) builds
    /// whichever family a configuration describes.
    pub plus: Option<PlusLayout>,
    /// The training-time block (`None`: RepVGG's). [`BlockDesign::QaRepVgg`] builds QARepVGG's,
    /// whose re-parameterized weights quantize to int8 without RepVGG's accuracy loss; the deploy
    /// form is the same plain network either way.
    pub block: Option<BlockDesign>,
}

/// Which training-time block a network is built of. Both re-parameterize into the same deploy
/// block, one 3x3 convolution with bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(crate = "burn::serde", rename_all = "snake_case")]
pub enum BlockDesign {
    /// RepVGG's: `ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))`.
    #[default]
    RepVgg,
    /// QARepVGG's ("Make RepVGG Greater Again: A Quantization-aware Approach", Chu et al., AAAI
    /// 2024; YOLOv6's `QARepVGGBlock`): `ReLU(BN(BN(conv3x3(x)) + conv1x1(x) + x))`. The 1x1
    /// branch has no batch norm and the identity none either, so that no branch's statistics
    /// can blow up the fused kernel's range; a batch norm after the sum (`bn`) steadies
    /// training and folds into the fused convolution. With SE (D2se) the sum's batch norm comes
    /// before the SE, so that it still folds.
    QaRepVgg,
}

/// What makes a configuration RepVGGplus rather than RepVGG: stage 3 split in two halves
/// (`stage3_first`, `stage3_second`, so that an auxiliary head can see the first), module paths
/// with a `.blocks.` segment (`stage1.blocks.0.rbr_dense...`, the reference's keys), SE after
/// the ReLU instead of before it, and auxiliary classifiers on stage 1, stage 2 and
/// `stage3_first` in the training form. It needs four stages and at least two blocks in stage 3.
#[derive(Config, Debug, PartialEq)]
pub struct PlusLayout {
    /// Squeeze-and-excitation after every block's ReLU (`post_se`), `channels / se_reduction`
    /// wide. RepVGGplus-L2pse has it, with reduction 4.
    #[config(default = true)]
    pub post_se: bool,
    /// The three auxiliary classifiers of the training form (conv3x3 stride 2 + BN + ReLU,
    /// global average, linear), trained with weight 0.1 and dropped by re-parameterization.
    #[config(default = true)]
    pub aux_heads: bool,
}

/// The reference RepVGG architectures, as published with the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepVggArch {
    A0,
    A1,
    A2,
    B0,
    B1,
    B1g2,
    B1g4,
    B2,
    B2g2,
    B2g4,
    B3,
    B3g2,
    B3g4,
    D2se,
    /// RepVGGplus-L2pse: D2se's depth and widths, SE after the ReLU (reduction 4), stage 3 split
    /// and three auxiliary heads (84.06% top-1, trained at 256 and tested at 320).
    L2pse,
}

impl RepVggArch {
    /// Every reference architecture, smallest family first.
    pub const ALL: [RepVggArch; 15] = [
        Self::A0,
        Self::A1,
        Self::A2,
        Self::B0,
        Self::B1,
        Self::B1g2,
        Self::B1g4,
        Self::B2,
        Self::B2g2,
        Self::B2g4,
        Self::B3,
        Self::B3g2,
        Self::B3g4,
        Self::D2se,
        Self::L2pse,
    ];

    /// The canonical short name, e.g. `"B1g4"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::A0 => "A0",
            Self::A1 => "A1",
            Self::A2 => "A2",
            Self::B0 => "B0",
            Self::B1 => "B1",
            Self::B1g2 => "B1g2",
            Self::B1g4 => "B1g4",
            Self::B2 => "B2",
            Self::B2g2 => "B2g2",
            Self::B2g4 => "B2g4",
            Self::B3 => "B3",
            Self::B3g2 => "B3g2",
            Self::B3g4 => "B3g4",
            Self::D2se => "D2se",
            Self::L2pse => "L2pse",
        }
    }

    /// The published name, e.g. `"RepVGG-B1g4"`, `"RepVGGplus-L2pse"`.
    pub fn full_name(self) -> String {
        match self {
            Self::L2pse => format!("RepVGGplus-{}", self.name()),
            _ => format!("RepVGG-{}", self.name()),
        }
    }

    /// Looks an architecture up by name, ignoring case, a `RepVGG` or `RepVGGplus` prefix and
    /// `-`/`_` separators: `"a0"`, `"RepVGG-A0"`, `"repvgg_b1g4"` and `"RepVGGplus-L2pse"` all
    /// work.
    pub fn from_name(name: &str) -> Result<Self, UnknownArch> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let key = ["repvggplus", "repvgg"]
            .into_iter()
            .find_map(|prefix| key.strip_prefix(prefix))
            .unwrap_or(&key);
        Self::ALL
            .into_iter()
            .find(|arch| arch.name().eq_ignore_ascii_case(key))
            .ok_or_else(|| UnknownArch {
                name: name.to_string(),
            })
    }

    /// The architecture's configuration with the 1000 ImageNet classes.
    pub fn config(self) -> RepVggConfig {
        let (num_blocks, a, b) = match self {
            Self::A0 => (A_BLOCKS, 0.75, 2.5),
            Self::A1 => (A_BLOCKS, 1.0, 2.5),
            Self::A2 => (A_BLOCKS, 1.5, 2.75),
            Self::B0 => (B_BLOCKS, 1.0, 2.5),
            Self::B1 | Self::B1g2 | Self::B1g4 => (B_BLOCKS, 2.0, 4.0),
            Self::B2 | Self::B2g2 | Self::B2g4 => (B_BLOCKS, 2.5, 5.0),
            Self::B3 | Self::B3g2 | Self::B3g4 => (B_BLOCKS, 3.0, 5.0),
            Self::D2se | Self::L2pse => (D_BLOCKS, 2.5, 5.0),
        };
        let groups = match self {
            Self::B1g2 | Self::B2g2 | Self::B3g2 => 2,
            Self::B1g4 | Self::B2g4 | Self::B3g4 => 4,
            _ => 1,
        };
        let grouped_layers = match groups {
            1 => BTreeMap::new(),
            g => REFERENCE_GROUPED_LAYERS.map(|layer| (layer, g)).into(),
        };
        let config = RepVggConfig::new(num_blocks.to_vec(), vec![a, a, a, b])
            .with_grouped_layers(grouped_layers)
            .with_use_se(self == Self::D2se);
        match self {
            Self::L2pse => config
                .with_se_reduction(4)
                .with_plus(Some(PlusLayout::new())),
            _ => config,
        }
    }
}

/// Blocks per stage of the A, B and D families.
const A_BLOCKS: [usize; 4] = [2, 4, 14, 1];
const B_BLOCKS: [usize; 4] = [4, 6, 16, 1];
const D_BLOCKS: [usize; 4] = [8, 14, 24, 1];

/// Global block indices grouped in the g2/g4 variants: the even layers 2..=26.
const REFERENCE_GROUPED_LAYERS: [usize; 13] = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26];

impl fmt::Display for RepVggArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())
    }
}

impl std::str::FromStr for RepVggArch {
    type Err = UnknownArch;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name)
    }
}

/// A name that matches no reference architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownArch {
    /// The name as given.
    pub name: String,
}

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = RepVggArch::ALL.iter().map(|arch| arch.name()).collect();
        write!(
            f,
            "unknown RepVGG architecture `{}`; valid names are {} (case-insensitive, \
             optionally prefixed with `RepVGG-`, `RepVGGplus-` or `repvgg_`)",
            self.name,
            valid.join(", ")
        )
    }
}

impl std::error::Error for UnknownArch {}

/// A configuration that describes no buildable network.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidConfig(pub String);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid RepVGG configuration: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

/// Shape of one block, derived from a [`RepVggConfig`]. The training-time and deploy-time blocks,
/// the parameter and FLOP counts all come from this one description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Global block index: 0 for the stem, then consecutive through the stages.
    pub index: usize,
    /// Stage number: 0 for the stem, 1-4 for the stages.
    pub stage: usize,
    /// Module path prefix of the block's tensors: `stage0`, `stage{stage}.{i}`, or for
    /// RepVGGplus `stage{stage}.blocks.{i}` with stage 3 as `stage3_first` and `stage3_second`.
    pub path: String,
    pub in_channels: usize,
    pub out_channels: usize,
    /// 2 for the stem and the first block of each stage, 1 otherwise.
    pub stride: usize,
    /// Convolution groups of the 3x3 and 1x1 branches (and of the fused conv).
    pub groups: usize,
    /// Whether the block has the identity (BN only) branch: `in == out` and stride 1.
    pub has_identity: bool,
    /// Hidden width of the squeeze-and-excitation bottleneck, when the block has one.
    pub se_channels: Option<usize>,
    /// Whether the SE comes after the ReLU (RepVGGplus's `post_se`) rather than before it.
    pub se_after_relu: bool,
}

impl RepVggConfig {
    /// The configuration of a reference architecture looked up by name (see
    /// [`RepVggArch::from_name`]).
    pub fn from_arch_name(name: &str) -> Result<Self, UnknownArch> {
        RepVggArch::from_name(name).map(RepVggArch::config)
    }

    /// Channel width of the stem and of each stage, `[stem, stage1, ...]`.
    pub fn stage_widths(&self) -> Vec<usize> {
        let stages: Vec<usize> = self
            .width_multipliers
            .iter()
            .zip(BASE_WIDTHS)
            .map(|(multiplier, base)| (base as f64 * multiplier) as usize)
            .collect();
        let stem = self.width_multipliers.first().map_or(0, |m| {
            MAX_STEM_WIDTH.min((MAX_STEM_WIDTH as f64 * m) as usize)
        });
        std::iter::once(stem).chain(stages).collect()
    }

    /// The training-time block this configuration builds.
    pub fn block_design(&self) -> BlockDesign {
        self.block.unwrap_or_default()
    }

    /// Whether the blocks are QARepVGG's ([`BlockDesign::QaRepVgg`]).
    pub fn is_quantization_aware(&self) -> bool {
        self.block_design() == BlockDesign::QaRepVgg
    }

    /// This configuration with QARepVGG's blocks: `RepVggArch::A0.config().quantization_aware()`.
    pub fn quantization_aware(self) -> Self {
        self.with_block(Some(BlockDesign::QaRepVgg))
    }

    /// Whether the network ends in the linear classifier (`num_classes > 0`).
    pub fn has_head(&self) -> bool {
        self.num_classes > 0
    }

    /// Width of the features that reach the classifier (the last stage's width).
    pub fn feature_width(&self) -> usize {
        *self
            .stage_widths()
            .last()
            .expect("the stem always has a width")
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fail = |msg: String| Err(InvalidConfig(msg));
        if self.num_blocks.is_empty() || self.num_blocks.len() > BASE_WIDTHS.len() {
            return fail(format!(
                "`num_blocks` must list 1 to 4 stages, got {}",
                self.num_blocks.len()
            ));
        }
        if self.width_multipliers.len() != self.num_blocks.len() {
            return fail(format!(
                "`width_multipliers` has {} entries but `num_blocks` has {} stages",
                self.width_multipliers.len(),
                self.num_blocks.len()
            ));
        }
        if let Some(stage) = self.num_blocks.iter().position(|&n| n == 0) {
            return fail(format!("stage {} has no blocks", stage + 1));
        }
        if let Some(&blocks) = self.num_blocks.iter().find(|&&n| n > MAX_BLOCKS_PER_STAGE) {
            return fail(format!(
                "a stage of {blocks} blocks is beyond the {MAX_BLOCKS_PER_STAGE} accepted"
            ));
        }
        if let Some(m) = self
            .width_multipliers
            .iter()
            .find(|m| !(m.is_finite() && **m > 0.0))
        {
            return fail(format!("width multipliers must be positive, got {m}"));
        }
        if let Some(&width) = self.stage_widths().iter().find(|&&w| w > MAX_CHANNELS) {
            return fail(format!(
                "a stage of {width} channels is beyond the {MAX_CHANNELS} accepted"
            ));
        }
        if self.num_classes > MAX_CLASSES {
            return fail(format!(
                "{} classes are beyond the {MAX_CLASSES} accepted",
                self.num_classes
            ));
        }
        if let Some((stage, width)) = self
            .stage_widths()
            .into_iter()
            .enumerate()
            .find(|&(_, w)| w == 0)
        {
            return fail(format!(
                "stage {stage} would have {width} channels: width multipliers must be positive \
                 and large enough"
            ));
        }
        if !(self.bn_epsilon.is_finite() && self.bn_epsilon > 0.0) {
            return fail(format!(
                "`bn_epsilon` must be positive, got {}",
                self.bn_epsilon
            ));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return fail(format!(
                "`bn_momentum` must be within [0, 1], got {}",
                self.bn_momentum
            ));
        }
        if self.has_se() && self.se_reduction == 0 {
            return fail("`se_reduction` must be at least 1".into());
        }
        if self.plus.is_some() {
            if self.num_blocks.len() != 4 || self.num_blocks[2] < 2 {
                return fail(format!(
                    "RepVGGplus needs four stages and at least two blocks in stage 3 (split into \
                     `stage3_first` and `stage3_second`), got {:?}",
                    self.num_blocks
                ));
            }
            if self.use_se {
                return fail(
                    "RepVGGplus puts its SE after the ReLU (`plus.post_se`); `use_se` (SE \
                     before the ReLU, RepVGG-D2se) cannot be combined with it"
                        .into(),
                );
            }
        }
        let num_layers = 1 + self.num_blocks.iter().sum::<usize>();
        if let Some((&layer, _)) = self
            .grouped_layers
            .iter()
            .find(|&(&layer, _)| layer >= num_layers)
        {
            return fail(format!(
                "grouped layer {layer} does not exist: the network has layers 0..{num_layers}"
            ));
        }
        for spec in self.unchecked_block_specs() {
            if spec.groups == 0
                || spec.in_channels % spec.groups != 0
                || spec.out_channels % spec.groups != 0
            {
                return fail(format!(
                    "layer {} ({}): {} groups do not divide {} input and {} output channels",
                    spec.index, spec.path, spec.groups, spec.in_channels, spec.out_channels
                ));
            }
            if spec.se_channels == Some(0) {
                return fail(format!(
                    "layer {} ({}): SE bottleneck of {} / {} channels is empty",
                    spec.index, spec.path, spec.out_channels, self.se_reduction
                ));
            }
        }
        let params = self.count_params(&self.unchecked_block_specs()).training;
        if params > MAX_PARAMS {
            return fail(format!(
                "{params} parameters are beyond the {MAX_PARAMS} accepted ({} GB of f32)",
                (MAX_PARAMS * 4) >> 30
            ));
        }
        Ok(())
    }

    /// Every block in forward order (stem first), with its channels, stride, groups and
    /// branches.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`validate`](Self::validate)).
    pub fn block_specs(&self) -> Vec<BlockSpec> {
        if let Err(err) = self.validate() {
            panic!("{err}");
        }
        self.unchecked_block_specs()
    }

    fn unchecked_block_specs(&self) -> Vec<BlockSpec> {
        let widths = self.stage_widths();
        let se_channels =
            |channels: usize| self.has_se().then(|| channels / self.se_reduction.max(1));
        let groups = |index: usize| self.grouped_layers.get(&index).copied().unwrap_or(1);
        let mut specs = vec![BlockSpec {
            index: 0,
            stage: 0,
            path: "stage0".into(),
            in_channels: IN_CHANNELS,
            out_channels: widths[0],
            stride: 2,
            groups: groups(0),
            has_identity: false,
            se_channels: se_channels(widths[0]),
            se_after_relu: self.plus.is_some(),
        }];
        let mut in_channels = widths[0];
        for (stage, &num_blocks) in (1..).zip(&self.num_blocks) {
            let out_channels = widths[stage];
            for i in 0..num_blocks {
                let index = specs.len();
                let stride = if i == 0 { 2 } else { 1 };
                specs.push(BlockSpec {
                    index,
                    stage,
                    path: self.block_path(stage, i, num_blocks),
                    in_channels,
                    out_channels,
                    stride,
                    groups: groups(index),
                    has_identity: in_channels == out_channels && stride == 1,
                    se_channels: se_channels(out_channels),
                    se_after_relu: self.plus.is_some(),
                });
                in_channels = out_channels;
            }
        }
        specs
    }

    /// Module path of block `i` of `stage` (1-based, `num_blocks` long).
    fn block_path(&self, stage: usize, i: usize, num_blocks: usize) -> String {
        if self.plus.is_none() {
            return format!("stage{stage}.{i}");
        }
        match (stage, plus_stage3_split(num_blocks)) {
            (3, first) if i < first => format!("stage3_first.blocks.{i}"),
            (3, first) => format!("stage3_second.blocks.{}", i - first),
            _ => format!("stage{stage}.blocks.{i}"),
        }
    }

    /// Whether the blocks have squeeze-and-excitation, before (`use_se`) or after
    /// (`plus.post_se`) the ReLU.
    pub fn has_se(&self) -> bool {
        self.use_se || self.plus.as_ref().is_some_and(|plus| plus.post_se)
    }

    /// Whether this is a RepVGGplus configuration (see [`PlusLayout`]).
    pub fn is_plus(&self) -> bool {
        self.plus.is_some()
    }

    /// Whether the training form has RepVGGplus's auxiliary classifiers: a plus layout that asks
    /// for them, and a classifier to train (`num_classes > 0`).
    pub fn has_aux_heads(&self) -> bool {
        self.has_head() && self.plus.as_ref().is_some_and(|plus| plus.aux_heads)
    }

    /// Input widths of the auxiliary heads of the training form (on stage 1, stage 2 and
    /// `stage3_first`), empty when it has none.
    pub fn aux_head_widths(&self) -> Vec<usize> {
        match self.has_aux_heads() {
            true => self.stage_widths()[1..4].to_vec(),
            false => Vec::new(),
        }
    }
}

/// Blocks of RepVGGplus's `stage3_first` out of a stage 3 of `num_blocks` (the rest form
/// `stage3_second`).
pub(crate) fn plus_stage3_split(num_blocks: usize) -> usize {
    num_blocks / 2
}
