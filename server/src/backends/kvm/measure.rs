//! The readings of a VM run, from the VMM's report: raw values (or why
//! each is missing) that the figure table names and explains.

use stacklab_api::{FactKey, Metric};
use stacklab_vmm::report::VmReport;
use stacklab_vmm::GuestView;

use super::LinuxGuestKind;
use crate::backends::Ready;

/// The readings every VM run reports, from the VMM's report.
fn read_report(ready: &mut Ready, report: &VmReport, guest_ram: u64) {
    ready.read(Metric::GuestRam, Ok(guest_ram as f64));
    ready.read(
        Metric::GuestTouched,
        report
            .touched_bytes
            .map(|b| b as f64)
            .ok_or_else(|| "the VMM's mincore of guest memory failed".to_owned()),
    );
    let own = |v: Option<u64>, what: &str| {
        v.map(|b| b as f64).ok_or_else(|| {
            format!("the VMM could not read its own {what} from /proc/self/smaps_rollup")
        })
    };
    ready.read(Metric::VmmRss, own(report.vmm_rss_bytes, "Rss"));
    ready.read(Metric::VmmPss, own(report.vmm_pss_bytes, "Pss"));
    let reasons = report.exit_reasons;
    ready.read(Metric::Exits, Ok(report.exits as f64));
    ready.read(Metric::ExitsIo, Ok(reasons.io as f64));
    ready.read(Metric::ExitsMmio, Ok(reasons.mmio as f64));
    ready.read(Metric::ExitsOther, Ok(reasons.other as f64));
}

/// The readings of a Linux guest's run, from the VMM's report and what
/// the guest's `/init` said. Its memory held is the VMM's own PSS, read
/// by the VMM after ready (Linux guests are not held at ready).
pub fn measure_linux(report: &VmReport, view: &GuestView, kind: LinuxGuestKind) -> Ready {
    let mut ready = Ready::default();
    read_report(&mut ready, report, u64::from(kind.mem_mib()) << 20);
    ready.read(
        Metric::MemoryPss,
        report.vmm_pss_bytes.map(|b| b as f64).ok_or_else(|| {
            "the VMM could not read its own Pss from /proc/self/smaps_rollup".to_owned()
        }),
    );
    let guest = |v: Option<u64>, what: &str| {
        v.map(|b| b as f64)
            .ok_or_else(|| format!("the guest's /init reported no {what}"))
    };
    ready.read(
        Metric::GuestMemTotal,
        guest(view.mem_total_bytes, "MemTotal"),
    );
    ready.read(
        Metric::GuestMemAvailable,
        guest(view.mem_available_bytes, "MemAvailable"),
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

/// The readings of a run of the tiny guest (its memory held is read by
/// the server while the VM is held at ready, see `super::KvmRuntime`).
pub fn measure_tiny(report: &VmReport) -> Ready {
    let mut ready = Ready::default();
    read_report(&mut ready, report, report.mem_bytes as u64);
    ready.read(
        Metric::AppRing3,
        report
            .app_cycles
            .map(|cycles| (cycles as f64 * 1000.0 / report.tsc_khz.max(1) as f64).round())
            .ok_or_else(|| "the guest's app reported no cycle count".to_owned()),
    );
    ready.fact(
        FactKey::KernelInside,
        "Kernel inside the VM",
        "stacklab-guest, its own kernel (not the host's)".into(),
        "the VM boots the guest image it was given; the host kernel is not shared",
    );
    ready
}
