//! `cargo xtask convert` and `eval` are the installable `repvgg` tool's commands: the same
//! inputs give the same files and the same accuracies through both binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use repvgg_data::write_synthetic_set;

/// The `repvgg` binary that `cargo test --workspace` builds beside xtask (for repvgg-cli's own
/// tests).
fn repvgg_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("repvgg");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p repvgg-cli` (cargo test --workspace does)",
        path.display()
    );
    path
}

fn run(binary: &Path, args: &[&str]) -> Output {
    let output = Command::new(binary).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/repvgg-deploy/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn convert_and_eval_match_the_repvgg_tool() {
    let scratch = tempfile::Builder::new()
        .prefix("repvgg-xtask-same-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let repvgg = repvgg_binary();
    let input = fixture("narrow_train.pth");
    let config = fixture("narrow.json");

    let mut written = Vec::new();
    for (name, binary) in [("xtask", &xtask), ("repvgg", &repvgg)] {
        let output = dir.join(format!("{name}.safetensors"));
        let output = output.to_str().unwrap();
        run(
            binary,
            &[
                "convert", "--input", &input, "--config", &config, "--output", output,
            ],
        );
        written.push(std::fs::read(output).unwrap());
    }
    assert_eq!(written[0], written[1], "the converted files differ");

    write_synthetic_set(&dir.join("data"), 0, 2, 1).unwrap();
    let data = dir.join("data").to_string_lossy().into_owned();
    let deploy = dir
        .join("repvgg.safetensors")
        .to_string_lossy()
        .into_owned();
    let accuracy = |binary: &Path| {
        let output = run(
            binary,
            &[
                "eval",
                "--weights",
                &deploy,
                "--config",
                &config,
                "--data",
                &data,
                "--image-size",
                "32",
            ],
        );
        // "top-1 X%  top-5 Y%  (N images, S images/s)": all but the speed.
        let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
        line.split(" images,").next().unwrap().to_string()
    };
    assert_eq!(accuracy(&xtask), accuracy(&repvgg));
}
