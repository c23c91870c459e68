//! The figures of a VM run, from the VMM's report: each with what it
//! measures and how.

use stacklab_api::{FactKey, Metric, Unit};
use stacklab_vmm::report::VmReport;
use stacklab_vmm::GuestView;

use super::LinuxGuestKind;
use crate::backends::Ready;

/// The figures a learner sees for a Linux guest's run, from the VMM's
/// report and what the guest's `/init` said.
pub fn measure_linux(
    report: &VmReport,
    view: &GuestView,
    kind: LinuxGuestKind,
    rss: u64,
    pss: u64,
) -> Ready {
    let mut ready = Ready::default();
    if let Some(us) = span_us(report, "kvm_opened", "ready") {
        ready.measure(Metric::CreateToReady, "VM create → userspace", us, Unit::Micros,
            "from opening /dev/kvm until the guest's /init wrote the boot-complete value, on the VMM's monotonic clock");
    }
    if let Some(us) = span_us(report, "kvm_opened", "vcpu_created") {
        ready.measure(Metric::HypervisorSetup, "Hypervisor work (VM, memory, kernel load, vCPU)", us, Unit::Micros,
            "from opening /dev/kvm until the vCPU is ready to run the kernel: the hypervisor's share");
    }
    if let Some(us) = span_us(report, "vcpu_created", "ready") {
        ready.measure(Metric::GuestBoot, "Linux kernel boot → userspace", us, Unit::Micros,
            "from the kernel's first instruction to /init's boot-complete write: the guest OS's share");
    }
    if kind == LinuxGuestKind::Postgres {
        if let Some(us) = span_us(report, "ready", "postgres_ready") {
            ready.measure(Metric::PostgresStart, "PostgreSQL init + start inside the guest", us, Unit::Micros,
                "from /init's boot-complete write to its first successful SELECT 1 over the guest's Unix socket: the application's share");
        }
        if let Some(us) = span_us(report, "kvm_opened", "postgres_ready") {
            ready.measure(Metric::CreateToPostgres, "VM create → PostgreSQL ready", us, Unit::Micros,
                "from opening /dev/kvm to the guest's PostgreSQL answering SELECT 1: comparable with the container's create → ready");
        }
    }
    ready.measure(
        Metric::GuestRam,
        "Guest RAM configured",
        f64::from(kind.mem_mib()) * 1048576.0,
        Unit::Bytes,
        "the memory the VM was given (an anonymous host mapping registered with KVM)",
    );
    if let Some(total) = view.mem_total_bytes {
        ready.measure(Metric::GuestMemTotal, "Guest's MemTotal", total as f64, Unit::Bytes,
            "MemTotal from /proc/meminfo inside the guest: RAM minus what its kernel reserved for itself");
    }
    if let Some(available) = view.mem_available_bytes {
        ready.measure(
            Metric::GuestMemAvailable,
            "Guest's MemAvailable",
            available as f64,
            Unit::Bytes,
            "MemAvailable from /proc/meminfo inside the guest, read by its /init after boot",
        );
    }
    ready.measure(
        Metric::GuestTouched,
        "Guest RAM actually used",
        report.touched_bytes as f64,
        Unit::Bytes,
        "pages of the guest's RAM mapping backed by host memory at the end (mincore)",
    );
    measure_vmm_memory(&mut ready, rss, pss);
    ready.measure(
        Metric::Exits,
        "VM exits",
        report.exits as f64,
        Unit::Count,
        "times the guest handed control to the VMM (console bytes, device probes, milestones)",
    );
    if let Some(release) = &view.kernel_release {
        ready.fact(
            FactKey::KernelInside,
            "Kernel inside the VM",
            release.clone(),
            "`uname -r` run by the guest's /init: the guest's own kernel, not the host's",
        );
    }
    ready.fact(
        FactKey::KernelHost,
        "Kernel release on the host",
        crate::backends::host::kernel_release(),
        "/proc/sys/kernel/osrelease read by the server",
    );
    ready
}

/// The VMM process's memory, as the VMM read it just before tearing the VM
/// down.
fn measure_vmm_memory(ready: &mut Ready, rss: u64, pss: u64) {
    ready.measure(Metric::VmmRss, "VMM process memory (RSS)", rss as f64, Unit::Bytes,
        "Rss of the stacklab-vmm process from /proc/self/smaps_rollup, read by the VMM at the end of the run, before it tears the VM down: the guest pages it touched included");
    ready.measure(
        Metric::VmmPss,
        "VMM process memory (PSS)",
        pss as f64,
        Unit::Bytes,
        "Pss of the same process at the same moment: shared library pages split among their users",
    );
}

fn span_us(report: &VmReport, from: &str, to: &str) -> Option<f64> {
    // Whole microseconds: the clocks behind these spans are not finer.
    report.span(from, to).map(|d| d.as_micros() as f64)
}

/// The figures a learner sees for a run of the tiny guest.
pub fn measure_tiny(report: &VmReport, rss: u64, pss: u64) -> Ready {
    let mut ready = Ready::default();
    if let Some(us) = span_us(report, "kvm_opened", "ready") {
        ready.measure(Metric::CreateToReady, "VM create → ready", us, Unit::Micros,
            "from opening /dev/kvm to the guest's boot-complete write, on the VMM's monotonic clock");
    }
    if let Some(us) = span_us(report, "kvm_opened", "vcpu_created") {
        ready.measure(Metric::HypervisorSetup, "Hypervisor work (VM, memory, page tables, vCPU)", us, Unit::Micros,
            "from opening /dev/kvm until the vCPU is ready to run, already in 64-bit mode on page tables the VMM wrote: the hypervisor's share of the start");
    }
    if let Some(us) = span_us(report, "guest_entry", "ready") {
        ready.measure(
            Metric::GuestBoot,
            "Guest kernel boot",
            us,
            Unit::Micros,
            "from the guest's first instruction (in 64-bit mode, on the VMM's page tables) to its boot-complete write, by the guest's own TSC: the guest OS's share (its interrupt table, a timer tick, the ring-3 app)",
        );
    }
    ready.measure(
        Metric::GuestRam,
        "Guest RAM configured",
        report.mem_bytes as f64,
        Unit::Bytes,
        "the memory the VM was given (an anonymous host mapping registered with KVM)",
    );
    ready.measure(Metric::GuestTouched, "Guest RAM actually used", report.touched_bytes as f64, Unit::Bytes,
        "pages of that mapping backed by host memory at the end (mincore): only what the guest touched");
    measure_vmm_memory(&mut ready, rss, pss);
    ready.measure(Metric::Exits, "VM exits", report.exits as f64, Unit::Count,
        "times the guest handed control to the VMM: each milestone and signal is one; the guest keeps its console log in its own memory (the VMM reads it at the end), so console bytes cost none");
    if let Some(cycles) = report.app_cycles {
        let us = (cycles as f64 * 1000.0 / report.tsc_khz.max(1) as f64).round();
        ready.measure(
            Metric::AppRing3,
            "App's own work in ring 3",
            us,
            Unit::Micros,
            "the ring-3 app's TSC cycles for its loop and for writing its answer as text, converted with KVM's TSC frequency",
        );
    }
    ready.fact(
        FactKey::KernelInside,
        "Kernel inside the VM",
        "stacklab-guest, its own kernel (not the host's)".into(),
        "the VM boots the guest image it was given; the host kernel is not shared",
    );
    ready
}
