//! Predictions that count: before a demo runs, the learner guesses its
//! headline figures (time, memory) on a log scale, or says "I'd rather
//! not guess"; the Run button waits for one or the other. The guess locks
//! when the run starts (and travels with it, see `live::start_run`); the
//! card then compares the locked guess with what was measured, in orders
//! of magnitude. Moving the slider afterwards is a guess for the next run:
//! it never rewrites the verdict.
//!
//! Uses `progress` (where guesses and locks are kept) and `lessons`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use leptos::prelude::*;
use stacklab_api::{EventKind, Guess, Outcome, Quantity, RunEvent};

use crate::lessons::{DemoId, Prediction};
use crate::num::{fixed, n};
use crate::progress::Progress;

thread_local! {
    /// The guesses locked at each demo's last Run click, for the request
    /// that starts the run.
    static LOCKED: RefCell<BTreeMap<DemoId, Vec<Guess>>> = const { RefCell::new(BTreeMap::new()) };
}

/// The guesses locked at `demo`'s Run click, as the `guesses` member of
/// the run's request (`,"guesses":[…]`; empty without any).
pub fn guesses_json(demo: DemoId) -> String {
    let guesses = LOCKED.with(|l| l.borrow().get(&demo).cloned().unwrap_or_default());
    if guesses.is_empty() {
        return String::new();
    }
    let items: Vec<String> = guesses
        .iter()
        .map(|g| match g.value {
            Some(v) => format!(r#"{{"quantity":"{}","value":{}}}"#, g.quantity, n(v)),
            None => format!(r#"{{"quantity":"{}"}}"#, g.quantity),
        })
        .collect();
    format!(r#","guesses":[{}]"#, items.join(","))
}

/// The quantities a demo's card asks about.
const QUANTITIES: [Quantity; 2] = [Quantity::Time, Quantity::Memory];

/// A value of `q`, in words (µs or bytes).
pub fn show(q: Quantity, v: f64) -> String {
    let (v, unit) = match q {
        Quantity::Time if v < 1e3 => (v, "µs"),
        Quantity::Time if v < 1e6 => (v / 1e3, "ms"),
        Quantity::Time if v < 60e6 => (v / 1e6, "s"),
        Quantity::Time => (v / 60e6, "min"),
        Quantity::Memory if v < 1048576.0 => (v / 1024.0, "KiB"),
        Quantity::Memory if v < 1073741824.0 => (v / 1048576.0, "MiB"),
        Quantity::Memory => (v / 1073741824.0, "GiB"),
    };
    format!("{}\u{a0}{unit}", fixed(v, if v < 10.0 { 1 } else { 0 }))
}

/// How the verdict says "how far off": orders of magnitude, and the factor.
fn how_far(guess: f64, measured: f64) -> String {
    let off = stacklab_api::orders_off(guess, measured);
    if off.abs() < 0.05 {
        return "spot on".to_owned();
    }
    format!(
        "{} orders of magnitude {} your guess (×{})",
        fixed(off.abs(), 1),
        if off > 0.0 { "above" } else { "below" },
        {
            let factor = 10f64.powf(off.abs());
            fixed(factor, if factor < 10.0 { 1 } else { 0 })
        }
    )
}

/// Whether `demo`'s Run may start: a guess made or declined (always, for a
/// demo without a prediction).
pub fn ready(progress: Progress, demo: DemoId, asks: bool) -> bool {
    !asks
        || progress.declined(demo)
        || QUANTITIES
            .iter()
            .any(|q| progress.guess_of(demo, *q).is_some())
}

/// Locks `demo`'s current guess (or "no guess") for the run about to
/// start: kept in progress for the verdict, and for the run's request.
pub fn lock(progress: Progress, demo: DemoId, asks: bool) {
    let guesses: Vec<Guess> = if !asks {
        Vec::new()
    } else if progress.declined(demo) {
        QUANTITIES
            .iter()
            .map(|&quantity| Guess {
                quantity,
                value: None,
            })
            .collect()
    } else {
        QUANTITIES
            .iter()
            .filter_map(|&quantity| {
                progress.guess_of(demo, quantity).map(|v| Guess {
                    quantity,
                    value: Some(v),
                })
            })
            .collect()
    };
    progress.lock(demo, &guesses);
    LOCKED.with(|l| l.borrow_mut().insert(demo, guesses));
}

/// Before the run: the learner's guesses, on log-scale sliders. After it:
/// the locked guess beside what was measured, with why.
#[component]
pub fn GuessBeside(
    demo: DemoId,
    prediction: &'static Prediction,
    events: RwSignal<Vec<RunEvent>>,
    /// Why the demo cannot run here, if it cannot: then there is no guess
    /// to make (and no Tab stops).
    unavailable: RwSignal<Option<String>>,
) -> impl IntoView {
    let progress = Progress::get();
    let measured = move |q: Quantity| {
        events.with(|v| {
            v.iter().find_map(|e| match &e.kind {
                EventKind::Finished {
                    outcome: outcome @ Outcome::Ready { .. },
                } => outcome.value(q.key(demo)),
                _ => None,
            })
        })
    };
    let verdict = move || {
        let done = QUANTITIES.iter().any(|q| measured(*q).is_some());
        let locked = progress.locked(demo)?;
        done.then(|| {
            let lines = if locked.iter().all(|g| g.value.is_none()) {
                vec!["You chose not to guess this time.".to_owned()]
            } else {
                locked
                    .iter()
                    .filter_map(|g| {
                        let (guess, m) = (g.value?, measured(g.quantity)?);
                        Some(format!(
                            "{}: you guessed {}; measured {}: {}.",
                            if g.quantity == Quantity::Time { "Time" } else { "Memory" },
                            show(g.quantity, guess),
                            show(g.quantity, m),
                            how_far(guess, m)
                        ))
                    })
                    .collect()
            };
            view! {
                <div class="guess-verdict" role="status">
                    {lines.into_iter().map(|l| view! { <p data-verdict=""><strong>{l}</strong></p> }).collect_view()}
                    <p class="why">"Your guess was locked when the run started. " <span inner_html=prediction.why.as_ref()></span></p>
                </div>
            }
        })
    };
    let declined = move || progress.declined(demo);
    view! {
        <fieldset class="predict" disabled=move || unavailable.with(Option::is_some)>
            <legend>
                <span class="predict-label">"Before you run it: "</span>
                <span inner_html=prediction.question.as_ref()></span>
            </legend>
            {QUANTITIES
                .into_iter()
                .map(|q| {
                    let (lo, hi) = q.range();
                    let value = move || progress.guess_of(demo, q);
                    view! {
                        <label class="guess" data-quantity=q.as_str()>
                            {if q == Quantity::Time { "Time until ready (the card's headline)" } else { "Memory it will hold" }}
                            <input
                                type="range"
                                min=n(lo.log10())
                                max=n(hi.log10())
                                step="0.05"
                                prop:value=move || n(value().unwrap_or((lo * hi).sqrt()).log10())
                                aria-valuetext=move || value().map(|v| show(q, v)).unwrap_or_else(|| "no guess yet".into())
                                on:input=move |e| {
                                    let v = js_sys::Number::parse_float(&event_target_value(&e));
                                    if v.is_finite() {
                                        progress.set_guess(demo, q, 10f64.powf(v));
                                    }
                                }
                            />
                            <output>{move || value().map(|v| show(q, v)).unwrap_or_else(|| "move to guess".into())}</output>
                        </label>
                    }
                })
                .collect_view()}
            <p class="decline">
                <button type="button" class="decline" aria-pressed=move || declined().to_string() on:click=move |_| progress.decline(demo)>
                    "I'd rather not guess"
                </button>
                {move || if declined() {
                    " You chose not to guess: the run will be recorded as such."
                } else if ready(progress, demo, true) {
                    ""
                } else {
                    " Guess first (or choose not to): the Run button waits for it."
                }}
            </p>
        </fieldset>
        {verdict}
    }
}
