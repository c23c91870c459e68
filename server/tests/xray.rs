//! The x-ray of a run (issue 25), against the real thing: a PostgreSQL
//! container checked against the test's own `/proc/self/ns` (the same
//! host as the server's), `uname -r` and the container's specification; a
//! micro-VM's KVM calls, exits, CPUID signature and KVM's own events.

mod common;
use common::{kvm_present, run_over_http};
use std::time::Duration;

use stacklab_api::{EventKind, Metric, Phase, RunEvent, RunRecord, XRay, XRayKey, XRayOf};
use stacklab_server::backends::docker::ContainerSpec;
use stacklab_server::{AppState, Settings};

/// The run's x-ray event (exactly one).
fn xray_of(events: &[RunEvent]) -> (&XRay, u64) {
    let found: Vec<(&XRay, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::XRay { xray } => Some((xray, e.at_us)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one x-ray per run: {events:#?}");
    found[0]
}

fn inode(text: &str) -> u64 {
    let inner = text.split('[').nth(1).expect("ns:[inode]");
    inner.split(']').next().unwrap().parse().unwrap()
}

fn own_ns(ns: &str) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    inode(&link.to_string_lossy())
}

fn phase_at(events: &[RunEvent], phase: Phase) -> u64 {
    stacklab_api::phase_at(events, phase).unwrap_or_else(|| panic!("{phase:?} reached"))
}

/// Whether this process's tracefs instance for `set` still exists.
fn instance_left(set: &str) -> bool {
    std::path::Path::new(&format!(
        "/sys/kernel/tracing/instances/stacklab-{}-{set}",
        std::process::id()
    ))
    .exists()
}

/// A run of `demo` that asks for the kernel-event capture.
async fn traced(state: &AppState, demo: &str) -> (String, Vec<RunEvent>) {
    let body = format!(r#"{{"demo":"{demo}","trace":true}}"#);
    common::run_request_over_http(state, &body, Duration::from_secs(90)).await
}

async fn record(state: &AppState, id: &str) -> RunRecord {
    let (_, _, body) = common::get(state.clone(), &format!("/api/runs/{id}")).await;
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_container_is_xrayed_against_the_host_and_its_spec() {
    let state = AppState::new(None, Settings::default());
    let (id, events) = traced(&state, "postgres-container").await;
    common::ready_outcome(&events);
    let (x, at) = xray_of(&events);
    assert_eq!(x.of, Some(XRayOf::Container));
    assert!(
        at >= phase_at(&events, Phase::Ready),
        "read at ready, while held"
    );

    // The kernel: the host's own string, exactly.
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = x.row(XRayKey::KernelRelease).expect("a kernel row");
    assert_eq!(release.inside.as_deref(), Some(host_release.trim()));
    assert_eq!(release.host.as_deref(), Some(host_release.trim()));
    assert_eq!(release.same, Some(true));
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = x.row(XRayKey::Hostname).unwrap();
    assert_ne!(
        name.inside.as_deref(),
        Some(host_name.trim()),
        "its own UTS name"
    );

    // Namespaces against this process's own (the same host as the server).
    for (ns, key) in [
        ("pid", XRayKey::NsPid),
        ("net", XRayKey::NsNet),
        ("mnt", XRayKey::NsMnt),
        ("uts", XRayKey::NsUts),
        ("ipc", XRayKey::NsIpc),
    ] {
        let row = x.row(key).unwrap_or_else(|| panic!("{ns} row"));
        let inside = inode(row.inside.as_deref().unwrap());
        assert_ne!(inside, own_ns(ns), "{ns}: the container's own");
        assert_eq!(
            inode(row.host.as_deref().unwrap()),
            own_ns(ns),
            "{ns}: host side"
        );
        assert_eq!(row.same, Some(false));
    }
    let user = x.row(XRayKey::NsUser).unwrap();
    assert_eq!(
        inode(user.inside.as_deref().unwrap()),
        own_ns("user"),
        "the user namespace is shared"
    );
    assert_eq!(user.same, Some(true));

    // Limits and locks, against the specification.
    let spec = ContainerSpec::postgres_demo();
    let seccomp = x.row(XRayKey::Seccomp).unwrap();
    assert!(
        seccomp.inside.as_deref().unwrap().starts_with("2:"),
        "{seccomp:?}"
    );
    let caps = x.row(XRayKey::CapEff).unwrap();
    assert!(
        caps.inside.as_deref().unwrap().starts_with("none"),
        "{caps:?}"
    );
    assert_eq!(
        x.row(XRayKey::NoNewPrivs).unwrap().inside.as_deref(),
        Some("1")
    );
    let memory = x.row(XRayKey::MemoryLimit).unwrap();
    let limit = spec.memory_bytes.to_string();
    assert!(
        memory
            .host
            .as_deref()
            .unwrap()
            .contains(&format!("= {limit}")),
        "{memory:?}"
    );
    assert!(
        memory.inside.as_deref().unwrap().contains(&limit),
        "{memory:?}"
    );
    let pids = x.row(XRayKey::PidsLimit).unwrap();
    assert!(
        pids.host
            .as_deref()
            .unwrap()
            .contains(&format!("= {}", spec.pids_limit)),
        "{pids:?}"
    );
    let root = x.row(XRayKey::RootMount).unwrap();
    assert!(
        root.inside.as_deref().unwrap().contains("read-only"),
        "{root:?}"
    );
    let tmpfs = x.row(XRayKey::TmpfsMounts).unwrap();
    assert!(
        tmpfs
            .inside
            .as_deref()
            .unwrap()
            .contains("/var/lib/postgresql/data"),
        "{tmpfs:?}"
    );

    // The calls that built it, inside the platform's share.
    assert!(
        x.missing(XRayKey::PlatformCalls).is_none(),
        "{:?}",
        x.missing
    );
    let (slot, started) = (
        phase_at(&events, Phase::SlotGranted),
        phase_at(&events, Phase::ContainerStarted),
    );
    let names: Vec<&str> = x.calls.iter().map(|c| c.name.as_str()).collect();
    let namespaces_made = x
        .calls
        .iter()
        .any(|c| (c.name == "unshare" || c.name == "clone") && c.detail.contains("CLONE_NEWPID"));
    assert!(
        namespaces_made,
        "unshare/clone with new namespaces: {:#?}",
        x.calls
    );
    for name in ["pivot_root", "execve", "sethostname", "mount"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for call in &x.calls {
        assert!(
            (slot..=started).contains(&call.at_us),
            "{call:?} within the platform's share {slot}..={started} µs"
        );
    }
    let entry = x.calls.iter().rfind(|c| c.name == "execve").unwrap();
    assert!(
        entry.detail.contains("entrypoint"),
        "the last is the entrypoint's: {entry:?}"
    );
    eprintln!(
        "{} calls, platform share {} µs: {:?}",
        x.calls.len(),
        started - slot,
        names
    );

    // The capture is gone with the run: no tracepoint left on, no buffer kept.
    assert!(
        !instance_left("syscalls"),
        "the syscalls instance was removed"
    );

    // Kept with the run.
    let kept = record(&state, &id).await;
    assert_eq!(
        xray_of(&kept.events).0,
        x,
        "the stored record holds the same x-ray"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_micro_vm_is_xrayed_from_both_sides() {
    if !kvm_present() {
        return;
    }
    let state = AppState::new(None, Settings::default());
    let (_, events) = traced(&state, "micro-vm").await;
    let outcome = common::ready_outcome(&events);
    let (x, _) = xray_of(&events);
    assert_eq!(x.of, Some(XRayOf::Vm));

    // The KVM calls in order, on the run's clock inside the run.
    let names: Vec<&str> = x.calls.iter().map(|c| c.name.as_str()).collect();
    let order = [
        "KVM_CREATE_VM",
        "mmap + KVM_SET_USER_MEMORY_REGION",
        "KVM_CREATE_VCPU",
        "KVM_SET_SREGS + KVM_SET_REGS (each after its GET)",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|n| {
            names
                .iter()
                .position(|m| m == n)
                .unwrap_or_else(|| panic!("{n} in {names:?}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    assert!(names.last().unwrap().starts_with("KVM_RUN"), "{names:?}");
    let (slot, ready) = (
        phase_at(&events, Phase::SlotGranted),
        phase_at(&events, Phase::Ready),
    );
    assert!(
        x.calls.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "{:?}",
        x.calls
    );
    for c in &x.calls {
        assert!(
            (slot..=ready).contains(&c.at_us),
            "{c:?} in {slot}..={ready}"
        );
        assert!(c.took_us.is_some());
    }
    let created = x.calls[at[0]].at_us;
    assert!(created >= phase_at(&events, Phase::KvmOpened).saturating_sub(1_000));

    // Exits by reason: the same as the run's own figures.
    for (key, metric) in [
        (XRayKey::ExitsIo, Metric::ExitsIo),
        (XRayKey::ExitsMmio, Metric::ExitsMmio),
        (XRayKey::ExitsOther, Metric::ExitsOther),
    ] {
        assert_eq!(
            x.count(key).map(|v| v as f64),
            outcome.value(metric),
            "{key}"
        );
    }

    // What the guest sees.
    let hv = x.row(XRayKey::Hypervisor).unwrap();
    assert_eq!(hv.inside.as_deref(), Some("KVMKVMKVM"), "{hv:?}");
    let kernel = x.row(XRayKey::GuestKernel).unwrap();
    assert!(kernel
        .inside
        .as_deref()
        .unwrap()
        .starts_with("stacklab-guest "));
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(kernel.host.as_deref(), Some(host_release.trim()));
    assert_eq!(kernel.same, Some(false));
    assert!(x
        .row(XRayKey::Privilege)
        .unwrap()
        .inside
        .as_deref()
        .unwrap()
        .starts_with("ring 0"));
    let host = |key| x.row(key).unwrap().host.clone().unwrap();
    let jail = host(XRayKey::VmmNamespaces);
    assert!(jail.contains("its own: pid, net, mnt"), "{jail}");
    let seccomp = host(XRayKey::VmmSeccomp);
    assert!(seccomp.starts_with("Seccomp 2:"), "{seccomp}");
    // The jailed VMM, read from its NSpid: PID 1 of its own namespace.
    let vmm = host(XRayKey::VmmProcess);
    assert!(vmm.contains(": PID 1 in its own PID namespace"), "{vmm}");

    // KVM's own events: each counted or missing with a reason; returns
    // to the VMM as KVM saw them match the exits the VMM counted.
    for key in [
        XRayKey::KvmExit,
        XRayKey::KvmEmulateInsn,
        XRayKey::KvmPio,
        XRayKey::KvmMmio,
        XRayKey::KvmUserspaceExit,
        XRayKey::KvmPageFault,
        XRayKey::KvmSpte,
        XRayKey::KvmPagetableWalk,
    ] {
        let counted = x.count(key);
        let missing = x.missing(key);
        assert!(
            counted.is_some() != missing.is_some(),
            "{key}: {counted:?} / {missing:?}"
        );
        eprintln!("{key}: {counted:?} {missing:?}");
    }
    if let Some(n) = x.count(XRayKey::KvmUserspaceExit) {
        let exits = outcome.value(Metric::Exits).unwrap() as u64;
        assert!(
            n >= exits,
            "KVM saw {n} returns to user space, the VMM {exits} exits"
        );
    }
    assert!(!instance_left("kvm"), "the kvm instance was removed");
    let faults = x.count(XRayKey::KvmPageFault).unwrap_or(0);
    let mapped = x.count(XRayKey::KvmSpte).unwrap_or(0);
    if x.missing(XRayKey::KvmPageFault).is_none() || x.missing(XRayKey::KvmSpte).is_none() {
        assert!(
            faults + mapped > 0,
            "a guest that touched memory had it mapped: {:?}",
            x.counts
        );
    }
}

/// The capture's cost, measured in one sitting: runs with and without
/// the kernel-event capture alternate (hello-container's platform share,
/// the micro-VM's request → ready), medians compared. A measurement, not
/// a check: `cargo test -p stacklab-server --test xray -- --ignored
/// --nocapture capture_cost`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement of about a minute; run it by name"]
async fn capture_cost() {
    let n: usize = std::env::var("XRAY_COST_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let state = AppState::new(None, Settings::default());
    for (demo, from, to) in [
        (
            "hello-container",
            Phase::SlotGranted,
            Phase::ContainerStarted,
        ),
        (
            "postgres-container",
            Phase::SlotGranted,
            Phase::ContainerStarted,
        ),
        ("micro-vm", Phase::Accepted, Phase::Ready),
    ] {
        let mut on = Vec::new();
        let mut off = Vec::new();
        // One untimed run each way first (page cache, instance creation).
        for i in 0..(n + 1) * 2 {
            let with = i % 2 == 0;
            // Under the run-request pace (one per 2 s after a burst).
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let (_, events) = if with {
                traced(&state, demo).await
            } else {
                run_over_http(&state, demo, Duration::from_secs(90)).await
            };
            common::ready_outcome(&events);
            let span =
                (phase_at(&events, to) - stacklab_api::phase_at(&events, from).unwrap_or(0)) as f64;
            if i >= 2 {
                if with {
                    on.push(span)
                } else {
                    off.push(span)
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (m_on, m_off) = (median(&mut on), median(&mut off));
        println!(
            "{demo}: {from:?} → {to:?} median of {n}: with capture {:.2} ms, without {:.2} ms: {:+.1} % ({:+.2} ms)",
            m_on / 1000.0,
            m_off / 1000.0,
            (m_on / m_off - 1.0) * 100.0,
            (m_on - m_off) / 1000.0
        );
    }
}

/// A run that does not ask for the capture still has its x-ray, and says
/// why its calls are absent (never an empty list passed off as "none").
#[tokio::test(flavor = "multi_thread")]
async fn an_untraced_run_says_why_its_calls_are_missing() {
    let state = AppState::new(None, Settings::default());
    let (_, events) = run_over_http(&state, "hello-container", Duration::from_secs(60)).await;
    common::ready_outcome(&events);
    let (x, at) = xray_of(&events);
    let read_ms = (at - phase_at(&events, Phase::Ready)) as f64 / 1000.0;
    eprintln!("x-ray read in {read_ms:.1} ms after ready");
    assert!(x.calls.is_empty());
    assert!(
        x.missing(XRayKey::PlatformCalls)
            .unwrap()
            .contains("did not ask"),
        "{:?}",
        x.missing
    );
    let release = x.row(XRayKey::KernelRelease).unwrap();
    assert_eq!(release.same, Some(true), "{release:?}");
    let net = x.row(XRayKey::Interfaces).unwrap();
    assert_eq!(
        net.inside.as_deref(),
        Some("lo"),
        "hello-container has no network: {net:?}"
    );
}
