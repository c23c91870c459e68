//! The learner's runs, kept above the pages. A run started on a demo card
//! goes on (and its state keeps updating) while the learner reads another
//! lesson or My runs; the card, built again on return, shows the same run.
//! The id of each demo's unfinished run is also kept in `sessionStorage`,
//! so a reload of the tab re-attaches to it (the server replays its
//! events). Only a tab gone for longer than the server's grace period
//! cancels a run.
//!
//! Uses `live` (the server) and the contexts the run feeds (`compare`,
//! `progress`); the widgets only read what lives here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use leptos::prelude::*;
use stacklab_api::{DemoId, EventKind, Metric, Outcome, RunEvent};

use crate::compare::LatestRuns;
use crate::live::{self, Subscription};
use crate::progress::Progress;

/// Where a demo's run is.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Idle,
    Starting,
    /// Position, and the expected wait in ms.
    Queued(u32, Option<u64>),
    Running,
    Done,
    Failed(String),
}

/// How many runs "Run N times" starts.
pub const REPEATS: u32 = 5;

/// One demo's run state: its signals belong to the app, not to a page.
#[derive(Clone, Copy)]
pub struct DemoRun {
    demo: DemoId,
    latest: Option<LatestRuns>,
    progress: Progress,
    pub status: RwSignal<Status>,
    pub events: RwSignal<Vec<RunEvent>>,
    /// "Run N times": runs left to start.
    pub repeat_left: RwSignal<u32>,
    /// (request → ready, memory) of each finished run of the series.
    pub series: RwSignal<Vec<(f64, f64)>>,
    /// Bumped when a run finishes (the room's strip fetches again).
    pub finished: RwSignal<u32>,
    subscription: StoredValue<Option<Rc<RefCell<Option<Subscription>>>>, LocalStorage>,
}

/// Every demo's run state, provided once at the app's root.
#[derive(Clone, Copy)]
pub struct ActiveRuns {
    runs: StoredValue<BTreeMap<DemoId, DemoRun>, LocalStorage>,
    owner: StoredValue<Owner, LocalStorage>,
    /// The root's contexts a finished run feeds (looked up once: event
    /// callbacks run outside the component tree).
    latest: Option<LatestRuns>,
    progress: Progress,
}

/// `sessionStorage` key of `demo`'s unfinished run.
fn session_key(demo: DemoId) -> String {
    format!("stacklab.run.{}", demo.as_str())
}

fn session() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

thread_local! {
    /// Set when the tab leaves the page (reload, close): its event streams
    /// end then, which is not a lost run, and a reload follows it again.
    static LEAVING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes when the tab leaves the page.
fn watch_leaving() {
    use wasm_bindgen::JsCast;
    let Some(window) = web_sys::window() else {
        return;
    };
    let on_hide =
        wasm_bindgen::closure::Closure::<dyn FnMut()>::new(|| LEAVING.with(|l| l.set(true)));
    // `beforeunload` comes before the browser aborts the page's streams on
    // a reload; `pagehide` also where it does not fire.
    for event in ["beforeunload", "pagehide"] {
        let _ = window.add_event_listener_with_callback(event, on_hide.as_ref().unchecked_ref());
    }
    // Lives as long as the page.
    on_hide.forget();
}

impl ActiveRuns {
    /// Provides the store; call it in the root component, after the
    /// contexts a run feeds. Runs this tab left unfinished before a reload
    /// are followed again.
    pub fn provide() {
        let Some(owner) = Owner::current() else {
            return;
        };
        let store = ActiveRuns {
            runs: StoredValue::new_local(BTreeMap::new()),
            owner: StoredValue::new_local(owner),
            latest: LatestRuns::get(),
            progress: Progress::get(),
        };
        provide_context(store);
        watch_leaving();
        for demo in DemoId::ALL {
            let id = session().and_then(|s| s.get_item(&session_key(demo)).ok().flatten());
            if let Some(id) = id {
                store.of(demo).follow(id);
            }
        }
    }

    pub fn get() -> Option<ActiveRuns> {
        use_context::<ActiveRuns>()
    }

    /// `demo`'s run state, made (under the app's owner) on first use.
    pub fn of(self, demo: DemoId) -> DemoRun {
        if let Some(run) = self.runs.with_value(|r| r.get(&demo).copied()) {
            return run;
        }
        let run = self.owner.with_value(|owner| {
            owner.with(|| DemoRun {
                demo,
                latest: self.latest,
                progress: self.progress,
                status: RwSignal::new(Status::Idle),
                events: RwSignal::new(Vec::new()),
                repeat_left: RwSignal::new(0),
                series: RwSignal::new(Vec::new()),
                finished: RwSignal::new(0),
                subscription: StoredValue::new_local(None),
            })
        });
        self.runs.update_value(|r| {
            r.insert(demo, run);
        });
        run
    }
}

impl DemoRun {
    /// Whether a run is being asked for, waits or runs.
    pub fn busy(self) -> bool {
        matches!(
            self.status.get(),
            Status::Starting | Status::Queued(..) | Status::Running
        )
    }

    /// Starts one run, or `repeats` in a row (each after the last is done).
    pub fn start(self, repeats: u32) {
        self.repeat_left.set(repeats.saturating_sub(1));
        self.series.set(Vec::new());
        self.start_next();
    }

    fn start_next(self) {
        self.events.set(Vec::new());
        self.status.set(Status::Starting);
        leptos::task::spawn_local(async move {
            match live::start_run(self.demo).await {
                Err(e) => self.status.set(Status::Failed(e.explain())),
                Ok(id) => {
                    if let Some(s) = session() {
                        let _ = s.set_item(&session_key(self.demo), &id);
                    }
                    self.follow(id);
                }
            }
        });
    }

    /// Follows run `id` from its first event.
    fn follow(self, id: String) {
        self.status.set(Status::Running);
        self.events.set(Vec::new());
        let sub = live::follow(
            &id,
            move |event| self.on_event(event),
            move || {
                if LEAVING.with(|l| l.get()) {
                    return;
                }
                if matches!(
                    self.status.get_untracked(),
                    Status::Running | Status::Queued(..)
                ) {
                    self.forget();
                    self.status.set(Status::Failed(
                        "The connection to the stacklab server was lost before the run finished."
                            .into(),
                    ));
                }
            },
        );
        self.subscription.set_value(sub);
    }

    /// The run is over for this tab: a reload does not follow it again.
    fn forget(self) {
        if let Some(s) = session() {
            let _ = s.remove_item(&session_key(self.demo));
        }
    }

    fn on_event(self, event: RunEvent) {
        match &event.kind {
            EventKind::Queued {
                position,
                estimate_ms,
            } => self.status.set(Status::Queued(*position, *estimate_ms)),
            EventKind::Phase { .. } => self.status.set(Status::Running),
            EventKind::Finished {
                outcome: outcome @ Outcome::Ready { .. },
            } => {
                self.forget();
                if let Some(latest) = self.latest {
                    latest.record();
                }
                self.progress.demo_run(self.demo);
                self.finished.update(|n| *n += 1);
                if let (Some(t), Some(m)) = (
                    outcome.value(Metric::RequestToReady),
                    outcome.value(Metric::MemoryHeld),
                ) {
                    self.series.update(|v| v.push((t, m)));
                }
                self.status.set(Status::Done);
            }
            EventKind::Finished {
                outcome: Outcome::Failed { error },
            } => {
                self.forget();
                self.repeat_left.set(0);
                self.status.set(Status::Failed(error.message.clone()));
            }
            EventKind::Log { .. } | EventKind::XRay { .. } => {}
        }
        let done = self.status.get_untracked() == Status::Done;
        self.events.update(|v| v.push(event));
        // The next run of a series starts when the previous one is done,
        // whichever page the learner is on.
        if done && self.repeat_left.get_untracked() > 0 {
            self.repeat_left.update(|n| *n -= 1);
            self.start_next();
        }
    }
}
