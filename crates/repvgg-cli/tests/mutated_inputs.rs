//! The `repvgg` binary on damaged checkpoints: every format's valid small files, damaged as the
//! library's mutation test damages them, through `convert`, `classify` and `eval`. Each run
//! exits 0 or 1, never with a panic; where the library refuses the file, the binary exits 1
//! and leaves no output file behind; where it accepts it, `convert` writes one.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use repvgg_data::write_synthetic_set;
use repvgg_deploy::{ArchSource, ResolvedCheckpoint, write_checkpoint};
use repvgg_model::{RepVggConfig, Weights};
use repvgg_testing::fixture;
use repvgg_testing::mutation::{self, Format, apply};

/// The arguments of a command given the weights file, its config (when it records none) and a
/// directory for anything it writes.
type Arguments = Box<dyn Fn(&Path, Option<&Path>, &Path) -> Vec<OsString>>;

/// A command of the binary and how many damaged files it is given per source.
struct EntryPoint {
    name: &'static str,
    cases: u32,
    args: Arguments,
}

/// What the damaged inputs did to one command.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    refused: usize,
    panics: usize,
    left_behind: usize,
}

/// Runs `entry` on `cases` damaged copies of `source` and checks each run against the library's
/// verdict on the same bytes.
fn mutate(entry: &EntryPoint, source: &Path, config: Option<&Path>, scratch: &Path) -> Tally {
    let format = Format::of(source).unwrap();
    let arch = config.map_or(ArchSource::Auto, |c| {
        ArchSource::ConfigFile(c.to_path_buf())
    });
    let bytes = std::fs::read(source).unwrap();
    let input = scratch.join(format!(
        "mutated.{}",
        source.extension().unwrap().to_string_lossy()
    ));
    let output = scratch.join("out");
    std::fs::create_dir_all(&output).unwrap();
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases: entry.cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&mutation::mutation(format), |mutation| {
        std::fs::write(&input, apply(&bytes, format, &mutation)).unwrap();
        let accepted = ResolvedCheckpoint::read(&input, &arch)
            .and_then(|resolved| resolved.deploy_weights(&Device::flex()).map(drop))
            .is_ok();
        let run = Command::new(env!("CARGO_BIN_EXE_repvgg"))
            .args((entry.args)(&input, config, &output))
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        let left: Vec<_> = std::fs::read_dir(&output).unwrap().collect();
        let wrote = !left.is_empty();
        let mut tally = tally.borrow_mut();
        tally.tried += 1;
        tally.refused += usize::from(!run.status.success());
        tally.panics += usize::from(stderr.contains("panicked"));
        if !accepted {
            tally.left_behind += left.len();
        }
        for file in left {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
        let failure = |what: &str| {
            Err(TestCaseError::fail(format!(
                "{} on {mutation:?}: {what} (exit {:?}): {stderr}",
                entry.name,
                run.status.code()
            )))
        };
        match run.status.code() {
            _ if stderr.contains("panicked") => failure("panicked"),
            Some(0) if !accepted => failure("accepted what the library refuses"),
            Some(0) if entry.name == "convert" && !wrote => failure("succeeded without writing"),
            Some(0 | 1) if !accepted && tally.left_behind > 0 => failure("left a file behind"),
            Some(0 | 1) => Ok(()),
            _ => failure("exited neither 0 nor 1"),
        }
    });
    if let Err(err) = result {
        panic!("{}: {err}", source.display());
    }
    tally.into_inner()
}

#[test]
fn damaged_checkpoints_fail_cleanly_through_the_binary() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let config = RepVggConfig::new(vec![1, 1], vec![0.25, 0.25]).with_num_classes(3);
    let weights = Weights::from_module(&config.init(&Device::flex())).unwrap();
    let burnpack = root.join("small.bpk");
    let classes = ["a", "b", "c"].map(String::from);
    write_checkpoint(&weights, &config, Some(&classes), &burnpack).unwrap();
    let data = root.join("data");
    write_synthetic_set(&data, 0, 1, 3).unwrap();
    let image = std::fs::read_dir(data.join("val"))
        .unwrap()
        .flat_map(|class| std::fs::read_dir(class.unwrap().path()).unwrap())
        .next()
        .unwrap()
        .unwrap()
        .path();

    let with_config = |mut args: Vec<OsString>, config: Option<&Path>| {
        if let Some(config) = config {
            args.extend(["--config".into(), config.into()]);
        }
        args
    };
    let entry_points = [
        EntryPoint {
            name: "convert",
            cases: 120,
            args: Box::new(move |input, config, output| {
                let args = vec![
                    "convert".into(),
                    "--input".into(),
                    input.into(),
                    "--output".into(),
                    output.join("deploy.bpk").into(),
                ];
                with_config(args, config)
            }),
        },
        EntryPoint {
            name: "classify",
            cases: 30,
            args: Box::new(move |input, config, _| {
                let args = vec![
                    "classify".into(),
                    image.clone().into(),
                    "--weights".into(),
                    input.into(),
                    "--image-size".into(),
                    "32".into(),
                ];
                with_config(args, config)
            }),
        },
        EntryPoint {
            name: "eval",
            cases: 30,
            args: Box::new(move |input, config, _| {
                let args = vec![
                    "eval".into(),
                    "--weights".into(),
                    input.into(),
                    "--data".into(),
                    data.clone().into(),
                    "--image-size".into(),
                    "32".into(),
                ];
                with_config(args, config)
            }),
        },
    ];
    let (narrow, timm) = (fixture("narrow.json"), fixture("timm.json"));
    let sources = [
        (fixture("narrow_train.pth"), Some(narrow.as_path())),
        (fixture("narrow_deploy.pth"), Some(narrow.as_path())),
        (fixture("timm_train.safetensors"), Some(timm.as_path())),
        (fixture("timm_deploy.safetensors"), Some(timm.as_path())),
        (burnpack, None),
    ];
    let mut panics = 0;
    for entry in &entry_points {
        let mut total = Tally::default();
        for (source, config) in &sources {
            let work = root.join(format!(
                "{}-{}",
                entry.name,
                source.file_name().unwrap().to_string_lossy()
            ));
            let tally = mutate(entry, source, *config, &work);
            total.tried += tally.tried;
            total.refused += tally.refused;
            total.panics += tally.panics;
            total.left_behind += tally.left_behind;
        }
        eprintln!(
            "repvgg {}: {} mutated inputs, {} non-zero exits, {} panics, {} files left behind",
            entry.name, total.tried, total.refused, total.panics, total.left_behind
        );
        panics += total.panics;
    }
    assert_eq!(panics, 0);
}
