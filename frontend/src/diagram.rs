//! The interactive stack diagrams: a VM's layers beside a container's, drawn
//! as SVG, every layer focusable and explained when selected.

use leptos::ev::KeyboardEvent;
use leptos::prelude::*;

use stacklab_api::{EventKind, RunEvent};

use crate::lessons::StackFocus;

/// Which of the two stacks a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// Hardware → Host OS → Hypervisor → Guest OS → App.
    Vm,
    /// Hardware → Host OS → Docker Engine → Container.
    Container,
}

impl Stack {
    fn title(self) -> &'static str {
        match self {
            Stack::Vm => "Virtual machine",
            Stack::Container => "Docker container",
        }
    }

    /// Bottom to top.
    pub fn layers(self) -> &'static [Layer] {
        match self {
            Stack::Vm => &VM_LAYERS,
            Stack::Container => &CONTAINER_LAYERS,
        }
    }
}

/// One box of a stack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layer {
    /// The label drawn in the box.
    pub label: &'static str,
    /// Which grid row (0 = bottom) it occupies, so equal layers line up
    /// across the two stacks and the container's missing guest OS shows as a gap.
    pub row: usize,
    /// The part of the column's width it spans, as fractions (0 to 1): the
    /// Docker Engine sits beside the container's path, not across it.
    pub span: (f64, f64),
    /// A second, smaller line in the box: how it takes part at run time.
    pub note: &'static str,
    /// CSS class for its colour.
    pub class: &'static str,
    /// What a learner reads after selecting it.
    pub explanation: &'static str,
}

const HARDWARE: Layer = Layer {
    label: "Hardware",
    row: 0,
    span: (0.0, 1.0),
    note: "",
    class: "l-hw",
    explanation: "The physical machine: CPU cores, memory, disks and network cards. Every layer above shares it in the end.",
};

const VM_LAYERS: [Layer; 5] = [
    HARDWARE,
    Layer {
        label: "Host OS",
        row: 1,
        span: (0.0, 1.0),
        note: "",
        class: "l-host",
        explanation: "The operating system installed on the machine itself, here Linux. Its kernel schedules processes and owns the real devices. With KVM, this kernel is also the hypervisor's core.",
    },
    Layer {
        label: "Hypervisor",
        row: 2,
        span: (0.0, 1.0),
        note: "KVM (host kernel) + a VMM process",
        class: "l-engine",
        explanation: "Creates virtual machines and hands each one a share of the CPU and memory, imitating devices where needed. Here it is two parts: KVM, inside the host kernel (so this floor and the host OS's overlap), and a user-space VMM process per VM (stacklab-vmm; elsewhere QEMU or Firecracker). It is not in the path of ordinary guest instructions: it steps in on a VM exit, when the guest touches a device or halts.",
    },
    Layer {
        label: "Guest OS",
        row: 3,
        span: (0.0, 1.0),
        note: "runs on the real CPU; VM exits are rare",
        class: "l-guest",
        explanation: "A complete operating system booted inside every VM, with its own kernel, drivers and services. Its instructions run directly on the real CPU; only a VM exit (a device access, a halt) hands control to the hypervisor. It is what makes a VM a separate server, and it costs memory and boot time per VM. Containers have no such layer.",
    },
    Layer {
        label: "App + dependencies",
        row: 4,
        span: (0.0, 1.0),
        note: "",
        class: "l-app",
        explanation: "Your application and the libraries it needs, installed inside the guest OS just as on a physical server.",
    },
];

const CONTAINER_LAYERS: [Layer; 4] = [
    HARDWARE,
    Layer {
        label: "Host OS",
        row: 1,
        span: (0.0, 1.0),
        note: "",
        class: "l-host",
        explanation: "The machine's own operating system. Its one kernel is shared by every container: a container's processes are ordinary host processes that the kernel fences off (namespaces, control groups), and their system calls come straight here.",
    },
    Layer {
        label: "Docker Engine",
        row: 2,
        span: (0.45, 1.0),
        note: "sets up, steps aside",
        class: "l-engine",
        explanation: "The dockerd service (with containerd and runc). It unpacks images, prepares the fence (a private file tree, process list and network) and starts the container's first process; then it only watches. It is drawn beside the path because it is not in it: the container's system calls go straight to the host kernel.",
    },
    Layer {
        label: "Container (app + dependencies)",
        row: 4,
        span: (0.0, 1.0),
        note: "",
        class: "l-app",
        explanation: "Your application's processes plus the files of its image: libraries and tools, but no kernel. It starts like a program, not like a computer: there is nothing to boot.",
    },
];

const ROWS: usize = 5;
const ROW_H: f64 = 50.0;
const GAP: f64 = 8.0;
const COL_W: f64 = 250.0;
const TITLE_H: f64 = 28.0;

/// The diagram: one or both stacks, and the explanation of the selected layer.
#[component]
pub fn StackDiagram(
    focus: StackFocus,
    /// A live run's events: layers light up as their phases arrive and then
    /// carry the time they were reached.
    #[prop(optional)]
    run: Option<RwSignal<Vec<RunEvent>>>,
) -> impl IntoView {
    let stacks: &'static [Stack] = match focus {
        StackFocus::Both => &[Stack::Vm, Stack::Container],
        StackFocus::Vm => &[Stack::Vm],
        StackFocus::Container => &[Stack::Container],
    };
    let selected = RwSignal::new(None::<(Stack, usize)>);
    let height = TITLE_H + ROWS as f64 * (ROW_H + GAP);
    let label = match focus {
        StackFocus::Both => "The virtual machine stack beside the container stack",
        StackFocus::Vm => "The virtual machine stack",
        StackFocus::Container => "The container stack",
    };
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
                            <svg viewBox=format!("0 0 {COL_W} {height}") role="group" aria-label=stack.title()>
                                <g class="stack">
                                    <text class="stack-title" x=x + COL_W / 2.0 y=18 text-anchor="middle">
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

/// Top y coordinate of a grid row (row 0 is drawn at the bottom).
fn row_y(row: usize) -> f64 {
    TITLE_H + (ROWS - 1 - row) as f64 * (ROW_H + GAP)
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
    let y = row_y(layer.row);
    let (x, w) = (
        x + layer.span.0 * COL_W,
        (layer.span.1 - layer.span.0) * COL_W,
    );
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
            <rect x=x y=y width=w height=ROW_H rx=8 />
            <text
                x=x + w / 2.0
                y=move || {
                    y + ROW_H / 2.0
                        + if has_note || reached().is_some_and(|t| t > 0) { -4.0 } else { 5.0 }
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
                            <text class="note" x=x + w / 2.0 y=y + ROW_H / 2.0 + 13.0 text-anchor="middle">
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
                            <text class="t" x=x + w / 2.0 y=y + ROW_H / 2.0 + 13.0 text-anchor="middle">
                                {format!("reached at +{:.1} ms", at_us as f64 / 1000.0)}
                            </text>
                        }
                    })
            }}
        </g>
    }
}

/// The run phases that bring each layer to life, by layer label. Hardware
/// and the host OS are in use from the start (time 0).
fn layer_phases(layer: &Layer) -> &'static [&'static str] {
    match layer.label {
        "Hypervisor" => &["vm_created", "memory_mapped", "vcpu_created"],
        "Guest OS" => &[
            // A Linux guest: its kernel runs, then prints.
            "first_exit",
            "first_console",
            // The tiny guest reports each boot step.
            "guest_entry",
            "guest_long_mode",
            "guest_idt",
            "guest_timer",
            "guest_user_enter",
        ],
        "App + dependencies" => &["guest_user_return", "ready", "postgres_ready"],
        "Docker Engine" => &["container_created"],
        "Container (app + dependencies)" => &["container_started", "server_ready", "ready"],
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
        .find(|e| matches!(&e.kind, EventKind::Phase { phase, .. } if phases.contains(&phase.as_str())))
        .map(|e| e.at_us)
}

/// The empty row where a VM has its guest OS (beside the system-call path).
#[component]
fn MissingGuestOs(x: f64) -> impl IntoView {
    let y = row_y(3);
    let (x, w) = (x + 0.45 * COL_W, 0.55 * COL_W);
    view! {
        <g class="missing" aria-hidden="true">
            <rect x=x y=y width=w height=ROW_H rx=8 />
            <text x=x + w / 2.0 y=y + ROW_H / 2.0 - 3.0 text-anchor="middle">"no guest OS:"</text>
            <text x=x + w / 2.0 y=y + ROW_H / 2.0 + 12.0 text-anchor="middle">"kernel shared"</text>
        </g>
    }
}

/// The container's path at run time: its system calls go from the
/// container straight down to the host kernel, past the engine.
#[component]
fn SyscallPath(x: f64) -> impl IntoView {
    let cx = x + 0.36 * COL_W;
    let (top, bottom) = (row_y(3), row_y(1) - 2.0);
    let label = cx - 8.0;
    view! {
        <g class="syscall-path" aria-hidden="true">
            <line x1=cx y1=top x2=cx y2=bottom - 6.0 />
            <path d=format!("M {} {} L {cx} {bottom} L {} {} Z", cx - 6.0, bottom - 8.0, cx + 6.0, bottom - 8.0) />
            <text x=label y=top + 22.0 text-anchor="end">"system"</text>
            <text x=label y=top + 36.0 text-anchor="end">"calls go"</text>
            <text x=label y=row_y(2) + 22.0 text-anchor="end">"straight to"</text>
            <text x=label y=row_y(2) + 36.0 text-anchor="end">"the kernel"</text>
        </g>
    }
}
