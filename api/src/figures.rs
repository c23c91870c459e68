//! The one table of figures: for every demo, each figure it reports, with
//! its label, unit, the explanation people read, whether it is the demo's
//! headline for a question, and its definition — a span between two typed
//! phases on the run's clock, a raw reading a backend takes, or the sum of
//! other figures.
//!
//! The server's derive step (`server/src/engine/derive.rs`) turns a run's
//! phases and readings into measurements (and `missing` entries) from this
//! table alone; the frontend, the history, the room view, the exports and
//! `/metrics` read labels and explanations from it (or from measurements
//! made from it). Nothing else defines a figure.

use std::borrow::Cow;

use crate::{DemoId, DensityMetric, Key, Metric, Phase, Unit};

/// The question a headline figure answers first on a result card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// How long until it was ready?
    Time,
    /// How much memory did it hold?
    Memory,
}

/// The clock a span is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The run's clock: the server's monotonic clock from the moment it
    /// accepted the request; steps the VMM observed are placed on it through
    /// CLOCK_MONOTONIC, the same clock in every process of the host. (The
    /// guest's own TSC is not a span clock: the figures it times are
    /// readings the VMM converts, and say so.)
    Run,
}

/// How a figure is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Definition {
    /// The time from phase `from` to phase `to`, both as observed on
    /// `clock`.
    Span {
        from: Phase,
        to: Phase,
        clock: Clock,
    },
    /// A value a backend reads (memory, counts, sizes), or says why not.
    Reading,
    /// The sum of other figures of the same run; missing if any part is.
    Sum(&'static [Metric]),
}

/// One figure of one demo.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Its key.
    pub key: Key,
    /// Short human name.
    pub label: Cow<'static, str>,
    /// Its unit.
    pub unit: Unit,
    /// What it measures and how, in a sentence for people.
    pub how: Cow<'static, str>,
    /// Whether it is the demo's headline for a question.
    pub headline: Option<Question>,
    /// How it is obtained.
    pub definition: Definition,
}

fn fig(
    key: impl Into<Key>,
    label: impl Into<Cow<'static, str>>,
    unit: Unit,
    how: impl Into<Cow<'static, str>>,
    definition: Definition,
) -> Figure {
    Figure {
        key: key.into(),
        label: label.into(),
        unit,
        how: how.into(),
        headline: None,
        definition,
    }
}

fn span(from: Phase, to: Phase) -> Definition {
    Definition::Span {
        from,
        to,
        clock: Clock::Run,
    }
}

impl Figure {
    fn headline(mut self, q: Question) -> Figure {
        self.headline = Some(q);
        self
    }
}

/// What a container's memory and a VM's memory are made of, counted the
/// same way: PSS of its host processes, plus (containers) the files on
/// its tmpfs mounts, which live in memory that no process maps.
const CONTAINER_HELD: &[Metric] = &[Metric::MemoryPss, Metric::MemoryTmpfsFiles];
const VM_HELD: &[Metric] = &[Metric::MemoryPss];

/// Every figure `demo` reports, in the order a result lists them.
pub fn figures(demo: DemoId) -> Vec<Figure> {
    use Metric as M;
    use Unit::{Bytes, Count, Micros};
    let mut out = Vec::new();
    if demo.density_of().is_some() {
        out.push(
            fig(M::SweepTotal, "Whole sweep", Micros,
                match demo.samples_per_step() {
                    1 => Cow::Borrowed("from leaving the queue to the last step's end: every step (1, 2, … 5 at once), one after another, on the server's monotonic clock"),
                    k => format!("from leaving the queue to the last step's end: every step (1, 2, … 5 at once), each taken {k} times, one after another, on the server's monotonic clock").into(),
                },
                span(Phase::SlotGranted, Phase::Ready)).headline(Question::Time),
        );
        out.push(queue_wait());
        let samples = demo.samples_per_step();
        for n in 1..=DemoId::DENSITY_MAX {
            out.extend(density_step(demo, n, samples));
        }
        out.push(fig(M::MemoryPerExtraInstance, "Memory added per extra instance", Bytes,
            "for each step N > 1: (memory held together at N − at 1) / (N − 1), each step's figure as listed above; the median of those steps, their spread in the note",
            Definition::Reading));
        return out;
    }
    let ready = demo.ready_phase();
    let platform = demo.platform_phase();
    out.push(
        fig(M::StartToReady, "Start → ready", Micros,
            format!("from the moment the run left the queue (its work started) to {}, on the server's monotonic clock", ready_words(demo)),
            span(Phase::SlotGranted, ready)).headline(Question::Time),
    );
    out.push(queue_wait());
    out.push(fig(M::RequestToReady, "Request → ready (waiting included)", Micros,
        "from the moment the server accepted the request to ready: what the person who clicked waited, time in the queue included",
        span(Phase::Accepted, ready)));
    out.push(fig(M::PlatformShare, "Platform's share", Micros,
        if demo.is_container() {
            "start → the container's process runs: the engine's work (create, file system, namespaces, cgroups, start), time in the queue excluded"
        } else {
            "start → the vCPU is about to run the guest's first instruction: the VMM's work (process spawn, jail, image read, KVM set-up), time in the queue excluded"
        },
        span(Phase::SlotGranted, platform)));
    out.push(fig(
        M::WorkloadShare,
        "Workload's share",
        Micros,
        "from there to ready: what the program (or guest) itself did to become ready",
        span(platform, ready),
    ));
    let held_how = if demo.is_container() {
        "its processes' PSS plus the files on its tmpfs mounts, summed: what is this instance's own, shared pages split evenly among their sharers, each page counted once; a VM is counted by the same rule"
    } else {
        "its processes' PSS (the guest's pages included), the same rule as a container's (which adds its tmpfs files: a VM keeps its files in guest pages): what is this instance's own, shared pages split evenly among their sharers, each page counted once"
    };
    let parts = if demo.is_container() {
        CONTAINER_HELD
    } else {
        VM_HELD
    };
    out.push(
        fig(
            M::MemoryHeld,
            "Memory held",
            Bytes,
            held_how,
            Definition::Sum(parts),
        )
        .headline(Question::Memory),
    );
    if demo.is_container() {
        out.push(fig(M::MemoryPss, "Its processes (PSS)", Bytes,
            "Pss from /proc/PID/smaps_rollup summed over the container's processes (PIDs from its cgroup), read at ready: private pages plus a fair share of shared ones, shared memory such as PostgreSQL's buffers included",
            Definition::Reading));
        out.push(uss());
        out.push(anon());
        out.push(fig(M::MemoryTmpfsFiles, "Files on its tmpfs mounts", Bytes,
            "used bytes of each tmpfs mount in the container's mount namespace but /dev/shm (statvfs through /proc/PID/root), read at ready: files kept in memory that no process maps, so PSS leaves them out (/dev/shm's shared memory is mapped, so PSS has it)",
            Definition::Reading));
        out.push(fig(M::MemoryCgroup, "Memory charged to the container", Bytes,
            "the container's memory cgroup usage: processes, page cache and tmpfs, everything the kernel charges to it (for comparison, not the same count)",
            Definition::Reading));
        out.push(fig(M::MemoryDockerStats, "Memory as docker stats shows it", Bytes,
            "cgroup usage minus inactive page cache, the figure `docker stats` prints (for comparison)",
            Definition::Reading));
        out.push(fig(
            M::Processes,
            "Processes",
            Count,
            "entries in the container's cgroup.procs at ready",
            Definition::Reading,
        ));
        if demo == DemoId::PostgresContainer {
            out.push(fig(M::CreateToReady, "Container create → ready", Micros,
                "from the moment the engine had the image (the create request follows at once) to the first successful SELECT 1 over TCP, on the server's monotonic clock",
                span(Phase::ImageReady, Phase::Ready)));
            out.push(fig(
                M::ImageSize,
                "Image size",
                Bytes,
                "the image's size as the Docker engine reports it (all layers, uncompressed)",
                Definition::Reading,
            ));
        } else {
            out.push(fig(M::CreateToReady, "Container create → ready", Micros,
                "from the moment the engine had the image (the create request follows at once) to the program's first line, on the server's monotonic clock",
                span(Phase::ImageReady, Phase::Ready)));
            out.push(fig(
                M::ImageSize,
                "Program size",
                Bytes,
                "the size of /hello, the image's only file",
                Definition::Reading,
            ));
        }
        return out;
    }
    // Virtual machines.
    let linux = demo.is_linux_guest();
    out.push(fig(M::MemoryPss, "Its processes (PSS)", Bytes,
        if linux {
            "Pss of the stacklab-vmm process from its own /proc/self/smaps_rollup, read by the VMM at the end of the run, after the guest reset and before it tore the VM down (its guest pages still mapped), its jail's waiter not included: Linux guests are not held at ready as the tiny guest is (this kind of host cannot boot them to build that), so this is not the same moment as a container's reading"
        } else {
            "Pss from /proc/PID/smaps_rollup summed over the VM's host processes (the jail's waiter and the jailed stacklab-vmm), read by the server while the VMM held the VM at ready: the VMM's own pages plus every guest page touched, shared library pages split evenly among their sharers"
        },
        Definition::Reading));
    if !linux {
        out.push(uss());
        out.push(anon());
    }
    out.push(fig(M::CreateToReady,
        if linux { "VM create → userspace" } else { "VM create → ready" }, Micros,
        if linux {
            "from /dev/kvm opened until the guest's /init wrote the boot-complete value (VMM's observations, CLOCK_MONOTONIC)"
        } else {
            "from /dev/kvm opened to the guest's boot-complete write (VMM's observations, CLOCK_MONOTONIC)"
        },
        span(Phase::KvmOpened, Phase::Ready)));
    out.push(fig(M::HypervisorSetup,
        if linux { "Hypervisor work (VM, memory, kernel load, vCPU)" } else { "Hypervisor work (VM, memory, page tables, vCPU)" },
        Micros,
        "from /dev/kvm opened until the vCPU is ready to run the guest: the hypervisor's share of the start",
        span(Phase::KvmOpened, Phase::VcpuCreated)));
    if linux {
        out.push(fig(M::GuestBoot, "Linux kernel boot → userspace", Micros,
            "from the vCPU being ready to run the kernel to /init's boot-complete write, as the VMM observed both (CLOCK_MONOTONIC): the guest OS's share",
            span(Phase::VcpuCreated, Phase::Ready)));
    } else {
        out.push(fig(M::GuestBoot, "Guest kernel boot", Micros,
            "from the guest's first milestone (its first instructions, in 64-bit mode on the VMM's page tables) to its boot-complete write, as the VMM observed both exits on the host's monotonic clock: the guest OS's share",
            span(Phase::GuestEntry, Phase::Ready)));
    }
    if demo == DemoId::PostgresVm {
        out.push(fig(M::PostgresStart, "PostgreSQL init + start inside the guest", Micros,
            "from /init's boot-complete write to its first successful SELECT 1 over the guest's Unix socket: the application's share",
            span(Phase::Ready, Phase::PostgresReady)));
        out.push(fig(M::CreateToPostgres, "VM create → PostgreSQL ready", Micros,
            "from /dev/kvm opened to the guest's PostgreSQL answering SELECT 1: comparable with the container's create → ready",
            span(Phase::KvmOpened, Phase::PostgresReady)));
    }
    out.push(fig(
        M::GuestRam,
        "Guest RAM configured",
        Bytes,
        "the memory the VM was given (an anonymous host mapping registered with KVM)",
        Definition::Reading,
    ));
    out.push(fig(M::GuestTouched, "Guest RAM backed by the host", Bytes,
        "pages of the guest's RAM mapping backed by host memory at the end of the run (mincore): only what the guest touched", Definition::Reading));
    if linux {
        out.push(fig(M::GuestMemTotal, "Guest's MemTotal", Bytes,
            "MemTotal from /proc/meminfo inside the guest: RAM minus what its kernel reserved for itself", Definition::Reading));
        out.push(fig(
            M::GuestMemAvailable,
            "Guest's MemAvailable",
            Bytes,
            "MemAvailable from /proc/meminfo inside the guest, read by its /init after boot",
            Definition::Reading,
        ));
    }
    out.push(fig(M::VmmRss, "VMM process memory (RSS)", Bytes,
        "Rss of the stacklab-vmm process from /proc/self/smaps_rollup, read by the VMM at the end of the run, before it tore the VM down: the guest pages it touched included",
        Definition::Reading));
    out.push(fig(
        M::VmmPss,
        "VMM process memory (PSS)",
        Bytes,
        "Pss of the same process at the same moment: shared library pages split among their users",
        Definition::Reading,
    ));
    out.push(fig(M::Exits, "Exits to the VMM", Count,
        "returns from KVM_RUN to stacklab-vmm (I/O ports, MMIO, halts, shutdown): the exits KVM could not handle itself. Exits KVM handles inside the kernel (first-touch page faults, most MSR and CPUID, timers) are not counted here",
        Definition::Reading));
    out.push(fig(M::ExitsIo, "Exits to the VMM: I/O port", Count,
        "of those, KVM_EXIT_IO: the guest read or wrote an I/O port the VMM emulates (milestones, serial console)", Definition::Reading));
    out.push(fig(M::ExitsMmio, "Exits to the VMM: MMIO", Count,
        "of those, KVM_EXIT_MMIO: the guest touched an address with no memory behind it (the boot-complete register)", Definition::Reading));
    out.push(fig(
        M::ExitsOther,
        "Exits to the VMM: other",
        Count,
        "of those, every other reason (halt, shutdown, interrupted by a signal, internal error)",
        Definition::Reading,
    ));
    if !linux {
        out.push(fig(M::AppRing3, "App's own work in ring 3", Micros,
            "the ring-3 app's TSC cycles for its loop and for writing its answer as text, converted with KVM's TSC frequency (the guest's own clock)",
            Definition::Reading));
    }
    out
}

fn anon() -> Figure {
    fig(Metric::MemoryAnon, "Its processes' anonymous memory", Unit::Bytes,
        "Pss_Anon + Pss_Shmem from the same smaps_rollup files at the same moment: heap, stacks, shared memory and (a VM) guest RAM, pages shared between its own processes counted once; no other instance can share them",
        Definition::Reading)
}

fn uss() -> Figure {
    fig(Metric::MemoryUss, "Its processes' private memory (USS)", Unit::Bytes,
        "Private_Clean + Private_Dirty from the same smaps_rollup files at the same moment: pages no other process maps (a program's pages count here while it runs alone, and stop counting once another copy maps them too)",
        Definition::Reading)
}

/// The figures of step `n` of density demo `demo`, whose steps are each
/// taken `samples` times. One sample: the step's time is the span between
/// its phases. Several: every figure is a reading of the sweep, the median
/// with the least and most beside it, and how many samples they are from.
/// (`StepStart(n)` is then the first sample's start and `StepReady(n)` the
/// last sample's all-ready: the span holds every sample of the step.)
fn density_step(demo: DemoId, n: u32, samples: u32) -> Vec<Figure> {
    use DensityMetric as D;
    use Unit::{Bytes, Count, Micros};
    let key = |m: DensityMetric| Key::Density(m, n);
    let held = match demo.density_of() {
        Some(DemoId::MicroVm) => "the sum of each VM's memory held (PSS of its host processes, guest pages included), read in one pass by the server once all were ready and held",
        _ => "the sum of each container's memory held (PSS of its processes + files on its tmpfs mounts), read in one pass by the server once all had answered and were running",
    };
    let anon = fig(
        key(D::AnonMedian),
        format!("Step {n}: anonymous memory per instance (median)"),
        Bytes,
        if samples > 1 {
            "the median of the instances' anonymous memory (Pss_Anon + Pss_Shmem of their processes: heap, stacks, shared buffers, guest RAM), over every instance of every sample of the step, each read in its sample's pass: what each instance adds, since no other instance can share it"
        } else {
            "the median of the instances' anonymous memory (Pss_Anon + Pss_Shmem of their processes: heap, stacks, shared buffers, guest RAM), read in the same pass: what each instance adds, since no other instance can share it"
        },
        Definition::Reading,
    );
    let headline = |f: Figure| {
        if n == DemoId::DENSITY_MAX {
            f.headline(Question::Memory)
        } else {
            f
        }
    };
    if samples <= 1 {
        return vec![
            fig(
                key(D::AllReady),
                format!("Step {n}: all {n} ready"),
                Micros,
                format!("one step of the sweep, one sample: from starting {n} at the same moment until the last of them reported ready (server's monotonic clock)"),
                span(Phase::StepStart(n), Phase::StepReady(n)),
            ),
            headline(fig(
                key(D::MemoryTotal),
                format!("Step {n}: memory held together"),
                Bytes,
                format!("one step of the sweep, one sample: {held}"),
                Definition::Reading,
            )),
            anon,
        ];
    }
    let time = format!("one step of the sweep, started {samples} times one after another: each sample from starting {n} at the same moment until the last of them reported ready (server's monotonic clock)");
    let memory = format!(
        "one step of the sweep, started {samples} times one after another: in each sample, {held}"
    );
    vec![
        fig(
            key(D::AllReady),
            format!("Step {n}: all {n} ready (median)"),
            Micros,
            format!("{time}; the median of the samples"),
            Definition::Reading,
        ),
        fig(
            key(D::AllReadyMin),
            format!("Step {n}: all {n} ready (least)"),
            Micros,
            format!("{time}; the least of the samples"),
            Definition::Reading,
        ),
        fig(
            key(D::AllReadyMax),
            format!("Step {n}: all {n} ready (most)"),
            Micros,
            format!("{time}; the most of the samples"),
            Definition::Reading,
        ),
        fig(
            key(D::Samples),
            format!("Step {n}: samples"),
            Count,
            format!("how many times the step was taken (up to {samples}; a further sample starts only while the step's samples so far took under {} s): its time figures are from all of them", DENSITY_SAMPLING_S),
            Definition::Reading,
        ),
        headline(fig(
            key(D::MemoryTotal),
            format!("Step {n}: memory held together (median)"),
            Bytes,
            format!("{memory}; the median of the samples whose memory was read"),
            Definition::Reading,
        )),
        fig(
            key(D::MemoryTotalMin),
            format!("Step {n}: memory held together (least)"),
            Bytes,
            format!("{memory}; the least of the samples whose memory was read"),
            Definition::Reading,
        ),
        fig(
            key(D::MemoryTotalMax),
            format!("Step {n}: memory held together (most)"),
            Bytes,
            format!("{memory}; the most of the samples whose memory was read"),
            Definition::Reading,
        ),
        fig(
            key(D::MemorySamples),
            format!("Step {n}: samples with memory read"),
            Count,
            "of the step's samples, those whose memory was read: its memory figures are from these (a sample whose reading failed is left out, not counted as 0)",
            Definition::Reading,
        ),
        anon,
    ]
}

/// A density step is sampled again only while its samples so far took
/// under this many seconds (the sweep's total time stays bounded).
pub const DENSITY_SAMPLING_S: u64 = 2;

fn queue_wait() -> Figure {
    fig(Metric::QueueWait, "Waited in line", Unit::Micros,
        "from the moment the server accepted the request until the run left the queue with a slot: time spent behind other runs, not the platform's work",
        span(Phase::Accepted, Phase::SlotGranted))
}

fn ready_words(demo: DemoId) -> &'static str {
    match demo {
        DemoId::PostgresContainer => "the first successful SELECT 1 over TCP",
        DemoId::HelloContainer => "the program's first line",
        DemoId::MicroVm => "the guest's boot-complete write",
        DemoId::LinuxVm => "the guest's /init boot-complete write",
        DemoId::PostgresVm => "the guest's PostgreSQL answering SELECT 1",
        DemoId::DensityContainer | DemoId::DensityMicroVm => "the last step's end",
    }
}

/// The figure `key` of `demo`, if the demo reports it.
pub fn figure(demo: DemoId, key: Key) -> Option<Figure> {
    figures(demo).into_iter().find(|f| f.key == key)
}

/// The demo's headline figure for question `q`.
pub fn headline(demo: DemoId, q: Question) -> Figure {
    figures(demo)
        .into_iter()
        .find(|f| f.headline == Some(q))
        .expect("every demo has a headline for each question")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_has_one_headline_per_question_and_no_key_twice() {
        for demo in DemoId::ALL {
            let figs = figures(demo);
            for q in [Question::Time, Question::Memory] {
                let n = figs.iter().filter(|f| f.headline == Some(q)).count();
                assert_eq!(n, 1, "{demo}: {q:?}");
            }
            let keys: std::collections::HashSet<_> = figs.iter().map(|f| f.key).collect();
            assert_eq!(keys.len(), figs.len(), "{demo}: a key twice");
            for f in &figs {
                if let Definition::Sum(parts) = f.definition {
                    for p in parts {
                        assert!(keys.contains(&Key::from(*p)), "{demo}: {} sums {p}", f.key);
                    }
                }
            }
        }
    }

    #[test]
    fn no_figure_that_compares_platforms_starts_before_the_queue_ends() {
        for demo in DemoId::ALL {
            for f in figures(demo) {
                if let Definition::Span { from, .. } = f.definition {
                    if from == Phase::Accepted {
                        assert!(
                            matches!(
                                f.key,
                                Key::Metric(Metric::QueueWait | Metric::RequestToReady)
                            ),
                            "{demo}: {} starts at the request",
                            f.key
                        );
                    }
                }
            }
        }
    }
}
