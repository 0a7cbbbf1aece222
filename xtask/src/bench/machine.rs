//! The machine a benchmark ran on, and the peak memory of a measurement (Linux).

use std::fs;
use std::process::Command;

/// CPU model, cores, OS, compiler and device, as one markdown line.
pub fn describe(device: &str) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let profile = match cfg!(debug_assertions) {
        true => "dev profile, dependencies and the workspace's kernel crates at opt-level 3",
        false => "release profile",
    };
    format!(
        "Machine: {cpu}, {cores} cores available, {}; device: {device}; burn 0.22.1 ({profile}); \
         {rustc}.",
        std::env::consts::OS
    )
}

/// Peak resident memory tracking through `/proc/self/clear_refs` (resets the peak) and
/// `/proc/self/status` (VmHWM, VmRSS).
pub struct PeakMemory {
    start_kb: u64,
}

impl PeakMemory {
    /// Resets the process's peak to its current size; `None` where /proc is unavailable.
    pub fn start() -> Option<Self> {
        fs::write("/proc/self/clear_refs", "5").ok()?;
        Some(Self {
            start_kb: status_kb("VmRSS")?,
        })
    }

    /// The process's peak resident memory since `start`, in MB.
    pub fn peak_mb(&self) -> f64 {
        status_kb("VmHWM").unwrap_or(self.start_kb) as f64 / 1024.0
    }

    /// How far the peak rose since `start`, in MB.
    pub fn growth_mb(&self) -> f64 {
        let peak = status_kb("VmHWM").unwrap_or(self.start_kb);
        peak.saturating_sub(self.start_kb) as f64 / 1024.0
    }
}

fn status_kb(field: &str) -> Option<u64> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
