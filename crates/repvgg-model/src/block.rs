//! The RepVGG block in its two forms: training-time (three branches, RepVGG's or QARepVGG's)
//! and deploy-time (one fused 3x3 convolution). Field names follow the reference checkpoints
//! (`rbr_dense`, `rbr_1x1`, `rbr_identity`, `rbr_reparam`, `se`, `post_se`, and YOLOv6's `bn`
//! for QARepVGG's batch norm after the sum), so module paths equal PyTorch state-dict keys.

use burn::module::{Module, ModuleDisplay};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, s};

use crate::config::{BlockDesign, BlockSpec, RepVggConfig};
use crate::se::SqueezeExcite;

/// What the network needs from a block, whichever form it takes.
pub trait Block: Module + ModuleDisplay + Sized {
    /// Whether this is the training-time form (which RepVGGplus gives auxiliary heads).
    const TRAINING: bool;

    /// Builds the block described by `spec` with fresh weights.
    fn init(spec: &BlockSpec, config: &RepVggConfig, device: &Device) -> Self;

    /// `[N, in, H, W]` to `[N, out, H / stride, W / stride]`.
    fn forward(&self, input: Tensor<4>) -> Tensor<4>;
}

/// A bias-free convolution followed by batch norm: one branch of the training-time block. In
/// QARepVGG's 1x1 branch the convolution stands alone (`bn` is `None`).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
}

impl ConvBn {
    fn init(spec: &BlockSpec, kernel: usize, config: &RepVggConfig, device: &Device) -> Self {
        Self::new(
            [spec.in_channels, spec.out_channels],
            kernel,
            spec.stride,
            spec.groups,
            config,
            device,
        )
    }

    /// [`init`](Self::init) without the batch norm.
    fn init_plain(spec: &BlockSpec, kernel: usize, config: &RepVggConfig, device: &Device) -> Self {
        Self {
            bn: None,
            ..Self::init(spec, kernel, config, device)
        }
    }

    /// A `kernel x kernel` convolution (padding `kernel / 2`, no bias) and its batch norm.
    pub(crate) fn new(
        [in_channels, out_channels]: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        config: &RepVggConfig,
        device: &Device,
    ) -> Self {
        let padding = kernel / 2;
        let conv = Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        Self {
            conv,
            bn: Some(batch_norm(out_channels, config, device)),
        }
    }

    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let output = self.convolve(input);
        match &self.bn {
            Some(bn) => normalize(bn, output),
            None => output,
        }
    }

    /// The convolution. On Burn's CPU backend with the `cpu-ops` feature, by repvgg-ops
    /// (batched matrix products forward and backward). Elsewhere an ungrouped, unpadded,
    /// unbiased 1x1 one (the `rbr_1x1` branch) is one matrix product of the weight `[out, in]`
    /// with the pixels `[N, in, H x W]` (taken every `stride` pixels), which Burn differentiates
    /// as two products, where its general convolution would go through im2col forward and a
    /// transposed convolution backward.
    fn convolve(&self, input: Tensor<4>) -> Tensor<4> {
        let conv = &self.conv;
        #[cfg(feature = "cpu-ops")]
        if let Some(shape) = cpu_ops_conv(conv)
            && repvgg_ops::runs_here(&input.device())
        {
            return repvgg_ops::conv2d(input, conv.weight.val(), shape);
        }
        let unpadded = matches!(
            conv.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
        if conv.kernel_size != [1, 1] || conv.groups != 1 || !unpadded || conv.bias.is_some() {
            return conv.forward(input);
        }
        let [sy, sx] = conv.stride;
        let input = if [sy, sx] == [1, 1] {
            input
        } else {
            input.slice(s![.., .., ..;sy as isize, ..;sx as isize])
        };
        let [batch, channels, height, width] = input.dims();
        let out_channels = conv.weight.dims()[0];
        let weight = conv.weight.val().reshape([1, out_channels, channels]);
        weight
            .matmul(input.reshape([batch, channels, height * width]))
            .reshape([batch, out_channels, height, width])
    }
}

/// The convolution as repvgg-ops takes it: a square kernel without bias or dilation, the same
/// stride and padding in both directions.
#[cfg(feature = "cpu-ops")]
fn cpu_ops_conv(conv: &Conv2d) -> Option<repvgg_ops::Conv> {
    let [kernel, kernel_width] = conv.kernel_size;
    let [stride, stride_x] = conv.stride;
    let padding = match conv.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && top == bottom && top == right =>
        {
            top
        }
        _ => return None,
    };
    let plain = kernel == kernel_width
        && stride == stride_x
        && conv.dilation == [1, 1]
        && conv.bias.is_none();
    plain.then_some(repvgg_ops::Conv {
        stride,
        padding,
        groups: conv.groups,
    })
}

/// `bn`'s forward pass. In training on Burn's CPU backend with the `cpu-ops` feature, the batch
/// statistics and the normalization come from repvgg-ops (one pass each way for the statistics
/// and the output, where Burn's generic op takes about ten) and the running statistics are
/// updated as Burn's `BatchNorm` updates them; otherwise `bn.forward`.
fn normalize(bn: &BatchNorm, input: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "cpu-ops")]
    {
        let device = input.device();
        if device.is_autodiff() && bn.training.is_enabled() && repvgg_ops::runs_here(&device) {
            let result =
                repvgg_ops::batch_norm_train(input, bn.gamma.val(), bn.beta.val(), bn.epsilon);
            update_running_statistics(bn, result.mean, result.variance);
            return result.output;
        }
    }
    bn.forward(input)
}

/// Moves `bn`'s running statistics towards a batch's, as Burn's `BatchNorm` does in training.
#[cfg(feature = "cpu-ops")]
fn update_running_statistics(bn: &BatchNorm, mean: Tensor<1>, variance: Tensor<1>) {
    let update = |running: Tensor<1>, batch: Tensor<1>| {
        let running = running
            .to_device(&batch.device())
            .mul_scalar(1.0 - bn.momentum);
        running.add(batch.detach().mul_scalar(bn.momentum)).detach()
    };
    bn.running_mean
        .update(update(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(update(bn.running_var.value_sync(), variance));
}

fn batch_norm(channels: usize, config: &RepVggConfig, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(config.bn_epsilon)
        .with_momentum(config.bn_momentum)
        .init(device)
}

/// Training-time block: `ReLU(SE(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)))`, or for
/// RepVGGplus `post_SE(ReLU(...))`; with QARepVGG's design ([`BlockDesign::QaRepVgg`])
/// `ReLU(SE(BN(BN(conv3x3(x)) + conv1x1(x) + x)))`.
///
/// The identity branch exists only where the block keeps its shape (`in == out`, stride 1); SE
/// only in SE architectures, before the ReLU (`se`, RepVGG-D2se) or after it (`post_se`).
#[derive(Module, Debug)]
pub struct RepVggBlock {
    /// 3x3 convolution + BN.
    pub rbr_dense: ConvBn,
    /// 1x1 convolution + BN (QARepVGG: the convolution alone).
    pub rbr_1x1: ConvBn,
    /// Batch norm of the input itself (QARepVGG: none, the input is added as it is).
    pub rbr_identity: Option<BatchNorm>,
    /// QARepVGG's batch norm of the branch sum.
    pub bn: Option<BatchNorm>,
    pub se: Option<SqueezeExcite>,
    pub post_se: Option<SqueezeExcite>,
    /// Whether the input is added unnormalized (QARepVGG's identity branch).
    #[module(skip)]
    pub plain_identity: bool,
}

impl Block for RepVggBlock {
    const TRAINING: bool = true;

    fn init(spec: &BlockSpec, config: &RepVggConfig, device: &Device) -> Self {
        let (se, post_se) = SqueezeExcite::for_block(spec, device);
        let norm = || batch_norm(spec.out_channels, config, device);
        match config.block_design() {
            BlockDesign::RepVgg => Self {
                rbr_dense: ConvBn::init(spec, 3, config, device),
                rbr_1x1: ConvBn::init(spec, 1, config, device),
                rbr_identity: spec.has_identity.then(norm),
                bn: None,
                se,
                post_se,
                plain_identity: false,
            },
            BlockDesign::QaRepVgg => Self {
                rbr_dense: ConvBn::init(spec, 3, config, device),
                rbr_1x1: ConvBn::init_plain(spec, 1, config, device),
                rbr_identity: None,
                bn: Some(norm()),
                se,
                post_se,
                plain_identity: spec.has_identity,
            },
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "cpu-ops")]
        if let Some([stride, groups]) = self.fused_training_op(&input.device()) {
            return self.forward_fused(input, stride, groups);
        }
        self.forward_branches(input)
    }
}

impl RepVggBlock {
    /// The forward pass branch by branch, each convolution and batch norm its own op.
    fn forward_branches(&self, input: Tensor<4>) -> Tensor<4> {
        let mut sum = self.rbr_dense.forward(input.clone());
        if let Some(identity) = &self.rbr_identity {
            sum = sum + normalize(identity, input.clone());
        } else if self.plain_identity {
            sum = sum + input.clone();
        }
        sum = sum + self.rbr_1x1.forward(input);
        if let Some(bn) = &self.bn {
            sum = normalize(bn, sum);
        }
        activate(sum, &self.se, &self.post_se)
    }
}

#[cfg(feature = "cpu-ops")]
impl RepVggBlock {
    /// The batch norms of the branches: 3x3, 1x1 and, where present, the identity.
    fn norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.rbr_dense
            .bn
            .iter()
            .chain(&self.rbr_1x1.bn)
            .chain(self.rbr_identity.as_ref())
    }

    /// `[stride, groups]` when the whole block can be repvgg-ops' one training op here: in
    /// training on Burn's CPU backend under autodiff, RepVGG's design without SE, with the
    /// reference's convolutions and one epsilon for its batch norms.
    fn fused_training_op(&self, device: &Device) -> Option<[usize; 2]> {
        let (dense, pointwise) = (&self.rbr_dense.conv, &self.rbr_1x1.conv);
        let dense_bn = self.rbr_dense.bn.as_ref()?;
        let repvgg_design = self.rbr_1x1.bn.is_some() && self.bn.is_none() && !self.plain_identity;
        let usable = repvgg_design
            && self.se.is_none()
            && self.post_se.is_none()
            && device.is_autodiff()
            && self
                .norms()
                .all(|bn| bn.training.is_enabled() && bn.epsilon == dense_bn.epsilon)
            && repvgg_ops::runs_here(device)
            && dense.kernel_size == [3, 3]
            && pointwise.kernel_size == [1, 1];
        let (dense_op, pointwise_op) = (cpu_ops_conv(dense)?, cpu_ops_conv(pointwise)?);
        let matching = dense_op.padding == 1
            && pointwise_op.padding == 0
            && dense_op.stride == pointwise_op.stride
            && dense_op.groups == pointwise_op.groups;
        (usable && matching).then_some([dense_op.stride, dense_op.groups])
    }

    /// The forward pass as repvgg-ops' block op, which also updates the running statistics.
    fn forward_fused(&self, input: Tensor<4>, stride: usize, groups: usize) -> Tensor<4> {
        let dense_bn = (self.rbr_dense.bn.as_ref())
            .expect("the fused op runs RepVGG's design, whose 3x3 branch has its batch norm");
        let gamma = Tensor::stack(self.norms().map(|bn| bn.gamma.val()).collect(), 0);
        let beta = Tensor::stack(self.norms().map(|bn| bn.beta.val()).collect(), 0);
        let result = repvgg_ops::block_train(
            input,
            self.rbr_dense.conv.weight.val(),
            self.rbr_1x1.conv.weight.val(),
            gamma,
            beta,
            stride,
            groups,
            dense_bn.epsilon,
        );
        let [_, channels] = result.mean.dims();
        for (branch, bn) in self.norms().enumerate() {
            let row = |t: &Tensor<2>| t.clone().slice(s![branch, ..]).reshape([channels]);
            update_running_statistics(bn, row(&result.mean), row(&result.variance));
        }
        result.output
    }
}

/// Deploy-time block: `ReLU(SE(conv3x3(x) + bias))` (or `post_SE(ReLU(...))`), the three
/// training-time branches fused into one convolution.
#[derive(Module, Debug)]
pub struct RepVggDeployBlock {
    /// The fused 3x3 convolution, with bias.
    pub rbr_reparam: Conv2d,
    pub se: Option<SqueezeExcite>,
    pub post_se: Option<SqueezeExcite>,
}

impl Block for RepVggDeployBlock {
    const TRAINING: bool = false;

    fn init(spec: &BlockSpec, _config: &RepVggConfig, device: &Device) -> Self {
        let rbr_reparam = Conv2dConfig::new([spec.in_channels, spec.out_channels], [3, 3])
            .with_stride([spec.stride, spec.stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_groups(spec.groups)
            .with_bias(true)
            .init(device);
        let (se, post_se) = SqueezeExcite::for_block(spec, device);
        Self {
            rbr_reparam,
            se,
            post_se,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        activate(self.rbr_reparam.forward(input), &self.se, &self.post_se)
    }
}

/// The tail shared by both forms: optional SE on the branch sum, ReLU, optional post-SE.
fn activate(
    sum: Tensor<4>,
    se: &Option<SqueezeExcite>,
    post_se: &Option<SqueezeExcite>,
) -> Tensor<4> {
    let sum = match se {
        Some(se) => se.forward(sum),
        None => sum,
    };
    match post_se {
        Some(post_se) => post_se.forward(relu(sum)),
        None => relu(sum),
    }
}

#[cfg(all(test, feature = "cpu-ops"))]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};

    use super::*;
    use crate::config::RepVggArch;

    fn values(tensor: Tensor<1>) -> Vec<f32> {
        tensor.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(what: &str, actual: TensorData, expected: TensorData) {
        let (actual, expected) = (
            actual.try_to_vec::<f32>().unwrap(),
            expected.try_to_vec::<f32>().unwrap(),
        );
        let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (a, e) in actual.iter().zip(&expected) {
            assert!((a - e).abs() <= 1e-4 * scale, "{what}: {a} vs {e}");
        }
    }

    /// The block as one repvgg-ops op against the same block branch by branch (repvgg-ops'
    /// convolution and batch-norm ops): the output, every parameter's gradient, the input's,
    /// and the running statistics after the step, for the stem, a stride-2 block, a block with
    /// the identity branch and a grouped one. Each batch norm gets its own gamma and beta, so
    /// that branches taken in the wrong order would show.
    #[test]
    fn the_fused_training_block_equals_its_branches() {
        let device = Device::flex().autodiff();
        let (a0, b1g2) = (RepVggArch::A0.config(), RepVggArch::B1g2.config());
        let grouped = b1g2
            .block_specs()
            .into_iter()
            .find(|spec| spec.groups > 1 && spec.has_identity && spec.in_channels <= 256)
            .expect("a grouped block with the identity");
        let a0_specs = a0.block_specs();
        let identity = a0_specs.iter().find(|s| s.has_identity).unwrap().clone();
        let cases = [
            (a0_specs[0].clone(), &a0),
            (a0_specs[1].clone(), &a0),
            (identity, &a0),
            (grouped, &b1g2),
        ];
        for (spec, config) in cases {
            let mut block = RepVggBlock::init(&spec, config, &device);
            let randomize = |bn: &mut BatchNorm| {
                let random = |shift| {
                    let values =
                        Tensor::<1>::random([spec.out_channels], Distribution::Default, &device);
                    Param::from_tensor(values + shift)
                };
                bn.gamma = random(0.5);
                bn.beta = random(-0.5);
            };
            randomize(block.rbr_dense.bn.as_mut().unwrap());
            randomize(block.rbr_1x1.bn.as_mut().unwrap());
            if let Some(bn) = block.rbr_identity.as_mut() {
                randomize(bn);
            }
            let twin =
                RepVggBlock::init(&spec, config, &device).load_record(block.clone().into_record());
            let x =
                Tensor::<4>::random([3, spec.in_channels, 6, 5], Distribution::Default, &device)
                    .require_grad();
            let fused = block.forward(x.clone());
            let branches = twin.forward_branches(x.clone());
            let weights = Tensor::<4>::random(fused.dims(), Distribution::Default, &device);
            let fused_grads = (fused.clone() * weights.clone()).sum().backward();
            let branch_grads = (branches.clone() * weights).sum().backward();
            let case = &spec.path;
            close(
                &format!("{case} output"),
                fused.into_data(),
                branches.into_data(),
            );
            close(
                &format!("{case} input grad"),
                x.grad(&fused_grads).unwrap().into_data(),
                x.grad(&branch_grads).unwrap().into_data(),
            );
            let pairs = [
                (&block.rbr_dense, &twin.rbr_dense),
                (&block.rbr_1x1, &twin.rbr_1x1),
            ];
            for (index, (ours, theirs)) in pairs.into_iter().enumerate() {
                close(
                    &format!("{case} branch {index} weight grad"),
                    ours.conv.weight.grad(&fused_grads).unwrap().into_data(),
                    theirs.conv.weight.grad(&branch_grads).unwrap().into_data(),
                );
            }
            let norms = block.norms().zip(twin.norms()).enumerate();
            for (index, (ours, theirs)) in norms {
                let what = |name: &str| format!("{case} norm {index} {name}");
                for (name, a, b) in [
                    ("gamma grad", &ours.gamma, &theirs.gamma),
                    ("beta grad", &ours.beta, &theirs.beta),
                ] {
                    close(
                        &what(name),
                        a.grad(&fused_grads).unwrap().into_data(),
                        b.grad(&branch_grads).unwrap().into_data(),
                    );
                }
                for (name, a, b) in [
                    ("running mean", &ours.running_mean, &theirs.running_mean),
                    ("running var", &ours.running_var, &theirs.running_var),
                ] {
                    let (a, b) = (values(a.value_sync()), values(b.value_sync()));
                    let tensor = |v: Vec<f32>| TensorData::new(v, [spec.out_channels]);
                    close(&what(name), tensor(a), tensor(b));
                }
            }
        }
    }
}
