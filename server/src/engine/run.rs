//! A run: one accepted demo request, with its timeline, its time budget,
//! its cancellation and the clients watching it.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use stacklab_api::{DemoId, RunError};
use tokio_util::sync::CancellationToken;

use super::timeline::Timeline;

/// One run. Shared by the task running it and every client watching it;
/// its [`Timeline`] (reached through `Deref`) holds the events.
pub struct Run {
    timeline: Arc<Timeline>,
    budget: Duration,
    cancel: CancellationToken,
    watchers: AtomicUsize,
    /// How long a run with no watcher left keeps going (a reconnecting
    /// browser comes back within it).
    grace: Duration,
    /// Whom limits count it for (a class member's learner id, else the
    /// client's address; see `Requester::who`).
    owner: String,
    /// When a client following it on another replica last said so (Unix
    /// ms; 0: never). See [`Run::watched_elsewhere`].
    watched_elsewhere_ms: AtomicI64,
    /// The class (code) and learner it counts for, if a class member's.
    member: OnceLock<(String, String)>,
    /// Why it was ended on purpose (see [`Run::end`]), which its outcome
    /// then says instead of "cancelled".
    ended: Mutex<Option<RunError>>,
    /// Whether its x-ray captures kernel events (asked in the request).
    trace: std::sync::atomic::AtomicBool,
}

/// How long a run outlives its last watcher unless configured otherwise:
/// long enough for a browser's event stream to reconnect after a network
/// blip (EventSource retries after about 3 s).
pub const WATCH_GRACE: Duration = Duration::from_secs(10);

impl Run {
    /// A run of `demo` accepted now, with a new random id (tests).
    #[cfg(test)]
    pub(crate) fn new(demo: DemoId, budget: Duration, cancel: CancellationToken) -> Arc<Run> {
        Run::with_grace(demo, budget, cancel, WATCH_GRACE, "test".into())
    }

    /// A run of `demo` accepted now, with a new random id, cancelled
    /// `grace` after its last watcher left.
    pub(crate) fn with_grace(
        demo: DemoId,
        budget: Duration,
        cancel: CancellationToken,
        grace: Duration,
        owner: String,
    ) -> Arc<Run> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Arc::new(Run {
            timeline: Arc::new(Timeline::new(id, demo)),
            budget,
            cancel,
            watchers: AtomicUsize::new(0),
            grace,
            owner,
            watched_elsewhere_ms: AtomicI64::new(0),
            member: OnceLock::new(),
            ended: Mutex::new(None),
            trace: Default::default(),
        })
    }

    /// Notes that the run counts for `learner`'s membership of `class`
    /// (once, before it is shared).
    pub(crate) fn set_member(&self, class: &str, learner: &str) {
        let _ = self.member.set((class.to_owned(), learner.to_owned()));
    }

    /// Asks for the kernel-event capture of its x-ray (before it starts).
    pub(crate) fn ask_trace(&self) {
        self.trace.store(true, Ordering::SeqCst);
    }

    /// Whether its x-ray captures kernel events.
    pub fn trace_asked(&self) -> bool {
        self.trace.load(Ordering::SeqCst)
    }

    /// Whether the run counts for `learner` in `class`.
    pub fn is_member_run(&self, class: &str, learner: &str) -> bool {
        self.member
            .get()
            .is_some_and(|(c, l)| c == class && l == learner)
    }

    /// Ends the run now, waiting or running, for `reason`: it is cancelled
    /// (its instance removed as on any cancellation) and, unless it had
    /// already succeeded, fails with `reason` rather than "cancelled".
    pub fn end(&self, reason: RunError) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.get_or_insert(reason);
        drop(ended);
        self.cancel.cancel();
    }

    /// Why [`Run::end`] ended it, if it did.
    pub fn ended_because(&self) -> Option<RunError> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its timeline, to share with the runtime that runs it.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// How long the run may take once it has left the queue.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Its cancellation token (cancelled when the last watcher has been
    /// gone for the grace period, or at shutdown).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whom limits count it for.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Clients watching now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// Notes that a client follows the run through another replica (which
    /// says so every few seconds while it does).
    pub fn watched_elsewhere(&self) {
        self.watched_elsewhere_ms
            .store(crate::store::now_ms(), Ordering::SeqCst);
    }

    /// Whether nobody watches the run: no client here, and none elsewhere
    /// within `within`.
    pub fn unwatched(&self, within: Duration) -> bool {
        let elsewhere = self.watched_elsewhere_ms.load(Ordering::SeqCst);
        self.watchers() == 0 && crate::store::now_ms() - elsewhere > within.as_millis() as i64
    }

    /// Registers a watching client; when the last one has been gone for
    /// the grace period and the run has not finished, the run is cancelled
    /// (nobody would see its result). A client that reconnects within it
    /// (`Last-Event-ID`) keeps the run.
    pub fn watch(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        WatchGuard(self.clone())
    }
}

impl Deref for Run {
    type Target = Timeline;
    fn deref(&self) -> &Timeline {
        &self.timeline
    }
}

/// Held by each event-stream client; see [`Run::watch`].
pub struct WatchGuard(Arc<Run>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if self.0.watchers.fetch_sub(1, Ordering::SeqCst) != 1 || self.0.has_ended() {
            return;
        }
        let run = self.0.clone();
        let cancel_if_alone = move || {
            if run.unwatched(run.grace) && !run.has_ended() {
                tracing::info!(run = %run.id(), "no watcher came back within {:?}; cancelling the run", run.grace);
                run.cancel.cancel();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let grace = self.0.grace;
                handle.spawn(async move {
                    tokio::time::sleep(grace).await;
                    cancel_if_alone();
                });
            }
            // Outside a runtime (no one could reconnect anyway).
            Err(_) => cancel_if_alone(),
        }
    }
}
