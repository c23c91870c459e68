//! The shipped compose deployment, run for real: `deploy/build-images`
//! builds the base (debootstrap from the Debian mirror, `docker import`),
//! nginx and stacklab images offline (stacklab from this very test build's
//! binary), Debian's `docker-compose` (1.29.2) brings up PostgreSQL, two
//! replicas and nginx, and then:
//!
//! 1. **A room**: 20 learners from 20 loopback addresses (127.0.0.40 …
//!    127.0.0.59) each start the PostgreSQL container demo and the micro-VM
//!    anonymously through nginx at the same moment and follow them to their
//!    end. Every one is accepted, which only happens when the replicas
//!    count them as 20 clients (one client may hold two unfinished runs of
//!    a demo); both replicas take runs; every run is ready with no reading
//!    missing (the replicas see the demos' processes and /dev/kvm).
//! 2. **A replica killed mid-run**: while runs go on, one replica that has a
//!    demo container running is killed (`docker kill`). The other closes
//!    its runs as `host_lost` and removes its containers, and leaves its own
//!    alone: a long-lived container with the survivor's ownership labels
//!    (copied from one of its real demo containers) is still there after
//!    that sweep, and the survivor's runs all end ready.
//! 3. **Teardown**: `docker-compose down -v` leaves no container, volume or
//!    demo container of the deployment.
//!
//! Kubernetes is not run: no API server is packaged for this host
//! (`deploy.rs` checks the manifests against the API's schemas).
//!
//! Needs root, the Docker engine, /dev/kvm (the replicas get the device),
//! debootstrap and docker-compose, and ports 8080-8082 and 5433 free; it
//! says which is missing and skips (a failure under CI).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stacklab_api::{EventKind, Outcome, RunEvent, RunRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROJECT: &str = "stacklabcomposetest";
const LB: &str = "127.0.0.1:8080";
const REPLICAS: [&str; 2] = ["replica-1", "replica-2"];
const LEARNERS: u8 = 20;
/// Silence after which a replica is lost (the deployment's default is 10).
const LOST_SECS: u64 = 4;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker(args: &[&str]) -> String {
    String::from_utf8_lossy(&run(Command::new("docker").args(args)).stdout).into_owned()
}

fn compose() -> Command {
    let mut c = Command::new("docker-compose");
    c.args(["-p", PROJECT, "-f", "compose.yaml"])
        .current_dir(repo())
        .env("POSTGRES_PASSWORD", "compose-test-password")
        .env("STACKLAB_INSTRUCTOR_TOKEN", "bench-instructor")
        .env("STACKLAB_HEARTBEAT_SECS", "1")
        .env("STACKLAB_HOST_LOST_SECS", LOST_SECS.to_string());
    c
}

/// Ids of the demo containers a replica owns now.
fn containers_of(replica: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=stacklab.replica={replica}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// What is missing for this test, if anything.
fn missing() -> Option<String> {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (debootstrap and the replicas' devices need it)".into());
    }
    for tool in ["/usr/bin/docker-compose", "/usr/sbin/debootstrap"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (./dev install installs it)"));
        }
    }
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("no Docker engine answers".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm (the replicas are given the device)".into());
    }
    for port in [8080, 8081, 8082, 5433] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Some(format!(
                "port {port} is in use (the deployment listens there)"
            ));
        }
    }
    None
}

/// Brings the deployment down (volumes too) when the test ends, however.
struct Deployment;

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = compose()
                .args(["logs", "--no-color", "--tail", "40"])
                .output()
            {
                eprintln!(
                    "the deployment's last log lines:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = compose().args(["down", "-v", "-t", "20"]).output();
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{PROJECT}-sentinel")])
            .output();
    }
}

async fn connect_from(src: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((src, 0))).unwrap();
    socket.connect(LB.parse().unwrap()).await.unwrap()
}

/// One HTTP/1.0 request from `src` through nginx (the server's own
/// client, `http1::exchange`): status, replica, body.
async fn request(src: Ipv4Addr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let stream = connect_from(src).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        stacklab_server::http1::exchange(stream, LB, method, path, &[], body),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let replica = answer
        .header("x-stacklab-replica")
        .unwrap_or_default()
        .to_owned();
    (answer.status, replica, answer.body)
}

/// A learner at `src` starts `demo`: run id and the replica that took it.
async fn start_demo(src: Ipv4Addr, demo: &str) -> (String, String) {
    let (status, replica, body) =
        request(src, "POST", "/api/runs", &format!(r#"{{"demo":"{demo}"}}"#)).await;
    assert_eq!(status, 202, "{src}: {body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, replica)
}

/// A learner at `src` starts the PostgreSQL container demo.
async fn start(src: Ipv4Addr) -> (String, String) {
    start_demo(src, "postgres-container").await
}

/// Follows run `id`'s events through nginx to `finished`.
async fn follow(src: Ipv4Addr, id: &str) -> Outcome {
    let mut s = connect_from(src).await;
    let req = format!("GET /api/runs/{id}/events HTTP/1.0\r\nHost: {LB}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("run {id} did not finish in 120 s"))
            .unwrap();
        assert!(n > 0, "the stream of {id} ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if let Ok(RunEvent {
                kind: EventKind::Finished { outcome },
                ..
            }) = serde_json::from_str::<RunEvent>(data)
            {
                return outcome;
            }
        }
    }
}

/// Watches run `id`'s events through nginx until the stream ends, however
/// it ends (a run nobody watches is cancelled; a stream on a killed
/// replica just stops).
async fn watch(src: Ipv4Addr, id: String) {
    let mut s = connect_from(src).await;
    let req = format!("GET /api/runs/{id}/events HTTP/1.0\r\nHost: {LB}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
        if n == 0 {
            return;
        }
    }
}

/// Run `id`'s record, once finished, as any replica reports it.
async fn record(id: &str) -> RunRecord {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = request(
            Ipv4Addr::new(127, 0, 0, 1),
            "GET",
            &format!("/api/runs/{id}"),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let r: RunRecord = serde_json::from_str(&body).unwrap();
        if r.outcome().is_some() || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn learner(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 40 + i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_deployment_serves_a_room_and_survives_a_replica_kill() {
    if let Some(why) = missing() {
        return skip(&format!("the compose deployment cannot run here: {why}"));
    }
    // The images, offline. The server is this test build's binary; the
    // VMM, guest kernel and frontend are taken when built (./dev build).
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_stacklab"));
    let target = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let built = Instant::now();
    run(Command::new(repo().join("deploy/build-images"))
        .arg("--server")
        .arg(&exe)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(repo()));
    let build_time = built.elapsed();

    let _ = compose().args(["down", "-v"]).output();
    let _deployment = Deployment;
    let up = Instant::now();
    run(compose().args(["up", "-d"]));
    // Up: both replicas answer through nginx.
    // Up: both replicas seen, then 6 health checks in a row answered.
    let mut seen = std::collections::BTreeSet::new();
    let mut in_a_row = 0;
    while seen.len() < 2 || in_a_row < 6 {
        assert!(
            up.elapsed() < Duration::from_secs(120),
            "the deployment did not answer on both replicas within 120 s (saw {seen:?}): {}",
            String::from_utf8_lossy(
                &compose()
                    .args(["logs", "--tail", "30"])
                    .output()
                    .unwrap()
                    .stdout
            )
        );
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(LB)).await
        {
            let _ = s
                .write_all(format!("GET /api/health HTTP/1.0\r\nHost: {LB}\r\n\r\n").as_bytes())
                .await;
            let mut text = String::new();
            let _ = s.read_to_string(&mut text).await;
            if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") {
                if let Some(r) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("x-stacklab-replica: "))
                {
                    seen.insert(r.to_owned());
                }
                in_a_row += 1;
                continue;
            }
        }
        in_a_row = 0;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let up_time = up.elapsed();
    eprintln!("compose: images built in {build_time:.1?}; `docker-compose up -d` to both replicas answering through nginx: {up_time:.1?}");

    // 1. The room. While it runs, note each replica's ownership labels.
    let labels = tokio::spawn(async {
        let mut found: HashMap<String, String> = HashMap::new();
        for _ in 0..600 {
            for r in REPLICAS {
                if found.contains_key(r) {
                    continue;
                }
                if let Some(id) = containers_of(r).first() {
                    let out = Command::new("docker")
                        .args(["inspect", "-f", "{{json .Config.Labels}}", id])
                        .output()
                        .unwrap();
                    if out.status.success() {
                        found.insert(r.into(), String::from_utf8_lossy(&out.stdout).into());
                    }
                }
            }
            if found.len() == REPLICAS.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found
    });
    // The micro-VM too, where the image has the VMM (./dev build makes it).
    let vmm = target.join("x86_64-unknown-linux-musl/release/stacklab-vmm");
    let demos: &'static [&'static str] = if vmm.exists() {
        &["postgres-container", "micro-vm"]
    } else {
        eprintln!(
            "compose: no VMM at {}: the room runs the container demo only",
            vmm.display()
        );
        &["postgres-container"]
    };
    let room = Instant::now();
    let runs = (0..LEARNERS).flat_map(|i| {
        demos.iter().map(move |demo| {
            tokio::spawn(async move {
                let (id, replica) = start_demo(learner(i), demo).await;
                let outcome = follow(learner(i), &id).await;
                (demo, id, replica, outcome)
            })
        })
    });
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for done in futures_util::future::join_all(runs).await {
        let (demo, id, replica, outcome) = done.unwrap();
        match &outcome {
            Outcome::Ready { missing, .. } => assert!(
                missing.is_empty(),
                "{demo} run {id} on {replica} could not read: {missing:?}"
            ),
            other => panic!("{demo} run {id} on {replica}: {other:?}"),
        }
        *per_replica.entry(format!("{replica} {demo}")).or_default() += 1;
    }
    let room_time = room.elapsed();
    eprintln!("compose: room of {LEARNERS} learners from {LEARNERS} addresses, each starting {demos:?} anonymously through nginx at once: all accepted, ready, no reading missing, in {room_time:.1?}; runs per replica {per_replica:?}");
    for r in REPLICAS {
        assert!(
            per_replica.keys().any(|k| k.starts_with(r)),
            "{r} took none: {per_replica:?}"
        );
    }
    let labels = labels.await.unwrap();

    // 2. A replica killed mid-run. Runs from 8 more addresses; as soon as
    // one replica has a demo container, it is killed.
    let runs: Vec<_> = (0..8u8)
        .map(|i| {
            tokio::spawn(async move {
                let src = learner(LEARNERS + i);
                let (id, replica) = start(src).await;
                // Watched, as a learner's page does (unwatched, a run is
                // cancelled after a grace period).
                let watcher = tokio::spawn(watch(src, id.clone()));
                (id, replica, watcher)
            })
        })
        .collect();
    // Accepted (202) before the kill: a request in flight to the victim
    // would get nginx's 502, which is not what this checks.
    let mut started = Vec::new();
    let mut watchers = Vec::new();
    for r in runs {
        let (id, replica, watcher) = r.await.unwrap();
        started.push((id, replica));
        watchers.push(watcher);
    }
    // The victim: a replica with a demo container running. The survivor's
    // labels: from the room, or from one of its containers now.
    let mut labels = labels;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (victim, victim_containers, survivor) = loop {
        let now: Vec<(&str, Vec<String>)> =
            REPLICAS.iter().map(|r| (*r, containers_of(r))).collect();
        for (r, c) in &now {
            if let (false, Some(id)) = (labels.contains_key(*r), c.first()) {
                if let Some(json) = Command::new("docker")
                    .args(["inspect", "-f", "{{json .Config.Labels}}", id])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                {
                    labels.insert(r.to_string(), String::from_utf8_lossy(&json.stdout).into());
                }
            }
        }
        let victim = now.iter().find(|(r, c)| {
            !c.is_empty() && REPLICAS.iter().any(|o| o != r && labels.contains_key(*o))
        });
        if let Some((victim, containers)) = victim {
            let survivor = *REPLICAS.iter().find(|r| *r != victim).unwrap();
            break (*victim, containers.clone(), survivor);
        }
        assert!(
            Instant::now() < deadline,
            "no replica with a demo container while the other's labels are known"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    docker(&["kill", &format!("{PROJECT}_{victim}_1")]);
    let killed = Instant::now();
    // The runs the kill cut short: those whose container outlives the
    // victim (a run removes its container before its end is stored, so a
    // run that ended before the kill has none left).
    let cut: Vec<String> = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=stacklab.replica={victim}"),
        "--format",
        "{{.Label \"stacklab.run\"}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    assert!(
        !cut.is_empty(),
        "the kill cut none of {victim}'s runs short"
    );
    // A long-lived container with the survivor's ownership labels: a demo
    // of a live replica, as the sweep that follows sees it.
    let survivor_labels: HashMap<String, String> = serde_json::from_str(&labels[survivor]).unwrap();
    let mut sentinel = Command::new("docker");
    sentinel.args(["run", "-d", "--name", &format!("{PROJECT}-sentinel")]);
    for (k, v) in &survivor_labels {
        sentinel.args(["--label", &format!("{k}={v}")]);
    }
    sentinel.args([
        "--entrypoint",
        "sleep",
        "stacklab/postgres:15-offline",
        "600",
    ]);
    run(&mut sentinel);
    // The survivor's sweep removes the victim's containers...
    let deadline = Instant::now() + Duration::from_secs(LOST_SECS + 20);
    while victim_containers.iter().any(|c| {
        Command::new("docker")
            .args(["inspect", c])
            .output()
            .is_ok_and(|o| o.status.success())
    }) {
        assert!(
            Instant::now() < deadline,
            "the killed {victim}'s containers are still there {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let swept_after = killed.elapsed();
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for (id, replica) in &started {
        let r = record(id).await;
        let end = match r.outcome() {
            Some(Outcome::Ready { .. }) => "ready".to_owned(),
            Some(Outcome::Failed { error }) => error.code.to_string(),
            other => format!("{other:?}"),
        };
        if replica == survivor {
            assert_eq!(end, "ready", "the survivor's run {id} did not end ready");
        } else if cut.contains(id) {
            assert_eq!(end, "host_lost", "the victim's run {id}, cut short");
        } else {
            // Ended before the kill took, or cut between removing its
            // container and storing its end.
            assert!(
                end == "ready" || end == "host_lost",
                "the victim's run {id}: {end}"
            );
        }
        *ends.entry(format!("{replica}: {end}")).or_default() += 1;
    }
    for w in watchers {
        w.abort();
    }
    // The survivor has closed the victim's runs (above, `host_lost`), and
    // sweeps right after closing them; two more heartbeats, then: its own
    // (the sentinel) is still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sentinel_state = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("{PROJECT}-sentinel"),
    ]);
    assert_eq!(
        sentinel_state.trim(),
        "true",
        "the sweep removed a live replica's container"
    );
    eprintln!("compose: killed {victim} with {} demo container(s) running; they were gone {swept_after:.1?} after the kill (lost after {LOST_SECS} s of silence); {survivor} closed its runs, swept, and kept its own; runs started around the kill: {ends:?}", victim_containers.len());

    // 3. Teardown leaves nothing.
    run(compose().args(["down", "-v", "-t", "20"]));
    docker(&["rm", "-f", &format!("{PROJECT}-sentinel")]);
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={PROJECT}"),
    ]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    for r in REPLICAS {
        assert!(containers_of(r).is_empty(), "{r}'s demo containers left");
    }
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={PROJECT}_"),
    ]);
    assert!(volumes.trim().is_empty(), "volumes left: {volumes}");
}
