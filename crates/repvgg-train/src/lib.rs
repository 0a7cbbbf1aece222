//! RepVGG training: the ImageNet data pipeline (ImageFolder layout, decoding of whatever
//! ImageNet-like folders hold, the paper's augmentation) on which the training recipe runs.

pub mod data;
