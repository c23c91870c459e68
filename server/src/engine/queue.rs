//! The queue in front of a runtime's slots: fair across learners, bounded
//! in time, and able to say how long the wait will be.
//!
//! When a slot frees, it goes to the waiting run whose learner holds the
//! fewest slots right now, and among those to the learner whose last turn
//! is longest ago (then the earliest): round robin between learners, so one
//! client cannot fill the room's slots. A run waits at most the queue's
//! timeout. A gating queue ([`Queue::gating`]) puts heavy runs behind the
//! single runs of another queue and gives them all of its slots.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stacklab_api::EventKind;
use tokio::sync::{oneshot, watch};

use super::run::Run;

/// How long a queued run waits for a slot unless configured otherwise.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(180);

/// Finished runs whose slot times feed the wait estimate.
const RECENT: usize = 20;

/// Why a run left the queue without a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The run was cancelled while it waited.
    Cancelled,
    /// No slot came free within the queue's timeout.
    TimedOut(Duration),
}

struct Waiter {
    id: String,
    learner: String,
    go: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    free: usize,
    waiting: VecDeque<Waiter>,
    /// Slots held, by learner.
    holding: HashMap<String, usize>,
    /// Slots handed out so far, and the number of each learner's last one.
    turns: u64,
    last_turn: HashMap<String, u64>,
    /// How long recent runs held their slot.
    recent: VecDeque<Duration>,
}

impl State {
    /// The index in `waiting` of the run that gets the next slot.
    fn next(&self) -> Option<usize> {
        self.order().first().copied()
    }

    /// Waiting runs in the order they would get slots now.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.waiting.len()).collect();
        // A stable sort: among equals, arrival order.
        order.sort_by_key(|&i| {
            let learner = &self.waiting[i].learner;
            (
                self.holding.get(learner).copied().unwrap_or(0),
                self.last_turn.get(learner).copied().unwrap_or(0),
            )
        });
        order
    }

    /// Gives `learner` a slot.
    fn grant(&mut self, learner: &str) {
        self.free -= 1;
        *self.holding.entry(learner.to_owned()).or_default() += 1;
        self.turns += 1;
        if self.last_turn.len() > 4096 {
            // Forget learners who neither hold nor wait.
            let keep: std::collections::HashSet<String> = self
                .holding
                .keys()
                .cloned()
                .chain(self.waiting.iter().map(|w| w.learner.clone()))
                .collect();
            self.last_turn.retain(|l, _| keep.contains(l));
        }
        self.last_turn.insert(learner.to_owned(), self.turns);
    }

    /// Hands free slots to waiting runs, fairest first.
    fn dispatch(&mut self) {
        while self.free > 0 {
            let Some(i) = self.next() else { return };
            let Some(waiter) = self.waiting.remove(i) else {
                return;
            };
            if waiter.go.send(()).is_ok() {
                self.grant(&waiter.learner);
            }
        }
    }
}

/// A queue in front of a number of slots.
pub struct Queue {
    slots: usize,
    timeout: Duration,
    state: Arc<Mutex<State>>,
    moved: watch::Sender<u64>,
    /// A run that gets a slot here then needs every slot of this queue,
    /// taken only when no run waits there (see [`Queue::gating`]).
    then_all_of: Option<Arc<Queue>>,
}

/// A slot (or, for a gated queue, a slot and every slot of the queue it
/// gates), held until dropped; its time feeds the wait estimate.
pub struct Slot {
    learner: String,
    /// Slots of `state` it holds.
    count: usize,
    since: Instant,
    state: Arc<Mutex<State>>,
    moved: watch::Sender<u64>,
    /// The gated queue's slots, released first.
    all_of: Option<Box<Slot>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.all_of.take());
        let mut state = lock(&self.state);
        state.free += self.count;
        if let Some(n) = state.holding.get_mut(&self.learner) {
            *n = n.saturating_sub(self.count);
            if *n == 0 {
                state.holding.remove(&self.learner);
            }
        }
        // Only single runs feed the estimate (a sweep holding every slot
        // would stretch it).
        if self.count == 1 {
            state.recent.push_back(self.since.elapsed());
        }
        while state.recent.len() > RECENT {
            state.recent.pop_front();
        }
        state.dispatch();
        drop(state);
        self.moved.send_modify(|n| *n += 1);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    /// A queue in front of `slots` concurrent runs, each waiting at most
    /// [`DEFAULT_QUEUE_TIMEOUT`].
    pub fn new(slots: usize) -> Self {
        Queue::with_timeout(slots, DEFAULT_QUEUE_TIMEOUT)
    }

    /// A queue whose runs wait at most `timeout` for a slot.
    pub fn with_timeout(slots: usize, timeout: Duration) -> Self {
        let slots = slots.max(1);
        Queue {
            slots,
            timeout,
            state: Arc::new(Mutex::new(State {
                free: slots,
                ..State::default()
            })),
            moved: watch::channel(0).0,
            then_all_of: None,
        }
    }

    /// A queue of `slots` whose runs, once they have a slot here, also take
    /// every slot of `base`, and only when no run is waiting there: heavy
    /// runs (a density sweep starts five instances at once) go after the
    /// single runs waiting, and nothing shares the host with them, so
    /// neither's figures are inflated by the other.
    pub fn gating(slots: usize, timeout: Duration, base: Arc<Queue>) -> Self {
        Queue {
            then_all_of: Some(base),
            ..Queue::with_timeout(slots, timeout)
        }
    }

    /// Slots, slots taken, runs waiting, and the median slot time of recent
    /// runs, now.
    pub fn snapshot(&self) -> (usize, usize, usize, Option<Duration>) {
        let state = lock(&self.state);
        let mut recent: Vec<Duration> = state.recent.iter().copied().collect();
        recent.sort();
        let median = recent.get(recent.len() / 2).copied();
        (
            self.slots,
            self.slots - state.free,
            state.waiting.len(),
            median,
        )
    }

    /// How long a run at `position` can expect to wait: the median of recent
    /// slot times for each round of slots ahead of it. `None` before any run
    /// has finished here.
    pub fn estimate(&self, position: u32) -> Option<Duration> {
        let (_, _, _, median) = self.snapshot();
        let median = median?;
        let rounds = (position as usize).div_ceil(self.slots) as u32;
        Some(median * rounds)
    }

    /// Waits for a slot for `run` of `learner`, reporting its position (and
    /// the estimated wait) whenever it changes.
    pub async fn enter(&self, run: &Run, learner: &str) -> Result<Slot, Left> {
        let started = Instant::now();
        let mut slot = self.enter_one(run, learner).await?;
        if let Some(base) = &self.then_all_of {
            let left = self.timeout.saturating_sub(started.elapsed());
            slot.all_of = Some(Box::new(base.enter_all(run, learner, left).await.map_err(
                |e| match e {
                    Left::TimedOut(_) => Left::TimedOut(self.timeout),
                    other => other,
                },
            )?));
        }
        Ok(slot)
    }

    /// Every slot, once no run is waiting and all are free; waits at most
    /// `timeout`. Runs that arrive meanwhile go first.
    async fn enter_all(&self, run: &Run, learner: &str, timeout: Duration) -> Result<Slot, Left> {
        let mut moved = self.moved.subscribe();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut reported = None;
        loop {
            let ahead = {
                let mut state = lock(&self.state);
                if state.waiting.is_empty() && state.free == self.slots {
                    state.free = 0;
                    *state.holding.entry(learner.to_owned()).or_default() += self.slots;
                    drop(state);
                    self.moved.send_modify(|n| *n += 1);
                    return Ok(self.held(learner, self.slots));
                }
                // Runs waiting, and those holding a slot.
                (state.waiting.len() + self.slots - state.free) as u32
            };
            if reported != Some(ahead) {
                run.push(EventKind::Queued {
                    position: ahead + 1,
                    estimate_ms: self.estimate(ahead + 1).map(|d| d.as_millis() as u64),
                });
                reported = Some(ahead);
            }
            tokio::select! {
                _ = moved.changed() => {}
                () = run.cancel_token().cancelled() => return Err(Left::Cancelled),
                () = &mut deadline => return Err(Left::TimedOut(timeout)),
            }
        }
    }

    /// A handle on `count` slots `learner` now holds (given back on drop).
    fn held(&self, learner: &str, count: usize) -> Slot {
        Slot {
            learner: learner.to_owned(),
            count,
            since: Instant::now(),
            state: self.state.clone(),
            moved: self.moved.clone(),
            all_of: None,
        }
    }

    async fn enter_one(&self, run: &Run, learner: &str) -> Result<Slot, Left> {
        let slot = || self.held(learner, 1);
        let (go, mut went) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.free > 0 && state.waiting.is_empty() {
                state.grant(learner);
                return Ok(slot());
            }
            state.waiting.push_back(Waiter {
                id: run.id().to_owned(),
                learner: learner.to_owned(),
                go,
            });
        }
        self.moved.send_modify(|n| *n += 1);
        let mut moved = self.moved.subscribe();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut reported = None;
        let result = loop {
            let position = self.position(run.id());
            if position.is_some() && position != reported {
                let position = position.unwrap_or(1);
                let estimate_ms = self.estimate(position).map(|d| d.as_millis() as u64);
                run.push(EventKind::Queued {
                    position,
                    estimate_ms,
                });
                reported = Some(position);
            }
            tokio::select! {
                went_ok = &mut went => break went_ok.map(|()| slot()).map_err(|_| Left::Cancelled),
                _ = moved.changed() => {}
                () = run.cancel_token().cancelled() => break Err(Left::Cancelled),
                () = &mut deadline => break Err(Left::TimedOut(self.timeout)),
            }
        };
        if result.is_err() {
            self.leave(run.id(), learner, &mut went);
        }
        result
    }

    /// 1-based place of `id` in the order slots would be handed out now.
    fn position(&self, id: &str) -> Option<u32> {
        let state = lock(&self.state);
        state
            .order()
            .iter()
            .position(|&i| state.waiting[i].id == id)
            .map(|p| p as u32 + 1)
    }

    /// Takes a run that gives up out of the line. If a slot was handed to it
    /// in the meantime, the slot goes back.
    fn leave(&self, id: &str, learner: &str, went: &mut oneshot::Receiver<()>) {
        let mut state = lock(&self.state);
        state.waiting.retain(|w| w.id != id);
        drop(state);
        went.close();
        if went.try_recv().is_ok() {
            // Granted just now: release it through a Slot's drop.
            drop(self.held(learner, 1));
            return;
        }
        self.moved.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_api::DemoId;
    use tokio_util::sync::CancellationToken;

    fn run() -> Arc<Run> {
        Run::new(
            DemoId::MicroVm,
            Duration::from_secs(5),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn a_learner_who_runs_nothing_goes_before_one_who_already_runs() {
        let queue = Arc::new(Queue::new(1));
        let flooder_first = queue.enter(&run(), "flooder").await.unwrap();
        // The flooder queues another run, then an honest learner asks; each
        // notes when it got the slot, and keeps it.
        let got = Arc::new(Mutex::new(Vec::new()));
        let wait_in_line = |learner: &'static str, r: Arc<Run>| {
            let (queue, got) = (queue.clone(), got.clone());
            tokio::spawn(async move {
                let slot = queue.enter(&r, learner).await.unwrap();
                got.lock().unwrap().push(learner);
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(slot);
            })
        };
        let (flood_run, honest_run) = (run(), run());
        let flood = wait_in_line("flooder", flood_run.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let honest = wait_in_line("honest", honest_run.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            queue.position(honest_run.id()),
            Some(1),
            "the honest learner is next"
        );
        assert_eq!(queue.position(flood_run.id()), Some(2));
        drop(flooder_first);
        honest.await.unwrap();
        flood.await.unwrap();
        assert_eq!(*got.lock().unwrap(), ["honest", "flooder"]);
    }

    #[tokio::test]
    async fn a_queued_run_gives_up_after_the_timeout_and_gives_nothing_away() {
        let queue = Queue::with_timeout(1, Duration::from_millis(50));
        let held = queue.enter(&run(), "a").await.unwrap();
        let waited = queue.enter(&run(), "b").await;
        assert_eq!(
            waited.err(),
            Some(Left::TimedOut(Duration::from_millis(50)))
        );
        drop(held);
        // The slot is free again, for anyone.
        let again = tokio::time::timeout(Duration::from_secs(1), queue.enter(&run(), "c")).await;
        assert!(again.is_ok_and(|r| r.is_ok()));
    }

    #[tokio::test]
    async fn the_estimate_is_the_median_slot_time_per_round_ahead() {
        let queue = Queue::new(2);
        assert_eq!(queue.estimate(1), None, "no finished run yet");
        for _ in 0..3 {
            let slot = queue.enter(&run(), "a").await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(slot);
        }
        let one_round = queue.estimate(2).unwrap();
        assert!(one_round >= Duration::from_millis(30), "{one_round:?}");
        assert_eq!(queue.estimate(3).unwrap(), one_round * 2);
    }

    #[tokio::test]
    async fn a_gated_run_goes_after_waiting_single_runs_and_then_holds_every_slot() {
        let base = Arc::new(Queue::new(2));
        let sweeps = Arc::new(Queue::gating(1, Duration::from_secs(5), base.clone()));
        let single = base.enter(&run(), "a").await.unwrap();
        let sweep_run = run();
        let (q, r) = (sweeps.clone(), sweep_run.clone());
        let sweep =
            tokio::spawn(async move { q.enter(&r, "b").await.map(|slot| (Instant::now(), slot)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A single run asking after the sweep still goes first.
        let late = base.enter(&run(), "c").await.unwrap();
        assert!(!sweep.is_finished(), "the sweep waits while singles run");
        drop(single);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sweep.is_finished());
        let freed = Instant::now();
        drop(late);
        let (got, slot) = sweep.await.unwrap().unwrap();
        assert!(got >= freed, "the sweep started once every slot was free");
        assert_eq!(lock(&base.state).free, 0, "and holds them all");
        drop(slot);
        assert_eq!(lock(&base.state).free, 2, "then gives them all back");
        assert!(
            sweep_run
                .record()
                .events
                .iter()
                .any(|e| matches!(e.kind, EventKind::Queued { .. })),
            "the sweep said it was waiting"
        );
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_line() {
        let queue = Arc::new(Queue::new(1));
        let held = queue.enter(&run(), "a").await.unwrap();
        let waiting = run();
        let (q, w) = (queue.clone(), waiting.clone());
        let task = tokio::spawn(async move { q.enter(&w, "b").await.err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.cancel_token().cancel();
        assert_eq!(task.await.unwrap(), Some(Left::Cancelled));
        assert_eq!(queue.position(waiting.id()), None);
        drop(held);
        assert!(lock(&queue.state).free == 1);
    }
}
