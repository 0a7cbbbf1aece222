//! Throughput as burn-train reports it: images per second since the start of the epoch.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::TensorReadError;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

/// Images processed per second in the current epoch, data loading included. (burn-train logs
/// each metric to a file named after it, so the name holds no `/`.)
#[derive(Clone)]
pub struct ImagesPerSecond {
    name: MetricName,
    state: NumericMetricState,
    /// When the first batch of the epoch was seen, and how many images it held.
    start: Option<(Instant, usize)>,
}

impl ImagesPerSecond {
    pub fn new() -> Self {
        Self {
            name: Arc::new("Images per second".to_string()),
            state: NumericMetricState::default(),
            start: None,
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name()).unit("img/s").precision(1)
    }
}

impl Default for ImagesPerSecond {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for ImagesPerSecond {
    type Input = ();

    fn update(
        &mut self,
        _: &(),
        metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let processed = metadata.progress.items_processed;
        // The first batch starts the clock: its own loading time is not measurable here.
        let (started, at_start) = *self.start.get_or_insert((Instant::now(), processed));
        let seconds = started.elapsed().as_secs_f64();
        if processed > at_start && seconds > 0.0 {
            self.state
                .update((processed - at_start) as f64 / seconds, 1);
        }
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.start = None;
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("img/s".to_string()),
            higher_is_better: true,
        }
        .into()
    }
}

impl Numeric for ImagesPerSecond {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}
