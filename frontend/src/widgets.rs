//! Live-demo widgets for the lesson directives: a run button, the phases as
//! they arrive, the console tail, and the final figures with how each was
//! measured.

use leptos::prelude::*;
use stacklab_api::{
    DensityMetric, EventKind, Fact, FactKey, Key, Measurement, Metric, Outcome, Phase, RunEvent,
    Unit,
};

use crate::charts::{fmt_mib, fmt_ms, Join, LineChart, Series};
use crate::compare::Spread;
use crate::diagram::StackDiagram;
use crate::lessons::{DemoId, Prediction, StackFocus};
use crate::live::{self, LinuxGuestNote};
use crate::num::{fixed, n, sort_by_key};
use crate::predict::{self, GuessBeside};
use crate::progress::Progress;
use crate::runs::{ActiveRuns, DemoRun, Status, REPEATS};

/// The host explanation (why Linux guests cannot boot here, what the
/// server runs on) is shown in full at most once per page: the first part
/// of the page to show it claims it, every other part shows a short line
/// that points to it. The app resets the claim when the page changes.
#[derive(Clone, Copy)]
pub struct HostClaim {
    holder: StoredValue<Option<u32>>,
    next: StoredValue<u32>,
}

impl HostClaim {
    /// Provides the claim to the component tree.
    pub fn provide() {
        provide_context(HostClaim {
            holder: StoredValue::new(None),
            next: StoredValue::new(0),
        });
    }

    pub fn get() -> Option<HostClaim> {
        use_context::<HostClaim>()
    }

    /// A new page: nobody shows the explanation yet.
    pub fn reset(self) {
        self.holder.set_value(None);
    }

    /// An id for one part of the page that may show the explanation.
    pub fn ticket(self) -> u32 {
        let id = self.next.get_value();
        self.next.set_value(id + 1);
        id
    }

    /// Whether part `id` shows it in full (the first to ask, and the same
    /// part again when it redraws).
    pub fn claim(self, id: u32) -> bool {
        match self.holder.get_value() {
            None => {
                self.holder.set_value(Some(id));
                true
            }
            Some(holder) => holder == id,
        }
    }
}

/// The host explanation, or where it is on this page.
pub fn host_explanation(
    id: Option<(HostClaim, u32)>,
    short: &'static str,
    full: String,
) -> AnyView {
    if id.is_none_or(|(claim, id)| claim.claim(id)) {
        view! { <span class="host-explanation" id="host-explanation">{full}</span> }.into_any()
    } else {
        view! { <span class="host-short">{short} " " <a href="#host-explanation">"Why: see above."</a></span> }.into_any()
    }
}

/// ```` ```demo <id> ````, with the guess the lesson asks for first.
#[component]
pub fn DemoWidget(
    demo: DemoId,
    prediction: Option<&'static Prediction>,
    /// Asks the x-ray block's questions instead of the card's.
    #[prop(optional)]
    xray: bool,
) -> impl IntoView {
    let what = demo.description();
    // The run's state lives above the page (see `runs`): leaving the
    // lesson does not stop it, and this card shows it again on return.
    let Some(run) = ActiveRuns::get().map(|r| r.of(demo)) else {
        return ().into_any();
    };
    let DemoRun {
        status,
        events,
        repeat_left,
        series,
        finished: room_turn,
        ..
    } = run;
    // After "Run", focus moves to the live status (the button is disabled
    // while the run lasts, and a disabled button drops the focus).
    let status_el = NodeRef::<leptos::html::P>::new();
    let focus_status = move || {
        if let Some(el) = status_el.get_untracked() {
            let _ = el.focus();
        }
    };
    // The guess (or "no guess") locks as the run starts; Run waits for one.
    let progress = Progress::get();
    let asks = match prediction {
        Some(_) => stacklab_api::Quantity::asked(demo, xray),
        None => &[],
    };
    let card = crate::progress::Card { demo, xray };
    let repeat = move |_| {
        predict::lock(progress, card, asks);
        run.start(REPEATS);
        focus_status();
    };
    let run_once = move |_| {
        predict::lock(progress, card, asks);
        run.start(1);
        focus_status();
    };
    let unguessed = move || !predict::ready(progress, card, asks);

    // A Linux guest needs hardware virtualisation: the card says up front
    // when this server lacks it.
    let host_note = match LinuxGuestNote::get() {
        Some(note) if demo.is_linux_guest() => note.fetched(),
        _ => RwSignal::new(None),
    };
    let busy = move || run.busy();
    let host_ticket = HostClaim::get().map(|c| (c, c.ticket()));
    view! {
        // A card this server cannot run asks no prediction (`.off` hides it).
        <section class="demo-card" class:off=move || host_note.with(Option::is_some) data-demo=demo.as_str() aria-label=format!("Live demo: {}", demo.title())>
            <p class="badge">"Live demo"</p>
            <h3>{demo.title()}</h3>
            <p>{what}</p>
            {move || host_note.get().map(|why| view! {
                <p class="host-note" role="note"><strong>"Not on this server. "</strong>
                    {host_explanation(host_ticket, "A Linux guest does not boot on this server.", why)}
                </p>
            })}
            {prediction.map(|p| view! {
                <GuessBeside demo prediction=p events unavailable=host_note xray />
            })}
            <button class="run" on:click=run_once disabled=move || busy() || unguessed() || host_note.with(Option::is_some)>
                {move || if busy() { "Running…" } else { "Run it on this server" }}
            </button>
            {demo.density_of().is_none().then(|| view! {
                <button class="repeat" on:click=repeat disabled=move || busy() || unguessed() || host_note.with(Option::is_some)>
                    {format!("Run {REPEATS} times")}
                </button>
            })}
            <SeriesSummary series repeat_left />
            <p class="status" role="status" aria-live="polite" tabindex="-1" node_ref=status_el>
                {move || match status.get() {
                    Status::Idle => String::new(),
                    Status::Starting => "Asking the server…".into(),
                    Status::Queued(n, estimate) => match estimate {
                        Some(ms) => format!("Waiting in line: position {n}, about {} s.", ms.div_ceil(1000)),
                        None => format!("Waiting in line: position {n}."),
                    },
                    Status::Running => "Running: phases appear below as the server observes them.".into(),
                    Status::Done => "Ready. The figures below were measured during this run.".into(),
                    Status::Failed(why) => why,
                }}
            </p>
            // The answer first; the diagram, phases and console after it.
            <Results events />
            {match demo.density_of() {
                None => view! {
                    <StackDiagram
                        focus=if demo.is_container() { StackFocus::Container } else { StackFocus::Vm }
                        run=events
                    />
                }
                .into_any(),
                Some(base) => view! { <DensityResults base events /> }.into_any(),
            }}
            <Timeline events />
            <ConsoleTail events />
            {demo.density_of().is_none().then(|| view! { <crate::xray::XRayCard events /> })}
            <RoomStrip demo turn=room_turn />
            {demo.density_of().map(|base| view! { <crate::learn::RoomSweep demo base /> })}
        </section>
    }
    .into_any()
}

/// In a class: the room's headline times for this demo as dots (request →
/// ready; for a density sweep, all five ready), the learner's own filled,
/// with the room's median; a sweep the instructor ran for the room is among
/// them. Names never reach a learner's browser.
#[component]
fn RoomStrip(demo: DemoId, turn: RwSignal<u32>) -> impl IntoView {
    let code = live::class_code();
    let points = RwSignal::new(Vec::<(f64, bool)>::new());
    if let Some(code) = code.clone() {
        Effect::new(move |_| {
            turn.track();
            crate::learn::RoomTurn::track();
            let code = code.clone();
            leptos::task::spawn_local(async move {
                let me = live::learner_id().unwrap_or_default();
                let url = format!("/api/classes/{code}/points?learner={me}");
                let Ok(text) = live::get_text(&url).await else {
                    return;
                };
                // Only the fields drawn (a whole `RoomPoints` costs the
                // bundle its deserialiser).
                #[derive(serde::Deserialize)]
                struct Room {
                    points: Vec<Point>,
                }
                #[derive(serde::Deserialize)]
                struct Point {
                    demo: DemoId,
                    time_to_ready_us: Option<f64>,
                    mine: bool,
                }
                if let Ok(room) = serde_json::from_str::<Room>(&text) {
                    points.set(
                        room.points
                            .into_iter()
                            .filter(|p| p.demo == demo)
                            .filter_map(|p| Some((p.time_to_ready_us?, p.mine)))
                            .collect(),
                    );
                }
            });
        });
    }
    move || {
        let pts = points.get();
        let code = code.clone()?;
        let mut times: Vec<f64> = pts.iter().map(|p| p.0).collect();
        let spread = Spread::of(times.clone())?;
        sort_by_key(&mut times, |t| *t);
        let max = times.last().copied().unwrap_or(1.0) * 1.1;
        let x = move |t: f64| 8.0 + t / max * 504.0;
        let median = x(times[times.len() / 2]);
        Some(view! {
            <figure class="room" data-class=code.clone()>
                <figcaption>
                    {format!("Your class ({code}): the headline time of the room's {} run(s), {}. Filled dots are yours.", pts.len(), spread.show(fmt_ms))}
                </figcaption>
                <svg viewBox="0 0 520 40" role="img" aria-label="The room's times, yours marked">
                    <line class="axis" x1="8" x2="512" y1="30" y2="30" />
                    <line class="median" x1=n(median) x2=n(median) y1="4" y2="34" />
                    {pts.iter().enumerate().map(|(i, &(t, mine))| view! {
                        <circle class:mine=mine cx=n(x(t)) cy=(8 + i * 5 % 20).to_string() r="4" />
                    }).collect_view()}
                </svg>
                // The axis, in HTML so it keeps its size on a phone.
                <p class="room-axis" aria-hidden="true">
                    <span>"0\u{a0}ms"</span>
                    <span>"each run's headline time"</span>
                    <span>{fmt_ms(max)}</span>
                </p>
            </figure>
        })
    }
}

/// The median and spread of a series of runs, as it fills.
#[component]
fn SeriesSummary(series: RwSignal<Vec<(f64, f64)>>, repeat_left: RwSignal<u32>) -> impl IntoView {
    move || {
        let runs = series.get();
        (runs.len() > 1 || repeat_left.get() > 0).then(|| {
            let time = Spread::of(runs.iter().map(|r| r.0).collect());
            let memory = Spread::of(runs.iter().map(|r| r.1).collect());
            view! {
                <p class="series" role="status">
                    {format!("{} of {REPEATS} runs done. ", runs.len())}
                    {time.map(|t| format!("Request → ready: {}. ", t.show(fmt_ms)))}
                    {memory.map(|m| format!("Memory held: {}.", m.show(fmt_mib)))}
                </p>
            }
        })
    }
}

#[component]
pub(crate) fn Timeline(events: RwSignal<Vec<RunEvent>>) -> impl IntoView {
    let phases = move || {
        events.with(|v| {
            v.iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Phase {
                        phase,
                        label,
                        detail,
                        memory_bytes,
                        memory_how,
                    } => Some((
                        phase.name().into_owned(),
                        label.clone(),
                        detail.clone(),
                        e.at_us,
                        *memory_bytes,
                        memory_how.clone(),
                    )),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
    };
    let memory_how = move || {
        phases().into_iter().find_map(|p| p.5).map(|how| {
            format!(
                "Times: since you clicked, on the server's monotonic clock. Memory column: {how}. It follows the run step by step by its own rule; the answer to \"how much memory\" is the memory figure in the result, which counts everything the instance holds, so the two can differ."
            )
        })
    };
    view! {
        <Show when=move || !phases().is_empty()>
            <p class="legend">{memory_how}</p>
            <ol class="timeline" aria-label="Phases, with the time since you clicked">
                {move || {
                    phases()
                        .into_iter()
                        .map(|(phase, label, detail, at_us, mem, how)| {
                            view! {
                                <li data-phase=phase>
                                    <span class="t">{format!("+{}", fmt_us(at_us as f64))}</span>
                                    <span class="label">{label}</span>
                                    {mem.map(|m| view! { <span class="mem" title=how.unwrap_or_default()>{fmt_bytes(m as f64)}</span> })}
                                    // Plain words first: the phase's name; what exactly
                                    // was observed (registers, addresses, counters)
                                    // is there for whoever opens it.
                                    {(!detail.is_empty()).then(|| view! {
                                        <details class="detail"><summary>"under the hood"</summary>{detail}</details>
                                    })}
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ol>
        </Show>
    }
}

/// The density sweep's two charts: time until all N were ready, and the
/// memory they held together, against N.
#[component]
pub(crate) fn DensityResults(base: DemoId, events: RwSignal<Vec<RunEvent>>) -> impl IntoView {
    let (name, class) = if base == DemoId::MicroVm {
        ("Micro-VMs", "s-vm")
    } else {
        ("Containers", "s-container")
    };
    let points = move |metric: DensityMetric| {
        events.with(|v| {
            let mut points: Vec<(f64, f64)> = v
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Finished {
                        outcome: Outcome::Ready { measurements, .. },
                    } => Some(measurements),
                    _ => None,
                })
                .flatten()
                .filter_map(|m| match m.key {
                    Key::Density(k, n) if k == metric => Some((f64::from(n), m.value)),
                    _ => None,
                })
                .collect();
            sort_by_key(&mut points, |p| p.0);
            points
        })
    };
    // Progress, step by step, from the sweep's own phases.
    let progress = move || {
        events.with(|v| {
            let done = v
                .iter()
                .filter(|e| {
                    matches!(
                        &e.kind,
                        EventKind::Phase {
                            phase: Phase::StepReady(_),
                            ..
                        }
                    )
                })
                .count();
            let finished = v
                .iter()
                .any(|e| matches!(e.kind, EventKind::Finished { .. }));
            (done > 0 && !finished).then(|| {
                format!(
                    "Step N = {done} of {} measured; the charts appear when the sweep is complete.",
                    DemoId::DENSITY_MAX
                )
            })
        })
    };
    // Each N's least and most, where the sweep repeated its steps (the
    // micro-VMs'): drawn as a bar through the median.
    let spread = move |lo: DensityMetric, hi: DensityMetric| {
        let hi = points(hi);
        points(lo)
            .into_iter()
            .filter_map(|(x, l)| hi.iter().find(|p| p.0 == x).map(|p| (x, l, p.1)))
            .collect::<Vec<_>>()
    };
    // How many samples each step's figures are from: "5", or "3–5".
    let samples = move |metric: DensityMetric| {
        let k = points(metric);
        let (lo, hi) = k
            .iter()
            .fold((f64::MAX, 0.0_f64), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if lo < hi {
            format!("{}–{}", n(lo), n(hi))
        } else {
            n(hi)
        }
    };
    let charts = move || {
        let time = points(DensityMetric::AllReady);
        let memory = points(DensityMetric::MemoryTotal);
        let time_spread = spread(DensityMetric::AllReadyMin, DensityMetric::AllReadyMax);
        let memory_spread = spread(DensityMetric::MemoryTotalMin, DensityMetric::MemoryTotalMax);
        // A line joins medians of repeated samples, never single samples.
        let join = |spread: &[(f64, f64, f64)], p: &[(f64, f64)]| {
            if !p.is_empty() && spread.len() == p.len() {
                Join::Line
            } else {
                Join::Points
            }
        };
        let (time_join, memory_join) = (join(&time_spread, &time), join(&memory_spread, &memory));
        (!time.is_empty()).then(|| {
            let how_memory = if base == DemoId::MicroVm {
                "Held together: every VMM held its VM at ready until all N were ready; the server then read each VMM process's PSS (guest pages included) from /proc/PID/smaps_rollup, and only then let them go."
            } else {
                "Held together: once all N had answered SELECT 1, the server read each container's PSS (its processes) plus its tmpfs pages while all N were running, and only then removed them. Containers of one image share its files in the page cache; PSS splits shared pages among their users."
            };
            let repeated = |join: Join, k: String| match join {
                Join::Line => (
                    format!(" (median, least–most of {k} samples)"),
                    format!("Each step taken {k} times: dot = median, bar = least to most, line = medians."),
                ),
                Join::Points => (
                    String::new(),
                    "One sample per step: single samples vary, so no line joins them.".to_owned(),
                ),
            };
            let (time_title, time_how) = repeated(time_join, samples(DensityMetric::Samples));
            let (memory_title, memory_how) =
                repeated(memory_join, samples(DensityMetric::MemorySamples));
            let ratio = |p: &[(f64, f64)]| match (p.first(), p.last()) {
                (Some(a), Some(b)) if a.1 > 0.0 && p.len() > 1 => format!("{}×", fixed(b.1 / a.1, 1)),
                _ => "—".into(),
            };
            let scale_note = format!(
                "Each chart has its own scale (this sweep's alone; the other kind's sweep is charted on its own scale in its card): compare the shapes, and these ratios, not the heights. N = {} against N = 1: time {}, memory {}.",
                DemoId::DENSITY_MAX,
                ratio(&time),
                ratio(&memory)
            );
            view! {
                <div class="density">
                    <LineChart
                        title=format!("{name}: each step, time until all N were ready{time_title}")
                        x_label="N started at the same moment"
                        y_label="step time (ms)"
                        series=vec![Series { name, class, points: time }]
                        fmt_y=fmt_ms
                        spread=time_spread
                        join=time_join
                        how=format!("From starting all N together until the last was ready (server's monotonic clock). {time_how}")
                    />
                    <LineChart
                        title=format!("{name}: each step, memory held together{memory_title}")
                        x_label="N started at the same moment"
                        y_label="memory (KiB/MiB)"
                        series=vec![Series { name, class, points: memory }]
                        fmt_y=fmt_mib
                        spread=memory_spread
                        join=memory_join
                        how=format!("{how_memory} {memory_how}")
                    />
                    <p class="how scale-note">{scale_note}</p>
                </div>
            }
        })
    };
    view! {
        <p class="status progress" role="status">{progress}</p>
        {charts}
    }
}

#[component]
pub(crate) fn ConsoleTail(events: RwSignal<Vec<RunEvent>>) -> impl IntoView {
    let tail = move || {
        events.with(|v| {
            let lines: Vec<&str> = v
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Log { line } => Some(line.as_str()),
                    _ => None,
                })
                .collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        })
    };
    view! {
        <Show when=move || !tail().is_empty()>
            <details class="console">
                <summary>"Console output (last lines)"</summary>
                <pre>{tail}</pre>
                {move || tail().contains("the database system is starting up").then(|| view! {
                    <p class="how">"\"The database system is starting up\" is PostgreSQL turning away the readiness probe before it accepts queries: normal while it starts, and the probe tries again."</p>
                })}
            </details>
        </Show>
    }
}

/// A run's result: its answer first, one figure per question (how long,
/// how much memory: the figure table's headline figures), then every
/// measurement folded away with how each was measured.
#[component]
pub(crate) fn Results(events: RwSignal<Vec<RunEvent>>) -> impl IntoView {
    let outcome = move || {
        events.with(|v| {
            v.iter().find_map(|e| match &e.kind {
                EventKind::Finished {
                    outcome:
                        Outcome::Ready {
                            measurements,
                            facts,
                            missing,
                        },
                } => Some((measurements.clone(), facts.clone(), missing.clone())),
                _ => None,
            })
        })
    };
    let host_ticket = HostClaim::get().map(|c| (c, c.ticket()));
    move || {
        outcome().map(|(measurements, facts, missing)| {
            let find = |key: Key| measurements.iter().find(|m| m.key == key);
            // The figure table's headline keys (`DemoId::headline_keys`,
            // checked against these by the browser test): start → ready and
            // memory held; for a density sweep the whole sweep and the
            // largest step's memory.
            let sweep = find(Metric::SweepTotal.into());
            let time = sweep.or_else(|| find(Metric::StartToReady.into()));
            let memory = if sweep.is_some() {
                find(Key::Density(DensityMetric::MemoryTotal, DemoId::DENSITY_MAX))
            } else {
                find(Metric::MemoryHeld.into())
            };
            let figure = |m: &Measurement, question: &'static str| {
                let value = match m.unit {
                    Unit::Bytes => fmt_bytes(m.value),
                    _ => fmt_us(m.value),
                };
                view! { <strong class="figure" data-question=question data-key=m.key.to_string() title=m.how.clone()>{value}</strong> }
            };
            // The wait in line is its own figure: never part of the platform's time.
            let waited = match find(Metric::QueueWait.into()) {
                Some(w) if w.value >= 1000.0 => format!(" It first waited {} in line for a free slot (not part of that time).", fmt_us(w.value)),
                _ => String::new(),
            };
            let headline = match (sweep, time, memory) {
                (Some(t), _, m) => view! {
                    <p class="headline" role="status">
                        "The whole sweep took " {figure(t, "time")}
                        ", every step (N = 1, 2, … " {DemoId::DENSITY_MAX} " at once) one after another"
                        {m.map(|m| view! { "; at N = " {DemoId::DENSITY_MAX} " they held " {figure(m, "memory")} " of memory together" })}
                        "." {waited}
                    </p>
                }
                .into_any(),
                (None, Some(t), m) => view! {
                    <p class="headline" role="status">
                        "Ready " {figure(t, "time")} " after its work started"
                        {match m {
                            Some(m) => view! { ", holding " {figure(m, "memory")} " of memory (its own pages, shared ones split evenly)" }.into_any(),
                            None => " (memory not measured: see all measurements)".into_any(),
                        }}
                        "." {waited}
                    </p>
                }
                .into_any(),
                (None, None, _) => view! { <p class="headline" role="status">"Finished; all measurements below say what was measured."</p> }.into_any(),
            };
            view! {
                {headline}
                <details class="readings">
                    <summary>"All measurements, and how each was measured"</summary>
                    <p class="how">
                        "Terms: " <a href="/glossary#pss">"PSS and RSS"</a> ", "
                        <a href="/glossary#cgroup">"cgroup"</a> ", " <a href="/glossary#namespace">"namespace"</a> ", "
                        <a href="/glossary#vm-exit">"VM exit"</a> ", " <a href="/glossary#tsc">"TSC"</a> ", "
                        <a href="/glossary#rings">"ring 3"</a> "."
                    </p>
                    <table class="results">
                        <caption>"Measured in this run"</caption>
                        <thead>
                            <tr><th scope="col">"What"</th><th scope="col">"Value"</th><th scope="col">"How it was measured"</th></tr>
                        </thead>
                        <tbody>
                            {measurements.into_iter().map(measurement_row).collect_view()}
                            {facts.into_iter().map(|f| fact_row(f, host_ticket)).collect_view()}
                            {missing.into_iter().map(|m| view! {
                                <tr class="missing" data-key=m.key.to_string()><th scope="row">{m.label}</th><td>"not measured"</td><td>{m.reason}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </details>
            }
        })
    }
}

fn measurement_row(m: Measurement) -> impl IntoView {
    let value = match m.unit {
        Unit::Bytes => fmt_bytes(m.value),
        Unit::Micros => fmt_us(m.value),
        Unit::Count => n(m.value),
    };
    view! { <tr data-key=m.key.to_string()><th scope="row">{m.label}</th><td class="num">{value}</td><td>{m.how}</td></tr> }
}

fn fact_row(f: Fact, host: Option<(HostClaim, u32)>) -> impl IntoView {
    let value = if matches!(f.key, FactKey::Host | FactKey::KvmHost) {
        host_explanation(host, "This server.", f.value)
    } else {
        f.value.into_any()
    };
    view! { <tr data-key=f.key.as_str()><th scope="row">{f.label}</th><td>{value}</td><td>{f.how}</td></tr> }
}

fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{}\u{a0}µs", fixed(us, 0))
    } else if us < 10_000_000.0 {
        format!("{}\u{a0}ms", fixed(us / 1000.0, 1))
    } else {
        format!("{}\u{a0}s", fixed(us / 1e6, 2))
    }
}

fn fmt_bytes(b: f64) -> String {
    if b < 1024.0 * 1024.0 {
        format!("{}\u{a0}KiB", fixed(b / 1024.0, 0))
    } else {
        format!("{}\u{a0}MiB", fixed(b / 1048576.0, 1))
    }
}
