//! A timeline: one demo instance's clock and event log. A registered run
//! has one; so does each instance of a density sweep, which is measured
//! like a run but is not one (nobody can look it up or watch it alone).

use std::sync::Mutex;
use std::time::Instant;

use stacklab_api::{DemoId, EventKind, Outcome, RunEvent, RunRecord, RunState};
use tokio::sync::watch;

use crate::backends::EventSink;

/// Console lines kept per timeline; later lines are counted, not stored.
const MAX_LOG_LINES: usize = 200;
/// Longest console line kept (bytes); longer ones are cut.
const MAX_LOG_LINE: usize = 400;

/// An event log on its own clock, which starts when the timeline is made
/// (for a run: the moment the server accepted the request).
pub struct Timeline {
    id: String,
    demo: DemoId,
    started: Instant,
    /// When it was accepted, on the wall clock (for people; durations use
    /// `started`).
    accepted_at_ms: i64,
    /// `started` as CLOCK_MONOTONIC ns, to place times measured by another
    /// process (the VMM) on this clock.
    started_mono_ns: u64,
    inner: Mutex<Inner>,
    /// The number of events so far; watchers wake when it changes.
    count: watch::Sender<usize>,
}

struct Inner {
    state: RunState,
    events: Vec<RunEvent>,
    log_lines: usize,
    /// The finished event, stamped by [`Timeline::stamp_end`] and not yet shown.
    ending: Option<RunEvent>,
}

impl Inner {
    /// Whether its end has been shown.
    fn is_finished(&self) -> bool {
        matches!(self.state, RunState::Succeeded | RunState::Failed)
    }

    /// Whether its end has been stamped, shown or not.
    fn has_ended(&self) -> bool {
        self.ending.is_some() || self.is_finished()
    }

    /// Appends an event, moving the state on; the number of events.
    fn append(&mut self, at_us: u64, kind: EventKind) -> usize {
        match &kind {
            EventKind::Phase { .. } => self.state = RunState::Running,
            EventKind::Finished { outcome } => self.state = outcome.state(),
            _ => {}
        }
        let seq = self.events.len() as u32;
        self.events.push(RunEvent { seq, at_us, kind });
        self.events.len()
    }
}

impl Timeline {
    /// A timeline whose clock starts now.
    pub fn new(id: String, demo: DemoId) -> Self {
        Timeline {
            id,
            demo,
            started: Instant::now(),
            accepted_at_ms: crate::store::now_ms(),
            started_mono_ns: stacklab_vmm::report::monotonic_ns(),
            inner: Mutex::new(Inner {
                state: RunState::Queued,
                events: Vec::new(),
                log_lines: 0,
                ending: None,
            }),
            count: watch::channel(0).0,
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which demo it measures.
    pub fn demo(&self) -> DemoId {
        self.demo
    }

    /// Microseconds since the clock started.
    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Microseconds on this clock of a CLOCK_MONOTONIC instant.
    pub fn us_since_start(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.started_mono_ns) / 1000
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the Vec half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event observed now (ignored once finished).
    pub fn push(&self, kind: EventKind) {
        self.push_at(self.elapsed_us(), kind);
    }

    /// Appends an event observed at `at_us`. The time is the moment it was
    /// observed, never moved: an event another process observed (the VMM)
    /// may carry an earlier time than one recorded before it arrived, and
    /// `seq` keeps the order the server recorded them in.
    pub fn push_at(&self, at_us: u64, kind: EventKind) {
        let mut inner = self.lock();
        if inner.has_ended() {
            return;
        }
        let n = inner.append(at_us, kind);
        drop(inner);
        self.count.send_replace(n);
    }

    /// Ends the timeline with `outcome`, observed now, without showing it
    /// yet: later events are ignored, and the record returned is the one
    /// every reader sees once the returned [`EndShown`] is dropped. A run's
    /// end is stored in between, so that nobody who saw it end asks another
    /// replica and hears that it is still running. The guard shows the end
    /// however its holder stops (a panic, a dropped future), so watchers
    /// are never left waiting.
    pub fn stamp_end(&self, outcome: Outcome) -> (RunRecord, EndShown<'_>) {
        let at_us = self.elapsed_us();
        let mut inner = self.lock();
        let mut record = self.snapshot(&inner);
        record.state = outcome.state();
        let ending = RunEvent {
            seq: record.events.len() as u32,
            at_us,
            kind: EventKind::Finished { outcome },
        };
        record.events.push(ending.clone());
        inner.ending = Some(ending);
        (record, EndShown(self))
    }

    /// Shows the end [`Timeline::stamp_end`] stamped, at the moment it stamped.
    fn show_end(&self) {
        let mut inner = self.lock();
        if let Some(RunEvent { at_us, kind, .. }) = inner.ending.take() {
            let n = inner.append(at_us, kind);
            drop(inner);
            self.count.send_replace(n);
        }
    }

    /// Appends a console line, within the per-timeline bounds.
    pub fn push_log(&self, line: &str) {
        let n = {
            let mut inner = self.lock();
            inner.log_lines += 1;
            inner.log_lines
        };
        if n <= MAX_LOG_LINES {
            let mut end = line.len().min(MAX_LOG_LINE);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            self.push(EventKind::Log {
                line: line[..end].to_owned(),
            });
        } else if n == MAX_LOG_LINES + 1 {
            self.push(EventKind::Log {
                line: format!("[stacklab: more than {MAX_LOG_LINES} lines; the rest is not shown]"),
            });
        }
    }

    /// Whether its end has been stamped ([`Timeline::stamp_end`]), shown
    /// or not: a run in that state is over for whoever would end or cancel
    /// it, though its watchers have not been told yet.
    pub fn has_ended(&self) -> bool {
        self.lock().has_ended()
    }

    /// Whether it has finished (and its end has been shown).
    pub fn is_finished(&self) -> bool {
        self.lock().is_finished()
    }

    /// A snapshot of everything so far.
    pub fn record(&self) -> RunRecord {
        self.snapshot(&self.lock())
    }

    fn snapshot(&self, inner: &Inner) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            demo: self.demo,
            state: inner.state,
            accepted_at_ms: Some(self.accepted_at_ms),
            events: inner.events.clone(),
        }
    }

    /// When phase `which` was reached, on this clock.
    pub fn phase_at(&self, which: stacklab_api::Phase) -> Option<u64> {
        stacklab_api::phase_at(&self.lock().events, which)
    }

    /// Events from `from` on, and whether it has finished.
    pub fn events_since(&self, from: usize) -> (Vec<RunEvent>, bool) {
        let inner = self.lock();
        let finished = inner.is_finished();
        (
            inner.events.get(from..).unwrap_or_default().to_vec(),
            finished,
        )
    }

    /// Wakes when new events arrive.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

/// A stamped end, shown to watchers when dropped (see
/// [`Timeline::stamp_end`]).
#[must_use = "the end is shown when this is dropped"]
pub struct EndShown<'a>(&'a Timeline);

impl Drop for EndShown<'_> {
    fn drop(&mut self) {
        self.0.show_end();
    }
}

impl EventSink for Timeline {
    fn id(&self) -> &str {
        Timeline::id(self)
    }
    fn elapsed_us(&self) -> u64 {
        Timeline::elapsed_us(self)
    }
    fn us_since_start(&self, mono_ns: u64) -> u64 {
        Timeline::us_since_start(self, mono_ns)
    }
    fn push_at(&self, at_us: u64, kind: EventKind) {
        Timeline::push_at(self, at_us, kind)
    }
    fn push_log(&self, line: &str) {
        Timeline::push_log(self, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(which: stacklab_api::Phase) -> EventKind {
        crate::backends::phase_event(which, String::new(), None)
    }

    /// An event another process observed earlier than one already recorded
    /// keeps the time it was observed at; `seq` keeps the recording order.
    #[test]
    fn events_keep_the_time_they_were_observed() {
        let t = Timeline::new("t".into(), DemoId::MicroVm);
        t.push_at(100, phase(stacklab_api::Phase::Ready));
        t.push_at(50, phase(stacklab_api::Phase::VcpuCreated));
        let events = t.record().events;
        let got: Vec<(u32, u64)> = events.iter().map(|e| (e.seq, e.at_us)).collect();
        assert_eq!(got, [(0, 100), (1, 50)], "neither re-ordered nor re-timed");
    }

    /// A stamped end is over for the run but unseen by its watchers until
    /// the guard goes, however it goes (here: a panic while it was held);
    /// nothing is appended after it, and it keeps the time it was stamped.
    #[test]
    fn a_stamped_end_is_shown_when_its_guard_goes() {
        let t = Timeline::new("t".into(), DemoId::MicroVm);
        t.push(phase(stacklab_api::Phase::Ready));
        let watcher = t.subscribe();
        let failed = Outcome::Failed {
            error: stacklab_api::RunError {
                code: stacklab_api::ErrorCode::Internal,
                message: "x".into(),
            },
        };
        let stamped_at = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (record, _shown) = t.stamp_end(failed);
            assert_eq!(record.state, RunState::Failed);
            t.push(EventKind::Log {
                line: "late".into(),
            });
            assert!(t.has_ended() && !t.is_finished());
            assert_eq!(t.events_since(0), (t.record().events, false));
            assert!(!watcher.has_changed().unwrap(), "not shown yet");
            assert_eq!(record.events.len(), 2);
            let at = record.events[1].at_us;
            std::thread::sleep(std::time::Duration::from_millis(5));
            std::panic::resume_unwind(Box::new(at));
        }))
        .unwrap_err()
        .downcast::<u64>()
        .unwrap();
        assert!(watcher.has_changed().unwrap(), "shown");
        assert!(t.is_finished());
        let events = t.record().events;
        assert_eq!(events.len(), 2, "the late line was refused: {events:?}");
        assert!(matches!(events[1].kind, EventKind::Finished { .. }));
        assert_eq!(
            events[1].at_us, *stamped_at,
            "the moment stamped, not shown"
        );
    }
}
