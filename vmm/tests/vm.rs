//! The VMM against real KVM and the real guest kernel
//! (`cargo build -p stacklab-guest --profile guest --target x86_64-unknown-none`;
//! `./dev test` builds it).

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use stacklab_abi::mode;
use stacklab_api::Phase;
use stacklab_vmm::report::VmReport;
use stacklab_vmm::{run, VmConfig, VmError};

fn guest() -> Option<Vec<u8>> {
    if !Path::new("/dev/kvm").exists() {
        // CI on this project's machines has /dev/kvm, so this never hides a failure there.
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/kvm is missing on a CI machine"
        );
        eprintln!("skipped: /dev/kvm is absent on this host");
        return None;
    }
    let path = std::env::var_os("STACKLAB_GUEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-none/guest/stacklab-guest")
        });
    Some(std::fs::read(&path).unwrap_or_else(|e| {
        panic!("guest image {} missing ({e}): build it with `cargo build -p stacklab-guest --profile guest --target x86_64-unknown-none`", path.display())
    }))
}

/// The tests of this file run on parallel threads of one process; the
/// leak test measures that process, so it runs with no other VM in it.
static VMS: RwLock<()> = RwLock::new(());

/// Held by a test that runs VMs beside others.
fn beside_others() -> RwLockReadGuard<'static, ()> {
    VMS.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by the test that must have the process to itself.
fn alone() -> RwLockWriteGuard<'static, ()> {
    VMS.write().unwrap_or_else(|p| p.into_inner())
}

/// One run, torn down before it returns.
fn boot(image: &[u8], config: &VmConfig) -> Result<VmReport, VmError> {
    run(image, config, &mut |_| {}).map(|finished| {
        let report = finished.report.clone();
        finished.tear_down();
        report
    })
}

#[test]
fn the_guest_reaches_every_milestone_in_order_and_ready() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let mut seen = Vec::new();
    let report = run(&image, &VmConfig::default(), &mut |e| seen.push(e.phase))
        .expect("boots")
        .report;
    let phases: Vec<Phase> = report.events.iter().map(|e| e.phase).collect();
    assert_eq!(phases, seen, "the callback saw every step as it happened");
    assert_eq!(phases, stacklab_vmm::guests::tiny::STEPS);
    assert!(report
        .events
        .windows(2)
        .all(|w| w[0].mono_ns <= w[1].mono_ns));
    let guest_us: Vec<f64> = report.events.iter().filter_map(|e| e.guest_us).collect();
    assert!(
        guest_us.windows(2).all(|w| w[0] <= w[1]),
        "guest TSC only goes forward: {guest_us:?}"
    );

    let lines: Vec<&str> = report.console.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "stacklab-guest: long mode",
            "stacklab-guest: idt, timer tick",
            "stacklab-guest: app (ring 3) returned 0xe5a041380d0a6c28",
            "stacklab-guest: ready"
        ],
        "the ring-3 app's arithmetic has exactly one right answer"
    );
    // Nothing after ready unless the x-ray line is asked for.
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(report.app_cycles.unwrap() > 0);
    assert!(
        report
            .touched_bytes
            .is_some_and(|t| t > 0 && t < report.mem_bytes / 4),
        "{:?}",
        report.touched_bytes
    );
    assert!(report.tsc_khz > 100_000);
}

/// Asked for, the guest writes after ready what it sees of its machine
/// (the x-ray's inside column): a hypervisor's signature, ring 0, and the
/// RAM the VMM gave it.
#[test]
fn the_guest_writes_its_xray_line_when_asked() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let config = VmConfig {
        mode: mode::XRAY_LINE,
        ..VmConfig::default()
    };
    let report = boot(&image, &config).expect("boots");
    let lines: Vec<&str> = report.console.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[3], "stacklab-guest: ready");
    let xray = lines[4];
    assert!(xray.starts_with(stacklab_abi::XRAY_LINE_PREFIX), "{xray}");
    assert!(xray.contains(" hypervisor=KVMKVMKVM cpl=0 "), "{xray}");
    assert!(
        xray.contains(&format!(" ram={} ", report.mem_bytes)),
        "{xray}"
    );
    // Through the 64-bit door, the page tables in use are the VMM's.
    assert!(xray.contains(" tables=vmm "), "{xray}");
}

#[test]
fn memory_is_capped_and_small_guests_work() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let too_big = VmConfig {
        mem_bytes: 512 << 20,
        ..VmConfig::default()
    };
    assert!(matches!(
        boot(&image, &too_big),
        Err(VmError::MemorySize { .. })
    ));
    let small = VmConfig {
        mem_bytes: 4 << 20,
        ..VmConfig::default()
    };
    assert_eq!(boot(&image, &small).unwrap().mem_bytes, 4 << 20);
}

#[test]
fn a_guest_spinning_in_ring_0_is_stopped_at_the_deadline() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let config = VmConfig {
        mode: mode::SPIN,
        deadline: Duration::from_millis(300),
        ..VmConfig::default()
    };
    let start = Instant::now();
    let err = boot(&image, &config).unwrap_err();
    assert!(matches!(err, VmError::Deadline(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "the guest did not become ready within 300ms"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "stopped {:?} after start",
        start.elapsed()
    );
}

#[test]
fn a_triple_fault_is_reported_as_such() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let config = VmConfig {
        mode: mode::TRIPLE_FAULT,
        ..VmConfig::default()
    };
    let err = boot(&image, &config).unwrap_err();
    assert!(matches!(err, VmError::TripleFault), "{err}");
    assert_eq!(err.code(), stacklab_api::ErrorCode::TripleFault);
}

#[test]
fn a_console_flood_is_cut_off() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let config = VmConfig {
        mode: mode::CONSOLE_FLOOD,
        console_limit: 4096,
        ..VmConfig::default()
    };
    let err = boot(&image, &config).unwrap_err();
    assert!(matches!(err, VmError::ConsoleFlood(4096)), "{err}");
}

#[test]
fn an_unknown_port_is_named() {
    let _vms = beside_others();
    let Some(image) = guest() else { return };
    let config = VmConfig {
        mode: mode::UNKNOWN_PORT,
        ..VmConfig::default()
    };
    let err = boot(&image, &config).unwrap_err();
    assert!(
        matches!(
            err,
            VmError::UnknownIo {
                port: 0x1234,
                write: true
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the guest wrote to I/O port 0x1234, which no device owns"
    );
}

fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 1,000 VMs in a row leave nothing behind: no file descriptor, thread or
/// memory growth. The process is this test's alone while it runs (the
/// other tests wait on `VMS`), so what grows is its own.
#[test]
fn a_thousand_runs_leak_nothing() {
    let _alone = alone();
    let Some(image) = guest() else { return };
    let config = VmConfig::default();
    for _ in 0..20 {
        boot(&image, &config).unwrap();
    }
    let (fds, rss) = (open_fds(), proc_status("VmRSS:"));
    let threads_before = proc_status("Threads:");
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..1000 {
        let t = Instant::now();
        let report = boot(&image, &config).unwrap_or_else(|e| panic!("run {i}: {e}"));
        if i == 0 {
            let first = report.events.first().unwrap().mono_ns;
            let ready = report
                .events
                .iter()
                .find(|e| e.phase == Phase::Ready)
                .unwrap()
                .mono_ns;
            eprintln!(
                "one run: create->ready {:?}, whole run() incl. teardown {:?}",
                Duration::from_nanos(ready - first),
                t.elapsed()
            );
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest run {slowest:?}");
    let elapsed = start.elapsed();
    eprintln!(
        "1000 runs in {elapsed:?} ({:.0} runs/s on one thread)",
        1000.0 / elapsed.as_secs_f64()
    );
    // The test harness may start threads for tests that then wait on
    // `VMS`: a few, but no growth proportional to 1,000.
    assert!(open_fds() <= fds, "fds: {} -> {}", fds, open_fds());
    assert!(proc_status("Threads:") <= threads_before + 12);
    let grown_kib = proc_status("VmRSS:").saturating_sub(rss);
    assert!(
        grown_kib < 16 * 1024,
        "RSS grew by {grown_kib} KiB over 1,000 runs"
    );
}

/// The floor the bench measures every VM against: the bare KVM sequence
/// runs to its first exit and tears down, each step timed.
#[test]
fn the_floor_runs_to_its_first_exit() {
    let _vms = beside_others();
    if guest().is_none() {
        return;
    }
    let floor = stacklab_vmm::floor::run_floor(16 << 20).unwrap();
    assert!(floor.open_to_first_exit > floor.set_memory, "{floor:?}");
    assert!(
        floor.open_to_first_exit < Duration::from_secs(1),
        "{floor:?}"
    );
    assert!(floor.teardown > Duration::ZERO, "{floor:?}");
}

/// One guest file for every VMM: QEMU's microvm boots the very image this
/// VMM boots (through the same PVH note) and it ends the run itself.
#[test]
fn qemu_boots_the_same_guest_file() {
    let _vms = beside_others();
    if guest().is_none() {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-none/guest/stacklab-guest");
    let run = stacklab_vmm::qemu::microvm(&path, "stdio").output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "qemu-system-x86_64: {e}");
            eprintln!("skipped: qemu-system-x86_64 is not installed ({e})");
            return;
        }
    };
    // isa-debug-exit: the guest wrote 0, QEMU exits with (0 << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("stacklab-guest: ready"), "{console}");
}

/// A mistyped `--mode` is a usage error, not a normal boot (the guest
/// would ignore an unknown flag and boot normally on an unknown mode).
#[test]
fn an_unknown_mode_or_flag_is_refused() {
    for word in ["9", "262144"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stacklab-vmm"))
            .args(["--image", "/nonexistent", "--mode", word])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--mode {word}");
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["error"]["code"], "usage", "--mode {word}: {line}");
    }
}
