//! Runs: accepted demo requests, their event logs, the queue in front of the
//! runtimes, and cancellation (client gone, deadline, shutdown).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stacklab_api::{DemoId, EventKind, Outcome, RunError, RunEvent, RunRecord, RunState};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::history::History;
use crate::runtime::{RunContext, Runtime};

/// Console lines kept per run; later lines are counted, not stored.
const MAX_LOG_LINES: usize = 200;
/// Longest console line kept (bytes); longer ones are cut.
const MAX_LOG_LINE: usize = 400;
/// Finished runs kept in memory for `GET /api/runs/{id}` (older ones are
/// read back from the history database).
const KEEP_FINISHED: usize = 1000;

/// One run: its identity, clock and event log. Shared by the task running
/// it and every client watching it.
pub struct Run {
    id: String,
    demo: DemoId,
    accepted: Instant,
    /// `accepted` as CLOCK_MONOTONIC ns, to place times measured by another
    /// process (the VMM) on this run's clock.
    accepted_mono_ns: u64,
    budget: Duration,
    inner: Mutex<RunInner>,
    /// The number of events so far; watchers wake when it changes.
    count: watch::Sender<usize>,
    cancel: CancellationToken,
    watchers: AtomicUsize,
}

struct RunInner {
    state: RunState,
    events: Vec<RunEvent>,
    log_lines: usize,
}

impl Run {
    fn new(demo: DemoId, budget: Duration, cancel: CancellationToken) -> Arc<Run> {
        Self::with_id(new_run_id(), demo, budget, cancel)
    }

    /// A run not registered anywhere, with the id given: the instances of a
    /// density run (`<sweep id>.<N>.<i>`, so their containers' labels say
    /// which sweep they belong to).
    pub(crate) fn with_id(
        id: String,
        demo: DemoId,
        budget: Duration,
        cancel: CancellationToken,
    ) -> Arc<Run> {
        Arc::new(Run {
            id,
            demo,
            accepted: Instant::now(),
            accepted_mono_ns: stacklab_vmm::vm::monotonic_ns(),
            budget,
            inner: Mutex::new(RunInner {
                state: RunState::Queued,
                events: Vec::new(),
                log_lines: 0,
            }),
            count: watch::channel(0).0,
            cancel,
            watchers: AtomicUsize::new(0),
        })
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which demo it runs.
    pub fn demo(&self) -> DemoId {
        self.demo
    }

    /// Microseconds since the request was accepted.
    pub fn elapsed_us(&self) -> u64 {
        self.accepted.elapsed().as_micros() as u64
    }

    /// How long the run may take once it has left the queue.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunInner> {
        // A panic while holding the lock cannot leave the Vec half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (ignored once the run has finished).
    pub fn push(&self, kind: EventKind) {
        self.push_at(self.elapsed_us(), kind);
    }

    /// Microseconds on this run's clock of a CLOCK_MONOTONIC instant.
    pub fn us_since_accepted(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.accepted_mono_ns) / 1000
    }

    /// Appends an event observed at `at_us` (kept in order: never earlier
    /// than the last event).
    pub fn push_at(&self, at_us: u64, kind: EventKind) {
        let mut inner = self.lock();
        let at_us = at_us.max(inner.events.last().map_or(0, |e| e.at_us));
        if matches!(inner.state, RunState::Succeeded | RunState::Failed) {
            return;
        }
        match &kind {
            EventKind::Phase { .. } => inner.state = RunState::Running,
            EventKind::Finished { outcome } => {
                inner.state = match outcome {
                    Outcome::Ready { .. } => RunState::Succeeded,
                    Outcome::Failed { .. } => RunState::Failed,
                }
            }
            _ => {}
        }
        let seq = inner.events.len() as u32;
        inner.events.push(RunEvent { seq, at_us, kind });
        let n = inner.events.len();
        drop(inner);
        self.count.send_replace(n);
    }

    /// Appends a console line, within the per-run bounds.
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

    /// Whether the run has finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.lock().state, RunState::Succeeded | RunState::Failed)
    }

    /// A snapshot for `GET /api/runs/{id}`.
    pub fn record(&self) -> RunRecord {
        let inner = self.lock();
        RunRecord {
            id: self.id.clone(),
            demo: self.demo,
            state: inner.state,
            events: inner.events.clone(),
        }
    }

    /// Events from `from` on, and whether the run has finished.
    pub fn events_since(&self, from: usize) -> (Vec<RunEvent>, bool) {
        let inner = self.lock();
        let finished = matches!(inner.state, RunState::Succeeded | RunState::Failed);
        (
            inner.events.get(from..).unwrap_or_default().to_vec(),
            finished,
        )
    }

    /// Wakes when new events arrive.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Registers a watching client; when the last one leaves before the run
    /// finished, the run is cancelled (nobody would see its result).
    pub fn watch(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        WatchGuard(self.clone())
    }
}

/// Held by each event-stream client; see [`Run::watch`].
pub struct WatchGuard(Arc<Run>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if self.0.watchers.fetch_sub(1, Ordering::SeqCst) == 1 && !self.0.is_finished() {
            tracing::info!(run = %self.0.id, "last watcher disconnected; cancelling the run");
            self.0.cancel.cancel();
        }
    }
}

fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

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

    fn position(&self, id: &str) -> Option<u32> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.iter().position(|w| w == id).map(|i| i as u32 + 1)
    }

    fn leave(&self, id: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|w| w != id);
        self.moved.send_modify(|n| *n += 1);
    }

    /// Waits for a slot, reporting the queue position to `run`. `None` if the
    /// run was cancelled while waiting.
    pub async fn enter(&self, run: &Run) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(run.id.clone());
        let mut moved = self.moved.subscribe();
        // Tokio's semaphore is fair: one pending acquire keeps its place.
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut reported = None;
        let result = loop {
            let position = self.position(&run.id);
            if position != reported {
                if let Some(position) = position {
                    run.push(EventKind::Queued { position });
                }
                reported = position;
            }
            tokio::select! {
                permit = &mut acquire => break permit.ok(),
                _ = moved.changed() => {}
                () = run.cancel.cancelled() => break None,
            }
        };
        self.leave(&run.id);
        result
    }
}

/// Every run this server knows, and the tasks running them.
pub struct Runs {
    by_id: Mutex<HashMap<String, Arc<Run>>>,
    finished_order: Mutex<VecDeque<String>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    history: History,
}

impl Default for Runs {
    /// Runs whose history lives in memory only.
    fn default() -> Self {
        Runs::new(History::in_memory())
    }
}

impl Runs {
    /// Runs recorded in `history`.
    pub fn new(history: History) -> Self {
        Runs {
            by_id: Mutex::new(HashMap::new()),
            finished_order: Mutex::new(VecDeque::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            history,
        }
    }

    /// The run history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The run with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Accepts a run of `demo` on `runtime`, behind `queue`, and starts it in
    /// the background. Returns at once.
    pub fn start<R: Runtime>(
        self: &Arc<Self>,
        demo: DemoId,
        runtime: Arc<R>,
        queue: Arc<Queue>,
        budget: Duration,
    ) -> Arc<Run> {
        self.start_for(None, demo, runtime, queue, budget)
    }

    /// As [`Runs::start`], on behalf of a learner (for "my runs").
    pub fn start_for<R: Runtime>(
        self: &Arc<Self>,
        learner: Option<&str>,
        demo: DemoId,
        runtime: Arc<R>,
        queue: Arc<Queue>,
        budget: Duration,
    ) -> Arc<Run> {
        let run = Run::new(demo, budget, self.shutdown.child_token());
        // One short insert (WAL, no fsync): cheap enough to do inline.
        if let Err(e) = self.history.accepted(&run.id, demo, learner) {
            tracing::error!(run = %run.id, "cannot record the run in the history: {e}");
        }
        run.push(EventKind::Phase {
            phase: "accepted".into(),
            label: "Request accepted".into(),
            detail: format!("the server accepted a run of the {demo} demo"),
            memory_bytes: None,
            memory_how: None,
        });
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.id.clone(), run.clone());
        let runs = self.clone();
        let task_run = run.clone();
        self.tasks.spawn(async move {
            let outcome = match queue.enter(&task_run).await {
                None => Outcome::Failed {
                    error: RunError {
                        code: crate::runtime::codes::CANCELLED.into(),
                        message: "the run was cancelled while it waited in the queue".into(),
                    },
                },
                Some(_permit) => {
                    let ctx = RunContext::new(task_run.clone(), budget, task_run.cancel.clone());
                    match runtime.run(&ctx).await {
                        Ok(ready) => Outcome::Ready {
                            measurements: ready.measurements,
                            facts: ready.facts,
                        },
                        Err(error) => Outcome::Failed { error },
                    }
                }
            };
            if let Outcome::Failed { error } = &outcome {
                tracing::info!(run = %task_run.id, code = %error.code, "run failed: {}", error.message);
            }
            task_run.push(EventKind::Finished { outcome });
            let history = runs.history.clone();
            let record = task_run.record();
            let stored = tokio::task::spawn_blocking(move || history.finished(&record)).await;
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(run = %task_run.id, "cannot store the finished run: {e}"),
                Err(e) => tracing::error!(run = %task_run.id, "history task failed: {e}"),
            }
            runs.finished(&task_run.id);
        });
        run
    }

    fn finished(&self, id: &str) {
        let mut order = self
            .finished_order
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        order.push_back(id.to_owned());
        while order.len() > KEEP_FINISHED {
            if let Some(old) = order.pop_front() {
                self.by_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&old);
            }
        }
    }

    /// Cancels every run and waits until each has cleaned up.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
