//! Metrics burn-train lacks: images per second, and the accuracy of the EMA.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorReadError};
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

/// What [`EmaAccuracy`] reads: the EMA's logits (absent before its first update)
/// and the targets.
pub struct EmaInput {
    pub logits: Option<Tensor<2>>,
    pub targets: Tensor<1, Int>,
}

/// Top-1 accuracy of the moving average of the weights (`recipe.ema_decay`), beside the
/// model's own.
#[derive(Clone)]
pub struct EmaAccuracy {
    name: MetricName,
    state: NumericMetricState,
}

impl EmaAccuracy {
    pub fn new() -> Self {
        Self {
            name: Arc::new("EMA Accuracy".to_string()),
            state: NumericMetricState::default(),
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name()).unit("%").precision(2)
    }
}

impl Default for EmaAccuracy {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for EmaAccuracy {
    type Input = EmaInput;

    fn update(
        &mut self,
        input: &EmaInput,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        if let Some(logits) = &input.logits {
            let count = input.targets.dims()[0];
            let correct = logits
                .clone()
                .argmax(1)
                .reshape([count])
                .equal(input.targets.clone())
                .int()
                .sum()
                .into_scalar::<i64>();
            self.state
                .update(100.0 * correct as f64 / count.max(1) as f64, count);
        }
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("%".to_string()),
            higher_is_better: true,
        }
        .into()
    }
}

impl Numeric for EmaAccuracy {
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
