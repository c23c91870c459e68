//! One interface over the two ways stacklab runs a demo (a Docker container,
//! a KVM micro-VM): each reports the same timeline of phases and the same
//! kind of result, so the browser needs one renderer for both.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stacklab_api::{ErrorCode, EventKind, Fact, FactKey, Key, Phase, RunError};

use super::memory::{MemoryProbe, Snapshot};
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

/// One raw reading a backend took (or tried to): the engine turns
/// readings and phases into measurements with the figure table
/// (`stacklab_api::figures`), which alone says what each one is called and
/// how it is explained.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Which figure it is.
    pub key: Key,
    /// The value in the figure's unit, or why it could not be read.
    pub value: Result<f64, String>,
    /// Something true of this reading only (added to the explanation),
    /// e.g. "1 of them exited between being listed and being read".
    pub note: Option<String>,
}

/// What a demo reports when it reached ready: raw readings and
/// observations; its timed figures come from its phases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ready {
    /// Readings taken, or tried and failed (with why: never a 0).
    pub readings: Vec<Reading>,
    /// Observations that are not numbers.
    pub facts: Vec<Fact>,
}

impl Ready {
    /// Records a reading: its value, or why it could not be taken.
    pub fn read(&mut self, key: impl Into<Key>, value: Result<f64, String>) {
        self.read_noted(key, value, None);
    }

    /// Records a reading with a remark that is true of this reading only.
    pub fn read_noted(
        &mut self,
        key: impl Into<Key>,
        value: Result<f64, String>,
        note: Option<String>,
    ) {
        self.readings.push(Reading {
            key: key.into(),
            value,
            note,
        });
    }

    /// The value of reading `key`, if it was taken.
    pub fn value(&self, key: impl Into<Key>) -> Option<f64> {
        let key = key.into();
        self.readings
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| r.value.as_ref().ok().copied())
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

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: Ready) {
        self.readings.extend(other.readings);
        self.facts.extend(other.facts);
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
    snapshot: Option<(Arc<Snapshot>, usize)>,
    trace: bool,
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
            snapshot: None,
            trace: false,
        }
    }

    /// This context, its x-ray capturing kernel events if `trace`.
    pub fn with_trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }

    /// Whether the run asked for its x-ray to capture kernel events.
    pub fn trace_asked(&self) -> bool {
        self.trace
    }

    /// This context, as member `index` of `snapshot`: the instances of a
    /// density step, whose memory is read in one pass once all are ready.
    pub fn with_snapshot(mut self, snapshot: Arc<Snapshot>, index: usize) -> Self {
        self.snapshot = Some((snapshot, index));
        self
    }

    /// Called by a runtime once its instance is ready and held: reads its
    /// memory through `probe`. Alone, at once; as a member of a density
    /// step, after every member is ready, all in one pass (one moment for
    /// all), and it returns once every member has been read, so none is
    /// read while another is already gone.
    pub async fn read_memory(&self, probe: MemoryProbe) -> Ready {
        match &self.snapshot {
            None => probe.read(),
            Some((snapshot, index)) => {
                let fallback = probe.clone();
                tokio::select! {
                    part = snapshot.read(*index, probe) => part,
                    e = self.stopped() => fallback.not_read(&format!("the run stopped before the step's memory was read: {}", e.message)),
                }
            }
        }
    }

    /// Whether this is a run of one instance (not a member of a density
    /// step): only those are x-rayed.
    pub fn is_single(&self) -> bool {
        self.snapshot.is_none()
    }

    /// Microseconds on this run's clock of a CLOCK_MONOTONIC instant (ns).
    pub fn us_at_mono(&self, mono_ns: u64) -> u64 {
        self.timeline.us_since_start(mono_ns)
    }

    /// Records the run's x-ray, read now.
    pub fn xray(&self, xray: stacklab_api::XRay) {
        self.timeline.push(EventKind::XRay { xray });
    }

    /// The run's id (for labels and logs).
    pub fn run_id(&self) -> &str {
        self.timeline.id()
    }

    /// Microseconds since the request was accepted.
    pub fn elapsed_us(&self) -> u64 {
        self.timeline.elapsed_us()
    }

    /// Records that a phase was reached now.
    pub fn phase(&self, phase: Phase, detail: impl Into<String>) {
        self.phase_with_memory(phase, detail, None);
    }

    /// Records a phase reached now, with the memory in use at that moment.
    pub fn phase_with_memory(
        &self,
        phase: Phase,
        detail: impl Into<String>,
        memory: Option<(u64, &str)>,
    ) {
        self.phase_at(self.elapsed_us(), phase, detail, memory);
    }

    /// Records a phase observed at `at_us` on this run's clock (taken with
    /// [`RunContext::elapsed_us`] at the moment it was observed).
    pub fn phase_at(
        &self,
        at_us: u64,
        phase: Phase,
        detail: impl Into<String>,
        memory: Option<(u64, &str)>,
    ) {
        self.timeline
            .push_at(at_us, phase_event(phase, detail.into(), memory));
    }

    /// Records a phase observed by another process at `mono_ns`
    /// (CLOCK_MONOTONIC), placed on this run's clock.
    pub fn phase_observed(&self, mono_ns: u64, phase: Phase, detail: impl Into<String>) {
        self.timeline.push_at(
            self.timeline.us_since_start(mono_ns),
            phase_event(phase, detail.into(), None),
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

/// A phase event, labelled from the phase itself.
pub fn phase_event(phase: Phase, detail: String, memory: Option<(u64, &str)>) -> EventKind {
    EventKind::Phase {
        phase,
        label: phase.label().into_owned(),
        detail,
        memory_bytes: memory.map(|m| m.0),
        memory_how: memory.map(|m| m.1.to_owned()),
    }
}
