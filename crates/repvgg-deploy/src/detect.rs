//! Architecture detection: recognising which RepVGG a set of weights belongs to from tensor names
//! and shapes (for checkpoints that do not record their config, like the reference's and timm's).

use std::collections::BTreeMap;

use repvgg_model::{IN_CHANNELS, RepVggArch, RepVggConfig, Weights};

use crate::error::DeployError;

/// What the tensor shapes say about a network: everything a [`RepVggConfig`] holds except
/// the width multipliers (only widths are visible) and BN hyper-parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedLayout {
    pub num_blocks: Vec<usize>,
    /// `[stem, stage1, ...]`.
    pub widths: Vec<usize>,
    pub grouped_layers: BTreeMap<usize, usize>,
    /// SE reduction, when the blocks have SE.
    pub se_reduction: Option<usize>,
    /// Outputs of the classifier; `None` for a headless network.
    pub num_classes: Option<usize>,
}

impl DetectedLayout {
    /// Reads the layout off training-time or deploy-time weights (Burn naming).
    pub fn of(weights: &Weights) -> Result<Self, DeployError> {
        let kernel = |block: &str| -> Result<[usize; 2], DeployError> {
            ["rbr_dense.conv.weight", "rbr_reparam.weight"]
                .iter()
                .find_map(|name| weights.get(&format!("{block}.{name}")))
                .ok_or_else(|| DeployError::Detection(format!("no 3x3 kernel for block `{block}`")))
                .and_then(|data| match data.shape().as_slice() {
                    [out, per_group, 3, 3] => Ok([*out, *per_group]),
                    shape => Err(DeployError::Detection(format!(
                        "block `{block}` has a kernel of shape {shape:?}, not [out, in, 3, 3]"
                    ))),
                })
        };
        let mut blocks = vec!["stage0".to_string()];
        let mut num_blocks = Vec::new();
        for stage in 1..=4 {
            let count = (0..)
                .take_while(|i| {
                    weights
                        .names()
                        .any(|n| n.starts_with(&format!("stage{stage}.{i}.")))
                })
                .count();
            if count == 0 {
                break;
            }
            num_blocks.push(count);
            blocks.extend((0..count).map(|i| format!("stage{stage}.{i}")));
        }
        let mut widths = Vec::new();
        let mut grouped_layers = BTreeMap::new();
        let mut in_channels = IN_CHANNELS;
        for (index, block) in blocks.iter().enumerate() {
            let [out_channels, per_group] = kernel(block)?;
            if per_group == 0 || !in_channels.is_multiple_of(per_group) {
                return Err(DeployError::Detection(format!(
                    "block `{block}` has {per_group} input channels per group for {in_channels} inputs"
                )));
            }
            if per_group != in_channels {
                grouped_layers.insert(index, in_channels / per_group);
            }
            if block == "stage0" || block.ends_with(".0") {
                widths.push(out_channels);
            }
            in_channels = out_channels;
        }
        let se_reduction = weights
            .get("stage0.se.down.weight")
            .map(|down| widths[0] / down.shape().first().copied().unwrap_or(1).max(1));
        let num_classes = match weights.get("linear.bias").map(|bias| bias.shape().to_vec()) {
            None => None,
            Some(shape) => match shape.as_slice() {
                [classes] => Some(*classes),
                _ => {
                    return Err(DeployError::Detection(format!(
                        "`linear.bias` has shape {shape:?}, not [classes]"
                    )));
                }
            },
        };
        Ok(Self {
            num_blocks,
            widths,
            grouped_layers,
            se_reduction,
            num_classes,
        })
    }

    /// Whether `config` has this layout.
    pub fn matches(&self, config: &RepVggConfig) -> bool {
        config.num_blocks == self.num_blocks
            && config.stage_widths() == self.widths
            && config.grouped_layers == self.grouped_layers
            && config.use_se == self.se_reduction.is_some()
            && self.se_reduction.is_none_or(|r| r == config.se_reduction)
            && config.has_head() == self.num_classes.is_some()
            && self.num_classes.is_none_or(|n| n == config.num_classes)
    }
}

/// The reference architecture whose layout the weights have, with their number of classes.
pub fn detect_arch(weights: &Weights) -> Result<(RepVggArch, RepVggConfig), DeployError> {
    let layout = DetectedLayout::of(weights)?;
    RepVggArch::ALL
        .into_iter()
        .map(|arch| {
            let config = match layout.num_classes {
                Some(classes) => arch.config().with_num_classes(classes),
                None => arch.config().with_num_classes(0),
            };
            (arch, config)
        })
        .find(|(_, config)| layout.matches(config))
        .ok_or_else(|| {
            DeployError::Detection(format!(
                "the weights match no reference architecture (blocks per stage {:?}, widths {:?}, \
                 grouped layers {:?}, SE {}); give the architecture as a config file",
                layout.num_blocks,
                layout.widths,
                layout.grouped_layers,
                if layout.se_reduction.is_some() {
                    "yes"
                } else {
                    "no"
                }
            ))
        })
}
