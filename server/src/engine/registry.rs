//! Every run this server knows: starting them behind a queue, finding them
//! by id, recording them in the history, and cancelling them at shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stacklab_api::{DemoId, ErrorCode, EventKind, FactKey, Outcome, RunError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::queue::Queue;
use super::run::Run;
use super::shares;
use crate::backends::{RunContext, Runtime};
use crate::store::History;

/// Finished runs kept in memory for `GET /api/runs/{id}` (older ones are
/// read back from the history database).
const KEEP_FINISHED: usize = 1000;

/// Every run this server knows, and the tasks running them.
pub struct Runs {
    by_id: Mutex<HashMap<String, Arc<Run>>>,
    finished_order: Mutex<VecDeque<String>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    history: History,
    /// Runs between leaving their queue and finishing, on this server.
    active: AtomicUsize,
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
        }
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
        if let Err(e) = self.history.accepted(run.id(), demo, learner) {
            tracing::error!(run = %run.id(), "cannot record the run in the history: {e}");
        }
        run.push(EventKind::Phase {
            phase: "accepted".into(),
            label: "Request accepted".into(),
            detail: format!("the server accepted a run of the {demo} demo"),
            memory_bytes: None,
            memory_how: None,
        });
        self.by_id().insert(run.id().to_owned(), run.clone());
        let runs = self.clone();
        let task_run = run.clone();
        self.tasks.spawn(async move {
            let outcome = match queue.enter(&task_run).await {
                None => Outcome::Failed {
                    error: RunError {
                        code: ErrorCode::Cancelled,
                        message: "the run was cancelled while it waited in the queue".into(),
                    },
                },
                Some(_permit) => {
                    let load = Load {
                        at_start: runs.active.fetch_add(1, Ordering::SeqCst),
                    };
                    let _active = ActiveGuard(&runs.active);
                    let ctx = RunContext::new(
                        task_run.timeline().clone(),
                        budget,
                        task_run.cancel_token().clone(),
                    );
                    match runtime.run(&ctx).await {
                        Ok(mut ready) => {
                            shares::add(demo, &task_run.record(), &mut ready);
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
                            Outcome::Ready {
                                measurements: ready.measurements,
                                facts: ready.facts,
                                missing: ready.missing,
                            }
                        }
                        Err(error) => Outcome::Failed { error },
                    }
                }
            };
            if let Outcome::Failed { error } = &outcome {
                tracing::info!(run = %task_run.id(), code = %error.code, "run failed: {}", error.message);
            }
            task_run.push(EventKind::Finished { outcome });
            let history = runs.history.clone();
            let record = task_run.record();
            let stored = tokio::task::spawn_blocking(move || history.finished(&record)).await;
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(run = %task_run.id(), "cannot store the finished run: {e}"),
                Err(e) => tracing::error!(run = %task_run.id(), "history task failed: {e}"),
            }
            runs.finished(task_run.id());
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
                self.by_id().remove(&old);
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
