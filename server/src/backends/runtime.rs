//! One interface over the two ways stacklab runs a demo (a Docker container,
//! a KVM micro-VM): each reports the same timeline of phases and the same
//! kind of result, so the browser needs one renderer for both.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stacklab_api::{ErrorCode, EventKind, Fact, FactKey, Key, Measurement, Missing, RunError};
use tokio_util::sync::CancellationToken;

/// Where a run's events go: the engine's timeline of the run (or of one
/// instance of a density sweep). Runtimes see only this.
pub trait EventSink: Send + Sync {
    /// The id of the run or instance (for labels and logs).
    fn id(&self) -> &str;
    /// Microseconds on its clock now.
    fn elapsed_us(&self) -> u64;
    /// Microseconds on its clock of a CLOCK_MONOTONIC instant.
    fn us_since_start(&self, mono_ns: u64) -> u64;
    /// Appends an event observed at `at_us` on its clock.
    fn push_at(&self, at_us: u64, kind: EventKind);
    /// Appends a console line (bounded).
    fn push_log(&self, line: &str);
    /// Appends an event observed now.
    fn push(&self, kind: EventKind) {
        self.push_at(self.elapsed_us(), kind);
    }
}

/// What a demo reports when it reached ready.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ready {
    /// Measured numbers, each with what and how.
    pub measurements: Vec<Measurement>,
    /// Observations that are not numbers.
    pub facts: Vec<Fact>,
    /// Readings that failed: absent, with why.
    pub missing: Vec<Missing>,
}

impl Ready {
    /// Adds a measured number; `how` says what it measures and how.
    pub fn measure(
        &mut self,
        key: impl Into<Key>,
        label: &str,
        value: f64,
        unit: stacklab_api::Unit,
        how: &str,
    ) {
        self.measurements.push(Measurement {
            key: key.into(),
            label: label.into(),
            value,
            unit,
            how: how.into(),
        });
    }

    /// Records that a reading failed: the figure is absent, `reason` says
    /// why (never a 0 in its place).
    pub fn missing(&mut self, key: impl Into<Key>, label: &str, reason: impl Into<String>) {
        self.missing.push(Missing {
            key: key.into(),
            label: label.into(),
            reason: reason.into(),
        });
    }

    /// Adds `value` as a measurement, or records why it is missing.
    pub fn measure_or_missing(
        &mut self,
        key: impl Into<Key>,
        label: &str,
        value: Result<f64, String>,
        unit: stacklab_api::Unit,
        how: &str,
    ) {
        match value {
            Ok(v) => self.measure(key, label, v, unit, how),
            Err(reason) => self.missing(key, label, reason),
        }
    }

    /// The value of the measurement `key`, if it was taken.
    pub fn value(&self, key: impl Into<Key>) -> Option<f64> {
        let key = key.into();
        self.measurements
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value)
    }

    /// Adds an observation that is not a number.
    pub fn fact(&mut self, key: FactKey, label: &str, value: String, how: &str) {
        self.facts.push(Fact {
            key,
            label: label.into(),
            value,
            how: how.into(),
        });
    }
}

/// A runtime: something that can take a demo from nothing to ready.
pub trait Runtime: Send + Sync + 'static {
    /// Runs the demo once, reporting phases through `ctx`. Must release
    /// everything it started before returning, also on error or when
    /// [`RunContext::stopped`] fires.
    fn run(&self, ctx: &RunContext) -> impl Future<Output = Result<Ready, RunError>> + Send;
}

/// A run's view of itself: its clock, its event log, its stop signals.
#[derive(Clone)]
pub struct RunContext {
    timeline: Arc<dyn EventSink>,
    budget: Duration,
    deadline: Instant,
    cancel: CancellationToken,
    rendezvous: Option<Arc<tokio::sync::Barrier>>,
}

impl RunContext {
    /// A context recording into `timeline` that must finish within
    /// `budget` from now.
    pub fn new(timeline: Arc<dyn EventSink>, budget: Duration, cancel: CancellationToken) -> Self {
        RunContext {
            timeline,
            budget,
            deadline: Instant::now() + budget,
            cancel,
            rendezvous: None,
        }
    }

    /// This context, made to wait at `barrier` in [`RunContext::rendezvous`]
    /// (the instances of a density step meet there once all are ready).
    pub fn with_rendezvous(mut self, barrier: Arc<tokio::sync::Barrier>) -> Self {
        self.rendezvous = Some(barrier);
        self
    }

    /// Called by a runtime after ready and before it measures memory:
    /// with a rendezvous set (the instances of a density step), waits
    /// until every instance is ready, so all are measured while all run.
    pub async fn all_ready(&self) {
        self.meet().await
    }

    /// Called after measuring and before tearing down: waits until every
    /// instance of the step has measured, so none is measured while
    /// another is already gone.
    pub async fn all_measured(&self) {
        self.meet().await
    }

    async fn meet(&self) {
        if let Some(barrier) = &self.rendezvous {
            tokio::select! {
                _ = barrier.wait() => {}
                _ = self.stopped() => {}
            }
        }
    }

    /// The run's id (for labels and logs).
    pub fn run_id(&self) -> &str {
        self.timeline.id()
    }

    /// Microseconds since the request was accepted.
    pub fn elapsed_us(&self) -> u64 {
        self.timeline.elapsed_us()
    }

    /// Records that a phase was reached.
    pub fn phase(&self, phase: &str, label: &str, detail: impl Into<String>) {
        self.phase_with_memory(phase, label, detail, None);
    }

    /// Records a phase with the memory in use at that moment.
    pub fn phase_with_memory(
        &self,
        phase: &str,
        label: &str,
        detail: impl Into<String>,
        memory: Option<(u64, &str)>,
    ) {
        self.phase_at(self.elapsed_us(), phase, label, detail, memory);
    }

    /// Records a phase observed at `at_us` on this run's clock (taken with
    /// [`RunContext::elapsed_us`] at the moment it was observed).
    pub fn phase_at(
        &self,
        at_us: u64,
        phase: &str,
        label: &str,
        detail: impl Into<String>,
        memory: Option<(u64, &str)>,
    ) {
        self.timeline.push_at(
            at_us,
            EventKind::Phase {
                phase: phase.to_owned(),
                label: label.to_owned(),
                detail: detail.into(),
                memory_bytes: memory.map(|m| m.0),
                memory_how: memory.map(|m| m.1.to_owned()),
            },
        );
    }

    /// Records a phase observed by another process at `mono_ns`
    /// (CLOCK_MONOTONIC), placed on this run's clock.
    pub fn phase_observed(
        &self,
        mono_ns: u64,
        phase: &str,
        label: &str,
        detail: impl Into<String>,
    ) {
        self.timeline.push_at(
            self.timeline.us_since_start(mono_ns),
            EventKind::Phase {
                phase: phase.to_owned(),
                label: label.to_owned(),
                detail: detail.into(),
                memory_bytes: None,
                memory_how: None,
            },
        );
    }

    /// Records a line of console output (bounded per run).
    pub fn log(&self, line: &str) {
        self.timeline.push_log(line);
    }

    /// Completes when the run must stop: the deadline passed, or the run was
    /// cancelled (client gone, server shutting down). Returns why.
    pub async fn stopped(&self) -> RunError {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        tokio::select! {
            () = self.cancel.cancelled() => RunError {
                code: ErrorCode::Cancelled,
                message: "the run was cancelled (the browser disconnected or the server is shutting down)".into(),
            },
            () = tokio::time::sleep_until(deadline) => RunError {
                code: ErrorCode::Deadline,
                message: format!(
                    "the demo did not become ready within its deadline of {:.1} s",
                    self.budget.as_secs_f64()
                ),
            },
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// A token cancelled when this run is (for work it starts itself).
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Whether the run has been told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
