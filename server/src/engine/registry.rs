//! Every run this server knows: starting them behind a queue, finding them
//! by id, recording them in the history, and cancelling them at shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stacklab_api::{DemoId, ErrorCode, FactKey, Outcome, Phase, RunError, RunState};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::derive::derive;
use super::queue::{Left, Queue};
use super::run::Run;
use super::stats::Stats;
use crate::backends::{phase_event, RunContext, Runtime};
use crate::store::History;

/// Finished runs kept in memory for `GET /api/runs/{id}` (older ones are
/// read back from the history database).
const KEEP_FINISHED: usize = 1000;

/// Unfinished runs one learner may have of one demo: one running and one
/// waiting. More would let one client fill the room's queue.
pub const PER_LEARNER_PER_DEMO: usize = 2;

/// A queued or running run nobody has watched for this long is dropped:
/// whoever asked for it is gone (its page was closed before the stream
/// opened), and it would hold a slot the room needs.
pub const UNWATCHED_GRACE: Duration = Duration::from_secs(15);

/// Who asked for a run, as the engine limits, schedules and records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// What limits and the queue's fairness count by: a class member's
    /// learner id, else the client's address (a learner id is made up by
    /// the browser, so outside a class it cannot be what limits count).
    pub who: String,
    /// The browser's learner id, for "my runs".
    pub learner: Option<String>,
    /// The class (code) the run counts for.
    pub class: Option<String>,
    /// Whether the run's x-ray captures kernel events (asked for in the
    /// request; see `CreateRun::trace`).
    pub trace: bool,
}

impl Requester {
    /// The server's own runs (tools, tests): no learner, no class.
    pub fn server() -> Self {
        Requester {
            who: "server".into(),
            learner: None,
            class: None,
            trace: false,
        }
    }
}

/// What the room's event streams hear: a run of a class changed.
#[derive(Debug, Clone)]
pub struct ClassChange {
    /// The class's code.
    pub class: String,
    /// The change.
    pub change: stacklab_api::RoomChange,
}

/// A run refused because its learner already has enough in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany {
    /// When trying again is likely to succeed.
    pub retry_after: Duration,
}

/// Counts a learner's unfinished run of a demo until dropped.
struct Admission {
    runs: Arc<Runs>,
    key: (String, DemoId),
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut pending = self.runs.pending();
        if let Some(n) = pending.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.key);
            }
        }
    }
}

/// Every run this server knows, and the tasks running them.
pub struct Runs {
    by_id: Mutex<HashMap<String, Arc<Run>>>,
    finished_order: Mutex<VecDeque<String>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    history: History,
    /// Runs between leaving their queue and finishing, on this server.
    active: AtomicUsize,
    /// Unfinished runs by (learner, demo), for [`PER_LEARNER_PER_DEMO`].
    pending: Mutex<HashMap<(String, DemoId), usize>>,
    /// Changes of class runs, for the room's event streams.
    rooms: tokio::sync::broadcast::Sender<ClassChange>,
    /// Counters for `/metrics`.
    stats: Stats,
    /// How long a run outlives its last watcher.
    watch_grace: Duration,
}

/// How loaded the host was while a run ran: other runs in progress.
struct Load {
    at_start: usize,
}

impl Load {
    fn describe(&self, at_end: usize) -> String {
        format!(
            "{} other run(s) in progress when this one left the queue, {at_end} when it was measured",
            self.at_start
        )
    }
}

/// Counts a run as active until dropped.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
            active: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            rooms: tokio::sync::broadcast::channel(1024).0,
            stats: Stats::default(),
            watch_grace: super::run::WATCH_GRACE,
        }
    }

    /// These runs, each kept `grace` after its last watcher left (before
    /// any run starts).
    pub fn with_watch_grace(mut self, grace: Duration) -> Self {
        self.watch_grace = grace;
        self
    }

    /// Counters of the runs so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Cancelled when the server starts shutting down.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Changes of class runs from now on.
    pub fn room_changes(&self) -> tokio::sync::broadcast::Receiver<ClassChange> {
        self.rooms.subscribe()
    }

    /// Runs between leaving their queue and finishing, now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn tell_room(&self, requester: &Requester, run: &Run, state: RunState) {
        if let Some(class) = &requester.class {
            // Nobody listening is not an error.
            let _ = self.rooms.send(ClassChange {
                class: class.clone(),
                change: stacklab_api::RoomChange {
                    run: run.id().to_owned(),
                    demo: run.demo(),
                    state,
                },
            });
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(String, DemoId), usize>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run history.
    pub fn history(&self) -> &History {
        &self.history
    }

    fn by_id(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.by_id().get(id).cloned()
    }

    /// Accepts a run of `demo` on `runtime`, behind `queue`, for the server
    /// itself (tools and tests: no limit, no learner), and starts it in the
    /// background. Returns at once.
    pub fn start<R: Runtime>(
        self: &Arc<Self>,
        demo: DemoId,
        runtime: Arc<R>,
        queue: Arc<Queue>,
        budget: Duration,
    ) -> Arc<Run> {
        self.launch(Requester::server(), demo, runtime, queue, budget, None)
            .0
    }

    /// As [`Runs::start`] for a learner's request: `requester.who` may have
    /// at most [`PER_LEARNER_PER_DEMO`] unfinished runs of `demo`, the
    /// queue shares slots fairly by it, and a run nobody watches for
    /// [`UNWATCHED_GRACE`] is dropped.
    pub async fn try_start<R: Runtime>(
        self: &Arc<Self>,
        requester: Requester,
        demo: DemoId,
        runtime: Arc<R>,
        queue: Arc<Queue>,
        budget: Duration,
    ) -> Result<Arc<Run>, TooMany> {
        let key = (requester.who.clone(), demo);
        // With replicas, the limit counts the learner's runs on all of
        // them (the store knows every one; a request racing another on a
        // second replica in the same instant can slip through).
        if self.history.shared() {
            match self.history.unfinished_of(&requester.who, demo).await {
                Ok(n) if n >= PER_LEARNER_PER_DEMO => {
                    let wait = queue.estimate(1).unwrap_or(Duration::from_secs(5));
                    return Err(TooMany {
                        retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot count the learner's runs on other replicas: {e}"),
            }
        }
        {
            let mut pending = self.pending();
            let n = pending.entry(key.clone()).or_default();
            if *n >= PER_LEARNER_PER_DEMO {
                let wait = queue.estimate(1).unwrap_or(Duration::from_secs(5));
                return Err(TooMany {
                    retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
                });
            }
            *n += 1;
        }
        let admission = Admission {
            runs: self.clone(),
            key,
        };
        let (run, recorded) = self.launch(requester, demo, runtime, queue, budget, Some(admission));
        // The answer waits for the run's row (bounded by the store's own
        // bounds): a follow-up request that reaches another replica finds
        // the run there.
        let _ = recorded.await;
        let watched = run.clone();
        tokio::spawn(async move {
            tokio::time::sleep(UNWATCHED_GRACE).await;
            if watched.unwatched(UNWATCHED_GRACE) && !watched.has_ended() {
                tracing::info!(run = %watched.id(), "nobody watched the run; dropping it");
                watched.cancel_token().cancel();
            }
        });
        Ok(run)
    }

    /// Starts the run's task; the receiver hears once the task has written
    /// the run's row (or failed to).
    fn launch<R: Runtime>(
        self: &Arc<Self>,
        requester: Requester,
        demo: DemoId,
        runtime: Arc<R>,
        queue: Arc<Queue>,
        budget: Duration,
        admission: Option<Admission>,
    ) -> (Arc<Run>, tokio::sync::oneshot::Receiver<()>) {
        let run = Run::with_grace(
            demo,
            budget,
            self.shutdown.child_token(),
            self.watch_grace,
            requester.who.clone(),
        );
        if requester.trace {
            run.ask_trace();
        }
        if let (Some(class), Some(learner)) = (&requester.class, &requester.learner) {
            run.set_member(class, learner);
        }
        run.push(phase_event(
            Phase::Accepted,
            format!("the server accepted a run of the {demo} demo"),
            None,
        ));
        self.by_id().insert(run.id().to_owned(), run.clone());
        if self.history.shared() {
            // Other replicas serve its events too (see `relay`).
            self.tasks
                .spawn(super::relay::publish(run.clone(), self.history.clone()));
        }
        self.tell_room(&requester, &run, RunState::Queued);
        self.stats.started(demo);
        let runs = self.clone();
        let task_run = run.clone();
        let (recorded, heard) = tokio::sync::oneshot::channel();
        self.tasks.spawn(async move {
            // Held until the run has finished: its learner's count.
            let _admission = admission;
            // The run's row, written on the store's pool while the run
            // takes its place in line (the line's order is the order runs
            // were accepted in); awaited before its start or end is written.
            let row = {
                let (history, run, requester) =
                    (runs.history.clone(), task_run.clone(), requester.clone());
                tokio::spawn(async move {
                    if let Err(e) = history
                        .accepted_for(
                            run.id(),
                            demo,
                            Some(&requester.who),
                            requester.learner.as_deref(),
                            requester.class.as_deref(),
                        )
                        .await
                    {
                        tracing::error!(run = %run.id(), "cannot record the run in the history: {e}");
                    }
                    let _ = recorded.send(());
                })
            };
            let mut row = Some(row);
            let outcome = match queue.enter(&task_run, &requester.who).await {
                Err(Left::Cancelled) => Outcome::Failed {
                    error: RunError {
                        code: ErrorCode::Cancelled,
                        message: "the run was cancelled while it waited in the queue".into(),
                    },
                },
                Err(Left::TimedOut(after)) => Outcome::Failed {
                    error: RunError {
                        code: ErrorCode::QueueTimeout,
                        message: format!(
                            "no slot came free within {} s: the server is busy with other learners' runs; try again in a little while",
                            after.as_secs()
                        ),
                    },
                },
                Ok(_slot) => {
                    // One pair of observed moments on the run's clock: the
                    // figure is derived from them, and so is /metrics' wait.
                    let left_us = task_run.elapsed_us();
                    let waited = Duration::from_micros(
                        left_us.saturating_sub(task_run.phase_at(Phase::Accepted).unwrap_or(0)),
                    );
                    task_run.push_at(
                        left_us,
                        phase_event(
                            Phase::SlotGranted,
                            format!(
                                "the run left the queue with a slot after waiting {:.1} ms: its work starts now",
                                waited.as_secs_f64() * 1e3
                            ),
                            None,
                        ),
                    );
                    let load = Load {
                        at_start: runs.active.fetch_add(1, Ordering::SeqCst),
                    };
                    let _active = ActiveGuard(&runs.active);
                    runs.stats.left_queue(demo, waited);
                    // The start is written beside the run, not before it:
                    // a store round trip is this server's bookkeeping, and
                    // awaited here it sat inside the platform's share (about
                    // 0.7 ms of a micro-VM's 4). The run's end awaits it.
                    row = Some({
                        let (history, run, accepted) =
                            (runs.history.clone(), task_run.clone(), row.take());
                        let at_start = load.at_start;
                        tokio::spawn(async move {
                            if let Some(accepted) = accepted {
                                let _ = accepted.await;
                            }
                            if let Err(e) = history.started(run.id(), at_start).await {
                                tracing::error!(run = %run.id(), "cannot record the run's start: {e}");
                            }
                        })
                    });
                    runs.tell_room(&requester, &task_run, RunState::Running);
                    let ctx = RunContext::new(
                        task_run.timeline().clone(),
                        budget,
                        task_run.cancel_token().clone(),
                    )
                    .with_trace(task_run.trace_asked());
                    match runtime.run(&ctx).await {
                        Ok(mut ready) => {
                            ready.fact(
                                FactKey::Host,
                                "The host",
                                crate::backends::host::describe().to_owned(),
                                "/proc/cpuinfo (model, hypervisor flag), /sys/class/dmi/id, the CPUs this server may use, and the KVM probe",
                            );
                            ready.fact(
                                FactKey::Load,
                                "Other runs on this host",
                                load.describe(runs.active.load(Ordering::SeqCst) - 1),
                                "runs of any demo between leaving the queue and finishing, counted by this server",
                            );
                            let (measurements, missing) =
                                derive(demo, &task_run.record().events, &ready);
                            Outcome::Ready {
                                measurements,
                                facts: ready.facts,
                                missing,
                            }
                        }
                        Err(error) => Outcome::Failed { error },
                    }
                }
            };
            // Ended on purpose (a member removed from the class): that is
            // the reason, not the cancellation it caused.
            let outcome = match (outcome, task_run.ended_because()) {
                (Outcome::Failed { .. }, Some(error)) => Outcome::Failed { error },
                (outcome, _) => outcome,
            };
            if let Outcome::Failed { error } = &outcome {
                tracing::info!(run = %task_run.id(), code = %error.code, "run failed: {}", error.message);
            }
            let (label, ready) = match &outcome {
                Outcome::Ready { .. } => (
                    "succeeded",
                    outcome
                        .value(demo.headline_keys().0)
                        .map(|us| Duration::from_secs_f64(us / 1e6)),
                ),
                Outcome::Failed { error } => (error.code.as_str(), None),
            };
            runs.stats.finished(demo, label, ready);
            // Stored before it is shown: a learner who sees the run end and
            // then asks any replica must not hear that it is still running.
            let (record, shown) = task_run.stamp_end(outcome);
            if let Some(row) = row.take() {
                let _ = row.await;
            }
            if let Err(e) = runs.history.finished(&record).await {
                tracing::error!(run = %task_run.id(), "cannot store the finished run: {e}");
            }
            drop(shown);
            runs.tell_room(&requester, &task_run, record.state);
            runs.finished(task_run.id());
        });
        (run, heard)
    }

    fn finished(&self, id: &str) {
        let mut order = self
            .finished_order
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        order.push_back(id.to_owned());
        while order.len() > KEEP_FINISHED {
            if let Some(old) = order.pop_front() {
                self.by_id().remove(&old);
            }
        }
    }

    /// Ends every waiting and running run of `learner` in `class` on this
    /// server at once, for `reason`; how many.
    pub fn end_member_runs(&self, class: &str, learner: &str, reason: &RunError) -> usize {
        let runs: Vec<Arc<Run>> = self
            .by_id()
            .values()
            .filter(|r| !r.has_ended() && r.is_member_run(class, learner))
            .cloned()
            .collect();
        for run in &runs {
            run.end(reason.clone());
        }
        runs.len()
    }

    /// Cancels every run and waits until each has cleaned up.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
