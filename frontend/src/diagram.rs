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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// The label drawn in the box.
    pub label: &'static str,
    /// Which grid row (0 = bottom) it occupies, so equal layers line up
    /// across the two stacks and the container's missing guest OS shows as a gap.
    pub row: usize,
    /// CSS class for its colour.
    pub class: &'static str,
    /// What a learner reads after selecting it.
    pub explanation: &'static str,
}

const HARDWARE: Layer = Layer {
    label: "Hardware",
    row: 0,
    class: "l-hw",
    explanation: "The physical machine: CPU cores, memory, disks and network cards. Every layer above shares it in the end.",
};

const VM_LAYERS: [Layer; 5] = [
    HARDWARE,
    Layer {
        label: "Host OS",
        row: 1,
        class: "l-host",
        explanation: "The operating system installed on the machine itself, here Linux. Its kernel schedules processes and owns the real devices.",
    },
    Layer {
        label: "Hypervisor",
        row: 2,
        class: "l-engine",
        explanation: "Creates virtual machines and hands each one a share of the CPU and memory, imitating devices where needed. VirtualBox, VMware and KVM are hypervisors; KVM is part of the Linux kernel, used through /dev/kvm.",
    },
    Layer {
        label: "Guest OS",
        row: 3,
        class: "l-guest",
        explanation: "A complete operating system booted inside every VM, with its own kernel, drivers and services. It is what makes a VM a separate server, and it costs memory and boot time per VM. Containers have no such layer.",
    },
    Layer {
        label: "App + dependencies",
        row: 4,
        class: "l-app",
        explanation: "Your application and the libraries it needs, installed inside the guest OS just as on a physical server.",
    },
];

const CONTAINER_LAYERS: [Layer; 4] = [
    HARDWARE,
    Layer {
        label: "Host OS",
        row: 1,
        class: "l-host",
        explanation: "The machine's own operating system. Its one kernel is shared by every container: a container's processes are ordinary host processes that the kernel fences off (namespaces, control groups).",
    },
    Layer {
        label: "Docker Engine",
        row: 2,
        class: "l-engine",
        explanation: "The dockerd service. It unpacks images, prepares the fence (a private file tree, process list and network) and starts the container's first process.",
    },
    Layer {
        label: "Container (app + dependencies)",
        row: 4,
        class: "l-app",
        explanation: "Your application's processes plus the files of its image: libraries and tools, but no kernel. It starts like a program, not like a computer: there is nothing to boot.",
    },
];

const ROWS: usize = 5;
const ROW_H: f64 = 50.0;
const GAP: f64 = 8.0;
const COL_W: f64 = 250.0;
const COL_GAP: f64 = 30.0;
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
    let width = stacks.len() as f64 * (COL_W + COL_GAP) - COL_GAP;
    let height = TITLE_H + ROWS as f64 * (ROW_H + GAP);
    let label = match focus {
        StackFocus::Both => "The virtual machine stack beside the container stack",
        StackFocus::Vm => "The virtual machine stack",
        StackFocus::Container => "The container stack",
    };
    view! {
        <figure class=if stacks.len() == 1 { "stack-diagram single" } else { "stack-diagram" }>
            <svg
                viewBox=format!("0 0 {width} {height}")
                role="group"
                aria-label=format!("{label}. Select a layer to read what it does.")
            >
                {stacks
                    .iter()
                    .enumerate()
                    .map(|(col, &stack)| {
                        let x = col as f64 * (COL_W + COL_GAP);
                        view! {
                            <g class="stack">
                                <text class="stack-title" x=x + COL_W / 2.0 y=18 text-anchor="middle">
                                    {stack.title()}
                                </text>
                                {(stack == Stack::Container)
                                    .then(|| view! { <MissingGuestOs x=x /> })}
                                {stack
                                    .layers()
                                    .iter()
                                    .enumerate()
                                    .map(|(i, layer)| {
                                        view! { <LayerBox stack i layer x selected run /> }
                                    })
                                    .collect_view()}
                            </g>
                        }
                    })
                    .collect_view()}
            </svg>
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
            <rect x=x y=y width=COL_W height=ROW_H rx=8 />
            <text
                x=x + COL_W / 2.0
                y=move || y + ROW_H / 2.0 + if reached().is_some_and(|t| t > 0) { -3.0 } else { 5.0 }
                text-anchor="middle"
            >
                {layer.label}
            </text>
            {move || {
                reached()
                    .filter(|t| *t > 0)
                    .map(|at_us| {
                        view! {
                            <text class="t" x=x + COL_W / 2.0 y=y + ROW_H / 2.0 + 14.0 text-anchor="middle">
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

/// The empty row where a VM has its guest OS.
#[component]
fn MissingGuestOs(x: f64) -> impl IntoView {
    let y = row_y(3);
    view! {
        <g class="missing" aria-hidden="true">
            <rect x=x y=y width=COL_W height=ROW_H rx=8 />
            <text x=x + COL_W / 2.0 y=y + ROW_H / 2.0 + 5.0 text-anchor="middle">
                "no guest OS: the host kernel is shared"
            </text>
        </g>
    }
}
