//! The queue in front of a runtime's slots.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use stacklab_api::EventKind;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::run::Run;

/// A FIFO of runs waiting for one of `slots` places, which tells each waiting
/// run its position whenever it changes.
pub struct Queue {
    slots: Arc<Semaphore>,
    waiting: Mutex<VecDeque<String>>,
    moved: watch::Sender<u64>,
}

impl Queue {
    /// A queue in front of `slots` concurrent runs.
    pub fn new(slots: usize) -> Self {
        Queue {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: Mutex::new(VecDeque::new()),
            moved: watch::channel(0).0,
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position(&self, id: &str) -> Option<u32> {
        self.waiting()
            .iter()
            .position(|w| w == id)
            .map(|i| i as u32 + 1)
    }

    fn leave(&self, id: &str) {
        self.waiting().retain(|w| w != id);
        self.moved.send_modify(|n| *n += 1);
    }

    /// Waits for a slot, reporting the queue position to `run`. `None` if the
    /// run was cancelled while waiting.
    pub async fn enter(&self, run: &Run) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting().push_back(run.id().to_owned());
        let mut moved = self.moved.subscribe();
        // Tokio's semaphore is fair: one pending acquire keeps its place.
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut reported = None;
        let result = loop {
            let position = self.position(run.id());
            if position != reported {
                if let Some(position) = position {
                    run.push(EventKind::Queued { position });
                }
                reported = position;
            }
            tokio::select! {
                permit = &mut acquire => break permit.ok(),
                _ = moved.changed() => {}
                () = run.cancel_token().cancelled() => break None,
            }
        };
        self.leave(run.id());
        result
    }
}
