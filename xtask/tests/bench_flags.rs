//! The benchmarks refuse counts of zero by name, before building anything, rather than panic or
//! report medians of nothing.

use std::process::Command;

#[test]
fn zero_runs_or_rounds_are_refused() {
    // `bench` without Python, and with a report it could not write: it must stop before either.
    let bench = [
        "bench",
        "--python",
        "none",
        "--output",
        "/nonexistent/report.md",
    ];
    for (command, flag) in [
        (&bench[..], "--rounds"),
        (&bench[..], "--runs"),
        (&["bench-layers"][..], "--rounds"),
        (&["bench-layers"][..], "--runs"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(command)
            .args([flag, "0"])
            .output()
            .expect("xtask runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?} {flag} 0 succeeded");
        assert!(
            stderr.contains(&format!("{flag} must be at least 1")) && !stderr.contains("panicked"),
            "{command:?} {flag} 0: {stderr}"
        );
    }
}
