//! The `stacklab` binary itself, as a user runs it: from the repository root,
//! on a free port, stopped with SIGTERM or killed outright.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use stacklab_api::{RunCreated, RunPage, RunRecord, RunState};

mod common;
use common::{spawn_server, INSTRUCTOR_TOKEN};

const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Held by each test of this file for its whole length: every server
/// removes, before it listens, the containers of servers that are gone,
/// so one test's restarted server would reap another's killed one's
/// orphan before that test looked for it.
static ONE_TEST_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs.
    ONE_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn http(addr: &str, request: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "{request}").unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

fn http_get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// `GET path` with the instructor token.
fn http_get_as_instructor(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {INSTRUCTOR_TOKEN}\r\nConnection: close\r\n\r\n"),
    )
}

fn body_of(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or("")
}

fn post_run(addr: &str, body: &str) -> String {
    let created = http(
        addr,
        &format!(
            "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(created.starts_with("HTTP/1.1 202"), "{created}");
    let created: RunCreated = serde_json::from_str(body_of(&created)).unwrap();
    created.id
}

/// A finished run is in the SQLite history the moment it is reported; a
/// server killed with SIGKILL right after loses none of it.
#[test]
fn finished_runs_survive_a_kill_9() {
    let _alone = one_test_at_a_time();
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/kvm is missing on a CI machine"
        );
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = spawn_server(data_dir.path());
    let learner = "kill-nine-learner";
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = post_run(
            &addr,
            &format!(r#"{{"demo":"micro-vm","learner":"{learner}"}}"#),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let record: RunRecord =
                serde_json::from_str(body_of(&http_get(&addr, &format!("/api/runs/{id}"))))
                    .unwrap();
            if record.state == RunState::Succeeded {
                break;
            }
            assert_ne!(record.state, RunState::Failed, "{:?}", record.outcome());
            assert!(Instant::now() < deadline, "the run did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        ids.push(id);
    }
    // Finished in memory is not yet proof of stored: the row is written
    // just after; the list endpoint reads the database itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while serde_json::from_str::<RunPage>(body_of(&http_get(
        &addr,
        &format!("/api/runs?learner={learner}"),
    )))
    .unwrap()
    .runs
    .iter()
    .any(|r| r.state != RunState::Succeeded)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&first, "-KILL");
    first.wait().unwrap();

    let (mut second, addr) = spawn_server(data_dir.path());
    let page: RunPage = serde_json::from_str(body_of(&http_get(
        &addr,
        &format!("/api/runs?learner={learner}&limit=2"),
    )))
    .unwrap();
    let listed: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        listed,
        [ids[2].as_str(), ids[1].as_str()],
        "newest first, two per page"
    );
    let older: RunPage = serde_json::from_str(body_of(&http_get(
        &addr,
        &format!(
            "/api/runs?learner={learner}&limit=2&before={}",
            page.next_before.unwrap()
        ),
    )))
    .unwrap();
    assert_eq!(older.runs.len(), 1);
    assert_eq!(older.runs[0].id, ids[0]);
    assert_eq!(older.next_before, None);
    for r in page.runs.iter().chain(&older.runs) {
        assert!(
            r.time_to_ready_us.unwrap() > 0.0 && r.memory_bytes.unwrap() > 0.0,
            "{r:?}"
        );
    }
    // The full record (every phase) is served from the database now.
    let record: RunRecord =
        serde_json::from_str(body_of(&http_get(&addr, &format!("/api/runs/{}", ids[0])))).unwrap();
    assert_eq!(record.state, RunState::Succeeded);
    assert!(record.events.len() > 10, "{record:?}");
    assert!(
        data_dir.path().join("history.sqlite3-wal").exists(),
        "WAL journal in the data dir"
    );
    signal(&second, "-TERM");
    assert!(second.wait().unwrap().success());
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn serve_finds_the_frontend_and_stops_on_sigterm() {
    let _alone = one_test_at_a_time();
    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(&data_dir.path().join("state"));
    assert!(
        data_dir.path().join("state").is_dir(),
        "the data dir is created"
    );

    let health = http_get(&addr, "/api/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let page = http_get(&addr, "/lessons/containers");
    if Path::new(REPO_ROOT)
        .join("frontend/dist/index.html")
        .is_file()
    {
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<html"), "deep link serves the app shell");
    } else {
        assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    }

    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// A server killed with SIGKILL cannot clean up; the next one to start
/// removes what it left behind.
#[test]
fn a_restarted_server_reaps_the_containers_of_a_killed_one() {
    let _alone = one_test_at_a_time();
    let data_dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = spawn_server(data_dir.path());
    let id = post_run(&addr, r#"{"demo":"postgres-container"}"#);
    let label = format!("stacklab.run={id}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while containers_with_label(&label).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the run never created its container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&first, "-KILL");
    first.wait().unwrap();
    assert_eq!(
        containers_with_label(&label).len(),
        1,
        "a killed server leaves its container"
    );

    let (mut second, addr) = spawn_server(data_dir.path());
    // Reaping happens before the server starts listening.
    assert!(
        containers_with_label(&label).is_empty(),
        "the orphan is removed at start-up"
    );
    // The history kept the run and says how it ended.
    let list = http_get_as_instructor(&addr, "/api/runs?limit=5");
    let page: RunPage = serde_json::from_str(body_of(&list)).unwrap();
    let run = page
        .runs
        .iter()
        .find(|r| r.id == id)
        .expect("the cut run is listed");
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(
        run.error.as_ref().unwrap().code,
        stacklab_api::ErrorCode::ServerStopped
    );
    signal(&second, "-TERM");
    assert!(second.wait().unwrap().success());
}

/// The server's resident memory, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A history of 100,000 finished runs exports whole, and the server's
/// memory stays flat while it streams them: rows go out page by page, never
/// all in memory at once.
#[test]
fn exporting_100000_runs_keeps_the_servers_memory_flat() {
    let _alone = one_test_at_a_time();
    const RUNS: usize = 100_000;
    let data = tempfile::tempdir().unwrap();
    let filled = Instant::now();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let history = stacklab_server::store::History::open(data.path())
            .await
            .unwrap();
        common::fill_history(&history, RUNS, "learner-export").await;
    });
    eprintln!("{RUNS} runs written in {:?}", filled.elapsed());
    let (mut server, addr) = spawn_server(data.path());
    let pid = server.id();
    // Warm: one small page first, so the baseline includes what any request costs.
    let page = http_get(&addr, "/api/runs?limit=10&learner=learner-export");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // A learner nobody is, on 100,000 runs: the query walks the learner
    // index (a scan of the table took the store's one lock for it).
    let mut took: Vec<Duration> = (0..5)
        .map(|i| {
            let t = Instant::now();
            let page = http_get(&addr, &format!("/api/runs?limit=50&learner=nobody-{i:08}"));
            let took = t.elapsed();
            assert!(
                page.starts_with("HTTP/1.1 200") && page.contains(r#""runs":[]"#),
                "{page}"
            );
            took
        })
        .collect();
    took.sort();
    eprintln!(
        "GET /api/runs?learner=<unknown> on {RUNS} runs: median {:?}, max {:?}",
        took[2], took[4]
    );
    assert!(took[2] < Duration::from_millis(50), "{took:?}");
    let before = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let csv = http_get(&addr, "/api/runs/export?format=csv&learner=learner-export");
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    signal(&server, "-TERM");
    server.wait().unwrap();
    let body = body_of(&csv);
    // Chunked transfer: count the rows by their ids.
    let rows = body.matches("run-").count();
    assert_eq!(rows, RUNS, "every run exported once");
    let grew_kib = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    let body_kib = body.len() as u64 / 1024;
    eprintln!(
        "export of {RUNS} runs: {body_kib} KiB in {took:?}; server RSS {before} KiB before, grew at most {grew_kib} KiB during it"
    );
    assert!(
        grew_kib < body_kib / 4,
        "the server held the export in memory: RSS grew {grew_kib} KiB for a {body_kib} KiB body"
    );
}

/// SQLite keeps the history of one replica: a second `stacklab serve` on
/// the same data dir exits at once, saying why and what to use instead.
#[test]
fn a_second_server_on_one_sqlite_data_dir_is_refused() {
    let _alone = one_test_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let (mut first, _addr) = common::spawn_server(data.path());
    let second = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env_remove("STACKLAB_DATABASE_URL")
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("already uses the data dir") && said.contains("--database-url"),
        "{said}"
    );
}
