//! Architecture detection: recognising which RepVGG a set of weights belongs to from tensor names
//! and shapes (for checkpoints that do not record their config, like the reference's and timm's).

use std::collections::BTreeMap;

use repvgg_model::{IN_CHANNELS, RepVggArch, RepVggConfig, Weights};

use crate::checkpoint::Form;
use crate::error::DeployError;

/// What the tensor shapes say about a network: everything a [`RepVggConfig`] holds except
/// the width multipliers (only widths are visible) and BN hyper-parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DetectedLayout {
    /// Blocks per stage (RepVGGplus: stage 3's two halves together).
    pub num_blocks: Vec<usize>,
    /// `[stem, stage1, ...]`.
    pub widths: Vec<usize>,
    pub grouped_layers: BTreeMap<usize, usize>,
    /// SE reduction, when the blocks have SE.
    pub se_reduction: Option<usize>,
    /// Outputs of the classifier; `None` for a headless network.
    pub num_classes: Option<usize>,
    /// Whether the names are RepVGGplus's (`stage1.blocks.0...`, `stage3_first...`).
    pub plus: bool,
    /// Whether RepVGGplus's auxiliary heads are there; `None` for deploy-time weights, which
    /// never have them.
    pub aux_heads: Option<bool>,
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
        let plus = weights
            .names()
            .any(|name| name.starts_with("stage1.blocks.") || name.starts_with("stage3_first."));
        let count = |stage: &str| {
            let segment = if plus { ".blocks." } else { "." };
            (0..)
                .take_while(|i| {
                    let prefix = format!("{stage}{segment}{i}.");
                    weights.names().any(|name| name.starts_with(&prefix))
                })
                .count()
        };
        // Each stage as the module paths of its blocks.
        let mut stages: Vec<Vec<String>> = Vec::new();
        if plus {
            let (first, second) = (count("stage3_first"), count("stage3_second"));
            if first != (first + second) / 2 {
                return Err(DeployError::Detection(format!(
                    "RepVGGplus stage 3 splits into {first} + {second} blocks; the first half \
                     must have half of them, rounded down"
                )));
            }
            let blocks = |stage: &str, n: usize| -> Vec<String> {
                (0..n).map(|i| format!("{stage}.blocks.{i}")).collect()
            };
            let mut stage3 = blocks("stage3_first", first);
            stage3.extend(blocks("stage3_second", second));
            stages.push(blocks("stage1", count("stage1")));
            stages.push(blocks("stage2", count("stage2")));
            stages.push(stage3);
            stages.push(blocks("stage4", count("stage4")));
        } else {
            for stage in 1..=4 {
                let n = count(&format!("stage{stage}"));
                stages.push((0..n).map(|i| format!("stage{stage}.{i}")).collect());
            }
        }
        let num_blocks: Vec<usize> = stages.iter().map(Vec::len).take_while(|&n| n > 0).collect();
        let blocks = std::iter::once(vec!["stage0".to_string()])
            .chain(stages.into_iter().take(num_blocks.len()));
        let mut widths = Vec::new();
        let mut grouped_layers = BTreeMap::new();
        let mut in_channels = IN_CHANNELS;
        let mut index = 0;
        for stage in blocks {
            for (i, block) in stage.iter().enumerate() {
                let [out_channels, per_group] = kernel(block)?;
                if per_group == 0 || !in_channels.is_multiple_of(per_group) {
                    return Err(DeployError::Detection(format!(
                        "block `{block}` has {per_group} input channels per group for {in_channels} inputs"
                    )));
                }
                if per_group != in_channels {
                    grouped_layers.insert(index, in_channels / per_group);
                }
                if i == 0 {
                    widths.push(out_channels);
                }
                in_channels = out_channels;
                index += 1;
            }
        }
        let se_reduction = ["stage0.se.down.weight", "stage0.post_se.down.weight"]
            .iter()
            .find_map(|name| weights.get(name))
            .map(|down| widths[0] / down.shape().first().copied().unwrap_or(1).max(1));
        let aux_heads = match Form::of(weights) {
            Form::Deploy => None,
            Form::Training => Some(weights.names().any(|name| name.starts_with("stage1_aux."))),
        };
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
            plus,
            aux_heads,
        })
    }

    /// Whether `config` has this layout.
    pub fn matches(&self, config: &RepVggConfig) -> bool {
        config.num_blocks == self.num_blocks
            && config.stage_widths() == self.widths
            && config.grouped_layers == self.grouped_layers
            && config.is_plus() == self.plus
            && self
                .aux_heads
                .is_none_or(|aux| aux == config.has_aux_heads())
            && config.has_se() == self.se_reduction.is_some()
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
                "the weights match no reference architecture ({}blocks per stage {:?}, widths {:?}, \
                 grouped layers {:?}, SE {}); give the architecture as a config file",
                if layout.plus { "RepVGGplus, " } else { "" },
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
