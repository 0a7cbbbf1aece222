//! The deploy model as applications run it: one `forward` that takes the CPU path on Burn's CPU
//! backend and Burn's generic operations on every other device.

use burn::tensor::{Device, Tensor};
use repvgg_model::RepVggDeploy;

use crate::CpuDeploy;

/// A deploy-time RepVGG for inference. On a `Device::flex()` model, [`forward`](Self::forward)
/// runs the [`CpuDeploy`] path (prepared once, here); on wgpu, CUDA or an autodiff device it is
/// [`RepVggDeploy::forward`](repvgg_model::RepVggNetwork::forward). The weights cannot change
/// behind the prepared path: the model is owned, and [`into_model`](Self::into_model) gives it
/// back without the path.
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use repvgg_deploy::DeployModel;
/// use repvgg_model::RepVggConfig;
///
/// let device = Device::flex();
/// let config = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(5);
/// let model = DeployModel::new(config.init_deploy(&device));
/// assert!(model.uses_cpu_path());
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward(images).dims(), [2, 5]);
/// ```
#[derive(Debug)]
pub struct DeployModel {
    model: RepVggDeploy,
    cpu: Option<CpuDeploy>,
}

impl DeployModel {
    /// Wraps `model`, preparing the CPU path when it lives on Burn's CPU backend.
    pub fn new(model: RepVggDeploy) -> Self {
        let on_cpu = is_cpu_path_device(&model.linear.weight.val().device());
        let cpu = on_cpu.then(|| CpuDeploy::new(&model));
        Self { model, cpu }
    }

    /// Class logits, `[N, 3, H, W]` to `[N, classes]`, on the images' device.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match &self.cpu {
            Some(cpu) if is_cpu_path_device(&images.device()) => cpu.forward(images),
            _ => self.model.forward(images),
        }
    }

    /// The output of the stem and of every stage (strides 2 to 32), as
    /// [`RepVggDeploy::forward_features`](repvgg_model::RepVggNetwork::forward_features) gives
    /// them, through the CPU path where [`forward`](Self::forward) takes it.
    pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        match &self.cpu {
            Some(cpu) if is_cpu_path_device(&images.device()) => cpu.forward_features(images),
            _ => self.model.forward_features(images),
        }
    }

    /// Whether [`forward`](Self::forward) takes the CPU path for images on the model's device.
    pub fn uses_cpu_path(&self) -> bool {
        self.cpu.is_some()
    }

    /// The Burn module, for everything else (records, devices, parameter counts).
    pub fn model(&self) -> &RepVggDeploy {
        &self.model
    }

    /// The Burn module back, e.g. to move it to another device or change its weights.
    pub fn into_model(self) -> RepVggDeploy {
        self.model
    }
}

impl From<RepVggDeploy> for DeployModel {
    fn from(model: RepVggDeploy) -> Self {
        Self::new(model)
    }
}

/// The devices the CPU path serves: Burn's pure-Rust CPU backend without autodiff (an autodiff
/// device wants gradients, which only the generic operations record).
fn is_cpu_path_device(device: &Device) -> bool {
    !device.is_autodiff() && *device == Device::flex()
}
