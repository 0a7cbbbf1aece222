//! ResNet-18 and ResNet-50 (torchvision's v1.5 layout) in Burn: the baselines of RepVGG's
//! speed claim, run by the benchmark with random weights on the same device.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Convolution (no bias) + batch norm.
#[derive(Module, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Self {
        let pad = kernel / 2;
        Self {
            conv: Conv2dConfig::new(channels, [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(channels[1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// A residual block: two 3x3 convs (basic) or 1x1-3x3-1x1 (bottleneck, stride on the 3x3).
#[derive(Module, Debug)]
struct Residual {
    convs: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
}

impl Residual {
    fn new(input: usize, width: usize, stride: usize, bottleneck: bool, device: &Device) -> Self {
        let (convs, output) = if bottleneck {
            let output = width * 4;
            (
                vec![
                    ConvBn::new([input, width], 1, 1, device),
                    ConvBn::new([width, width], 3, stride, device),
                    ConvBn::new([width, output], 1, 1, device),
                ],
                output,
            )
        } else {
            (
                vec![
                    ConvBn::new([input, width], 3, stride, device),
                    ConvBn::new([width, width], 3, 1, device),
                ],
                width,
            )
        };
        let shortcut = (stride != 1 || input != output)
            .then(|| ConvBn::new([input, output], 1, stride, device));
        Self { convs, shortcut }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            Some(shortcut) => shortcut.forward(x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut y = x;
        for (i, conv) in self.convs.iter().enumerate() {
            y = conv.forward(y);
            if i < last {
                y = relu(y);
            }
        }
        relu(y + identity)
    }
}

/// A ResNet classifier (1000 classes).
#[derive(Module, Debug)]
pub struct ResNet {
    stem: ConvBn,
    pool: MaxPool2d,
    blocks: Vec<Residual>,
    fc: Linear,
}

impl ResNet {
    pub fn resnet18(device: &Device) -> Self {
        Self::new([2, 2, 2, 2], false, device)
    }

    pub fn resnet50(device: &Device) -> Self {
        Self::new([3, 4, 6, 3], true, device)
    }

    fn new(depths: [usize; 4], bottleneck: bool, device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut channels = 64;
        for (stage, &depth) in depths.iter().enumerate() {
            let width = 64 << stage;
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let block = Residual::new(channels, width, stride, bottleneck, device);
                channels = if bottleneck { width * 4 } else { width };
                blocks.push(block);
            }
        }
        Self {
            stem: ConvBn::new([3, 64], 7, 2, device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            fc: LinearConfig::new(channels, 1000).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.pool.forward(relu(self.stem.forward(images)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [batch, channels, _, _] = x.dims();
        self.fc
            .forward(x.mean_dim(2).mean_dim(3).reshape([batch, channels]))
    }
}
