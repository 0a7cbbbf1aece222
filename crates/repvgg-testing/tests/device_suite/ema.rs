//! The moving average of the weights: the blend, parameter by parameter and statistic by
//! statistic.

use repvgg_model::{RepVggConfig, Weights};
use repvgg_testing::test_device;
use repvgg_train::ema::Ema;

#[test]
fn the_average_blends_every_tensor_with_the_warmed_up_decay() {
    let device = test_device();
    let config = RepVggConfig::new(vec![1, 2], vec![0.125, 0.125]).with_num_classes(3);
    let first = config.init(&device);
    let second = config.init(&device);
    // Different BN statistics too, so that the running state is seen to be averaged.
    let mut shifted = Weights::from_module(&second).unwrap();
    let names: Vec<String> = shifted.names().map(str::to_string).collect();
    for name in names.iter().filter(|name| name.ends_with("running_var")) {
        let data = shifted.get(name).unwrap();
        let values: Vec<f32> = data.iter::<f32>().map(|v| v + 2.0).collect();
        let shape = data.shape().to_vec();
        shifted.insert(name.clone(), burn::tensor::TensorData::new(values, shape));
    }
    let second = shifted.load_into(second, "second").unwrap();

    let average = Ema::new(0.9, &device.clone().autodiff());
    assert!(average.model().is_none());
    average.update(&first);
    let after_one = Weights::from_module(&average.model().unwrap()).unwrap();
    assert_eq!(after_one, Weights::from_module(&first).unwrap());

    average.update(&second);
    assert_eq!(average.updates(), 2);
    // Second update: decay min(0.9, (1 + 1) / (10 + 1)).
    let decay = 2.0f32 / 11.0;
    let blended = Weights::from_module(&average.model().unwrap()).unwrap();
    let (first, second) = (
        Weights::from_module(&first).unwrap(),
        Weights::from_module(&second).unwrap(),
    );
    assert_eq!(blended.len(), first.len());
    for (name, value) in blended.iter() {
        let a = first.get(name).unwrap().iter::<f32>();
        let b = second.get(name).unwrap().iter::<f32>();
        for ((v, a), b) in value.iter::<f32>().zip(a).zip(b) {
            let expected = decay * a + (1.0 - decay) * b;
            assert!(
                (v - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{name}: {v} vs {expected}"
            );
        }
    }
}
