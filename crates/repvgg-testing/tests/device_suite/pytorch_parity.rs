//! Parity with PyTorch on the fixtures of `scripts/make_fixtures.py`: reference and timm
//! checkpoints load into our networks, reproduce PyTorch's logits, convert to PyTorch's deploy
//! logits, and export to safetensors that read back identically.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use repvgg_deploy::{Form, detect_arch, read_checkpoint, write_checkpoint};
use repvgg_model::{RepVggConfig, RepVggDeploy, RepVggPlus, RepVggPlusDeploy, TrainingNetwork};
use repvgg_model::{Weights, reparameterize};
use repvgg_testing::{fixture, scratch, test_device};
use repvgg_train::{TrainingConfig, WeightsInit, starting_network};

const TOLERANCE: f32 = 1e-4;

/// The fixture's input and PyTorch's training-time and deploy-time logits.
fn io(name: &str) -> (TensorData, TensorData, TensorData) {
    let checkpoint =
        read_checkpoint(&fixture(&format!("{name}_io.safetensors"))).expect("fixture io file");
    let raw = |key: &str| checkpoint.weights.get(key).unwrap().clone();
    (raw("input"), raw("logits_train"), raw("logits_deploy"))
}

fn config(name: &str) -> RepVggConfig {
    RepVggConfig::load(fixture(&format!("{name}.json"))).unwrap()
}

fn max_abs_difference(actual: &TensorData, expected: &TensorData) -> f32 {
    repvgg_model::logit_difference(actual, expected).max_abs
}

/// Loads a training-time checkpoint, checks its logits and those of its conversion against
/// PyTorch's; returns the deploy weights.
fn check_training_checkpoint(fixture_name: &str, file: &str) -> Weights {
    let device = test_device();
    let config = config(fixture_name);
    let (input, logits_train, logits_deploy) = io(fixture_name);
    let input = Tensor::<4>::from_data(input, &device);

    let checkpoint = read_checkpoint(&fixture(file)).unwrap();
    assert_eq!(checkpoint.form, Form::Training, "{file}");
    let model = checkpoint
        .weights
        .load_into(config.init(&device), "the fixture network")
        .unwrap();
    let diff = max_abs_difference(&model.forward(input.clone()).into_data(), &logits_train);
    eprintln!("{file}: max |ours - PyTorch| training-time {diff:.2e}");
    assert!(
        diff <= TOLERANCE,
        "{file}: training-time logits differ by {diff:e}"
    );

    let deploy = reparameterize(&checkpoint.weights, &config, &device).unwrap();
    let deployed = deploy
        .load_into(config.init_deploy(&device), "the fixture deploy network")
        .unwrap();
    let diff = max_abs_difference(&deployed.forward(input).into_data(), &logits_deploy);
    eprintln!("{file}: max |our conversion - PyTorch deploy| {diff:.2e}");
    assert!(
        diff <= TOLERANCE,
        "{file}: deploy logits differ by {diff:e}"
    );
    deploy
}

#[test]
fn reference_training_checkpoints_match_pytorch() {
    for name in ["narrow", "grouped", "se"] {
        check_training_checkpoint(name, &format!("{name}_train.pth"));
    }
}

/// QARepVGG, as the PyTorch block written from its paper keys it (YOLOv6's `rbr_1x1.weight` and
/// `bn.*`): its logits, its fusion against PyTorch's deploy state dict tensor by tensor, and a
/// safetensors export that PyTorch's block reads back under the same keys.
#[test]
fn qarepvgg_checkpoints_match_pytorch() {
    let config = config("qa");
    assert!(config.is_quantization_aware());
    let ours = check_training_checkpoint("qa", "qa_train.pth");
    let theirs = read_checkpoint(&fixture("qa_deploy.pth")).unwrap();
    assert_eq!(theirs.form, Form::Deploy);
    for (tensor, data) in ours.iter() {
        let diff = max_abs_difference(data, theirs.weights.get(tensor).unwrap());
        assert!(diff <= 1e-5, "{tensor}: fused weights differ by {diff:e}");
    }

    let training = read_checkpoint(&fixture("qa_train.pth")).unwrap();
    let scratch = scratch("qa-export");
    let path = scratch.path().join("qa.safetensors");
    write_checkpoint(&training.weights, &config, None, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = file.names().into_iter().map(String::from).collect();
    for key in [
        "stage1.1.rbr_1x1.weight",
        "stage1.1.bn.weight",
        "stage1.1.bn.running_var",
    ] {
        assert!(
            names.iter().any(|name| name == key),
            "{key} missing: {names:?}"
        );
    }
    assert!(names.iter().all(|name| !name.contains("rbr_1x1.conv")));
    assert_eq!(read_checkpoint(&path).unwrap().weights, training.weights);
}

/// A QARepVGG checkpoint of a reference architecture resolves to QARepVGG's blocks whether the
/// architecture is named (`--arch A0`) or detected, since the name alone does not say it.
#[test]
fn qarepvgg_presets_are_recognised_from_their_tensors() {
    use repvgg_deploy::{ArchSource, ResolvedCheckpoint};
    use repvgg_model::RepVggArch;

    let device = test_device();
    let config = RepVggArch::A0.config().quantization_aware();
    let model = repvgg_testing::random_training_model(&config, &device);
    let scratch = scratch("qa-preset");
    let path = scratch.path().join("qa_a0.safetensors");
    write_checkpoint(&Weights::from_module(&model).unwrap(), &config, None, &path).unwrap();
    for source in [ArchSource::Preset(RepVggArch::A0), ArchSource::Auto] {
        let resolved = ResolvedCheckpoint::read(&path, &source).unwrap();
        assert!(resolved.config.is_quantization_aware(), "{source:?}");
        assert!(
            resolved.description.contains("QARepVGG"),
            "{}",
            resolved.description
        );
        assert_eq!(resolved.into_model(&device).unwrap().form(), Form::Training);
    }
    // RepVGG's own checkpoints stay RepVGG's.
    let plain = scratch.path().join("a0.safetensors");
    let repvgg = repvgg_testing::random_training_model(&RepVggArch::A0.config(), &device);
    write_checkpoint(
        &Weights::from_module(&repvgg).unwrap(),
        &RepVggArch::A0.config(),
        None,
        &plain,
    )
    .unwrap();
    let resolved = ResolvedCheckpoint::read(&plain, &ArchSource::Auto).unwrap();
    assert!(!resolved.config.is_quantization_aware());
}

#[test]
fn wrapped_and_prefixed_checkpoints_load() {
    check_training_checkpoint("narrow", "narrow_train_wrapped.pth");
}

#[test]
fn timm_checkpoints_match_pytorch() {
    check_training_checkpoint("timm", "timm_train.safetensors");
    let device = test_device();
    let (input, _, logits_deploy) = io("timm");
    let checkpoint = read_checkpoint(&fixture("timm_deploy.safetensors")).unwrap();
    assert_eq!(checkpoint.form, Form::Deploy);
    let deployed = checkpoint
        .weights
        .load_into(config("timm").init_deploy(&device), "timm deploy")
        .unwrap();
    let logits = deployed
        .forward(Tensor::from_data(input, &device))
        .into_data();
    assert!(max_abs_difference(&logits, &logits_deploy) <= TOLERANCE);
}

#[test]
fn reference_deploy_checkpoints_load_and_match_our_conversion() {
    let device = test_device();
    for name in ["narrow", "grouped", "se"] {
        let (input, _, logits_deploy) = io(name);
        let checkpoint = read_checkpoint(&fixture(&format!("{name}_deploy.pth"))).unwrap();
        assert_eq!(checkpoint.form, Form::Deploy);
        let deployed: RepVggDeploy = checkpoint
            .weights
            .load_into(config(name).init_deploy(&device), "deploy")
            .unwrap();
        let logits = deployed
            .forward(Tensor::from_data(input, &device))
            .into_data();
        let diff = max_abs_difference(&logits, &logits_deploy);
        assert!(diff <= TOLERANCE, "{name}: {diff:e}");

        let ours = check_training_checkpoint(name, &format!("{name}_train.pth"));
        for (tensor, data) in ours.iter() {
            let theirs = checkpoint.weights.get(tensor).unwrap();
            let diff = max_abs_difference(data, theirs);
            assert!(
                diff <= 1e-5,
                "{name} {tensor}: fused weights differ by {diff:e}"
            );
        }
    }
}

#[test]
fn exports_round_trip_in_both_formats() {
    let scratch = scratch("export");
    let dir = scratch.path();
    let device = test_device();
    let config = config("se");
    let checkpoint = read_checkpoint(&fixture("se_train.pth")).unwrap();
    let deploy = reparameterize(&checkpoint.weights, &config, &device).unwrap();
    for file in ["se.safetensors", "se.bpk"] {
        let path = dir.join(file);
        write_checkpoint(&deploy, &config, None, &path).unwrap();
        let read = read_checkpoint(&path).unwrap();
        assert_eq!(read.form, Form::Deploy);
        assert_eq!(read.weights, deploy, "{file}");
        let expected_config = file.ends_with(".bpk").then(|| config.clone());
        assert_eq!(read.config, expected_config, "{file}");
    }
}

#[test]
fn safetensors_export_uses_reference_names_and_pytorch_layout() {
    let scratch = scratch("names");
    let dir = scratch.path();
    let device = test_device();
    let config = config("narrow");
    let checkpoint = read_checkpoint(&fixture("narrow_train.pth")).unwrap();
    let deploy = reparameterize(&checkpoint.weights, &config, &device).unwrap();
    let path = dir.join("narrow.safetensors");
    write_checkpoint(&deploy, &config, None, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
    names.sort();
    let mut expected: Vec<String> = (0..7)
        .flat_map(|i| {
            let block = match i {
                0 => "stage0".to_string(),
                i => format!("stage{}.{}", (i + 1) / 2, (i + 1) % 2),
            };
            [
                format!("{block}.rbr_reparam.bias"),
                format!("{block}.rbr_reparam.weight"),
            ]
        })
        .chain(["linear.bias".to_string(), "linear.weight".to_string()])
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    // PyTorch's Linear keeps [out, in].
    assert_eq!(file.tensor("linear.weight").unwrap().shape(), [10, 64]);
}

#[test]
fn architecture_is_detected_from_shapes() {
    let device = test_device();
    for arch in [
        repvgg_model::RepVggArch::A0,
        repvgg_model::RepVggArch::B1g4,
        repvgg_model::RepVggArch::D2se,
    ] {
        let config = arch.config().with_num_classes(12);
        // Lazy parameters: only the layout is needed, so take it without materialising weights.
        let weights: Weights = repvgg_model::tensor_infos(&config.init_deploy(&device))
            .into_iter()
            .map(|info| (info.path, TensorData::zeros::<f32, _>(info.shape)))
            .collect();
        assert_eq!(detect_arch(&weights).unwrap(), (arch, config), "{arch}");
    }
    let custom = read_checkpoint(&fixture("grouped_train.pth")).unwrap();
    let err = detect_arch(&custom.weights).unwrap_err().to_string();
    assert!(err.contains("match no reference architecture"), "{err}");
    assert!(err.contains("blocks per stage [2, 3, 2]"), "{err}");
}

#[test]
fn burn_module_records_read_as_checkpoints() {
    use burn::module::Module;
    let scratch = scratch("record");
    let dir = scratch.path();
    let device = test_device();
    let config = config("grouped");
    let model = config.init(&device);
    let expected = Weights::from_module(&model).unwrap();
    let path = dir.join("grouped_train.bpk");
    model.into_record().save(&path).unwrap();
    let checkpoint = read_checkpoint(&path).unwrap();
    assert_eq!(checkpoint.form, Form::Training);
    assert_eq!(checkpoint.config, None);
    assert_eq!(checkpoint.weights, expected);
}

/// Every fixture tensor of the RepVGGplus io file.
fn plus_io() -> Weights {
    read_checkpoint(&fixture("plus_io.safetensors"))
        .expect("fixture io file")
        .weights
}

#[test]
fn repvggplus_checkpoints_match_pytorch_with_aux_heads() {
    let device = test_device();
    let config = config("plus");
    assert!(config.is_plus() && config.has_aux_heads());
    let io = plus_io();
    let input = Tensor::<4>::from_data(io.get("input").unwrap().clone(), &device);
    let reference_deploy = read_checkpoint(&fixture("plus_deploy.pth")).unwrap();
    assert_eq!(reference_deploy.form, Form::Deploy);
    // The plain state dict and main.py's checkpoint ({'model': {'module.…': …}, 'optimizer': …}).
    for file in ["plus_train.pth", "plus_train_wrapped.pth"] {
        let checkpoint = read_checkpoint(&fixture(file)).unwrap();
        assert_eq!(checkpoint.form, Form::Training, "{file}");
        let model = checkpoint
            .weights
            .load_into(RepVggPlus::new(&config, &device), "the fixture network")
            .unwrap();
        assert_eq!(model.num_trainable_params(), 40_147, "{file}");
        let output = model.forward_with_aux(input.clone());
        let heads = ["stage1_aux", "stage2_aux", "stage3_first_aux"];
        for (name, logits) in
            std::iter::once(("train_logits", output.main)).chain(heads.into_iter().zip(output.aux))
        {
            let diff = max_abs_difference(&logits.into_data(), io.get(name).unwrap());
            eprintln!("{file}: {name} max |ours - PyTorch| {diff:.2e}");
            assert!(diff <= TOLERANCE, "{file} {name}: {diff:e}");
        }

        let deploy = reparameterize(&checkpoint.weights, &config, &device).unwrap();
        let deployed = deploy
            .load_into(
                RepVggPlusDeploy::new(&config, &device),
                "the fixture deploy network",
            )
            .unwrap();
        assert_eq!(deployed.num_trainable_params(), 29_094);
        let logits = deployed.forward(input.clone()).into_data();
        let diff = max_abs_difference(&logits, io.get("deploy_logits").unwrap());
        eprintln!("{file}: max |our conversion - PyTorch deploy| {diff:.2e}");
        assert!(
            diff <= TOLERANCE,
            "{file}: deploy logits differ by {diff:e}"
        );
        assert_eq!(
            deploy.names().collect::<Vec<_>>(),
            reference_deploy.weights.names().collect::<Vec<_>>()
        );
        for (tensor, data) in deploy.iter() {
            let diff = max_abs_difference(data, reference_deploy.weights.get(tensor).unwrap());
            assert!(diff <= 1e-5, "{tensor}: fused weights differ by {diff:e}");
        }
    }
}

#[test]
fn repvggplus_exports_use_the_reference_keys() {
    let scratch = scratch("plus-export");
    let device = test_device();
    let config = config("plus");
    let training = read_checkpoint(&fixture("plus_train.pth")).unwrap().weights;
    let deploy = reparameterize(&training, &config, &device).unwrap();
    // Keys as PyTorch wrote them, read raw (no renaming).
    let pytorch_keys = |file: &str| -> Vec<(String, Vec<usize>)> {
        let reader = burn_store::pytorch_reader::PytorchReader::new(fixture(file)).unwrap();
        let mut keys: Vec<(String, Vec<usize>)> = reader
            .into_tensors()
            .into_iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .map(|(name, tensor)| (name, tensor.shape().to_vec()))
            .collect();
        keys.sort();
        keys
    };
    for (weights, reference, file) in [
        (&deploy, "plus_deploy.pth", "deploy.safetensors"),
        (&training, "plus_train.pth", "train.safetensors"),
    ] {
        let path = scratch.path().join(file);
        write_checkpoint(weights, &config, None, &path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o644,
                "{file}: readable by others, as .bpk files are"
            );
        }
        let bytes = std::fs::read(&path).unwrap();
        let written = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut keys: Vec<(String, Vec<usize>)> = written
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        keys.sort();
        // What the reference's model loads with strict=True (BN counters aside).
        assert_eq!(keys, pytorch_keys(reference), "{file}");
        assert_eq!(&read_checkpoint(&path).unwrap().weights, weights, "{file}");
    }
}

#[test]
fn repvggplus_is_detected_and_served_by_the_cpu_engine() {
    use repvgg_deploy::{ArchSource, DeployModel};
    use repvgg_model::RepVggArch;
    let device = test_device();
    for (form, layout) in [
        (
            "training",
            repvgg_model::training_layout(&RepVggArch::L2pse.config(), &device),
        ),
        (
            "deploy",
            repvgg_model::deploy_layout(&RepVggArch::L2pse.config(), &device),
        ),
    ] {
        let weights: Weights = layout
            .into_iter()
            .map(|info| (info.path, TensorData::zeros::<f32, _>(info.shape)))
            .collect();
        let (arch, _) = detect_arch(&weights).unwrap();
        assert_eq!(arch, RepVggArch::L2pse, "{form}");
    }
    let custom = read_checkpoint(&fixture("plus_train.pth")).unwrap();
    let err = detect_arch(&custom.weights).unwrap_err().to_string();
    assert!(
        err.contains("RepVGGplus, blocks per stage [1, 1, 4, 1]"),
        "{err}"
    );
    // A stage 3 split other than the reference's (first half n/2 blocks) is no RepVGGplus.
    let resplit: Weights = custom
        .weights
        .iter()
        .map(|(name, data)| {
            let name = name.replace("stage3_second.blocks.0.", "stage3_first.blocks.2.");
            let name = name.replace("stage3_second.blocks.1.", "stage3_second.blocks.0.");
            (name, data.clone())
        })
        .collect();
    let err = detect_arch(&resplit).unwrap_err().to_string();
    assert!(err.contains("splits into 3 + 1 blocks"), "{err}");

    let io = plus_io();
    let input = || Tensor::<4>::from_data(io.get("input").unwrap().clone(), &device);
    let source = ArchSource::Config(config("plus"));
    let model = DeployModel::load(&fixture("plus_train_wrapped.pth"), &source, &device).unwrap();
    let generic = model.model().forward(input()).into_data();
    let served = model.forward(input()).into_data();
    let expected = io.get("deploy_logits").unwrap();
    for (path, logits) in [("generic", &generic), ("served", &served)] {
        let diff = max_abs_difference(logits, expected);
        eprintln!("RepVGGplus {path} path: max |ours - PyTorch deploy| {diff:.2e}");
        assert!(diff <= TOLERANCE, "{path}: {diff:e}");
    }
    let features = model.forward_features(input());
    let reference_features = model.model().forward_features(input());
    assert_eq!(features.len(), 5);
    for (ours, generic) in features.into_iter().zip(reference_features) {
        let diff = max_abs_difference(&ours.into_data(), &generic.into_data());
        assert!(diff <= TOLERANCE, "features: {diff:e}");
    }
}

/// A fine-tuning run's first step from a PyTorch checkpoint: the network it starts from
/// computes PyTorch's training-mode logits (batch statistics) and moves the running statistics
/// as PyTorch does (momentum 0.1).
#[test]
fn fine_tuning_starts_from_pytorch_checkpoints_as_pytorch_does() {
    let device = test_device();
    for (name, file) in [
        ("narrow", "narrow_train.pth"),
        ("timm", "timm_train.safetensors"),
    ] {
        let config = TrainingConfig::new(config(name))
            .with_init(Some(WeightsInit::Checkpoint(fixture(file))));
        let classes: Vec<String> = (0..config.model.num_classes)
            .map(|class| class.to_string())
            .collect();
        let (net, initial) = starting_network(&config, &classes, &device.clone().autodiff())
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        assert_eq!(initial.unwrap().replaced_head, None, "{file}");

        let expected = read_checkpoint(&fixture(&format!("{name}_first_step.safetensors")))
            .expect("fixture first-step file")
            .weights;
        let raw = |key: &str| expected.get(key).unwrap().clone();
        let input = Tensor::<4>::from_data(raw("input"), &device.clone().autodiff());
        let logits = net.forward(input).into_data();
        let diff = max_abs_difference(&logits, &raw("logits"));
        eprintln!("{file}: max |ours - PyTorch| first training step {diff:.2e}");
        assert!(
            diff <= TOLERANCE,
            "{file}: first-step logits differ by {diff:e}"
        );

        let statistic = "stage0.rbr_dense.bn.running_mean";
        // Burn keeps a running statistic's update aside until the module is synchronized
        // (`valid` does it), as the learner does at the end of an epoch.
        let moved = match net {
            TrainingNetwork::RepVgg(net) => Weights::from_module(&net.valid()),
            TrainingNetwork::Plus(net) => Weights::from_module(&net.valid()),
        }
        .unwrap();
        let diff = max_abs_difference(moved.get(statistic).unwrap(), &raw(statistic));
        assert!(diff <= 1e-5, "{file}: {statistic} differs by {diff:e}");
    }
}
