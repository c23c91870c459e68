//! The container lab against the real Docker engine and a real PostgreSQL 15
//! image (built by `./dev test` through `stacklab image build` when missing).

mod common;
use common::run_over_http;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use http_body_util::BodyExt;
use stacklab_api::{
    DemoId, DensityMetric, ErrorBody, ErrorCode, EventKind, FactKey, Key, Metric, Outcome, Phase,
    RunCreated, RunRecord, RunState, Unit,
};
use stacklab_server::backends::docker::{ContainerSpec, DockerRuntime, Owner};
use stacklab_server::engine::{Queue, Run, Runs};
use stacklab_server::{app, AppState, Settings};
use tower::ServiceExt;

fn docker() -> Docker {
    Docker::connect_with_local_defaults().expect("docker client")
}

/// Containers of one run still present in the engine.
async fn containers_of_run(id: &str) -> usize {
    let filter = format!("stacklab.run={id}");
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec![filter.as_str()],
        )]))
        .build();
    docker().list_containers(Some(options)).await.unwrap().len()
}

/// Bytes of the files a local `initdb` of Debian's PostgreSQL 15 writes
/// (`du` of its data directory), run as the postgres user: what the
/// container's tmpfs should hold at ready, measured independently.
fn local_initdb_bytes() -> u64 {
    let dir = std::env::temp_dir().join(format!("stacklab-initdb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("chown")
        .args(["postgres:postgres", dir.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "chown to postgres (Debian's postgresql-15 is installed by ./dev)"
    );
    let data = dir.join("pgdata");
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/initdb",
            "-D",
        ])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let du = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(&data)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a size")
}

async fn wait_finished(run: &Run) -> RunRecord {
    let mut changes = run.subscribe();
    tokio::time::timeout(Duration::from_secs(90), async {
        while !run.is_finished() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the run finishes within 90 s");
    run.record()
}

fn phases(record: &RunRecord) -> Vec<Phase> {
    common::phases(&record.events)
}

fn error_code(record: &RunRecord) -> String {
    match record.outcome() {
        Some(Outcome::Failed { error }) => format!("{}: {}", error.code, error.message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn runtime(spec: ContainerSpec) -> Arc<DockerRuntime> {
    Arc::new(DockerRuntime::new(docker(), spec, Owner::current()))
}

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    (
        status,
        res.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn post_run(body: &str) -> Request<Body> {
    Request::post("/api/runs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// `req` as if sent from `ip` (what `serve` records for each connection).
fn from_ip(ip: [u8; 4], mut req: Request<Body>) -> Request<Body> {
    let addr = std::net::SocketAddr::from((ip, 40000));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_streams_every_phase_in_order_and_measures_memory() {
    let state = AppState::new(None, Settings::default());
    let (id, events) = run_over_http(&state, "postgres-container", Duration::from_secs(90)).await;
    let seqs: Vec<u32> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..events.len() as u32).collect::<Vec<_>>(),
        "no event lost or repeated"
    );
    assert!(
        events.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "times never go back"
    );

    let record: RunRecord = {
        let (status, body) = send(
            &state,
            Request::get(format!("/api/runs/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    };
    assert_eq!(
        record.events, events,
        "the JSON result holds the same events"
    );
    common::assert_timed_from_the_slot(&events, DemoId::PostgresContainer);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.outcome());
    assert_eq!(
        phases(&record),
        [
            Phase::Accepted,
            Phase::SlotGranted,
            Phase::ImageReady,
            Phase::ContainerCreated,
            Phase::ContainerStarted,
            Phase::FirstLogByte,
            Phase::TempServerReady,
            Phase::InitComplete,
            Phase::ServerReady,
            Phase::Ready
        ]
    );
    assert!(record.events.iter().any(
        |e| matches!(&e.kind, EventKind::Log { line } if line.contains("init process complete"))
    ));

    let Some(Outcome::Ready {
        measurements,
        facts,
        missing,
    }) = record.outcome()
    else {
        panic!()
    };
    let get = |key: Metric| {
        measurements
            .iter()
            .find(|m| m.key == key.into())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert!(missing.is_empty(), "{missing:?}");
    let pss = get(Metric::MemoryPss);
    assert_eq!(pss.unit, Unit::Bytes);
    assert!(
        pss.value > 10.0 * 1048576.0 && pss.value < 256.0 * 1048576.0,
        "PSS {} bytes",
        pss.value
    );
    assert!(get(Metric::MemoryCgroup).value >= get(Metric::MemoryDockerStats).value);
    // Ground truth for the tmpfs part: the files a local initdb of the same
    // PostgreSQL 15 writes, measured by du (independently of statvfs).
    let tmpfs = get(Metric::MemoryTmpfsFiles).value;
    let initdb = local_initdb_bytes() as f64;
    assert!(
        (tmpfs - initdb).abs() <= 0.10 * initdb,
        "the tmpfs part ({tmpfs} B) is the database files initdb wrote (du of a local initdb: {initdb} B)"
    );
    // (Held memory is not compared with the cgroup's usage: PSS also holds
    // a share of the PostgreSQL program's and libraries' file pages, which
    // the kernel charged to whichever cgroup read them first. That shared
    // memory is counted once is checked on a fixture whose pages are known:
    // memory_held_counts_shared_memory_and_tmpfs_files_once.)
    let parts = get(Metric::MemoryPss).value + tmpfs;
    assert_eq!(
        get(Metric::MemoryHeld).value,
        parts,
        "the parts sum to the total"
    );
    eprintln!(
        "postgres-container: held {:.1} MiB = PSS {:.1} + tmpfs files {:.1} (a local initdb: {:.1}); cgroup {:.1} MiB",
        parts / 1048576.0,
        get(Metric::MemoryPss).value / 1048576.0,
        tmpfs / 1048576.0,
        initdb / 1048576.0,
        get(Metric::MemoryCgroup).value / 1048576.0
    );
    for key in [
        FactKey::Host,
        FactKey::Engine,
        FactKey::Limits,
        FactKey::Load,
    ] {
        assert!(
            facts.iter().any(|f| f.key == key && !f.value.is_empty()),
            "no {key}"
        );
    }
    assert!(get(Metric::CreateToReady).value > 0.0);
    assert!(
        measurements.iter().all(|m| !m.how.is_empty()),
        "every number says how it was measured"
    );
    let fact = |key: FactKey| {
        facts
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.clone())
            .unwrap()
    };
    assert_eq!(
        fact(FactKey::KernelInside),
        fact(FactKey::KernelHost),
        "a container shares the host's kernel"
    );
    assert!(fact(FactKey::PostgresVersion).starts_with("PostgreSQL 15."));
    assert!(
        fact(FactKey::HostPids).contains("(inside: 1)"),
        "PID 1 inside is a host PID outside"
    );

    assert_eq!(
        containers_of_run(&id).await,
        0,
        "the container is removed after the result"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_password_fails_with_the_entrypoints_clear_error() {
    let runs = Arc::new(Runs::default());
    let spec = ContainerSpec {
        password: None,
        ..ContainerSpec::postgres_demo()
    };
    let run = runs.start(
        DemoId::PostgresContainer,
        runtime(spec),
        Arc::new(Queue::new(1)),
        Duration::from_secs(60),
    );
    let record = wait_finished(&run).await;
    let error = error_code(&record);
    assert!(
        error.starts_with("exited: the container exited with code 1"),
        "{error}"
    );
    assert!(error.contains("POSTGRES_PASSWORD"), "{error}");
    assert_eq!(containers_of_run(run.id()).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_little_memory_is_reported_as_an_oom_kill() {
    let runs = Arc::new(Runs::default());
    let spec = ContainerSpec {
        memory_bytes: 32 << 20,
        ..ContainerSpec::postgres_demo()
    };
    let run = runs.start(
        DemoId::PostgresContainer,
        runtime(spec),
        Arc::new(Queue::new(1)),
        Duration::from_secs(60),
    );
    let record = wait_finished(&run).await;
    let error = error_code(&record);
    assert!(error.starts_with("oom_killed:"), "{error}");
    assert!(error.contains("32 MiB"), "{error}");
    assert_eq!(containers_of_run(run.id()).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_ends_a_run_and_removes_its_container() {
    let runs = Arc::new(Runs::default());
    let run = runs.start(
        DemoId::PostgresContainer,
        runtime(ContainerSpec::postgres_demo()),
        Arc::new(Queue::new(1)),
        Duration::from_millis(400),
    );
    let record = wait_finished(&run).await;
    let error = error_code(&record);
    assert!(
        error.starts_with("deadline: the demo did not become ready within its deadline of 0.4 s"),
        "{error}"
    );
    assert_eq!(containers_of_run(run.id()).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_beyond_the_slots_wait_in_a_queue_and_learn_their_position() {
    let runs = Arc::new(Runs::default());
    let rt = runtime(ContainerSpec::postgres_demo());
    let queue = Arc::new(Queue::new(1));
    let first = runs.start(
        DemoId::PostgresContainer,
        rt.clone(),
        queue.clone(),
        Duration::from_secs(60),
    );
    let second = runs.start(
        DemoId::PostgresContainer,
        rt,
        queue,
        Duration::from_secs(60),
    );
    let (a, b) = tokio::join!(wait_finished(&first), wait_finished(&second));
    assert_eq!(a.state, RunState::Succeeded, "{:?}", a.outcome());
    assert_eq!(b.state, RunState::Succeeded, "{:?}", b.outcome());
    // Either task may reach the queue first: exactly one of them waits.
    let queued = |r: &RunRecord| {
        r.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Queued { position: 1, .. }))
    };
    assert!(
        queued(&a) != queued(&b),
        "exactly one run waited: {:?} / {:?}",
        a.events,
        b.events
    );
    let (ran, waited) = if queued(&b) { (&a, &b) } else { (&b, &a) };
    // The waiting one created its container only after the other finished
    // (both clocks start at their own acceptance, microseconds apart).
    let finished = ran
        .events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Finished { .. }))
        .unwrap();
    let created = waited
        .events
        .iter()
        .find(|e| {
            matches!(
                &e.kind,
                EventKind::Phase {
                    phase: Phase::ContainerCreated,
                    ..
                }
            )
        })
        .unwrap();
    assert!(
        created.at_us + 50_000 > finished.at_us,
        "{} vs {}",
        created.at_us,
        finished.at_us
    );
}

/// A client that leaves for good: once the grace period has passed with
/// nobody watching, the run is cancelled and its container removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_run_and_stays_away_cancels_it() {
    let state =
        AppState::new(None, Settings::default()).with_watch_grace(Duration::from_millis(200));
    let (_, body) = send(&state, post_run(r#"{"demo":"postgres-container"}"#)).await;
    let RunCreated { id } = serde_json::from_slice(&body).unwrap();
    let req = Request::get(format!("/api/runs/{id}/events"))
        .body(Body::empty())
        .unwrap();
    let mut body = app(state.clone()).oneshot(req).await.unwrap().into_body();
    // Read until the container exists, then hang up.
    let mut seen = String::new();
    let started = format!("\"{}\"", stacklab_api::Phase::ContainerStarted);
    while !seen.contains(&started) {
        let frame = body.frame().await.expect("more events").unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    drop(body);
    let run = state.runs.get(&id).unwrap();
    let record = wait_finished(&run).await;
    assert!(error_code(&record).starts_with("cancelled:"));
    assert_eq!(
        containers_of_run(&id).await,
        0,
        "the container is removed when the client leaves"
    );
}

/// A network blip: the stream drops mid-run and the browser reconnects
/// with `Last-Event-ID`; the run goes on, and the two streams together
/// carry every event exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reconnects_within_the_grace_period_loses_nothing() {
    let state = AppState::new(None, Settings::default());
    let (_, body) = send(&state, post_run(r#"{"demo":"postgres-container"}"#)).await;
    let RunCreated { id } = serde_json::from_slice(&body).unwrap();
    let stream = |last: Option<u32>| {
        let mut req = Request::get(format!("/api/runs/{id}/events"));
        if let Some(seq) = last {
            req = req.header("last-event-id", seq.to_string());
        }
        app(state.clone()).oneshot(req.body(Body::empty()).unwrap())
    };
    let mut body = stream(None).await.unwrap().into_body();
    let mut first = String::new();
    let started = format!("\"{}\"", stacklab_api::Phase::ContainerStarted);
    while !first.contains(&started) {
        let frame = body.frame().await.expect("more events").unwrap();
        if let Ok(data) = frame.into_data() {
            first.push_str(&String::from_utf8_lossy(&data));
        }
    }
    drop(body);
    let before = common::parse_sse(first.as_bytes());
    let last = before.last().unwrap().seq;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = stream(Some(last)).await.unwrap().into_body();
    let rest = tokio::time::timeout(Duration::from_secs(60), rest.collect())
        .await
        .expect("the stream ends")
        .unwrap()
        .to_bytes();
    let after = common::parse_sse(&rest);
    let seqs: Vec<u32> = before.iter().chain(&after).map(|e| e.seq).collect();
    let want: Vec<u32> = (0..seqs.len() as u32).collect();
    assert_eq!(seqs, want, "every event once, in order");
    let record = wait_finished(&state.runs.get(&id).unwrap()).await;
    assert!(
        matches!(record.outcome(), Some(Outcome::Ready { .. })),
        "the run went on through the blip: {:?}",
        record.outcome()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_4xx_json() {
    let state = AppState::new(None, Settings::default());
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post_run(r#"{"demo":"bash"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant `bash`",
        ),
        (
            post_run(r#"{"demo":"postgres-container","image":"evil"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `image`",
        ),
        (post_run(r#"{"demo":"#), StatusCode::BAD_REQUEST, "EOF"),
        (
            post_run(r#"{"demo":"micro-vm","learner":"../../etc"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "learner must be 8 to 64 characters",
        ),
        (
            Request::get("/api/runs?limit=0")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 500",
        ),
        (
            Request::get("/api/runs?limit=ten")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Request::get("/api/runs?sort=evil")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "unknown field `sort`",
        ),
        (
            Request::get("/api/runs?learner=x")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "learner must be",
        ),
        (
            Request::get("/api/runs/export?format=xml")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "format must be csv or json",
        ),
        (
            post_run(&format!(r#"{{"demo":"{}"}}"#, "x".repeat(10_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit",
        ),
        (
            Request::post("/api/runs")
                .body(Body::from(r#"{"demo":"postgres-container"}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            Request::get("/api/runs/nope").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "no run with id",
        ),
        (
            Request::get("/api/runs/nope/events")
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
            "no run with id",
        ),
    ];
    for (req, want, text) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, body) = send(&state, req).await;
        assert_eq!(status, want, "{what}");
        let err: ErrorBody =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
        assert!(err.message.contains(text), "{what}: {err:?}");
    }
}

#[tokio::test]
async fn docker_down_is_a_503_that_says_how_to_start_it() {
    // A socket file nobody listens on: what a stopped dockerd leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let bogus =
        Docker::connect_with_socket(socket.to_str().unwrap(), 2, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let state = AppState::with_docker(Some(bogus), None, Settings::default());
    let (status, body) = send(&state, post_run(r#"{"demo":"postgres-container"}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.error, ErrorCode::DockerUnavailable);
    assert!(err.message.contains("dockerd"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutting_down_cancels_runs_and_removes_their_containers() {
    let runs = Arc::new(Runs::default());
    let run = runs.start(
        DemoId::PostgresContainer,
        runtime(ContainerSpec::postgres_demo()),
        Arc::new(Queue::new(1)),
        Duration::from_secs(60),
    );
    // Wait until the container exists, then shut down.
    let mut changes = run.subscribe();
    while !phases(&run.record()).contains(&Phase::ContainerCreated) {
        changes.changed().await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), runs.shut_down())
        .await
        .expect("shutdown within 20 s");
    assert!(error_code(&run.record()).starts_with("cancelled:"));
    assert_eq!(containers_of_run(run.id()).await, 0);
}

/// Density: 1 to 5 PostgreSQL containers at once; each step measured, the
/// memory held together grows with N, and nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_density_sweep_of_containers_measures_each_step_and_cleans_up() {
    let state = AppState::new(None, Settings::default());
    let (id, _events) = run_over_http(&state, "density-container", Duration::from_secs(180)).await;
    let record = state.runs.get(&id).unwrap().record();
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.outcome());
    let outcome = record.outcome().unwrap();
    let mut line = String::new();
    let mut memory = Vec::new();
    for n in 1..=5u32 {
        let t = outcome
            .value(Key::Density(DensityMetric::AllReady, n))
            .unwrap();
        let m = outcome
            .value(Key::Density(DensityMetric::MemoryTotal, n))
            .unwrap();
        line.push_str(&format!(
            " N={n}: {:.0} ms {:.1} MiB;",
            t / 1000.0,
            m / 1048576.0
        ));
        memory.push(m);
    }
    eprintln!("density (containers):{line}");
    for w in memory.windows(2) {
        assert!(w[1] > w[0], "more containers hold more memory: {memory:?}");
    }
    // Each PostgreSQL is at least several MiB of its own.
    assert!(memory[4] > 5.0 * 4.0 * 1048576.0, "{memory:?}");
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec!["stacklab.run"],
        )]))
        .build();
    let left: Vec<_> = docker()
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.labels?.get("stacklab.run").cloned())
        .filter(|run| run.starts_with(&format!("{id}.")))
        .collect();
    assert!(
        left.is_empty(),
        "every container of the sweep is removed: {left:?}"
    );
}

/// The smallest container: a hand-written program that prints a line and
/// waits; measured while it runs, then let go, and its exit observed.
#[tokio::test(flavor = "multi_thread")]
async fn the_smallest_container_is_timed_and_measured_like_the_micro_vm() {
    let state = AppState::new(None, Settings::default());
    let (id, events) = run_over_http(&state, "hello-container", Duration::from_secs(30)).await;
    assert_eq!(
        common::phases(&events),
        [
            Phase::Accepted,
            Phase::SlotGranted,
            Phase::ImageReady,
            Phase::ContainerCreated,
            Phase::ContainerStarted,
            Phase::Ready,
            Phase::Exited
        ]
    );
    common::assert_timed_from_the_slot(&events, DemoId::HelloContainer);
    let Outcome::Ready {
        measurements,
        facts,
        missing,
    } = common::ready_outcome(&events)
    else {
        unreachable!()
    };
    assert!(missing.is_empty(), "{missing:?}");
    let get = |key: Metric| {
        measurements
            .iter()
            .find(|m| m.key == key.into())
            .unwrap_or_else(|| panic!("no {key}"))
            .value
    };
    assert_eq!(get(Metric::Processes), 1.0, "one process: the program");
    assert_eq!(get(Metric::MemoryTmpfsFiles), 0.0, "no tmpfs mounts");
    assert!(get(Metric::MemoryPss) > 0.0 && get(Metric::MemoryPss) < 4.0 * 1048576.0);
    let output = facts.iter().find(|f| f.key == FactKey::Output).unwrap();
    assert_eq!(
        output.value,
        stacklab_server::backends::docker::hello::GREETING
    );
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::Phase { phase: Phase::Exited, detail, .. } if detail.contains("code 0"))));
    // Removed afterwards, like every demo container: none of the image is
    // left but the memory test's fixture (its own label), which another
    // test of this file may be running meanwhile.
    let docker = Docker::connect_with_local_defaults().unwrap();
    let left: Vec<_> = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&std::collections::HashMap::from([(
                    "ancestor",
                    vec![stacklab_server::backends::docker::hello::HELLO_IMAGE],
                )]))
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .is_none_or(|l| !l.contains_key("stacklab.test"))
        })
        .collect();
    assert!(left.is_empty(), "{id}: {left:?}");
}

/// A room's fairness, from one client's side: one run going and one
/// waiting per demo; the third is refused with 429 and `Retry-After`, while
/// another client is not affected, and the first may start again once a
/// run of theirs has finished. Outside a class, limits count by address
/// (a learner id is whatever the browser says).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_gets_one_run_going_and_one_waiting_then_429_with_retry_after() {
    let state = AppState::new(None, Settings::default());
    let flooder = r#"{"demo":"postgres-container","learner":"flooder-0001"}"#;
    let flood = |body| from_ip([10, 0, 0, 1], post_run(body));
    // Another learner id from the same address is the same client.
    let disguised = r#"{"demo":"postgres-container","learner":"flooder-0002"}"#;
    let mut ids = Vec::new();
    // Each run is followed, as a learner's page follows it (a run nobody
    // watches for 15 s is cancelled, and on a loaded host the waiting
    // ones may wait that long).
    let mut watching = Vec::new();
    for _ in 0..2 {
        let (status, body) = send(&state, flood(flooder)).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        ids.push(serde_json::from_slice::<RunCreated>(&body).unwrap().id);
        watching.push(state.runs.get(ids.last().unwrap()).unwrap().watch());
    }
    let res = app(state.clone()).oneshot(flood(disguised)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.error, ErrorCode::TooManyRuns);
    assert!(err.message.contains("one waiting"), "{}", err.message);

    let honest = r#"{"demo":"postgres-container","learner":"honest-0001"}"#;
    let (status, body) = send(&state, from_ip([10, 0, 0, 2], post_run(honest))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "another client is not refused"
    );
    ids.push(serde_json::from_slice::<RunCreated>(&body).unwrap().id);
    watching.push(state.runs.get(ids.last().unwrap()).unwrap().watch());

    let first = state.runs.get(&ids[0]).unwrap();
    wait_finished(&first).await;
    // The admission is released when the run's task ends, just after.
    let mut again = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..50 {
        let (status, body) = send(&state, flood(flooder)).await;
        again = status;
        if status == StatusCode::ACCEPTED {
            ids.push(serde_json::from_slice::<RunCreated>(&body).unwrap().id);
            watching.push(state.runs.get(ids.last().unwrap()).unwrap().watch());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        again,
        StatusCode::ACCEPTED,
        "a finished run frees its place"
    );
    for id in &ids {
        let record = wait_finished(&state.runs.get(id).unwrap()).await;
        assert!(
            matches!(record.outcome(), Some(Outcome::Ready { .. })),
            "{id} ran to the end: {:?}",
            record.outcome()
        );
        assert_eq!(containers_of_run(id).await, 0);
    }
}

/// The fixture behind the memory rule: a static C program that maps
/// `SHARED_MIB` of shared anonymous memory, touches it, forks (parent and
/// child both map it), and writes `FILES_MIB` of files to a tmpfs, then
/// waits. Built with the host's cc at test time.
const FIXTURE_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t shared = (size_t)atol(argv[1]) << 20, files = (size_t)atol(argv[2]) << 20;
    char *p = mmap(0, shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    memset(p, 1, shared);
    static char buf[1 << 16];
    memset(buf, 2, sizeof buf);
    int fd = open("/data/file", O_CREAT | O_WRONLY, 0600);
    if (fd < 0) return 3;
    for (size_t done = 0; done < files; done += sizeof buf)
        if (write(fd, buf, sizeof buf) != sizeof buf) return 4;
    close(fd);
    if (fork() == 0) { for (;;) pause(); }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
"#;
const SHARED_MIB: u64 = 48;
const FILES_MIB: u64 = 24;

/// A container holding known amounts of shared anonymous memory and of
/// tmpfs files is read as exactly that (within 5 %): the shared memory
/// once (in PSS, split between the two processes that map it, not again
/// as the cgroup's shmem), the files once (on the tmpfs).
#[tokio::test(flavor = "multi_thread")]
async fn memory_held_counts_shared_memory_and_tmpfs_files_once() {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
    use stacklab_server::backends::docker::measure::Cgroup;
    use stacklab_server::backends::MemoryProbe;

    let dir = std::env::temp_dir().join(format!("stacklab-memfix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fixture.c"), FIXTURE_C).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("fixture"))
        .arg(dir.join("fixture.c"))
        .output()
        .expect("cc (gcc is on the machine)");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let docker = docker();
    let hello = stacklab_server::backends::docker::hello::HELLO_IMAGE;
    if stacklab_server::backends::docker::hello::find(&docker)
        .await
        .is_err()
    {
        stacklab_server::backends::docker::hello::build(&docker)
            .await
            .unwrap();
    }
    let body = ContainerCreateBody {
        image: Some(hello.into()),
        entrypoint: Some(vec!["/fixture".into()]),
        cmd: Some(vec![SHARED_MIB.to_string(), FILES_MIB.to_string()]),
        user: Some("0:0".into()),
        labels: Some(std::collections::HashMap::from([(
            "stacklab.test".into(),
            "memory-fixture".into(),
        )])),
        host_config: Some(HostConfig {
            binds: Some(vec![format!(
                "{}:/fixture:ro",
                dir.join("fixture").display()
            )]),
            tmpfs: Some(std::collections::HashMap::from([(
                "/data".into(),
                "rw,size=64m".into(),
            )])),
            memory: Some(256 << 20),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .unwrap()
        .id;
    docker.start_container(&id, None).await.unwrap();
    let result = async {
        // Ready when it said so.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let logs: Vec<_> = futures_util::StreamExt::collect(
                docker.logs(
                    &id,
                    Some(
                        bollard::query_parameters::LogsOptionsBuilder::default()
                            .stdout(true)
                            .build(),
                    ),
                ),
            )
            .await;
            let text: String = logs
                .into_iter()
                .filter_map(Result::ok)
                .map(|l| l.to_string())
                .collect();
            if text.contains("ready") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fixture never said ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let info = docker.inspect_container(&id, None).await.unwrap();
        let pid = info.state.and_then(|s| s.pid).unwrap() as u32;
        let cgroup = Cgroup::of_pid(pid).map_err(|e| e.to_string());
        let stat =
            std::fs::read_to_string(cgroup.as_ref().unwrap().dir().join("memory.stat")).unwrap();
        let probe = MemoryProbe::Container { cgroup, pid };
        (probe.read(), stat)
    }
    .await;
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(&id, Some(options)).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let (ready, stat) = result;
    let mib = |b: f64| b / 1048576.0;
    let pss = mib(ready.value(Metric::MemoryPss).expect("PSS read"));
    let files = mib(ready.value(Metric::MemoryTmpfsFiles).expect("tmpfs read"));
    let within = |got: f64, want: f64| (got - want).abs() <= 0.05 * want;
    eprintln!("fixture: PSS {pss:.1} MiB (planted {SHARED_MIB} shared), tmpfs files {files:.1} MiB (planted {FILES_MIB})");
    assert!(
        within(pss, SHARED_MIB as f64),
        "PSS {pss:.2} MiB, planted {SHARED_MIB} MiB of shared memory"
    );
    assert!(
        within(files, FILES_MIB as f64),
        "tmpfs {files:.2} MiB, planted {FILES_MIB} MiB of files"
    );
    assert!(
        within(pss + files, (SHARED_MIB + FILES_MIB) as f64),
        "held {:.2} MiB, planted {} MiB",
        pss + files,
        SHARED_MIB + FILES_MIB
    );
    // The fixture does exercise the old double count: the cgroup's shmem
    // holds the shared memory and the files together.
    let shmem = stat
        .lines()
        .find_map(|l| l.strip_prefix("shmem "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(mib)
        .expect("memory.stat has shmem");
    assert!(
        shmem >= 0.95 * (SHARED_MIB + FILES_MIB) as f64,
        "shmem {shmem:.1} MiB"
    );
}
