//! Training-time networks with random weights and random, non-trivial BN statistics, so that
//! every branch of the fusion matters.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use repvgg_model::{RepVgg, RepVggConfig, RepVggPlus, Weights};

/// `config`'s training-time network on `device`, seeded.
pub fn random_training_model(config: &RepVggConfig, device: &Device) -> RepVgg {
    device.seed(42);
    with_random_bn(config.init(device), device)
}

/// `config`'s training-time RepVGGplus network (auxiliary heads included) on `device`, seeded.
pub fn random_plus_model(config: &RepVggConfig, device: &Device) -> RepVggPlus {
    device.seed(42);
    with_random_bn(RepVggPlus::new(config, device), device)
}

/// `model` with random BN affine parameters and running statistics.
fn with_random_bn<M: Module>(model: M, device: &Device) -> M {
    let mut weights = Weights::from_module(&model).unwrap();
    let names: Vec<String> = weights.names().map(str::to_string).collect();
    for name in names {
        let shape = weights.get(&name).unwrap().shape().to_vec();
        let distribution = match name.rsplit('.').next().unwrap() {
            "gamma" => Distribution::Uniform(0.5, 1.5),
            "beta" | "running_mean" => Distribution::Normal(0.0, 0.2),
            "running_var" => Distribution::Uniform(0.5, 2.0),
            _ => continue,
        };
        weights.insert(name, random(shape, distribution, device));
    }
    weights.load_into(model, "the test network").unwrap()
}

fn random(shape: Vec<usize>, distribution: Distribution, device: &Device) -> TensorData {
    let values = Tensor::<1>::random([shape.iter().product::<usize>()], distribution, device)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    TensorData::new(values, shape)
}

/// max |a - b| / max |b|.
pub fn relative_difference(actual: &TensorData, expected: &TensorData) -> f32 {
    repvgg_model::logit_difference(actual, expected).relative
}
