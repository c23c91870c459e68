//! The two stacks every diagram draws, and where each box goes: shared by
//! the interactive diagram in the browser and the static SVG of
//! pre-rendered pages ([`crate::page`]), so both draw the same picture.
//!
//! Plain data, no dependencies.

use crate::StackFocus;

/// Which of the two stacks a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// Hardware → Host OS → Hypervisor → Guest OS → App.
    Vm,
    /// Hardware → Host OS → Docker Engine → Container.
    Container,
}

impl Stack {
    /// The stack's heading.
    pub fn title(self) -> &'static str {
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

/// Rows of the grid (the VM stack's five floors).
pub const ROWS: usize = 5;
/// Height of one row, in SVG units.
pub const ROW_H: f64 = 50.0;
/// Space between rows.
pub const GAP: f64 = 8.0;
/// Width of one stack's column.
pub const COL_W: f64 = 250.0;
/// Height of the stack's title line.
pub const TITLE_H: f64 = 28.0;
/// Height of one stack's SVG.
pub const HEIGHT: f64 = TITLE_H + ROWS as f64 * (ROW_H + GAP);
/// Where, across the container column, the space beside the engine starts
/// (the engine and the missing guest OS sit right of it).
pub const ENGINE_FROM: f64 = 0.45;
/// Where, across the container column, the system-call arrow runs.
pub const SYSCALL_AT: f64 = 0.36;

/// The stacks a diagram with this focus shows, left to right.
pub fn stacks(focus: StackFocus) -> &'static [Stack] {
    match focus {
        StackFocus::Both => &[Stack::Vm, Stack::Container],
        StackFocus::Vm => &[Stack::Vm],
        StackFocus::Container => &[Stack::Container],
    }
}

/// The diagram's accessible name.
pub fn label(focus: StackFocus) -> &'static str {
    match focus {
        StackFocus::Both => "The virtual machine stack beside the container stack",
        StackFocus::Vm => "The virtual machine stack",
        StackFocus::Container => "The container stack",
    }
}

/// Top y coordinate of a grid row (row 0 is drawn at the bottom).
pub fn row_y(row: usize) -> f64 {
    TITLE_H + (ROWS - 1 - row) as f64 * (ROW_H + GAP)
}

impl Layer {
    /// Its box in a column starting at `x`: `(x, y, width)` (the height is
    /// [`ROW_H`]).
    pub fn rect(&self, x: f64) -> (f64, f64, f64) {
        (
            x + self.span.0 * COL_W,
            row_y(self.row),
            (self.span.1 - self.span.0) * COL_W,
        )
    }
}
