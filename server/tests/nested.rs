//! The Linux-guest path end to end under nested emulation: QEMU (TCG,
//! `-cpu max`, no KVM of its own) boots Debian's cloud kernel, loads `kvm`
//! and `kvm-amd` inside, and runs our static `stacklab-vmm`, which boots
//! the same kernel again as its guest and must receive the guest's
//! boot-complete write. This host's own KVM (nested, kvm-pvm) cannot boot
//! Linux; this is how that code is proven to work.
//!
//! Needs `stacklab linux build` (./dev test runs it) and qemu-system-x86.
//! Timings printed here are emulated: a correctness check, not a benchmark.

use stacklab_api::Phase;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stacklab_api::{FactKey, Metric};
use stacklab_server::backends::kvm::{measure_linux, LinuxArtifacts, LinuxGuestKind};
use stacklab_server::tools::nested::run_nested;
use stacklab_vmm::protocol::Line;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The archives, or why the test cannot run (a failure in CI).
fn artifacts(guest: LinuxGuestKind) -> Option<LinuxArtifacts> {
    let artifacts = LinuxArtifacts::in_data_dir(&repo().join("data"));
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = if !qemu {
        "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".to_owned()
    } else if !artifacts.nested_initrd(guest).is_file() {
        format!(
            "{} is missing: run `stacklab linux build` (./dev test does)",
            artifacts.nested_initrd(guest).display()
        )
    } else {
        return Some(artifacts);
    };
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// The steps every Linux guest goes through up to userspace.
const BOOT: [Phase; 9] = [
    Phase::Jailed,
    Phase::KvmOpened,
    Phase::VmCreated,
    Phase::MemoryMapped,
    Phase::KernelLoaded,
    Phase::VcpuCreated,
    Phase::FirstExit,
    Phase::FirstConsole,
    Phase::Ready,
];

#[test]
fn our_vmm_boots_a_linux_guest_to_userspace_under_nested_emulation() {
    check_nested(
        LinuxGuestKind::Plain,
        &[&BOOT[..], &[Phase::GuestMeminfo, Phase::Reset]].concat(),
    );
}

/// The guide's VM: PostgreSQL 15 inside the Linux guest, ready after
/// `SELECT 1` over the guest's Unix socket.
#[test]
fn postgres_runs_inside_a_linux_guest_under_nested_emulation() {
    check_nested(
        LinuxGuestKind::Postgres,
        &[
            &BOOT[..],
            &[
                Phase::GuestMeminfo,
                Phase::GuestInit,
                Phase::PostgresReady,
                Phase::GuestInit,
                Phase::GuestMeminfo,
                Phase::Reset,
            ],
        ]
        .concat(),
    );
}

/// One emulated machine at a time: two software-emulated CPUs on a 2-core
/// host starve each other's timers, and the runs are about a minute each.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_nested(kind: LinuxGuestKind, want: &[Phase]) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (guest_name, mem_mib) = (kind.name(), kind.mem_mib());
    let Some(artifacts) = artifacts(kind) else {
        return;
    };
    let run =
        run_nested(&artifacts, kind, Duration::from_secs(420)).unwrap_or_else(|e| panic!("{e:#}"));
    let fail = |what: &str| -> ! {
        panic!(
            "{what}; harness console:\n{}",
            stacklab_vmm::guests::linux::tail(&run.console, 40)
        )
    };
    if run.vmm_status != 0 {
        fail(&format!("stacklab-vmm exited with {}", run.vmm_status));
    }
    let phases: Vec<Phase> = run
        .lines
        .iter()
        .filter_map(|l| match l {
            Line::Event(e) => Some(e.phase),
            _ => None,
        })
        .collect();
    if phases != want {
        fail(&format!("steps {phases:?}, expected {want:?}"));
    }
    let Some(Line::Done {
        report,
        guest: Some(guest),
        vmm_rss_bytes,
        ..
    }) = run.lines.last()
    else {
        fail("the last line is not the VMM's result");
    };
    // The guest saw its own RAM: less than configured (the kernel keeps
    // some), but most of it.
    let configured = u64::from(mem_mib) << 20;
    let total = guest.mem_total_bytes.expect("MemTotal reported");
    let available = guest.mem_available_bytes.expect("MemAvailable reported");
    assert!(
        total < configured && total > configured / 2,
        "MemTotal {total} of {configured}"
    );
    assert!(available > 0 && available < total);
    // The guest runs the kernel we gave it: the release in /init's `uname
    // -r` is the one the kernel package is named after.
    let release = guest.kernel_release.clone().expect("uname -r reported");
    let modules_dir = std::fs::read_dir(repo().join("data/linux/debs"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(&release));
    assert!(modules_dir, "guest kernel {release} is the packaged one");
    assert!(
        report.console.contains("stacklab: meminfo"),
        "{}",
        report.console
    );
    assert!(vmm_rss_bytes.is_some_and(|b| b > 0));
    // The figures the server would show a learner for this run, each with
    // its "how": the VMM's steps placed on one clock, its readings, and the
    // engine's derive step, as for a run through the server.
    let first = report.events.first().map_or(0, |e| e.mono_ns);
    let events: Vec<stacklab_api::RunEvent> = report
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| stacklab_api::RunEvent {
            seq: i as u32,
            at_us: (e.mono_ns - first) / 1000,
            kind: stacklab_server::backends::phase_event(e.phase, e.detail.clone(), None),
        })
        .collect();
    let demo = match kind {
        LinuxGuestKind::Postgres => stacklab_api::DemoId::PostgresVm,
        _ => stacklab_api::DemoId::LinuxVm,
    };
    let readings = measure_linux(report, guest, kind);
    let (measurements, _missing) =
        stacklab_server::engine::derive::derive(demo, &events, &readings);
    let mut keys = vec![
        Metric::CreateToReady,
        Metric::HypervisorSetup,
        Metric::GuestBoot,
        Metric::GuestRam,
        Metric::GuestMemTotal,
        Metric::GuestMemAvailable,
        Metric::GuestTouched,
        Metric::VmmRss,
        Metric::VmmPss,
        Metric::Exits,
        Metric::MemoryHeld,
    ];
    if kind == LinuxGuestKind::Postgres {
        keys.extend([Metric::PostgresStart, Metric::CreateToPostgres]);
    }
    for key in keys {
        let m = measurements
            .iter()
            .find(|m| m.key == key.into())
            .unwrap_or_else(|| panic!("no {key} among {measurements:?}"));
        assert!(m.value > 0.0 && !m.how.is_empty(), "{m:?}");
    }
    let inside = readings
        .facts
        .iter()
        .find(|f| f.key == FactKey::KernelInside)
        .unwrap();
    assert_eq!(inside.value, release);
    // A span the run did not have is said so, never printed as a number.
    let span = |a: Phase, b: Phase| {
        report.span(a, b).map_or("none".to_owned(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    eprintln!(
        "nested {guest_name} (emulated, not a performance figure): QEMU wall {:.1} s; inner VM: vCPU created → userspace {}, userspace → PostgreSQL ready {}, → reset {}; {} exits; guest MemTotal {} KiB, MemAvailable {} KiB; VMM RSS {} KiB",
        run.wall.as_secs_f64(),
        span(Phase::VcpuCreated, Phase::Ready),
        span(Phase::Ready, Phase::PostgresReady),
        span(Phase::VcpuCreated, Phase::Reset),
        report.exits,
        total >> 10,
        available >> 10,
        vmm_rss_bytes.unwrap_or(0) >> 10
    );
}
