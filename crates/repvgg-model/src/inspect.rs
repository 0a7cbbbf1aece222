//! Listing a module's tensors by path, and counting the trainable ones.
//!
//! Burn's `Module::num_params` also counts running statistics (batch-norm buffers); the paper and
//! the reference count only what the optimizer trains.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use crate::config::RepVggConfig;
use crate::plus::{RepVggPlus, RepVggPlusDeploy};

/// Names of the tensors that are state, not parameters.
const BUFFER_NAMES: [&str; 2] = ["running_mean", "running_var"];

/// One float tensor of a module: its dotted path and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Module path, e.g. `stage1.0.rbr_dense.conv.weight`.
    pub path: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Whether the optimizer trains this tensor (batch-norm running statistics it does not).
    pub fn is_trainable(&self) -> bool {
        let name = self.path.rsplit('.').next().unwrap_or_default();
        !BUFFER_NAMES.contains(&name)
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every float tensor of `module` (parameters and running statistics) in traversal order,
/// without initialising lazy parameters.
pub fn tensor_infos<M: Module>(module: &M) -> Vec<TensorInfo> {
    let mut collector = PathCollector::default();
    module.visit(&mut collector);
    collector.tensors
}

/// The tensors of the training-time network `config` describes (`RepVgg` or `RepVggPlus`),
/// without allocating its weights.
///
/// # Panics
/// If the configuration is invalid.
pub fn training_layout(config: &RepVggConfig, device: &Device) -> Vec<TensorInfo> {
    match config.is_plus() {
        true => tensor_infos(&RepVggPlus::new(config, device)),
        false => tensor_infos(&config.init(device)),
    }
}

/// The tensors of the deploy-time network `config` describes (`RepVggDeploy` or
/// `RepVggPlusDeploy`), without allocating its weights.
///
/// # Panics
/// If the configuration is invalid.
pub fn deploy_layout(config: &RepVggConfig, device: &Device) -> Vec<TensorInfo> {
    match config.is_plus() {
        true => tensor_infos(&RepVggPlusDeploy::new(config, device)),
        false => tensor_infos(&config.init_deploy(device)),
    }
}

/// Number of trainable parameters of `module` (BN running statistics excluded).
pub fn num_trainable_params<M: Module>(module: &M) -> usize {
    tensor_infos(module)
        .iter()
        .filter(|tensor| tensor.is_trainable())
        .map(TensorInfo::num_elements)
        .sum()
}

#[derive(Default)]
struct PathCollector {
    path: Vec<String>,
    tensors: Vec<TensorInfo>,
}

impl ModuleVisitor for PathCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.tensors.push(TensorInfo {
            path: self.path.join("."),
            shape: param.lazy_shape().to_vec(),
        });
    }
}
