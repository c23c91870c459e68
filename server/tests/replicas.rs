//! More than one lab host: real PostgreSQL (the test server `./dev`
//! starts), two `stacklab serve` replicas on loopback, and Debian's nginx
//! in front of them, round robin. A learner's run started through nginx
//! is followed to its end over event streams that land on both replicas;
//! both list it; a replica killed mid-run has its run closed as
//! `host_lost` by the other within the heartbeat timeout (and its
//! container removed); the room benchmark through nginx uses both hosts.

mod common;

use common::nginx::{start_nginx, Processes, NGINX};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use stacklab_api::{EventKind, RunEvent, RunRecord, RunState};

/// Heartbeats every second; silent for 3 s is lost.
const LOST_AFTER_SECS: u64 = 3;

/// A reply: status, the replica that answered, body.
struct Reply {
    status: u16,
    replica: String,
    body: String,
}

/// One request over HTTP/1.0 (no chunked encoding from nginx).
fn request(addr: &str, method: &str, path: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        replica: header(head, "x-stacklab-replica"),
        body: body.to_owned(),
    }
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// An event stream opened through `addr`, resuming after `last`.
struct Stream {
    replica: String,
    lines: BufReader<TcpStream>,
}

impl Stream {
    fn open(addr: &str, id: &str, last: Option<u32>) -> Stream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let resume = last.map_or(String::new(), |l| format!("Last-Event-ID: {l}\r\n"));
        write!(
            s,
            "GET /api/runs/{id}/events HTTP/1.0\r\nHost: {addr}\r\n{resume}\r\n"
        )
        .unwrap();
        let mut lines = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{head}"
        );
        Stream {
            replica: header(&head, "x-stacklab-replica"),
            lines,
        }
    }

    /// The next event, or `None` at the stream's end.
    fn next(&mut self) -> Option<RunEvent> {
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return Some(serde_json::from_str(data).unwrap());
            }
        }
    }
}

/// A replica of the lab on the shared database.
fn replica(name: &str, url: &str, data: &Path) -> (Child, String) {
    replica_env(name, url, data, &[])
}

/// As [`replica`], with environment variables (`DOCKER_HOST`).
fn replica_env(name: &str, url: &str, data: &Path, envs: &[(&str, &str)]) -> (Child, String) {
    common::spawn_server_env(
        data,
        &[
            "--database-url",
            url,
            "--replica",
            name,
            "--heartbeat-secs",
            "1",
            "--host-lost-secs",
            &LOST_AFTER_SECS.to_string(),
            "--instructor-token",
            "bench-instructor",
            // nginx in front and the other replicas are on loopback: as in
            // the shipped deployment, they are the trusted proxies.
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
        envs,
    )
}

fn start_run(addr: &str, demo: &str, learner: &str) -> (String, String) {
    let reply = request(
        addr,
        "POST",
        "/api/runs",
        &format!(r#"{{"demo":"{demo}","learner":"{learner}"}}"#),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, reply.replica)
}

/// The run's demo containers, by the label every one carries (their
/// names are Docker's own).
fn containers_of(run: &str) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=stacklab.run={run}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn replicas_behind_nginx_share_runs_and_close_a_lost_ones() {
    if !Path::new(NGINX).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{NGINX} is missing (./dev installs nginx)"
        );
        eprintln!("skipped: {NGINX} is missing (./dev installs nginx)");
        return;
    }
    let base = std::env::var("STACKLAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://stacklab@127.0.0.1:54329/stacklab".into());
    let url = match stacklab_server::store::new_schema(&base) {
        Ok(url) => url,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL at {base}: {e}"
            );
            eprintln!("skipped: PostgreSQL at {base}: {e} (./dev test starts it)");
            return;
        }
    };
    let (d1, d2, dn) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut procs = Processes::default();
    let (one, one_addr) = replica("one", &url, d1.path());
    procs.add("one", one);
    let (two, two_addr) = replica("two", &url, d2.path());
    procs.add("two", two);
    let (nginx, lb) = start_nginx(dn.path(), &[&one_addr, &two_addr]);
    procs.add("nginx", nginx);

    // nginx alternates: two requests, two replicas.
    let a = request(&lb, "GET", "/api/health", "").replica;
    let b = request(&lb, "GET", "/api/health", "").replica;
    let mut seen = [a.clone(), b.clone()];
    seen.sort();
    assert_eq!(seen, ["one", "two"], "round robin over both");

    // A run started through nginx, followed through nginx: the stream
    // lands on the other replica first, then (resumed) on the one running it.
    let learner = "replica-learner-1";
    let (id, runner) = start_run(&lb, "postgres-container", learner);
    let mut first = Stream::open(&lb, &id, None);
    if first.replica == runner {
        first = Stream::open(&lb, &id, None);
    }
    assert_ne!(
        first.replica, runner,
        "the first stream is served by the other replica"
    );
    let mut events = vec![first.next().expect("a first event")];
    events.push(first.next().expect("a second event"));
    drop(first);
    let last = events.last().unwrap().seq;
    let mut resumed = Stream::open(&lb, &id, Some(last));
    while let Some(e) = resumed.next() {
        let done = matches!(e.kind, EventKind::Finished { .. });
        events.push(e);
        if done {
            break;
        }
    }
    let seqs: Vec<u32> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u32> = (0..events.len() as u32).collect();
    assert_eq!(
        seqs, expected,
        "every event once, in order, across replicas"
    );
    match &events.last().unwrap().kind {
        EventKind::Finished { outcome } => {
            assert!(
                matches!(outcome, stacklab_api::Outcome::Ready { .. }),
                "{outcome:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Both replicas list it, finished.
    for addr in [&one_addr, &two_addr] {
        let page = request(addr, "GET", &format!("/api/runs?learner={learner}"), "");
        let page: stacklab_api::RunPage = serde_json::from_str(&page.body).unwrap();
        let run = page.runs.iter().find(|r| r.id == id).expect("listed");
        assert_eq!(run.state, RunState::Succeeded, "on {addr}");
    }

    // A replica without a Docker engine hands a container run to one that
    // has one, and follows it there.
    let d3 = tempfile::tempdir().unwrap();
    let (nodocker, nodocker_addr) = replica_env(
        "nodocker",
        &url,
        d3.path(),
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    procs.add("nodocker", nodocker);
    let handed = {
        let mut s = TcpStream::connect(&nodocker_addr).unwrap();
        let body = r#"{"demo":"hello-container","learner":"replica-learner-3"}"#;
        write!(
            s,
            "POST /api/runs HTTP/1.0\r\nHost: {nodocker_addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let (head, body) = handed.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 202") || head.starts_with("HTTP/1.1 202"),
        "{handed}"
    );
    let taker = header(head, "x-stacklab-handed-to");
    assert!(taker == "one" || taker == "two", "{head}");
    let handed_id = serde_json::from_str::<serde_json::Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut followed = Stream::open(&nodocker_addr, &handed_id, None);
    assert_eq!(followed.replica, "nodocker");
    let mut last = None;
    while let Some(e) = followed.next() {
        last = Some(e);
    }
    match last.map(|e| e.kind) {
        Some(EventKind::Finished { outcome }) => {
            assert!(
                matches!(outcome, stacklab_api::Outcome::Ready { .. }),
                "{outcome:?}"
            )
        }
        other => panic!("the handed-over run did not finish: {other:?}"),
    }
    procs.stop("nodocker");

    // A replica killed mid-run: the other closes its run as host_lost.
    let (lost_id, lost_on) = start_run(&lb, "postgres-container", "replica-learner-2");
    let survivor = if lost_on == "one" {
        two_addr.clone()
    } else {
        one_addr.clone()
    };
    // Killed once its container exists: mid-run, and the removal checked
    // below is of a container that was there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_of(&lost_id) == 0 {
        assert!(
            Instant::now() < deadline,
            "the run never made its container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.kill(&lost_on);
    let killed = Instant::now();
    let closed_after = loop {
        let reply = request(&survivor, "GET", &format!("/api/runs/{lost_id}"), "");
        let record: RunRecord = serde_json::from_str(&reply.body).unwrap();
        if let Some(stacklab_api::Outcome::Failed { error }) = record.outcome() {
            assert_eq!(error.code, stacklab_api::ErrorCode::HostLost, "{error:?}");
            break killed.elapsed();
        }
        assert!(
            // A bound against a hang, with room for a survivor whose
            // heartbeat loop is slowed by a loaded host.
            killed.elapsed() < Duration::from_secs(LOST_AFTER_SECS + 15),
            "not closed {:?} after the kill: {record:?}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("replicas: run of the killed replica {lost_on} closed as host_lost {closed_after:?} after the kill (timeout {LOST_AFTER_SECS} s, heartbeat 1 s)");
    // ...and the container it left behind is removed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while containers_of(&lost_id) > 0 {
        assert!(
            Instant::now() < deadline,
            "the lost run's container is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The room benchmark through nginx, with both replicas up again.
    let data = if lost_on == "one" {
        d1.path()
    } else {
        d2.path()
    };
    let (back, back_addr) = replica(&lost_on, &url, data);
    procs.add(&lost_on, back);
    procs.stop("nginx");
    let (nginx, lb) = start_nginx(dn.path(), &[&back_addr, &survivor]);
    procs.add("nginx", nginx);
    let bench = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["bench", "room", "--learners", "50", "--url"])
        .arg(format!("http://{lb}"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&bench.stdout);
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../test-output")).unwrap();
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-output/replicas-room.txt"
        ),
        out.as_bytes(),
    )
    .unwrap();
    eprintln!("{out}");
    assert!(
        bench.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    for replica in ["one", "two"] {
        let n: usize = out
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("runs per replica: {replica} "))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "replica {replica} served none of the room: {out}");
    }
}
