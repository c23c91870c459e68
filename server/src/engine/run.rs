//! A run: one accepted demo request, with its timeline, its time budget,
//! its cancellation and the clients watching it.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stacklab_api::DemoId;
use tokio_util::sync::CancellationToken;

use super::timeline::Timeline;

/// One run. Shared by the task running it and every client watching it;
/// its [`Timeline`] (reached through `Deref`) holds the events.
pub struct Run {
    timeline: Arc<Timeline>,
    budget: Duration,
    cancel: CancellationToken,
    watchers: AtomicUsize,
}

impl Run {
    /// A run of `demo` accepted now, with a new random id.
    pub(crate) fn new(demo: DemoId, budget: Duration, cancel: CancellationToken) -> Arc<Run> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Arc::new(Run {
            timeline: Arc::new(Timeline::new(id, demo)),
            budget,
            cancel,
            watchers: AtomicUsize::new(0),
        })
    }

    /// Its timeline, to share with the runtime that runs it.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// How long the run may take once it has left the queue.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Its cancellation token (cancelled when the last watcher leaves, or
    /// at shutdown).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Clients watching now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// Registers a watching client; when the last one leaves before the run
    /// finished, the run is cancelled (nobody would see its result).
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
        if self.0.watchers.fetch_sub(1, Ordering::SeqCst) == 1 && !self.0.is_finished() {
            tracing::info!(run = %self.0.id(), "last watcher disconnected; cancelling the run");
            self.0.cancel.cancel();
        }
    }
}
