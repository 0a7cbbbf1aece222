//! `repvgg curves` end to end: two runs overlaid in one SVG picture, and bad input (a missing
//! run directory, a directory without metrics, a damaged `metrics.csv`, an output that cannot
//! be written) refused with a message naming the file and exit code 1, never a panic.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use repvgg_testing::scratch;
use repvgg_testing::svg::Svg;
use repvgg_train::curves::{EpochMetrics, METRICS_FILE, MetricsLog, SplitMetrics};

fn curves(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .arg("curves")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// A run directory `dir` whose `metrics.csv` holds `epochs` epochs.
fn run_dir(dir: &Path, epochs: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut log = MetricsLog::new();
    for epoch in 1..=epochs {
        let e = epoch as f64;
        let split = |offset: f64| SplitMetrics {
            loss: Some(2.0 / e + offset),
            top1: Some(30.0 + 10.0 * e - offset),
            top5: Some(60.0 + 5.0 * e),
        };
        log.record(EpochMetrics {
            epoch,
            step: 10 * epoch,
            train: split(0.0),
            val: split(0.2),
            lr: Some(0.1 * (1.0 - e / (epochs + 1) as f64)),
            images_per_second: Some(800.0),
            wall_seconds: 30.0 * e,
        });
    }
    log.write(&dir.join(METRICS_FILE)).unwrap();
}

/// stderr of a refused command, checked to be an error message and not a panic.
fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn two_runs_are_drawn_in_one_picture() {
    let scratch = scratch("cli-curves");
    let (scratch_run, finetune) = (
        scratch.path().join("a0-scratch"),
        scratch.path().join("a0-finetune"),
    );
    run_dir(&scratch_run, 6);
    run_dir(&finetune, 3);
    let picture = scratch.path().join("compare.svg");
    let output = curves(&[&scratch_run, &finetune, Path::new("--output"), &picture]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("a0-scratch (6 epochs), a0-finetune (3 epochs)"),
        "{stdout}"
    );

    let svg = Svg::read(&picture);
    let texts = svg.texts();
    for run in ["a0-scratch", "a0-finetune"] {
        for series in ["train", "val", "learning rate"] {
            let label = format!("{run} {series}");
            assert!(texts.contains(&label.as_str()), "{label}: {texts:?}");
        }
    }
    // Each run's validation line in both panels, through all its epochs, in its own colour.
    let mut colours = Vec::new();
    for epochs in [6, 3] {
        let lines: Vec<_> = svg
            .all("polyline")
            .filter(|line| line.points().len() == epochs && line.attribute("stroke-width") == "3")
            .collect();
        assert_eq!(lines.len(), 2, "{epochs} epochs");
        assert_eq!(lines[0].attribute("stroke"), lines[1].attribute("stroke"));
        colours.push(lines[0].attribute("stroke").to_string());
    }
    assert_ne!(colours[0], colours[1]);
    // The picture replaced nothing else in the directory and left no temporary file.
    let mut files: Vec<String> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["a0-finetune", "a0-scratch", "compare.svg"]);
}

#[test]
fn bad_input_is_refused_naming_the_file() {
    let scratch = scratch("cli-curves-bad");
    let good = scratch.path().join("good");
    run_dir(&good, 2);
    let picture = scratch.path().join("out.svg");
    let flag = Path::new("--output");

    let missing = scratch.path().join("missing");
    let error = refused(&curves(&[&good, &missing, flag, &picture]));
    assert!(
        error.contains(&format!("{}: no such run directory", missing.display())),
        "{error}"
    );

    let empty = scratch.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let error = refused(&curves(&[&empty, flag, &picture]));
    let expected = format!("{}: no such file", empty.join(METRICS_FILE).display());
    assert!(error.contains(&expected), "{error}");

    let damaged = scratch.path().join("damaged");
    run_dir(&damaged, 3);
    let csv = damaged.join(METRICS_FILE);
    let text = fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "2,20,0.9,41,banana";
    fs::write(&csv, lines.join("\n")).unwrap();
    let error = refused(&curves(&[&good, &damaged, flag, &picture]));
    let expected = format!(
        "{}, line 3: 5 fields where the header has 11",
        csv.display()
    );
    assert!(error.contains(&expected), "{error}");
    lines[2] = "2,20,0.9,41,banana,1,40,70,0.05,800,60";
    fs::write(&csv, lines.join("\n")).unwrap();
    let error = refused(&curves(&[&damaged, flag, &picture]));
    assert!(
        error.contains("line 3: `train_top5` is not a number: \"banana\""),
        "{error}"
    );
    assert!(!picture.exists(), "nothing is written for bad input");

    // Outputs that cannot be written.
    let nowhere = scratch.path().join("no/such/dir/out.svg");
    let error = refused(&curves(&[&good, flag, &nowhere]));
    assert!(error.contains(&nowhere.display().to_string()), "{error}");
    let a_directory = scratch.path().join("taken.svg");
    fs::create_dir(&a_directory).unwrap();
    let error = refused(&curves(&[&good, flag, &a_directory]));
    assert!(
        error.contains(&a_directory.display().to_string()),
        "{error}"
    );
    let png = scratch.path().join("out.png");
    let error = refused(&curves(&[&good, flag, &png]));
    assert!(error.contains("give the output a .svg name"), "{error}");

    // No run at all is a usage error.
    let output = curves(&[flag, &picture]);
    assert_eq!(output.status.code(), Some(2));
}
