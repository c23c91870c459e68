//! The micro-VM demo through the HTTP API: real KVM, the real guest, one
//! `stacklab-vmm` process per run (built by `cargo test` next to this test;
//! the guest by `./dev test`).

mod common;
use common::{kvm_present, run_over_http};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use stacklab_abi::mode;
use stacklab_api::{
    DemoId, DensityMetric, ErrorCode, EventKind, Key, Metric, Outcome, Phase, RunPage, RunRecord,
    RunState, RunSummary, Unit,
};
use stacklab_server::backends::kvm::{KvmRuntime, VmArtifacts};
use stacklab_server::engine::{Queue, Run, Runs};
use stacklab_server::{AppState, Settings};
use stacklab_vmm::VmConfig;
use tower::ServiceExt;

/// VM tests share the host; the density test that compares memory across
/// steps takes it alone (shared program pages are split among every VMM
/// alive, so another test's VMMs would move its figures).
/// (tokio's lock: the guards are held across awaits, and each test has a
/// runtime of its own.)
static VMS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn beside_others() -> tokio::sync::RwLockReadGuard<'static, ()> {
    VMS.read().await
}

async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    VMS.write().await
}

/// The PID of the VMM process a run started (named in its `vmm_started`
/// phase), once it has.
fn vmm_pid(record: &RunRecord) -> Option<u32> {
    record.events.iter().find_map(|e| match &e.kind {
        EventKind::Phase {
            phase: Phase::VmmStarted,
            detail,
            ..
        } => detail
            .split("host process ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok(),
        _ => None,
    })
}

/// Starts a micro-VM whose guest spins forever and whose VMM deadline is
/// a minute away, with the server's run deadline `budget`.
fn spinning_vm(budget: Duration) -> (Arc<Runs>, Arc<Run>) {
    let artifacts = VmArtifacts::locate().expect("stacklab-vmm and the guest are built");
    let config = VmConfig {
        mode: mode::SPIN,
        deadline: Duration::from_secs(60),
        ..VmConfig::default()
    };
    let runs = Arc::new(Runs::default());
    let run = runs.start(
        DemoId::MicroVm,
        Arc::new(KvmRuntime::new(artifacts, config)),
        Arc::new(Queue::new(1)),
        budget,
    );
    (runs, run)
}

/// Whether the VMM process a run started still exists, even as a zombie.
fn vmm_alive(record: &RunRecord) -> bool {
    let pid = vmm_pid(record).expect("the run names its VMM process");
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(stacklab-vmm)"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_micro_vm_run_streams_the_vmm_and_guest_phases_in_order() {
    if !kvm_present() {
        return;
    }
    let _vms = beside_others().await;
    let state = AppState::new(None, Settings::default());
    let (id, events) = run_over_http(&state, "micro-vm", Duration::from_secs(30)).await;
    let record = state.runs.get(&id).unwrap().record();
    assert_eq!(record.events, events);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.outcome());
    let phases = common::phases(&events);
    assert_eq!(
        phases,
        [
            &[
                Phase::Accepted,
                Phase::SlotGranted,
                Phase::VmmStarted,
                Phase::Jailed
            ][..],
            &stacklab_vmm::guests::tiny::STEPS[..],
        ]
        .concat()
    );
    assert!(
        events.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "one clock for server and VMM: the server's spawn request comes before the VMM's first step"
    );
    common::assert_timed_from_the_slot(&events, DemoId::MicroVm);
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log { line } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(logs.last(), Some(&"stacklab-guest: ready"));
    let Some(Outcome::Ready { measurements, .. }) = record.outcome() else {
        panic!()
    };
    let get = |k: Metric| {
        measurements
            .iter()
            .find(|m| m.key == k.into())
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(get(Metric::GuestRam).value, 16.0 * 1048576.0);
    assert!(get(Metric::GuestTouched).value < get(Metric::GuestRam).value);
    assert!(get(Metric::VmmRss).value > 0.0);
    assert_eq!(get(Metric::CreateToReady).unit, Unit::Micros);
    // Exits to the VMM, by reason: the guest's milestones are I/O port
    // writes (the 64-bit entry, IDT, timer, ring 3 in and out: five) and its
    // ready signal one MMIO write; the reasons add up to the count.
    assert_eq!(get(Metric::ExitsMmio).value, 1.0, "one boot-complete write");
    assert!(
        get(Metric::ExitsIo).value >= 5.0,
        "{}",
        get(Metric::ExitsIo).value
    );
    assert_eq!(
        get(Metric::ExitsIo).value + get(Metric::ExitsMmio).value + get(Metric::ExitsOther).value,
        get(Metric::Exits).value
    );
    // Memory held: the VMM's PSS, read by the server while it was held.
    let held = get(Metric::MemoryHeld).value;
    assert!(held > 0.0 && held < 8.0 * 1048576.0, "{held}");
    assert!(
        get(Metric::HypervisorSetup).value + get(Metric::GuestBoot).value
            <= get(Metric::CreateToReady).value * 1.01
    );
    assert!(!vmm_alive(&record), "the VMM process is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_kills_a_vmm_that_outlives_the_run_deadline() {
    if !kvm_present() {
        return;
    }
    let _vms = beside_others().await;
    // Only the server's deadline (and SIGKILL) can end this run.
    let (_runs, run) = spinning_vm(Duration::from_millis(500));
    let mut changes = run.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !run.is_finished() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the run ends soon after its deadline");
    let record: RunRecord = run.record();
    match record.outcome() {
        Some(Outcome::Failed { error }) => assert_eq!(error.code, ErrorCode::Deadline, "{error:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!vmm_alive(&record), "the VMM process was killed and reaped");
}

/// Density: 1 to 5 micro-VMs at once; every step measured several times
/// (median, least, most), memory growing with N, and the sweep kept in
/// the history and its exports.
#[tokio::test(flavor = "multi_thread")]
async fn a_density_sweep_measures_one_to_five_vms_and_lands_in_the_history() {
    if !kvm_present() {
        return;
    }
    let _vms = alone().await;
    // Shared program pages are split among every VMM on the host, so one
    // still running (another test's spinning guest lives until its own
    // 60 s deadline) would move N=1 and N=5 apart. Wait until none is left.
    let waited = std::time::Instant::now();
    loop {
        let others = std::process::Command::new("pgrep")
            .args(["-x", "stacklab-vmm"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if others.is_empty() {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(75),
            "VMM processes {others} outlived their deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if waited.elapsed() > Duration::from_millis(200) {
        eprintln!("waited {:?} for other VMMs to end", waited.elapsed());
    }
    let state = AppState::new(None, Settings::default());
    let (id, events) = run_over_http(&state, "density-micro-vm", Duration::from_secs(60)).await;
    // A run ends when its VMs are gone: the jailed VMMs too, which die a
    // moment after their waiters (seen still running, or tearing the VM
    // down, once the waiters had been reaped; the next step then shared
    // the program's pages with them and its memory read low). A zombie
    // holds no VM and no memory; reaping orphans is the init's job.
    let left = std::process::Command::new("pgrep")
        .args(["-x", "stacklab-vmm"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap();
    let left: Vec<String> = left
        .split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter(|stat| !stat.contains(") Z "))
        .collect();
    assert!(
        left.is_empty(),
        "VMMs alive after the sweep ended: {left:?}"
    );
    let record = state.runs.get(&id).unwrap().record();
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.outcome());
    let mut want = vec![Phase::Accepted, Phase::SlotGranted];
    for n in 1..=5 {
        want.push(Phase::StepStart(n));
        want.push(Phase::StepReady(n));
    }
    want.push(Phase::Ready);
    assert_eq!(common::phases(&events), want);
    let outcome = record.outcome().unwrap();
    let memory: Vec<f64> = (1..=5)
        .map(|n| {
            outcome
                .value(Key::Density(DensityMetric::MemoryTotal, n))
                .unwrap()
        })
        .collect();
    // Each step is taken several times (micro-VM steps cost
    // milliseconds): each N is the median of its samples, with the least
    // and most beside it and how many samples they are from.
    let samples = DemoId::DensityMicroVm.samples_per_step();
    assert!(samples > 1, "the micro-VM sweep repeats its steps");
    let mut least_work = 0.0;
    for n in 1..=5u32 {
        let at = |m: DensityMetric| {
            outcome
                .value(Key::Density(m, n))
                .unwrap_or_else(|| panic!("no {m}@{n}: {:?}", outcome))
        };
        let t = at(DensityMetric::AllReady);
        let (t_min, t_max) = (
            at(DensityMetric::AllReadyMin),
            at(DensityMetric::AllReadyMax),
        );
        assert!(
            t_min > 0.0 && t_min <= t && t <= t_max && t_max < 30e6,
            "all_ready@{n}: {t_min} ≤ {t} ≤ {t_max} µs"
        );
        let (m_min, m_max) = (
            at(DensityMetric::MemoryTotalMin),
            at(DensityMetric::MemoryTotalMax),
        );
        let m = memory[n as usize - 1];
        assert!(
            m_min > 0.0 && m_min <= m && m <= m_max,
            "memory_total@{n}: {m_min} ≤ {m} ≤ {m_max} B"
        );
        // Taken as often as the demo says (each sample costs
        // milliseconds, far under the sampling bound), all read.
        assert_eq!(at(DensityMetric::Samples), f64::from(samples), "N={n}");
        assert_eq!(
            at(DensityMetric::MemorySamples),
            f64::from(samples),
            "N={n}"
        );
        least_work += f64::from(samples) * t_min;
        eprintln!(
            "density (micro-VMs): N={n}: {:.1} ms ({:.1}–{:.1}), {:.2} MiB ({:.2}–{:.2}), {samples} samples",
            t / 1000.0,
            t_min / 1000.0,
            t_max / 1000.0,
            m / 1048576.0,
            m_min / 1048576.0,
            m_max / 1048576.0,
        );
    }
    // One snapshot: all five are read in one pass once all are ready, so
    // going from one to five adds four VMs' own memory (anonymous pages:
    // heap, stacks, guest RAM, read per VM in that pass) and nothing else
    // (the program's file pages are shared, counted once in both steps).
    // Not USS: pages a VM's two processes share with each other (a fork's
    // copy-on-write) are its own but not "private" to either process.
    let anon = outcome
        .value(Key::Density(DensityMetric::AnonMedian, 5))
        .expect("anonymous memory per VM at N=5");
    let added = memory[4] - memory[0];
    eprintln!(
        "density (micro-VMs): N=5 − N=1 = {:.0} KiB; 4 × one VM's anonymous memory = {:.0} KiB",
        added / 1024.0,
        4.0 * anon / 1024.0
    );
    // Each extra VM adds at least its anonymous memory, and little more:
    // measured here, about 28 KiB of file pages a VM's two processes share
    // with each other but with no other VM (Pss_File grew by 112 KiB from
    // one to five), which no per-process figure isolates. So: at least 4 ×,
    // at most 25 % above (measured 10–18 % above in nine sittings).
    assert!(
        added >= 4.0 * anon && added <= 1.25 * 4.0 * anon,
        "N=5 − N=1 = {added} B against 4 × one VM's anonymous memory = {} B",
        4.0 * anon
    );
    // Held together: every VMM waits at ready until all N are measured, so
    // five hold clearly more than one. Not five times as much: PSS splits
    // the VMM program's own pages (about 0.6 MiB here) among the VMMs
    // alive, so each one adds only its private pages (about 0.15 MiB).
    // Other tests' VMMs share those pages too, so neighbouring steps are
    // not compared.
    assert!(memory[4] > 1.25 * memory[0], "{memory:?}");
    // One VMM is well under 8 MiB (it measured 0.55 MiB RSS); five together
    // stay under 40 MiB.
    assert!(
        memory[0] < 8.0 * 1048576.0 && memory[4] < 40.0 * 1048576.0,
        "{memory:?}"
    );

    // The history lists it with its demo, and both exports carry it.
    // (The row is written just after the run reports finished.)
    let mut listed = None;
    for _ in 0..100 {
        let (status, _, body) =
            common::get_as_instructor(state.clone(), "/api/runs?limit=10").await;
        assert_eq!(status, StatusCode::OK);
        let page: RunPage = serde_json::from_str(&body).unwrap();
        listed = page
            .runs
            .into_iter()
            .find(|r| r.id == id && r.state == RunState::Succeeded);
        if listed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listed = listed.expect("the sweep is in the history");
    assert_eq!(listed.demo, DemoId::DensityMicroVm);
    // Its headline time is the whole sweep (every step, from leaving the
    // queue to the last step's end), its memory the five-at-once step's.
    assert_eq!(listed.time_to_ready_us, outcome.value(Metric::SweepTotal));
    let steps: f64 = (1..=5)
        .map(|n| {
            outcome
                .value(Key::Density(DensityMetric::AllReady, n))
                .unwrap()
        })
        .sum();
    assert!(
        listed.time_to_ready_us.unwrap() > steps,
        "the sweep ({:?} µs) holds all its steps ({steps} µs)",
        listed.time_to_ready_us
    );
    // And every sample of every step: each took at least its step's least.
    assert!(
        listed.time_to_ready_us.unwrap() > least_work,
        "the sweep ({:?} µs) holds every sample ({least_work} µs at least)",
        listed.time_to_ready_us
    );
    assert_eq!(listed.memory_bytes, Some(memory[4]));
    let (status, headers, csv) =
        common::get_as_instructor(state.clone(), "/api/runs/export?format=csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("stacklab-runs.csv"));
    let row = csv
        .lines()
        .find(|l| l.contains(&id))
        .expect("the CSV has the run");
    assert!(row.contains(",density-micro-vm,succeeded,"), "{row}");
    let (_, _, json) =
        common::get_as_instructor(state.clone(), "/api/runs/export?format=json").await;
    let all: Vec<RunSummary> = serde_json::from_str(&json).unwrap();
    assert!(all.iter().any(|r| r.id == id));
}

/// A Linux guest needs hardware virtualisation. On a nested kvm-pvm host
/// the server knows before trying, and says so at once in plain words; on
/// a hardware host the guest boots to userspace.
#[tokio::test(flavor = "multi_thread")]
async fn linux_guests_run_or_say_plainly_why_this_host_cannot_boot_them() {
    if !kvm_present() {
        return;
    }
    let _vms = beside_others().await;
    let host = stacklab_vmm::host::probe().unwrap();
    let settings = Settings {
        data_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"),
        ..Settings::default()
    };
    let state = AppState::new(None, settings);
    if host.backing == stacklab_api::KvmBacking::NestedPvm {
        for demo in ["linux-vm", "postgres-vm"] {
            let started = std::time::Instant::now();
            let res = stacklab_server::app(state.clone())
                .oneshot(
                    axum::http::Request::post("/api/runs")
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(format!(r#"{{"demo":"{demo}"}}"#)))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{demo}");
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let err: stacklab_api::ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(err.error, ErrorCode::LinuxGuestUnsupported);
            assert!(err.message.contains("cannot boot here"), "{}", err.message);
            assert!(err.message.contains("kvm-pvm"), "{}", err.message);
            assert!(started.elapsed() < Duration::from_secs(2), "nothing hangs");
        }
        eprintln!("this host is nested kvm-pvm: the Linux demos refuse at once (checked); the boot itself is tested by tests/nested.rs");
        return;
    }
    // Hardware KVM: the Linux guest boots to userspace for real.
    if let Err(why) = state.labs.linux_vm() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let (_, events) = run_over_http(&state, "linux-vm", Duration::from_secs(60)).await;
    let phases = common::phases(&events);
    assert!(phases.contains(&Phase::Ready), "{phases:?}");
}

/// The process side of [`vmms_die_with_their_server`]: a "server" that
/// starts a VM whose guest spins and whose VMM deadline is far away, prints
/// the VMM's PID, and waits to be killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by vmms_die_with_their_server as a separate process"]
async fn helper_server_with_a_spinning_vm() {
    let (_runs, run) = spinning_vm(Duration::from_secs(60));
    let mut changes = run.subscribe();
    loop {
        let record = run.record();
        if let Some(pid) = vmm_pid(&record) {
            println!("VMM_PID={pid}");
            break;
        }
        changes.changed().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A server killed with SIGKILL cannot clean up; its VMM processes die
/// with it anyway (PR_SET_PDEATHSIG), long before their own deadline or
/// CPU limit would end them.
#[test]
fn vmms_die_with_their_server() {
    if !kvm_present() {
        return;
    }
    let _vms = VMS.blocking_read();
    use std::io::BufRead;
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_server_with_a_spinning_vm",
            "--nocapture",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("VMM_PID=")
                .nth(1)
                .map(|p| p.trim().parse().unwrap())
        })
        .expect("the helper names its VMM");
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.contains("(stacklab-vmm)") && !s.contains(") Z "))
    };
    assert!(running(pid), "the VMM runs while its server does");
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let killed_at = std::time::Instant::now();
    while running(pid) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(3),
            "VMM {pid} outlived its server by 3 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fuzzing found two mismatches between the API and its OpenAPI document:
/// a run request answers 202 (the document said 201), and measurement keys
/// with digits (`app_ring3`) failed the `Key` schema. A real run's answers
/// must match the document the server serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_runs_answers_match_the_openapi_document() {
    if !kvm_present() {
        return;
    }
    let _vms = beside_others().await;
    let state = AppState::new(None, Settings::default());
    let (_, _, doc) = common::get(state.clone(), "/api/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let validator = |name: &str| {
        let schema = serde_json::json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        });
        jsonschema::validator_for(&schema).unwrap()
    };
    let accepted = doc["paths"]["/api/runs"]["post"]["responses"]
        .as_object()
        .unwrap();
    assert!(accepted.contains_key("202") && !accepted.contains_key("201"));

    let (id, events) = run_over_http(&state, "micro-vm", Duration::from_secs(30)).await;
    let event_schema = validator("RunEvent");
    for event in &events {
        let value = serde_json::to_value(event).unwrap();
        let errors: Vec<String> = event_schema
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {value}");
    }
    let (status, _, record) = common::get(state, &format!("/api/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let errors: Vec<String> = validator("RunRecord")
        .iter_errors(&record)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        record.to_string().contains("app_ring3"),
        "the key that failed before is checked"
    );
}

/// What an embedded demo shows when it cannot run one live: the lab's most
/// recent successful result, cacheable, with its host facts.
#[tokio::test(flavor = "multi_thread")]
async fn the_latest_successful_run_of_a_demo_is_served_for_fallbacks() {
    if !kvm_present() {
        return;
    }
    let _vms = beside_others().await;
    let state = AppState::new(None, Settings::default());
    let (status, _, body) = common::get(state.clone(), "/api/demos/micro-vm/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing has run yet: {body}");
    assert!(body.contains("has succeeded"), "{body}");
    let (status, _, body) = common::get(state.clone(), "/api/demos/nonsense/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("unknown demo"), "{body}");

    let (first, _) = run_over_http(&state, "micro-vm", Duration::from_secs(30)).await;
    let (second, _) = run_over_http(&state, "micro-vm", Duration::from_secs(30)).await;
    // The second run's row is written just after it reports finished.
    let mut latest = None;
    for _ in 0..100 {
        let (status, headers, body) =
            common::get(state.clone(), "/api/demos/micro-vm/latest").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let newest = body.contains(&second);
        latest = Some((headers, body));
        if newest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (headers, body) = latest.unwrap();
    assert_eq!(
        headers[axum::http::header::CACHE_CONTROL],
        "public, max-age=60"
    );
    let record: RunRecord = serde_json::from_str(&body).unwrap();
    assert_eq!(record.id, second, "the newer of {first} and {second}");
    assert_eq!(record.state, RunState::Succeeded);
    let Some(Outcome::Ready { facts, .. }) = record.outcome() else {
        panic!("a ready outcome")
    };
    assert!(
        facts.iter().any(|f| f.key == stacklab_api::FactKey::Host),
        "where it was measured"
    );
    assert!(record.accepted_at_ms.is_some(), "when it was measured");
}
