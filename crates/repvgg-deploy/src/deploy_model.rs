//! The deploy model as applications run it: one `forward` that takes the CPU engine on Burn's
//! CPU backend (with the default `cpu` feature) and Burn's generic operations on every other
//! device.

use std::path::Path;

use burn::tensor::{Device, Tensor};
#[cfg(feature = "cpu")]
use repvgg_cpu::{CpuEngine, CpuOptions, CpuPrecision};
use repvgg_model::{DeployNetwork, RepVggConfig, Reparameterize};

use crate::error::DeployError;
use crate::load::{ArchSource, ResolvedCheckpoint};

/// A deploy-time RepVGG or RepVGGplus for inference. On a `Device::flex()` model,
/// [`forward`](Self::forward) runs the [`CpuEngine`] (prepared once, here); on wgpu, CUDA or
/// an autodiff device it is the network's own `forward`
/// ([`RepVggDeploy::forward`](repvgg_model::RepVggNetwork::forward)). The weights cannot change
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
/// assert!(model.uses_cpu_engine());
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward(images).dims(), [2, 5]);
/// ```
#[derive(Debug)]
pub struct DeployModel {
    model: DeployNetwork,
    #[cfg(feature = "cpu")]
    cpu: Option<CpuEngine>,
}

impl DeployModel {
    /// Wraps a deploy-time network (a [`RepVggDeploy`](repvgg_model::RepVggDeploy), a
    /// [`RepVggPlusDeploy`](repvgg_model::RepVggPlusDeploy) or a [`DeployNetwork`]), preparing
    /// the CPU engine when it lives on Burn's CPU backend.
    pub fn new(model: impl Into<DeployNetwork>) -> Self {
        let model = model.into();
        Self {
            #[cfg(feature = "cpu")]
            cpu: model
                .device()
                .filter(is_cpu_engine_device)
                .map(|_| CpuEngine::new(&model)),
            model,
        }
    }

    /// [`new`](Self::new) with the CPU engine's precision and algorithm chosen (bf16 for twice
    /// f32's speed on CPUs with AVX512_BF16, see [`CpuPrecision`]); an error if the model is not
    /// on Burn's CPU backend (only the CPU engine has the options) or the CPU cannot run them.
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use repvgg_deploy::{CpuOptions, CpuPrecision, DeployModel};
    /// use repvgg_model::RepVggConfig;
    ///
    /// let net = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init_deploy(&Device::flex());
    /// let options = CpuOptions::default().with_precision(CpuPrecision::Bf16);
    /// match DeployModel::with_options(net, options) {
    ///     Ok(model) => assert_eq!(model.precision(), CpuPrecision::Bf16),
    ///     Err(err) => assert!(err.to_string().contains("AVX512_BF16")), // an older CPU
    /// }
    /// ```
    #[cfg(feature = "cpu")]
    pub fn with_options(
        model: impl Into<DeployNetwork>,
        options: CpuOptions,
    ) -> Result<Self, DeployError> {
        let model = model.into();
        options.check()?;
        if !model
            .device()
            .is_some_and(|device| is_cpu_engine_device(&device))
        {
            return Err(DeployError::UnsupportedPrecision {
                precision: options.precision.name(),
                reason: "the CPU engine's options apply to models on Burn's CPU backend \
                         (Device::flex()); other devices run the network's own f32 operations"
                    .into(),
            });
        }
        let cpu = CpuEngine::with_options(&model, options)?;
        Ok(Self {
            cpu: Some(cpu),
            model,
        })
    }

    /// The precision [`forward`](Self::forward) computes in (f32 off the CPU engine).
    #[cfg(feature = "cpu")]
    pub fn precision(&self) -> CpuPrecision {
        self.cpu
            .as_ref()
            .map_or(CpuPrecision::F32, |cpu| cpu.options().precision)
    }

    /// The CPU engine, where [`forward`](Self::forward) takes it (its options, its prepared
    /// size).
    #[cfg(feature = "cpu")]
    pub fn cpu_engine(&self) -> Option<&CpuEngine> {
        self.cpu.as_ref()
    }

    /// The deploy model of a training-time network, re-parameterized on its device: a
    /// [`RepVgg`](repvgg_model::RepVgg), a [`RepVggPlus`](repvgg_model::RepVggPlus) (its
    /// auxiliary heads dropped) or a [`TrainingNetwork`](repvgg_model::TrainingNetwork).
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use repvgg_deploy::DeployModel;
    /// use repvgg_model::RepVggConfig;
    ///
    /// let trained = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).init(&Device::flex());
    /// let model = DeployModel::from_training(&trained)?;
    /// # Ok::<(), repvgg_deploy::DeployError>(())
    /// ```
    pub fn from_training<M>(model: &M) -> Result<Self, DeployError>
    where
        M: Reparameterize,
        M::Deploy: Into<DeployNetwork>,
    {
        Ok(Self::new(model.reparameterize()?))
    }

    /// Reads a checkpoint of either form and any supported format (re-parameterizing a
    /// training-time one) into a model on `device`.
    pub fn load(path: &Path, source: &ArchSource, device: &Device) -> Result<Self, DeployError> {
        let resolved = ResolvedCheckpoint::read(path, source)?;
        let config = resolved.config.clone();
        let weights = resolved.deploy_weights(device)?;
        let what = format!("{}, deploy form", resolved.description);
        Ok(Self::new(DeployNetwork::load(
            &weights, &config, device, &what,
        )?))
    }

    /// The architecture.
    pub fn config(&self) -> &RepVggConfig {
        self.model.config()
    }

    /// Class logits, `[N, 3, H, W]` to `[N, classes]`, on the images' device.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        #[cfg(feature = "cpu")]
        if let Some(cpu) = &self.cpu
            && is_cpu_engine_device(&images.device())
        {
            return cpu.forward(images);
        }
        self.model.forward(images)
    }

    /// The output of the stem and of every stage (strides 2 to 32), as
    /// [`RepVggDeploy::forward_features`](repvgg_model::RepVggNetwork::forward_features) gives
    /// them, through the CPU engine where [`forward`](Self::forward) takes it.
    pub fn forward_features(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        #[cfg(feature = "cpu")]
        if let Some(cpu) = &self.cpu
            && is_cpu_engine_device(&images.device())
        {
            return cpu.forward_features(images);
        }
        self.model.forward_features(images)
    }

    /// Whether [`forward`](Self::forward) takes the CPU engine for images on the model's device.
    pub fn uses_cpu_engine(&self) -> bool {
        #[cfg(feature = "cpu")]
        return self.cpu.is_some();
        #[cfg(not(feature = "cpu"))]
        false
    }

    /// The network, for everything else (weights, devices, parameter counts).
    pub fn model(&self) -> &DeployNetwork {
        &self.model
    }

    /// The network back, e.g. to move it to another device or change its weights.
    pub fn into_model(self) -> DeployNetwork {
        self.model
    }

    /// The ONNX model of this network (the bytes of a `.onnx` file), for ONNX Runtime,
    /// OpenVINO or TensorRT: see [`onnx`](crate::onnx).
    #[cfg(feature = "onnx")]
    pub fn to_onnx(&self, options: &crate::onnx::OnnxOptions) -> Result<Vec<u8>, DeployError> {
        crate::onnx::network_to_onnx(&self.model, options)
    }
}

/// The devices the CPU engine serves: Burn's pure-Rust CPU backend without autodiff (an autodiff
/// device wants gradients, which only the generic operations record).
#[cfg(feature = "cpu")]
fn is_cpu_engine_device(device: &Device) -> bool {
    !device.is_autodiff() && *device == Device::flex()
}
