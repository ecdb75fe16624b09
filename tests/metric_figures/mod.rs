//! A pool's `metrics` figures, summed over snapshots of a debugging recorder, and the
//! no-op descriptions of a test's own recorder: shared by the test binaries that check the
//! `metrics` feature, included with `mod metric_figures;`.
#![allow(dead_code, unused_macros)] // each binary uses a part

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, Snapshotter};
use metrics_util::MetricKind;

/// The figures of one pool, summed over snapshots (the debugging recorder's snapshot
/// takes a gauge's value and leaves it at 0; the pool moves gauges by increments).
#[derive(Default)]
pub struct Figures(HashMap<(MetricKind, String), f64>);

impl Figures {
    /// Adds what the recorder holds for `pool` (the `pool` label) since the last snapshot.
    ///
    /// # Panics
    ///
    /// If a metric has no `pool` label.
    pub fn take(&mut self, snapshotter: &Snapshotter, pool: &str) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let label = key
                .labels()
                .find(|l| l.key() == "pool")
                .map(|l| l.value().to_string())
                .expect("every metric has a pool label");
            if label != pool {
                continue;
            }
            let add = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(v) => v.0,
                DebugValue::Histogram(v) => v.len() as f64,
            };
            *self.0.entry((kind, key.name().to_string())).or_default() += add;
            // A labelled count (`nb_aiopool_submits_rejected`'s `reason`) also under
            // `name/reason`, for `by_reason`.
            if let Some(reason) = key.labels().find(|l| l.key() == "reason") {
                let name = format!("{}/{}", key.name(), reason.value());
                *self.0.entry((kind, name)).or_default() += add;
            }
        }
    }

    /// The `nb_aiopool_submits_rejected` counts by `reason` label, those above 0, sorted.
    pub fn rejected_by_reason(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .0
            .iter()
            .filter_map(|((kind, name), n)| {
                let reason = name.strip_prefix("nb_aiopool_submits_rejected/")?;
                (*kind == MetricKind::Counter && *n > 0.0).then(|| (reason.to_string(), *n as u64))
            })
            .collect();
        counts.sort();
        counts
    }

    pub fn get(&self, kind: MetricKind, name: &str) -> f64 {
        self.0
            .get(&(kind, name.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn counter(&self, name: &str) -> f64 {
        self.get(MetricKind::Counter, name)
    }

    pub fn gauge(&self, name: &str) -> f64 {
        self.get(MetricKind::Gauge, name)
    }

    /// Where the figures disagree with the pool's `stats` (submitted, completed,
    /// panicked, cancelled, queued, running), if they do.
    pub fn against(&self, s: &nb_aiopool::PoolStats) -> Option<String> {
        let m = (
            self.counter("nb_aiopool_tasks_submitted"),
            self.counter("nb_aiopool_tasks_completed"),
            self.counter("nb_aiopool_tasks_panicked"),
            self.counter("nb_aiopool_tasks_cancelled"),
            self.gauge("nb_aiopool_tasks_queued"),
            self.gauge("nb_aiopool_tasks_running"),
        );
        let w = (
            s.submitted as f64,
            s.completed as f64,
            s.panicked as f64,
            s.cancelled as f64,
            s.queued as f64,
            s.running as f64,
        );
        (m != w).then(|| {
            format!(
                "metrics (submitted, completed, panicked, cancelled, queued, running) \
                 {m:?} vs stats {w:?}"
            )
        })
    }
}

/// The three `describe_*` methods of a `metrics::Recorder` that keeps no descriptions, for
/// the tests' own recorders: `impl metrics::Recorder for R { no_descriptions!(); ... }`.
macro_rules! no_descriptions {
    () => {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
    };
}
#[allow(unused_imports)] // each binary uses a part
pub(crate) use no_descriptions;
