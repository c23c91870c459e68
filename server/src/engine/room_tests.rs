//! A room flooded from one address, through the engine: nineteen invented
//! learners queue two runs each ahead of an honest member, and the
//! instructor removes them. Runs are a slow stand-in runtime (a fixed
//! time per run, stopped at once when cancelled), so the figures are the
//! queue's own and no container or VM is needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stacklab_api::{DemoId, ErrorCode, EventKind, Outcome, RunError, RunState};

use tokio::sync::watch;

use super::{Queue, Ready, Requester, Run, RunContext, Runs, Runtime};

/// Holds its slot until its gate opens, then for a fixed time; or until
/// the run is stopped. The gate lets a test fill the line before any run
/// can finish, however slowly the machine queues them.
struct Slow {
    time: Duration,
    gate: watch::Receiver<bool>,
}

impl Slow {
    /// A runtime whose runs wait for `open(true)` on the returned sender.
    fn gated(time: Duration) -> (Self, watch::Sender<bool>) {
        let (open, gate) = watch::channel(false);
        (Self { time, gate }, open)
    }
}

impl Runtime for Slow {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        let mut gate = self.gate.clone();
        tokio::select! {
            _ = async {
                // A gate whose sender is gone never opens.
                if gate.wait_for(|open| *open).await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(self.time).await;
            } => Ok(Ready::default()),
            error = ctx.stopped() => Err(error),
        }
    }
}

/// Waits (up to 10 s) until `done` holds; a hang is a failure, not a
/// stuck suite.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const CLASS: &str = "ROOM42";
const RUN_TIME: Duration = Duration::from_millis(50);
const FLOODERS: usize = 19;

fn member(learner: &str) -> Requester {
    Requester {
        who: format!("learner {learner}"),
        learner: Some(learner.to_owned()),
        class: Some(CLASS.to_owned()),
        trace: false,
    }
}

/// Nineteen flooders' runs (two each), then the honest member's, on a
/// gated runtime: when it returns, the first flood run holds the slot and
/// every other run waits in the line. The runs (the honest one last) and
/// the gate.
async fn flood(
    runs: &Arc<Runs>,
    queue: &Arc<Queue>,
) -> (Vec<Arc<Run>>, Arc<Run>, watch::Sender<bool>) {
    let (runtime, gate) = Slow::gated(RUN_TIME);
    let runtime = Arc::new(runtime);
    let start = async |learner: &str| {
        runs.try_start(
            member(learner),
            DemoId::MicroVm,
            runtime.clone(),
            queue.clone(),
            Duration::from_secs(30),
        )
        .await
        .unwrap()
    };
    let mut flood = Vec::new();
    for n in 0..FLOODERS {
        for _ in 0..2 {
            flood.push(start(&format!("flooder-{n:02}")).await);
        }
    }
    let honest = start("honest-member").await;
    until("every run but the first waits in the line", || {
        queue.snapshot().2 == 2 * FLOODERS
    })
    .await;
    (flood, honest, gate)
}

/// Waits for `run` to leave the queue (its class's `Running` change);
/// the ids of the other runs that left it first, counted from now.
async fn started_before(
    changes: &mut tokio::sync::broadcast::Receiver<super::ClassChange>,
    run: &Run,
) -> Vec<String> {
    let mut others = Vec::new();
    loop {
        let change = tokio::time::timeout(Duration::from_secs(20), changes.recv())
            .await
            .expect("the run leaves the queue")
            .unwrap();
        if change.change.state != RunState::Running {
            continue;
        }
        if change.change.run == run.id() {
            return others;
        }
        others.push(change.change.run);
    }
}

fn failure(run: &Run) -> Option<RunError> {
    run.record().events.iter().find_map(|e| match &e.kind {
        EventKind::Finished {
            outcome: Outcome::Failed { error },
        } => Some(error.clone()),
        _ => None,
    })
}

/// Without removal the honest member waits behind every flooder's first
/// run; after the instructor removes the flooders, their waiting runs
/// leave the line with `removed_from_class` and the honest member's run
/// starts next: no other run starts before it (at most one per slot).
/// (One thread: the runs enter the line in the order they were asked for,
/// as requests arriving one after another would.)
#[tokio::test]
async fn removing_the_flooders_lets_the_honest_member_start_next() {
    // Before: nobody removes them.
    let runs = Arc::new(Runs::default());
    let queue = Arc::new(Queue::new(1));
    let mut changes = runs.room_changes();
    let (_, honest, gate) = flood(&runs, &queue).await;
    let asked = Instant::now();
    gate.send_replace(true);
    let ahead_flooded = started_before(&mut changes, &honest).await.len();
    let waited_flooded = asked.elapsed();
    let told_flooded = honest
        .record()
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Queued { .. }))
        .count();
    assert!(
        told_flooded <= ahead_flooded + 1,
        "a queued event per position it moved, no more: {told_flooded}"
    );
    assert!(
        ahead_flooded >= FLOODERS,
        "behind every flooder's first run: {ahead_flooded} ahead"
    );
    runs.shut_down().await;

    // After: the instructor removes each flooder once the line is long.
    let runs = Arc::new(Runs::default());
    let queue = Arc::new(Queue::new(1));
    let mut changes = runs.room_changes();
    let (flood, honest, gate) = flood(&runs, &queue).await;
    let asked = Instant::now();
    let reason = RunError {
        code: ErrorCode::RemovedFromClass,
        message: "removed".into(),
    };
    // Runs that left the queue before the removal: not counted.
    while changes.try_recv().is_ok() {}
    let removing = Instant::now();
    let mut ended = 0;
    for n in 0..FLOODERS {
        ended += runs.end_member_runs(CLASS, &format!("flooder-{n:02}"), &reason);
    }
    // The gate is shut: no flood run can finish on its own. It opens once
    // every one has ended (a run stopped while its gate opened could
    // still finish as ready).
    assert_eq!(ended, 2 * FLOODERS, "every flood run ended");
    let ahead = started_before(&mut changes, &honest).await;
    let waited_after_removal = removing.elapsed();
    let waited_in_all = asked.elapsed();
    let flood_ids: Vec<&str> = flood.iter().map(|r| r.id()).collect();
    let flood_started_after: Vec<_> = ahead
        .iter()
        .filter(|id| flood_ids.contains(&id.as_str()))
        .collect();
    // The removal ended the flood run holding the slot, and no other
    // flood run got it: "within one run per slot" with nothing to spare.
    assert!(
        flood_started_after.is_empty(),
        "no flood run started after the removal: {ahead:?}"
    );
    for run in &flood {
        let mut changed = run.subscribe();
        while !run.is_finished() {
            tokio::time::timeout(Duration::from_secs(5), changed.changed())
                .await
                .expect("a removed member's run ends at once")
                .unwrap();
        }
        let error = failure(run).expect("a removed member's run failed");
        assert_eq!(error.code, ErrorCode::RemovedFromClass, "{error:?}");
    }
    assert_eq!(
        queue.snapshot().2,
        0,
        "the line is empty: {:?}",
        queue.snapshot()
    );
    gate.send_replace(true);
    eprintln!(
        "honest member, {} flood runs queued ahead on 1 slot of {} ms runs: started after {} ms flooded \
         ({} queued events, {} runs started ahead of it); with the flooders removed, {} ms after the removal \
         began ({} ms after asking)",
        2 * FLOODERS,
        RUN_TIME.as_millis(),
        waited_flooded.as_millis(),
        told_flooded,
        ahead_flooded,
        waited_after_removal.as_millis(),
        waited_in_all.as_millis(),
    );
    // A bound against a hang only (the count above is the test): the
    // removal ends the run holding the slot, so the wait is far shorter.
    assert!(
        waited_after_removal < Duration::from_secs(5),
        "{waited_after_removal:?}"
    );
    assert!(
        honest.ended_because().is_none(),
        "the honest member's run was not ended"
    );
    runs.shut_down().await;
}

/// A queue whose line is full refuses the next run when it is asked for
/// (not a run accepted to wait forever), and says when to ask again.
#[tokio::test]
async fn a_full_line_refuses_the_next_run_at_once() {
    let runs = Arc::new(Runs::default());
    let labs = super::Labs::new(None, &super::Settings::default());
    let queue = Arc::new(Queue::new(1).with_max_waiting(2));
    // The gate stays shut: the first run holds the slot to the end.
    let (runtime, _gate) = Slow::gated(Duration::ZERO);
    let runtime = Arc::new(runtime);
    let mut started = Vec::new();
    for n in 0..3 {
        let run = labs
            .start_on(
                &runs,
                member(&format!("learner-{n}")),
                DemoId::MicroVm,
                runtime.clone(),
                &queue,
            )
            .await
            .unwrap();
        started.push(run);
        // Each enters the line in its own task.
        until("the run is in the queue", || {
            queue.snapshot().1 + queue.snapshot().2 == n + 1
        })
        .await;
    }
    assert_eq!(queue.snapshot().2, 2, "one running, two waiting");
    match labs
        .start_on(&runs, member("learner-3"), DemoId::MicroVm, runtime, &queue)
        .await
    {
        Err(super::Refused::QueueFull(full)) => {
            assert_eq!(full.waiting, 2);
            assert!(full.retry_after >= Duration::from_secs(1));
        }
        other => panic!("{:?}", other.map(|r| r.id().to_owned())),
    }
    assert_eq!(queue.snapshot().2, 2, "nothing was added to the line");
    runs.shut_down().await;
}
