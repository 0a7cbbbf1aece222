//! Weights as named tensors keyed by Burn module path: the record that the re-parameterization
//! maps and that checkpoints are read into and written from.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{DType, TensorData};
use burn_store::{ModuleSnapshot, bridge};

use crate::error::WeightsError;
use crate::inspect::{TensorInfo, tensor_infos};

/// A set of f32 tensors named by module path (`stage1.0.rbr_dense.conv.weight`,
/// `linear.weight`, ...), in Burn's conventions: BN `gamma`/`beta`, linear weight
/// `[d_in, d_out]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, TensorData>,
}

impl Weights {
    /// Every float tensor of `module`, parameters and running statistics, read back from its
    /// device.
    pub fn from_module<M: Module>(module: &M) -> Result<Self, WeightsError> {
        module
            .collect(None, None, false)
            .into_iter()
            .map(|tensor| {
                let name = tensor.name.clone();
                let data = bridge::into_data(tensor).map_err(|source| WeightsError::Tensor {
                    name: name.clone(),
                    source,
                })?;
                Ok((name, data))
            })
            .collect()
    }

    /// Adds or replaces a tensor, converting it to f32.
    pub fn insert(&mut self, name: impl Into<String>, data: TensorData) {
        let data = match data.dtype() {
            DType::F32 => data,
            _ => data.convert::<f32>(),
        };
        self.tensors.insert(name.into(), data);
    }

    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, or an error naming it as missing from `what`.
    pub fn require(&self, name: &str, what: &str) -> Result<&TensorData, WeightsError> {
        self.get(name)
            .ok_or_else(|| WeightsError::mismatch(what, vec![name.into()], vec![], vec![]))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorData)> {
        self.tensors
            .iter()
            .map(|(name, data)| (name.as_str(), data))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The name of the first tensor (in name order) holding a NaN or an infinity, if any.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.iter()
            .find(|(_, data)| data.iter::<f32>().any(|value| !value.is_finite()))
            .map(|(name, _)| name)
    }

    /// The outputs of the classifier these weights hold: `linear.bias`'s length, 0 for a
    /// headless network, `None` when `linear.bias` is not a vector (loading will name it).
    pub fn num_classes(&self) -> Option<usize> {
        match self.get("linear.bias").map(|bias| bias.shape().to_vec()) {
            None => Some(0),
            Some(shape) => match shape.as_slice() {
                [classes] => Some(*classes),
                _ => None,
            },
        }
    }

    /// Number of elements over all tensors.
    pub fn num_elements(&self) -> usize {
        self.tensors.values().map(|data| data.num_elements()).sum()
    }

    /// Checks that these weights are exactly the tensors of `layout` (the tensors of a module,
    /// see [`tensor_infos`]): none missing, none unexpected, every shape right. `what` names the
    /// layout in the error, e.g. "the RepVGG-A0 training-time network".
    pub fn check_layout(&self, layout: &[TensorInfo], what: &str) -> Result<(), WeightsError> {
        let mut missing = Vec::new();
        let mut wrong_shape = Vec::new();
        for info in layout {
            match self.tensors.get(&info.path) {
                None => missing.push(info.path.clone()),
                Some(data) if data.shape().as_slice() != info.shape.as_slice() => {
                    wrong_shape.push(format!(
                        "{}: expected {:?}, found {:?}",
                        info.path,
                        info.shape,
                        data.shape().as_slice()
                    ))
                }
                Some(_) => {}
            }
        }
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|name| !layout.iter().any(|info| &info.path == *name))
            .cloned()
            .collect();
        if missing.is_empty() && unexpected.is_empty() && wrong_shape.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::mismatch(
                what,
                missing,
                unexpected,
                wrong_shape,
            ))
        }
    }

    /// Loads these weights into `module`, strictly: every tensor of the module must be present
    /// with its shape, and no other tensor may be left over.
    pub fn load_into<M: Module>(&self, mut module: M, what: &str) -> Result<M, WeightsError> {
        self.check_layout(&tensor_infos(&module), what)?;
        let tensors = self
            .tensors
            .iter()
            .map(|(name, data)| bridge::from_data(data.clone(), name.clone(), None))
            .collect();
        let result = module.apply(tensors, None, None, false);
        let count = result.errors.len();
        if let Some(source) = result.errors.into_iter().next() {
            return Err(WeightsError::Apply {
                what: what.to_string(),
                count,
                source: Box::new(source),
            });
        }
        Ok(module)
    }
}

impl FromIterator<(String, TensorData)> for Weights {
    fn from_iter<I: IntoIterator<Item = (String, TensorData)>>(iter: I) -> Self {
        let mut weights = Weights::default();
        for (name, data) in iter {
            weights.insert(name, data);
        }
        weights
    }
}
