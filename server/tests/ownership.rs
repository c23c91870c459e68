//! Two replicas whose PIDs are not visible to each other, on one Docker
//! engine and one PostgreSQL store: replica `b` runs in a PID namespace of
//! its own (`unshare --pid --mount-proc`, as a replica in a container
//! does), replica `a` in this one.
//!
//! - A container with `b`'s ownership labels (copied from one of its real
//!   demo containers) survives `a`'s start-up sweep while `b` heart-beats.
//!   The PID on it names, here, another process or none: the PID rule alone
//!   (the code before) removed it there, and the test checks that it would.
//! - Once `b` is killed and silent past `--host-lost-secs`, `a` removes it.
//!
//! Needs root (a PID namespace), the Docker engine with the demo image,
//! the test PostgreSQL (`./dev`) and util-linux's `unshare`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOST_SECS: u64 = 3;

fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
}

/// `stacklab serve` as replica `name` on `url`, under `wrap` (a command
/// and its arguments to run it in, or none). The caller reaps it
/// ([`Cleanup`]).
#[allow(clippy::zombie_processes)]
fn replica(wrap: &[&str], name: &str, url: &str, data: &Path) -> (Child, String) {
    let exe = env!("CARGO_BIN_EXE_stacklab");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--database-url", url, "--replica", name])
        .args(["--heartbeat-secs", "1", "--host-lost-secs"])
        .arg(LOST_SECS.to_string())
        .env(
            "RUST_LOG",
            "stacklab_server=info,stacklab_server::backends::docker::reaper=debug",
        )
        .env("STACKLAB_INSTRUCTOR_TOKEN", "ownership-test")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replica {name} exited before listening: {lines:?}");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.trim().to_owned();
            // The rest of the log goes to <data>/log, for a failure's message.
            let mut file = std::fs::File::create(data.join("log")).unwrap();
            std::thread::spawn(move || {
                for line in log.lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                }
            });
            return (child, addr);
        }
        lines.push(line);
    }
}

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn exists(container: &str) -> bool {
    docker(&["inspect", container]).is_some()
}

/// Field 22 of `/proc/PID/stat` here.
fn start_ticks_here(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// Kills and reaps its processes, and removes the sentinel and b's run's
/// container, however the test ends.
struct Cleanup {
    children: Vec<Child>,
    sentinel: String,
    run: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = docker(&["rm", "-f", &self.sentinel]);
        let filter = format!("label=stacklab.run={}", self.run);
        for id in docker(&["ps", "-aq", "--filter", &filter])
            .unwrap_or_default()
            .lines()
        {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

#[test]
fn a_replica_in_another_pid_namespace_keeps_its_containers_until_it_is_lost() {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/unshare").exists() {
        return skip("needs root and util-linux's unshare for a PID namespace");
    }
    if docker(&["image", "inspect", "stacklab/postgres:15-offline"]).is_none() {
        return skip("no Docker engine with stacklab/postgres:15-offline (./dev builds it)");
    }
    let base = std::env::var("STACKLAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://stacklab@127.0.0.1:54329/stacklab".into());
    let url = match stacklab_server::store::new_schema(&base) {
        Ok(url) => url,
        Err(e) => return skip(&format!("PostgreSQL at {base}: {e} (./dev test starts it)")),
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cleanup = Cleanup {
        children: Vec::new(),
        sentinel: format!("stacklab-ownership-sentinel-{}", std::process::id()),
        run: "none".into(),
    };
    let (b, b_addr) = replica(
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        "b",
        &url,
        db.path(),
    );
    cleanup.children.push(b);

    // One of b's real demo containers, for its labels.
    let mut s = TcpStream::connect(&b_addr).unwrap();
    let body = r#"{"demo":"postgres-container","learner":"ownership-learner"}"#;
    write!(
        s,
        "POST /api/runs HTTP/1.0\r\nHost: {b_addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.split_whitespace().nth(1), Some("202"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let run: serde_json::Value = serde_json::from_str(body).unwrap();
    cleanup.run = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let labels: HashMap<String, String> = loop {
        let filter = format!("label=stacklab.run={}", cleanup.run);
        let id = docker(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
        if let Some(id) = id.lines().next() {
            if let Some(json) = docker(&["inspect", "-f", "{{json .Config.Labels}}", id]) {
                break serde_json::from_str(&json).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "b started no demo container");
        std::thread::sleep(Duration::from_millis(50));
    };
    // b's PID names nothing of b's here: the old rule would say "exited".
    let pid = &labels["stacklab.owner-pid"];
    assert_ne!(
        start_ticks_here(pid).as_ref(),
        Some(&labels["stacklab.owner-start"]),
        "b's PID {pid} is visible here: the test needs b in a PID namespace of its own"
    );
    assert_ne!(
        labels.get("stacklab.owner-pidns").map(String::as_str),
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .as_deref()
            .and_then(Path::to_str)
    );
    let mut run = Command::new("docker");
    run.args(["run", "-d", "--name", &cleanup.sentinel]);
    for (k, v) in &labels {
        run.args(["--label", &format!("{k}={v}")]);
    }
    run.args([
        "--entrypoint",
        "sleep",
        "stacklab/postgres:15-offline",
        "600",
    ]);
    assert!(run.output().unwrap().status.success());

    // a's start-up sweep (it runs before a listens) keeps b's container.
    let (a, _) = replica(&[], "a", &url, da.path());
    cleanup.children.push(a);
    assert!(
        exists(&cleanup.sentinel),
        "a's start-up sweep removed a live replica's container"
    );

    // b killed: once lost, a's sweep removes it (a sweeps every 10 beats,
    // and at once when it closes lost runs).
    let b = &mut cleanup.children[0];
    b.kill().unwrap();
    b.wait().unwrap();
    let killed = Instant::now();
    while exists(&cleanup.sentinel) {
        assert!(
            killed.elapsed() < Duration::from_secs(LOST_SECS + 15),
            "the lost replica's container is still there {:?} after the kill; a's log: {}",
            killed.elapsed(),
            std::fs::read_to_string(da.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "ownership: b's container kept by a's start-up sweep; removed {:.1?} after b was killed (lost after {LOST_SECS} s)",
        killed.elapsed()
    );
}
