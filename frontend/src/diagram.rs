//! The interactive stack diagrams: a VM's layers beside a container's, drawn
//! as SVG, every layer focusable and explained when selected.

use leptos::ev::KeyboardEvent;
use leptos::prelude::*;

use stacklab_api::{EventKind, Phase, RunEvent};

use crate::lessons::StackFocus;
use crate::num::{fixed, n};
use stacklab_content::stack::{self, Layer, Stack, COL_W, HEIGHT, ROW_H};

/// The diagram: one or both stacks, and the explanation of the selected layer.
#[component]
pub fn StackDiagram(
    focus: StackFocus,
    /// A live run's events: layers light up as their phases arrive and then
    /// carry the time they were reached.
    #[prop(optional)]
    run: Option<RwSignal<Vec<RunEvent>>>,
) -> impl IntoView {
    let stacks = stack::stacks(focus);
    let selected = RwSignal::new(None::<(Stack, usize)>);
    let label = stack::label(focus);
    // One SVG per stack: side by side where there is room, one above the
    // other on a narrow screen, so the labels keep their size.
    view! {
        <figure class="stack-diagram" role="group" aria-label=format!("{label}. Select a layer to read what it does.")>
            <div class="stacks">
                {stacks
                    .iter()
                    .map(|&stack| {
                        let x = 0.0;
                        view! {
                            <svg viewBox=format!("0 0 {} {}", n(COL_W), n(HEIGHT)) role="group" aria-label=stack.title()>
                                <g class="stack">
                                    <text class="stack-title" x=n(x + COL_W / 2.0) y=18 text-anchor="middle">
                                        {stack.title()}
                                    </text>
                                    {(stack == Stack::Container)
                                        .then(|| view! { <MissingGuestOs x=x /> <SyscallPath x=x /> })}
                                    {stack
                                        .layers()
                                        .iter()
                                        .enumerate()
                                        .map(|(i, layer)| {
                                            view! { <LayerBox stack i layer x selected run /> }
                                        })
                                        .collect_view()}
                                </g>
                            </svg>
                        }
                    })
                    .collect_view()}
            </div>
            <figcaption class="layer-explanation" aria-live="polite">
                {move || match selected.get() {
                    Some((stack, i)) => {
                        let layer = &stack.layers()[i];
                        view! {
                            <strong>{format!("{} · {}", stack.title(), layer.label)}</strong>
                            <span>{layer.explanation}</span>
                        }
                            .into_any()
                    }
                    None => {
                        view! {
                            <span class="hint">
                                "Select a layer (click, or Tab then Enter) to see what it does. Read each stack from the bottom up."
                            </span>
                        }
                            .into_any()
                    }
                }}
            </figcaption>
        </figure>
    }
}

#[component]
fn LayerBox(
    stack: Stack,
    i: usize,
    layer: &'static Layer,
    x: f64,
    selected: RwSignal<Option<(Stack, usize)>>,
    run: Option<RwSignal<Vec<RunEvent>>>,
) -> impl IntoView {
    let (x, y, w) = layer.rect(x);
    let has_note = !layer.note.is_empty();
    // When this layer's phases were reached in the attached run, if at all.
    let reached = move || run.and_then(|r| r.with(|events| reached_at(layer, events)));
    let live_class = move || match (run, reached()) {
        (None, _) => "",
        (Some(_), Some(_)) => " lit",
        (Some(_), None) => " waiting",
    };
    let is_selected = move || selected.get() == Some((stack, i));
    let select = move || selected.set(Some((stack, i)));
    let on_key = move |ev: KeyboardEvent| match ev.key().as_str() {
        "Enter" | " " => {
            ev.prevent_default();
            select();
        }
        "Escape" => selected.set(None),
        _ => {}
    };
    view! {
        <g
            class=move || {
                format!(
                    "layer {}{}{}",
                    layer.class,
                    if is_selected() { " selected" } else { "" },
                    live_class(),
                )
            }
            role="button"
            tabindex="0"
            aria-pressed=move || is_selected().to_string()
            aria-label=format!("{}: {}", stack.title(), layer.label)
            data-layer=layer.label
            on:click=move |_| select()
            on:keydown=on_key
        >
            <rect x=n(x) y=n(y) width=n(w) height=n(ROW_H) rx=8 />
            <text
                x=n(x + w / 2.0)
                y=move || {
                    n(y + ROW_H / 2.0
                        + if has_note || reached().is_some_and(|t| t > 0) { -4.0 } else { 5.0 })
                }
                text-anchor="middle"
            >
                {layer.label}
            </text>
            // The note, until a live run puts the time there instead.
            {move || {
                (has_note && reached().is_none_or(|t| t == 0))
                    .then(|| {
                        view! {
                            <text class="note" x=n(x + w / 2.0) y=n(y + ROW_H / 2.0 + 13.0) text-anchor="middle">
                                {layer.note}
                            </text>
                        }
                    })
            }}
            {move || {
                reached()
                    .filter(|t| *t > 0)
                    .map(|at_us| {
                        view! {
                            <text class="t" x=n(x + w / 2.0) y=n(y + ROW_H / 2.0 + 13.0) text-anchor="middle">
                                {format!("reached at +{}\u{a0}ms", fixed(at_us as f64 / 1000.0, 1))}
                            </text>
                        }
                    })
            }}
        </g>
    }
}

/// The run phases that bring each layer to life, by layer label. Hardware
/// and the host OS are in use from the start (time 0).
fn layer_phases(layer: &Layer) -> &'static [Phase] {
    match layer.label {
        "Hypervisor" => &[Phase::VmCreated, Phase::MemoryMapped, Phase::VcpuCreated],
        "Guest OS" => &[
            // A Linux guest: its kernel runs, then prints.
            Phase::FirstExit,
            Phase::FirstConsole,
            // The tiny guest reports each boot step.
            Phase::GuestEntry,
            Phase::GuestLongMode,
            Phase::GuestIdt,
            Phase::GuestTimer,
            Phase::GuestUserEnter,
        ],
        "App + dependencies" => &[Phase::GuestUserReturn, Phase::Ready, Phase::PostgresReady],
        "Docker Engine" => &[Phase::ContainerCreated],
        "Container (app + dependencies)" => {
            &[Phase::ContainerStarted, Phase::ServerReady, Phase::Ready]
        }
        _ => &[],
    }
}

/// When the last of the layer's phases seen so far arrived (µs since the
/// click); `None` before the first.
fn reached_at(layer: &Layer, events: &[RunEvent]) -> Option<u64> {
    let phases = layer_phases(layer);
    if phases.is_empty() {
        return (!events.is_empty()).then_some(0);
    }
    events
        .iter()
        .rev()
        .find(|e| matches!(&e.kind, EventKind::Phase { phase, .. } if phases.contains(phase)))
        .map(|e| e.at_us)
}

/// The empty row where a VM has its guest OS (beside the system-call path).
#[component]
fn MissingGuestOs(x: f64) -> impl IntoView {
    let y = stack::row_y(3);
    let (x, w) = (
        x + stack::ENGINE_FROM * COL_W,
        (1.0 - stack::ENGINE_FROM) * COL_W,
    );
    view! {
        <g class="missing" aria-hidden="true">
            <rect x=n(x) y=n(y) width=n(w) height=n(ROW_H) rx=8 />
            <text x=n(x + w / 2.0) y=n(y + ROW_H / 2.0 - 3.0) text-anchor="middle">"no guest OS:"</text>
            <text x=n(x + w / 2.0) y=n(y + ROW_H / 2.0 + 12.0) text-anchor="middle">"kernel shared"</text>
        </g>
    }
}

/// The container's path at run time: its system calls go from the
/// container straight down to the host kernel, past the engine.
#[component]
fn SyscallPath(x: f64) -> impl IntoView {
    let cx = x + stack::SYSCALL_AT * COL_W;
    let (top, bottom) = (stack::row_y(3), stack::row_y(1) - 2.0);
    let label = cx - 8.0;
    view! {
        <g class="syscall-path" aria-hidden="true">
            <line x1=n(cx) y1=n(top) x2=n(cx) y2=n(bottom - 6.0) />
            <path d=format!("M {} {} L {} {} L {} {} Z", n(cx - 6.0), n(bottom - 8.0), n(cx), n(bottom), n(cx + 6.0), n(bottom - 8.0)) />
            <text x=n(label) y=n(top + 22.0) text-anchor="end">"system"</text>
            <text x=n(label) y=n(top + 36.0) text-anchor="end">"calls go"</text>
            <text x=n(label) y=n(stack::row_y(2) + 22.0) text-anchor="end">"straight to"</text>
            <text x=n(label) y=n(stack::row_y(2) + 36.0) text-anchor="end">"the kernel"</text>
        </g>
    }
}
