//! What replicas sharing a PostgreSQL store tell each other about runs.
//!
//! The replica running a run appends its events to the store as they
//! happen ([`publish`]), with a `NOTIFY` naming the run; any replica can
//! then serve the run's event stream ([`RemoteCursor`]) and its record.
//! A replica following a run it does not run says so every few seconds
//! (`NOTIFY` on the watch channel), and the running replica counts that
//! as a watcher ([`follow_notices`]), so a run followed through another
//! replica is not cancelled as unwatched.

use std::sync::Arc;
use std::time::Duration;

use stacklab_api::{EventKind, RunEvent, RunState};
use tokio::sync::broadcast;

use super::registry::Runs;
use super::run::Run;
use crate::store::{History, Notice};

/// How often a replica following another's run says so.
pub const WATCHING_EVERY: Duration = Duration::from_secs(2);

/// Appends `run`'s events to the store as they arrive, until it finishes.
pub async fn publish(run: Arc<Run>, history: History) {
    let mut changes = run.subscribe();
    let mut next = 0;
    loop {
        let (events, finished) = run.events_since(next);
        if !events.is_empty() {
            next += events.len();
            if let Err(e) = history.append_events(run.id(), &events).await {
                tracing::warn!(run = %run.id(), "cannot share the run's events: {e}");
            }
        }
        if finished || changes.changed().await.is_err() {
            return;
        }
    }
}

/// Marks this replica's runs as watched when another replica says a
/// client follows them there.
pub fn follow_notices(runs: Arc<Runs>, mut notices: broadcast::Receiver<Notice>) {
    tokio::spawn(async move {
        loop {
            match notices.recv().await {
                Ok(Notice::Watching(id)) => {
                    if let Some(run) = runs.get(&id) {
                        run.watched_elsewhere();
                    }
                }
                Ok(Notice::Events(_)) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Reads a run that another replica runs: its events from the store,
/// woken by that replica's notices (and every second regardless, should a
/// notice be missed), telling that replica it is watched.
pub struct RemoteCursor {
    history: History,
    id: String,
    next: u32,
    notices: broadcast::Receiver<Notice>,
    said_watching: Option<tokio::time::Instant>,
    finished: bool,
}

impl RemoteCursor {
    /// Follows run `id` from event `next` on.
    pub fn new(
        history: History,
        id: String,
        next: u32,
        notices: broadcast::Receiver<Notice>,
    ) -> Self {
        RemoteCursor {
            history,
            id,
            next,
            notices,
            said_watching: None,
            finished: false,
        }
    }

    /// The `finished` event of a run the store has closed although its
    /// events never said so (`host_lost`, `server_stopped`), numbered as
    /// this stream's next.
    async fn closed_elsewhere(&self) -> Option<RunEvent> {
        let record = self.history.get(&self.id).await.ok()??;
        if matches!(record.state, RunState::Queued | RunState::Running) {
            return None;
        }
        let mut end = record
            .events
            .into_iter()
            .rev()
            .find(|e| matches!(e.kind, EventKind::Finished { .. }))?;
        end.seq = end.seq.max(self.next);
        Some(end)
    }

    /// The next events (at least one), or `None` once the run's
    /// `finished` event has been returned (or the store fails).
    pub async fn next_events(&mut self) -> Option<Vec<RunEvent>> {
        loop {
            if self.finished {
                return None;
            }
            if self
                .said_watching
                .is_none_or(|at| at.elapsed() >= WATCHING_EVERY)
            {
                self.said_watching = Some(tokio::time::Instant::now());
                let _ = self.history.notify_watching(&self.id).await;
            }
            let events = match self.history.events(&self.id, self.next).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(run = %self.id, "cannot read the run's events: {e}");
                    return None;
                }
            };
            if !events.is_empty() {
                self.next += events.len() as u32;
                self.finished = events
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::Finished { .. }));
                return Some(events);
            }
            // Closed without its last events (its replica was lost): the
            // store's record of it says how it ended.
            if let Some(end) = self.closed_elsewhere().await {
                self.finished = true;
                return Some(vec![end]);
            }
            // Wait for news of this run, at most a second.
            let wait = async {
                loop {
                    match self.notices.recv().await {
                        Ok(Notice::Events(id)) if id == self.id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
    }
}
