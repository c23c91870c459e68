//! Predictions that count: before a demo runs, the learner guesses what
//! its card asks (time and memory on a log scale and one more figure; an
//! x-ray block's questions), or says "I'd rather not guess"; the Run
//! button waits for one or the other. What each quantity is, its scale
//! and how its true value is read from the run are defined once, in
//! `stacklab_api::Quantity`. The guess locks when the run starts (and
//! travels with it, see `live::start_run`); the card then compares the
//! locked guess with what was measured (orders of magnitude on a log
//! scale, the difference on a linear one, right or wrong for yes/no).
//! Moving the slider afterwards is a guess for the next run: it never
//! rewrites the verdict.
//!
//! Uses `progress` (where guesses and locks are kept) and `lessons`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use leptos::prelude::*;
use stacklab_api::{EventKind, Guess, Off, Quantity, RunEvent, Scale};

use crate::lessons::{DemoId, Prediction};
use crate::num::{fixed, n};
use crate::progress::{Card, Progress};

thread_local! {
    /// The guesses locked at each demo's last Run click, for the request
    /// that starts the run.
    static LOCKED: RefCell<BTreeMap<DemoId, Vec<Guess>>> = const { RefCell::new(BTreeMap::new()) };
}

/// The guesses locked at `demo`'s Run click, as the `guesses` member of
/// the run's request (`,"guesses":[…]`; empty without any). Taken: only
/// the click's first run carries them ("Run 5 times" is one guess, not
/// five).
pub fn guesses_json(demo: DemoId) -> String {
    // (Emptied in place: a map's removal code costs the bundle a kilobyte.)
    let guesses = LOCKED.with(|l| {
        l.borrow_mut()
            .get_mut(&demo)
            .map(std::mem::take)
            .unwrap_or_default()
    });
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

/// A value of `q`, in words (µs or bytes, percent, a multiple, a count,
/// yes or no).
pub fn show(q: Quantity, v: f64) -> String {
    let (v, unit) = match q {
        Quantity::Time if v < 1e3 => (v, "\u{a0}µs"),
        Quantity::Time if v < 1e6 => (v / 1e3, "\u{a0}ms"),
        Quantity::Time if v < 60e6 => (v / 1e6, "\u{a0}s"),
        Quantity::Time => (v / 60e6, "\u{a0}min"),
        Quantity::Memory if v < 1048576.0 => (v / 1024.0, "\u{a0}KiB"),
        Quantity::Memory if v < 1073741824.0 => (v / 1048576.0, "\u{a0}MiB"),
        Quantity::Memory => (v / 1073741824.0, "\u{a0}GiB"),
        Quantity::PlatformShare => return format!("{}\u{a0}%", fixed(v, 0)),
        Quantity::DensitySlope => return format!("×{}", fixed(v, 1)),
        Quantity::SameKernel => return (if v >= 0.5 { "yes" } else { "no" }).to_owned(),
        _ => return fixed(v, 0),
    };
    format!("{}{unit}", fixed(v, if v < 10.0 { 1 } else { 0 }))
}

/// How the verdict says how far off: orders of magnitude and the factor,
/// the difference, or right and wrong.
fn how_far(q: Quantity, guess: f64, measured: f64) -> String {
    match q.off(guess, measured) {
        Off::Right(true) => "right".to_owned(),
        Off::Right(false) => "not what you guessed".to_owned(),
        Off::By(d) if d.abs() < 0.5 => "spot on".to_owned(),
        Off::By(d) => format!(
            "{} {} your guess",
            // A share's difference is in points, not a share of the guess.
            match q {
                Quantity::PlatformShare => format!("{}\u{a0}percentage points", fixed(d.abs(), 0)),
                _ => show(q, d.abs()),
            },
            if d > 0.0 { "above" } else { "below" }
        ),
        Off::Orders(off) if off.abs() < 0.05 => "spot on".to_owned(),
        Off::Orders(off) => format!(
            "{} orders of magnitude {} your guess (×{})",
            fixed(off.abs(), 1),
            if off > 0.0 { "above" } else { "below" },
            {
                let factor = 10f64.powf(off.abs());
                fixed(factor, if factor < 10.0 { 1 } else { 0 })
            }
        ),
    }
}

/// Whether `card`'s Run may start: a guess of one of `asks` made, or
/// declined (always, for a card that asks nothing).
pub fn ready(progress: Progress, card: Card, asks: &[Quantity]) -> bool {
    asks.is_empty()
        || progress.declined(card)
        || asks.iter().any(|q| progress.guess_of(card, *q).is_some())
}

/// Locks `card`'s current guesses of `asks` (or "no guess") for the run
/// about to start: kept in progress for the verdict, and for the run's
/// request.
pub fn lock(progress: Progress, card: Card, asks: &[Quantity]) {
    let declined = progress.declined(card);
    let guesses: Vec<Guess> = asks
        .iter()
        .filter_map(|&quantity| {
            let value = progress.guess_of(card, quantity);
            (declined || value.is_some()).then_some(Guess { quantity, value })
        })
        .collect();
    progress.lock(card, &guesses);
    LOCKED.with(|l| l.borrow_mut().insert(card.demo, guesses));
}

/// Before the run: the learner's guesses, on sliders (yes/no as two
/// buttons). After it: the locked guess beside what was measured, with
/// why (or why there is no measured value).
#[component]
pub fn GuessBeside(
    demo: DemoId,
    prediction: &'static Prediction,
    events: RwSignal<Vec<RunEvent>>,
    /// Why the demo cannot run here, if it cannot: then there is no guess
    /// to make (and no Tab stops).
    unavailable: RwSignal<Option<String>>,
    /// The x-ray block's questions, not the demo card's.
    #[prop(optional)]
    xray: bool,
) -> impl IntoView {
    let progress = Progress::get();
    let asks = Quantity::asked(demo, xray);
    let card = Card { demo, xray };
    let verdict = move || {
        let done = events.with(|v| {
            v.iter()
                .any(|e| matches!(e.kind, EventKind::Finished { .. }))
        });
        let locked: Vec<Guess> = progress
            .locked(card)?
            .into_iter()
            .filter(|g| asks.contains(&g.quantity))
            .collect();
        (done && !locked.is_empty()).then(|| {
            let lines = if locked.iter().all(|g| g.value.is_none()) {
                vec!["You chose not to guess this time.".to_owned()]
            } else {
                locked
                    .iter()
                    .filter_map(|g| {
                        let (q, guess) = (g.quantity, g.value?);
                        let name = q.name();
                        Some(match events.with(|v| q.measured(demo, v)) {
                            Ok(m) => format!(
                                "{name}: you guessed {}; measured {}: {}.{}",
                                show(q, guess),
                                show(q, m),
                                how_far(q, guess, m),
                                events
                                    .with(|v| q.counted_as(v))
                                    .map(|c| format!(" ({c})"))
                                    .unwrap_or_default()
                            ),
                            Err(why) => format!(
                                "{name}: you guessed {}; not measured in this run ({why})",
                                show(q, guess)
                            ),
                        })
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
    let declined = move || progress.declined(card);
    let input = move |q: Quantity| {
        let (lo, hi) = q.range();
        let value = move || progress.guess_of(card, q);
        let text = move || value().map(|v| show(q, v));
        let log = q.scale() == Scale::Log;
        let (min, max, step) = if log {
            (lo.log10(), hi.log10(), "0.05")
        } else {
            (lo, hi, "1")
        };
        let set = move |v: f64| progress.set_guess(card, q, if log { 10f64.powf(v) } else { v });
        if q.scale() == Scale::YesNo {
            let choice = move |v: f64, label: &'static str| {
                view! {
                    <button type="button" data-answer=label aria-pressed=move || (value() == Some(v)).to_string() on:click=move |_| set(v)>
                        {label}
                    </button>
                }
            };
            // A group, not a label: a label would press its first button.
            return view! {
                <div class="guess" role="group" aria-label=q.label() data-quantity=q.as_str()>
                    {q.label()}" "{choice(1.0, "yes")}" "{choice(0.0, "no")}
                </div>
            }
            .into_any();
        }
        let shown = move || {
            value()
                .map(|v| if log { v.log10() } else { v })
                .unwrap_or((min + max) / 2.0)
        };
        view! {
            <label class="guess" data-quantity=q.as_str()>
            {q.label()}
            <input
                type="range"
                min=n(min)
                max=n(max)
                step=step
                prop:value=move || n(shown())
                aria-valuetext=move || text().unwrap_or_else(|| "no guess yet".into())
                on:input=move |e| {
                    let v = js_sys::Number::parse_float(&event_target_value(&e));
                    if v.is_finite() {
                        set(v);
                    }
                }
            />
            <output>{move || text().unwrap_or_else(|| "move to guess".into())}</output>
            </label>
        }
        .into_any()
    };
    view! {
        <fieldset class="predict" disabled=move || unavailable.with(Option::is_some)>
            <legend>
                <span class="predict-label">"Before you run it: "</span>
                <span inner_html=prediction.question.as_ref()></span>
            </legend>
            {asks
                .iter()
                .map(|&q| input(q))
                .collect_view()}
            <p class="decline">
                <button type="button" class="decline" aria-pressed=move || declined().to_string() on:click=move |_| progress.decline(card)>
                    "I'd rather not guess"
                </button>
                {move || if declined() {
                    " You chose not to guess: the run will be recorded as such."
                } else if ready(progress, card, asks) {
                    ""
                } else {
                    " Guess first (or choose not to): the Run button waits for it."
                }}
            </p>
        </fieldset>
        {verdict}
    }
}
