//! The queue in front of a runtime's slots: fair across learners, bounded
//! in time and in length, and able to say how long the wait will be.
//!
//! When a slot frees, it goes to the waiting run whose learner holds the
//! fewest slots right now, and among those to the learner whose last turn
//! is longest ago (then the earliest): round robin between learners, so one
//! client cannot fill the room's slots. A run waits at most the queue's
//! timeout, and a queue takes at most [`WAITING_PER_SLOT`] waiting runs
//! per slot ([`Queue::room`]). A gating queue ([`Queue::gating`]) puts
//! heavy runs behind the single runs of another queue and gives them all
//! of its slots.
//!
//! The line's order is computed once per change (a run arrives, leaves or
//! gets a slot, a slot frees), under the queue's lock, and each waiting
//! run is told its new position (a `Queued` event) only when it moved: a
//! change costs one sort of the line, not one per waiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stacklab_api::EventKind;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::run::Run;
use super::timeline::Timeline;

/// How long a queued run waits for a slot unless configured otherwise.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(180);

/// Waiting runs a queue takes per slot. A slot serves a PostgreSQL
/// container run in about 3 s on the reference host, so 60 is what one
/// slot gets through within [`DEFAULT_QUEUE_TIMEOUT`]: a run further back
/// would most likely time out after waiting 3 minutes, so it is refused at
/// once instead (503 `queue_full` with `Retry-After`).
pub const WAITING_PER_SLOT: usize = 60;

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

/// The queue has as many runs waiting as it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    /// Runs waiting (the queue's limit).
    pub waiting: usize,
    /// When a place is likely to be free: one round of slots.
    pub retry_after: Duration,
}

struct Waiter {
    id: String,
    learner: String,
    go: oneshot::Sender<()>,
    /// Where its `Queued` events go.
    timeline: Arc<Timeline>,
    /// Its run's cancellation: a cancelled run gets no slot, even before
    /// its task has taken it out of the line.
    cancel: CancellationToken,
    /// The position it was last told.
    told: Option<u32>,
}

#[derive(Default)]
struct State {
    slots: usize,
    free: usize,
    waiting: VecDeque<Waiter>,
    /// Slots held, by learner.
    holding: HashMap<String, usize>,
    /// Slots handed out so far, and the number of each learner's last one.
    turns: u64,
    last_turn: HashMap<String, u64>,
    /// How long recent runs held their slot.
    recent: VecDeque<Duration>,
    /// Times the whole line was put in order (see [`Queue::orderings`]).
    orderings: u64,
}

impl State {
    /// What decides a waiting run's place: its learner's slots held now,
    /// then their last turn (then arrival, the index).
    fn key(&self, i: usize) -> (usize, u64, usize) {
        let learner = &self.waiting[i].learner;
        (
            self.holding.get(learner).copied().unwrap_or(0),
            self.last_turn.get(learner).copied().unwrap_or(0),
            i,
        )
    }

    /// The index in `waiting` of the run that gets the next slot: the
    /// first of [`State::order`], found in one pass without sorting.
    fn next(&self) -> Option<usize> {
        (0..self.waiting.len()).min_by_key(|&i| self.key(i))
    }

    /// Waiting runs in the order they would get slots now.
    fn order(&mut self) -> Vec<usize> {
        self.orderings += 1;
        let mut order: Vec<usize> = (0..self.waiting.len()).collect();
        order.sort_by_key(|&i| self.key(i));
        order
    }

    /// The median slot time of recent runs.
    fn median(&self) -> Option<Duration> {
        let mut recent: Vec<Duration> = self.recent.iter().copied().collect();
        recent.sort();
        recent.get(recent.len() / 2).copied()
    }

    /// Puts the line in order once and tells each waiting run that moved
    /// its new position (and the estimated wait there).
    fn reposition(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let order = self.order();
        let median = self.median();
        let slots = self.slots.max(1);
        for (place, i) in order.into_iter().enumerate() {
            let position = place as u32 + 1;
            let waiter = &mut self.waiting[i];
            if waiter.told == Some(position) {
                continue;
            }
            waiter.told = Some(position);
            let rounds = (position as usize).div_ceil(slots) as u32;
            waiter.timeline.push(EventKind::Queued {
                position,
                estimate_ms: median.map(|m| (m * rounds).as_millis() as u64),
            });
        }
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

    /// Hands free slots to waiting runs, fairest first, then tells the
    /// others where they are now.
    fn dispatch(&mut self) {
        // Runs ended while waiting (a member removed from the class: all
        // of theirs at once) leave before the next is picked.
        self.waiting.retain(|w| !w.cancel.is_cancelled());
        while self.free > 0 {
            let Some(i) = self.next() else { break };
            let Some(waiter) = self.waiting.remove(i) else {
                break;
            };
            if waiter.go.send(()).is_ok() {
                self.grant(&waiter.learner);
            }
        }
        self.reposition();
    }
}

/// A queue in front of a number of slots.
pub struct Queue {
    slots: usize,
    timeout: Duration,
    /// Runs that may wait at once.
    max_waiting: usize,
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
            max_waiting: slots * WAITING_PER_SLOT,
            state: Arc::new(Mutex::new(State {
                slots,
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

    /// This queue taking at most `max_waiting` waiting runs (instead of
    /// [`WAITING_PER_SLOT`] per slot).
    pub fn with_max_waiting(mut self, max_waiting: usize) -> Self {
        self.max_waiting = max_waiting;
        self
    }

    /// Whether a run asking now may wait here, or how full the line is and
    /// when to ask again. Checked when a run is accepted (runs accepted in
    /// the same instant on other threads may pass the last place together;
    /// the line then holds a few more than its limit).
    pub fn room(&self) -> Result<(), Full> {
        let state = lock(&self.state);
        if state.waiting.len() < self.max_waiting {
            return Ok(());
        }
        let round = state.median().unwrap_or(Duration::from_secs(5));
        Err(Full {
            waiting: state.waiting.len(),
            retry_after: round.max(Duration::from_secs(1)),
        })
    }

    /// Runs that may wait at once.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }

    /// How many times this queue has put its whole line in order: once
    /// per change of the line, whatever its length.
    pub fn orderings(&self) -> u64 {
        lock(&self.state).orderings
    }

    /// Slots, slots taken, runs waiting, and the median slot time of recent
    /// runs, now.
    pub fn snapshot(&self) -> (usize, usize, usize, Option<Duration>) {
        let state = lock(&self.state);
        let median = state.median();
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
                timeline: run.timeline().clone(),
                cancel: run.cancel_token().clone(),
                told: None,
            });
            // Tells this run its place (and any run it went ahead of).
            state.reposition();
        }
        self.moved.send_modify(|n| *n += 1);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let result = tokio::select! {
            // Cancelled wins over a slot handed over in the same instant
            // (`leave` gives the slot back).
            biased;
            () = run.cancel_token().cancelled() => Err(Left::Cancelled),
            went_ok = &mut went => went_ok.map(|()| slot()).map_err(|_| Left::Cancelled),
            () = &mut deadline => Err(Left::TimedOut(self.timeout)),
        };
        if result.is_err() {
            self.leave(run.id(), learner, &mut went);
        }
        result
    }

    /// 1-based place of `id` in the line, as it was last told.
    #[cfg(test)]
    fn position(&self, id: &str) -> Option<u32> {
        let state = lock(&self.state);
        state
            .waiting
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.told)
    }

    /// Takes a run that gives up out of the line. If a slot was handed to it
    /// in the meantime, the slot goes back.
    fn leave(&self, id: &str, learner: &str, went: &mut oneshot::Receiver<()>) {
        let mut state = lock(&self.state);
        let before = state.waiting.len();
        state.waiting.retain(|w| w.id != id);
        if state.waiting.len() != before {
            state.reposition();
        }
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

    fn queued_events(run: &Run) -> Vec<u32> {
        run.record()
            .events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Queued { position, .. } => Some(position),
                _ => None,
            })
            .collect()
    }

    /// Waits until `f` holds (the waiters' tasks run concurrently), at
    /// most 5 s.
    async fn until(mut f: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < give_up, "the condition never held");
            // Mostly the other tasks only need a turn.
            tokio::task::yield_now().await;
            if !f() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// 120 runs of 60 learners wait behind a held slot. A change in the
    /// line (one run in the middle gives up) sorts the line once, not once
    /// per waiter; the runs ahead of it, whose place did not change, hear
    /// nothing; each run behind it hears its new place once.
    #[tokio::test]
    async fn a_change_in_a_line_of_120_is_one_ordering_and_only_runs_that_moved_hear_of_it() {
        let queue = Arc::new(Queue::new(1));
        let held = queue.enter(&run(), "holder").await.unwrap();
        let mut waiting = Vec::new();
        for n in 0..120 {
            let r = run();
            let (q, w) = (queue.clone(), r.clone());
            let learner = format!("flood-{}", n % 60);
            let task = hold_when_granted(q, w, learner);
            waiting.push((r, task));
            // In order of arrival (each task enters the line at once).
            let r = &waiting[n].0;
            until(|| queue.position(r.id()).is_some()).await;
        }
        assert_eq!(queue.snapshot().2, 120);
        for (r, _) in &waiting {
            let told = queue_positions(&queue, r);
            assert_eq!(queued_events(r).last().copied(), told);
        }
        let before_events: Vec<Vec<u32>> = waiting.iter().map(|(r, _)| queued_events(r)).collect();
        let before = queue.orderings();

        // The run in position 60 gives up.
        let order: Vec<usize> = {
            let mut ids: Vec<(u32, usize)> = waiting
                .iter()
                .enumerate()
                .map(|(i, (r, _))| (queue.position(r.id()).unwrap(), i))
                .collect();
            ids.sort();
            ids.into_iter().map(|(_, i)| i).collect()
        };
        let leaving = order[59];
        waiting[leaving].0.cancel_token().cancel();
        until(|| queue.snapshot().2 == 119).await;
        assert_eq!(
            queue.orderings() - before,
            1,
            "one change, one ordering of the line of 119"
        );
        for (place, &i) in order.iter().enumerate() {
            let (r, _) = &waiting[i];
            let events = queued_events(r);
            match place.cmp(&59) {
                std::cmp::Ordering::Less => assert_eq!(
                    events,
                    before_events[i],
                    "position {} did not change: no new event",
                    place + 1
                ),
                std::cmp::Ordering::Greater => {
                    assert_eq!(events.len(), before_events[i].len() + 1, "one event each");
                    assert_eq!(events.last().copied(), Some(place as u32), "moved up one");
                }
                std::cmp::Ordering::Equal => {}
            }
        }
        // A slot frees: one ordering more (the pick of the next run is a
        // single pass, not a sort).
        let before = queue.orderings();
        drop(held);
        until(|| queue.snapshot().2 == 118).await;
        assert_eq!(queue.orderings() - before, 1);
        for (r, task) in waiting {
            r.cancel_token().cancel();
            let _ = task.await;
        }
    }

    /// Waits in `queue` for `r`; a slot it gets is held until `r` is
    /// cancelled.
    fn hold_when_granted(
        queue: Arc<Queue>,
        r: Arc<Run>,
        learner: String,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Ok(slot) = queue.enter(&r, &learner).await {
                r.cancel_token().cancelled().await;
                drop(slot);
            }
        })
    }

    fn queue_positions(queue: &Queue, r: &Run) -> Option<u32> {
        queue.position(r.id())
    }

    #[tokio::test]
    async fn a_full_line_refuses_the_next_run_and_says_when_to_ask_again() {
        let queue = Arc::new(Queue::new(1).with_max_waiting(2));
        let held = queue.enter(&run(), "a").await.unwrap();
        assert!(queue.room().is_ok(), "a free place in the line");
        let mut tasks = Vec::new();
        for learner in ["b", "c"] {
            let (q, r) = (queue.clone(), run());
            tasks.push((r.clone(), hold_when_granted(q, r, learner.into())));
        }
        until(|| queue.snapshot().2 == 2).await;
        let full = queue.room().unwrap_err();
        assert_eq!(full.waiting, 2);
        assert!(full.retry_after >= Duration::from_secs(1));
        drop(held);
        until(|| queue.room().is_ok()).await;
        for (r, task) in tasks {
            r.cancel_token().cancel();
            let _ = task.await;
        }
    }
}
