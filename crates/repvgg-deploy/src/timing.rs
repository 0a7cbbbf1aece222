//! Timing inference the one way the workspace reports it: the median of timed runs after
//! untimed warm-up runs (the first calls pay for allocation, kernel preparation and caches).

use std::time::Instant;

/// The median wall time, in milliseconds, of `runs` calls of `run` after `warmup` untimed
/// calls. `run` must finish its work before returning (read the output back, e.g. with
/// `into_data`), or asynchronous backends would be timed only for queueing it.
///
/// # Panics
/// If `runs` is 0.
pub fn median_millis(warmup: usize, runs: usize, mut run: impl FnMut()) -> f64 {
    assert!(runs > 0, "at least one timed run");
    for _ in 0..warmup {
        run();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Images per second of `run` processing a batch of `batch` images: the median of `rounds`
/// timed calls after one warm-up call (see [`median_millis`]).
pub fn images_per_second(batch: usize, rounds: usize, run: impl FnMut()) -> f64 {
    batch as f64 * 1000.0 / median_millis(1, rounds, run)
}
