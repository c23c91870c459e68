//! Counters of the runs this server handled, for `/metrics`: runs started
//! and finished (by demo and outcome), and histograms of queue waits and
//! request → ready times.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use stacklab_api::DemoId;

/// Upper bounds (seconds) of the histogram buckets: from a micro-VM's
/// milliseconds to a queue's minutes.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each of [`BUCKETS`].
    pub counts: [u64; BUCKETS.len()],
    /// All observations.
    pub count: u64,
    /// Their sum (seconds).
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if s <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }
}

/// What `/metrics` reports of the runs, by demo.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Runs accepted.
    pub started: BTreeMap<DemoId, u64>,
    /// Runs finished, by demo and outcome (`succeeded` or the error code).
    pub finished: BTreeMap<(DemoId, &'static str), u64>,
    /// Time from accepted to leaving the queue.
    pub queue_wait: BTreeMap<DemoId, Histogram>,
    /// Request → ready of runs that succeeded (the headline time).
    pub ready: BTreeMap<DemoId, Histogram>,
}

/// The counters, shared by every run.
#[derive(Debug, Default)]
pub struct Stats(Mutex<Snapshot>);

impl Stats {
    fn with(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn started(&self, demo: DemoId) {
        self.with(|s| *s.started.entry(demo).or_default() += 1)
    }

    pub(super) fn left_queue(&self, demo: DemoId, waited: Duration) {
        self.with(|s| s.queue_wait.entry(demo).or_default().observe(waited))
    }

    pub(super) fn finished(&self, demo: DemoId, outcome: &'static str, ready: Option<Duration>) {
        self.with(|s| {
            *s.finished.entry((demo, outcome)).or_default() += 1;
            if let Some(t) = ready {
                s.ready.entry(demo).or_default().observe(t);
            }
        })
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
