//! Progress as plain text lines, for runs without a terminal (CI, log files, `nohup`): one line
//! per split end and at most one every few seconds in between, with the epoch's running metrics,
//! and the final summary table without burn's dump of the module.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::train::LearnerSummary;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// A burn-train renderer that prints compact progress lines.
pub struct LineRenderer {
    interval: Duration,
    names: HashMap<MetricId, String>,
    /// Latest running value of each metric of the current split, in registration order.
    values: Vec<(MetricId, String)>,
    epoch: usize,
    epochs: usize,
    split: String,
    split_total: usize,
    last_line: Instant,
}

impl LineRenderer {
    /// Prints at most one line per `interval` within a split.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            names: HashMap::new(),
            values: Vec::new(),
            epoch: 0,
            epochs: 0,
            split: String::new(),
            split_total: 0,
            last_line: Instant::now(),
        }
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        // burn formats numeric entries as "epoch <running> [unit] - batch <current> [unit]".
        let formatted = &entry.serialized_entry.formatted;
        let running = formatted
            .strip_prefix("epoch ")
            .and_then(|rest| rest.split(" - batch").next())
            .unwrap_or(formatted)
            .to_string();
        match self
            .values
            .iter_mut()
            .find(|(id, _)| *id == entry.metric_id)
        {
            Some((_, value)) => *value = running,
            None => self.values.push((entry.metric_id, running)),
        }
    }

    fn print(&mut self, items: usize) {
        let metrics: Vec<String> = self
            .values
            .iter()
            .map(|(id, value)| {
                let name = self.names.get(id).map_or("?", String::as_str);
                format!("{name} {value}")
            })
            .collect();
        println!(
            "epoch {}/{} {} {items}/{} | {}",
            self.epoch,
            self.epochs,
            self.split,
            self.split_total,
            metrics.join(" | ")
        );
        self.last_line = Instant::now();
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    /// burn-train's summary table, without the module dump it starts with (hundreds of lines
    /// for the large architectures).
    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(summary) = summary {
            let text = summary.to_string();
            let mut in_model = false;
            for line in text.lines() {
                if line.starts_with("Model:") {
                    in_model = true;
                } else if line.starts_with("Total Epochs") {
                    in_model = false;
                }
                if !in_model {
                    println!("{line}");
                }
            }
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch;
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.split_total = total_items;
        self.values.clear();
        self.last_line = Instant::now();
    }

    fn update_split(&mut self, items_processed: usize) {
        if items_processed >= self.split_total || self.last_line.elapsed() >= self.interval {
            self.print(items_processed);
        }
    }

    fn end_split(&mut self) {}

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, total_items: usize) {
        self.start_split(name, total_items);
    }

    fn update_test_progress(&mut self, items_processed: usize) {
        self.update_split(items_processed);
    }

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
