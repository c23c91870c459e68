//! `stacklab bench soak`: many mixed runs with faults injected, then an
//! account of what was lost (it must be nothing) and what was left behind.
//!
//! Starts `stacklab serve` on a fixed loopback port and drives it as
//! browsers would, four runs at a time, each by its own learner of one
//! class (so the per-learner limits apply, not one address's):
//!
//! - the mix: micro-VMs, hello and PostgreSQL containers, micro-VM and
//!   container density sweeps;
//! - client faults: some learners drop their event stream mid-run and come
//!   back with `Last-Event-ID` (no event may be lost or repeated), some
//!   walk away (the server cancels their run after its grace period);
//! - one `dockerd` restart after a third of the runs, one `kill -9` of the
//!   server and a restart on the same data after two thirds.
//!
//! The engine is the soak's own ([`PrivateEngine`]: its own socket, data
//! root, exec root, containerd namespace, no iptables rules), with the
//! demo images copied in from the host's engine (`docker save | docker
//! load`); the server under test is pointed at it with `DOCKER_HOST`. The
//! whole soak runs in a network namespace of its own, so that engine's
//! bridges are not the host's. The host's `dockerd`, its network and its
//! containers are never touched.
//!
//! At the end: every accepted run is in the history, finished (`server_
//! stopped` for those the killed server had); no demo container and no VMM
//! process is left; the server's open files and threads are back where
//! they were. The exit status says whether all of that held.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use stacklab_api::{Class, DemoId, EventKind, RunCreated, RunRecord, RunState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{
    call, demo_containers_with, join, processes_named, spawn_server_env, tempdir, ServerUse,
};
use super::private_engine::{in_own_network, PrivateEngine, DEMO_IMAGES};

/// Runs going at once.
const WORKERS: usize = 4;

/// What the learner of run `i` does with its event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Follows it to the end.
    Stays,
    /// Drops it after the first phases and comes back a second later.
    Blips,
    /// Drops it and never comes back.
    WalksAway,
}

/// Run `i`'s demo and client: a fixed mix, so two soaks of one size do the
/// same work.
fn plan(i: usize) -> (DemoId, Client) {
    let demo = match i % 20 {
        0..=7 => DemoId::MicroVm,
        8..=12 => DemoId::HelloContainer,
        13..=16 => DemoId::PostgresContainer,
        17..=18 => DemoId::DensityMicroVm,
        _ => DemoId::DensityContainer,
    };
    let client = match i % 10 {
        3 | 8 => Client::Blips,
        6 => Client::WalksAway,
        _ => Client::Stays,
    };
    (demo, client)
}

/// What the soak saw.
#[derive(Default)]
struct Tally {
    /// Accepted run ids, with their demo and client.
    accepted: Vec<(String, DemoId, Client)>,
    /// Requests refused (429 and the like), retried after `Retry-After`.
    refused: usize,
    /// Blips whose resumed stream lost or repeated an event.
    gaps: Vec<String>,
}

/// The server under test, restartable on the same address, data and engine.
struct Server {
    child: Child,
    addr: String,
    docker_host: String,
}

impl Server {
    fn spawn(data: &std::path::Path, addr: &str, docker_host: &str) -> anyhow::Result<Server> {
        let (child, addr) = spawn_server_env(data, addr, &[], &[("DOCKER_HOST", docker_host)])?;
        Ok(Server {
            child,
            addr,
            docker_host: docker_host.to_owned(),
        })
    }
}

pub async fn soak(runs: usize) -> anyhow::Result<()> {
    let args = [
        "bench".to_owned(),
        "soak".into(),
        "--runs".into(),
        runs.to_string(),
    ];
    if let Some(status) = in_own_network(&args)? {
        if !status.success() {
            bail!("the soak (in its own network namespace) failed: {status}");
        }
        return Ok(());
    }
    let prepared = Instant::now();
    let mut engine = PrivateEngine::start()?;
    engine.load_from_host(&DEMO_IMAGES)?;
    println!(
        "stacklab bench soak: a private dockerd (pid {}) on {} (under {}), demo images copied in; ready after {:.1?}",
        engine.pid().unwrap_or(0),
        engine.host(),
        engine.dir().display(),
        prepared.elapsed()
    );
    let data = tempdir("soak")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server::spawn(&data, &addr, &engine.host())?;
    let addr = server.addr.clone();
    let class: Class = serde_json::from_str(
        &call(
            &addr,
            "POST",
            "/api/classes",
            Some((r#"{"name":"soak","expires_in_secs":86400}"#, true)),
        )
        .await?
        .1,
    )?;
    println!("stacklab bench soak: {runs} mixed runs, {WORKERS} at a time, on {addr}");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (next, tally, addr, code) = (
            next.clone(),
            tally.clone(),
            addr.clone(),
            class.code.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= runs {
                    return;
                }
                if let Err(e) = one_run(&addr, &code, i, &tally).await {
                    println!("  run {i}: the client gave up: {e:#}");
                }
            }
        }));
    }

    // The faults, at a third and two thirds of the runs started.
    let wait_for = |n: usize| {
        let next = next.clone();
        async move {
            while next.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(runs / 3).await;
    let docker_back = tokio::task::block_in_place(|| engine.restart())?;
    println!(
        "  fault: the private dockerd restarted; the engine answered again after {docker_back:.1?}"
    );
    wait_for(2 * runs / 3).await;
    let server_back = kill_and_restart(&mut server, &data)?;
    println!("  fault: the server was killed (SIGKILL) and restarted; it listened again after {server_back:.1?}");
    let first_after = first_run_after_restart(&addr, &class.code).await?;
    println!("  after the restart, a new micro-VM run was ready {first_after:.1?} after the server listened again");
    // The leak check's "before": the restarted process as its runs begin
    // (one run done, so its connection pools exist), against the same
    // process after the last run; not two readings both taken after.
    let before = ServerUse::of(server.child.id());
    for w in workers {
        w.await?;
    }
    let wall = started.elapsed();

    // The account.
    let pid = server.child.id();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut lost = Vec::new();
    for (id, demo, _) in &tally.accepted {
        let record = finished_record(&addr, id).await;
        match record {
            Some(r) if !matches!(r.state, RunState::Queued | RunState::Running) => {
                let how = match r.outcome() {
                    Some(stacklab_api::Outcome::Failed { error }) => {
                        format!("{:?} {}", r.state, error.code)
                    }
                    _ => format!("{:?}", r.state),
                };
                *states.entry(how).or_default() += 1;
            }
            Some(r) => lost.push(format!("{id} ({demo}): still {:?}", r.state)),
            None => lost.push(format!("{id} ({demo}): not found")),
        }
    }
    // Idle: tokio's spare blocking threads exit after 10 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = ServerUse::of(pid);
    let containers = demo_containers_with(&mut engine.docker());
    let vmms = processes_named("stacklab-vmm", None);
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
    let _ = std::fs::remove_dir_all(&data);

    let accepted = tally.accepted.len();
    let of = |c: Client| tally.accepted.iter().filter(|a| a.2 == c).count();
    println!();
    println!("runs accepted          {accepted} of {runs} in {wall:.1?} (requests refused and retried: {})", tally.refused);
    println!("faults injected        {} stream drops resumed with Last-Event-ID, {} learners who walked away, 1 dockerd restart, 1 server kill -9", of(Client::Blips), of(Client::WalksAway));
    for (how, n) in &states {
        println!("  ended {how:<40} {n}");
    }
    println!(
        "lost                   {} accepted runs not in the history as finished{}",
        lost.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(": {lost:?}")
        }
    );
    println!(
        "events lost/repeated   {} resumed streams{}",
        tally.gaps.len(),
        if tally.gaps.is_empty() {
            String::new()
        } else {
            format!(": {:?}", tally.gaps)
        }
    );
    println!("recovery               engine back {docker_back:.1?} after its restart; server listening {server_back:.1?} after the kill, first run ready {first_after:.1?} after");
    println!(
        "left behind            demo containers {}, VMM processes {vmms}",
        containers.map_or("unknown (docker ps failed)".into(), |n| n.to_string())
    );
    println!("server (restarted)     open files {} as its runs began → {} after the last run and 11 s idle, threads {} → {}, RSS {} → {} KiB", before.fds, after.fds, before.threads, after.threads, before.rss_kib, after.rss_kib);

    let mut failed = Vec::new();
    if accepted < runs {
        failed.push(format!("{} runs were never accepted", runs - accepted));
    }
    if !lost.is_empty() {
        failed.push(format!("{} runs lost", lost.len()));
    }
    if !tally.gaps.is_empty() {
        failed.push(format!(
            "{} resumed streams lost or repeated events",
            tally.gaps.len()
        ));
    }
    if containers != Some(0) {
        failed.push(format!("demo containers left: {containers:?}"));
    }
    if vmms != 0 {
        failed.push(format!("{vmms} VMM processes left"));
    }
    if after.fds > before.fds {
        failed.push(format!(
            "the server's open files grew over its runs: {} → {}",
            before.fds, after.fds
        ));
    }
    if after.threads > before.threads {
        failed.push(format!(
            "the server's threads grew over its runs: {} → {}",
            before.threads, after.threads
        ));
    }
    if failed.is_empty() {
        println!("verdict                nothing lost, nothing left behind");
        Ok(())
    } else {
        bail!("the soak failed: {}", failed.join("; "))
    }
}

/// Run `i`: its learner joins, asks (retrying when refused), and follows
/// the run the way `plan(i)` says.
async fn one_run(addr: &str, code: &str, i: usize, tally: &Mutex<Tally>) -> anyhow::Result<()> {
    let (demo, client) = plan(i);
    let learner = format!("soak-learner-{i:05}");
    // In a class the instructor runs the sweeps, once for the room (with
    // the token and no learner); learners run the single demos.
    let as_instructor = demo.density_of().is_some();
    let body = if as_instructor {
        format!(r#"{{"demo":"{demo}","class":"{code}"}}"#)
    } else {
        format!(r#"{{"demo":"{demo}","learner":"{learner}","class":"{code}"}}"#)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        // The server may be down for a moment (its restart): retry.
        let answer = match join(addr, code, &learner).await {
            Ok(()) => call(addr, "POST", "/api/runs", Some((&body, as_instructor))).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok((202, text)) => break serde_json::from_str::<RunCreated>(&text)?.id,
            Ok((429 | 503, _)) | Err(_) if Instant::now() < deadline => {
                tally.lock().unwrap().refused += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok((status, text)) => bail!("POST /api/runs answered {status}: {text}"),
            Err(e) => return Err(e),
        }
    };
    tally
        .lock()
        .unwrap()
        .accepted
        .push((id.clone(), demo, client));
    match follow(addr, &id, client).await {
        Ok(Some(gap)) => tally.lock().unwrap().gaps.push(format!("{id}: {gap}")),
        Ok(None) => {}
        // The server was killed under it: the history says how it ended.
        Err(_) => {}
    }
    Ok(())
}

/// Follows run `id`'s events as `client` does. Returns a description of
/// any event lost or repeated across a resumed stream.
async fn follow(addr: &str, id: &str, client: Client) -> anyhow::Result<Option<String>> {
    let mut seqs: Vec<u32> = Vec::new();
    let mut dropped = false;
    loop {
        let last = seqs.last().copied();
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let resume = last.map_or(String::new(), |s| format!("Last-Event-ID: {s}\r\n"));
        let request = format!(
            "GET /api/runs/{id}/events HTTP/1.1\r\nHost: {addr}\r\n{resume}Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut seen = String::new();
        let mut buf = [0u8; 16384];
        let mut this_stream = 0usize;
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                if seen.starts_with("HTTP/1.1 404") {
                    // Gone from memory: a run of the killed server.
                    return Ok(None);
                }
                bail!("the stream of run {id} ended before `finished`");
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            // Whole events only: up to the last blank line.
            let Some(end) = seen.rfind("\n\n") else {
                continue;
            };
            let complete: String = seen.drain(..end + 2).collect();
            for data in complete.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let Ok(event) = serde_json::from_str::<stacklab_api::RunEvent>(data) else {
                    continue;
                };
                seqs.push(event.seq);
                this_stream += 1;
                if matches!(event.kind, EventKind::Finished { .. }) {
                    let expected: Vec<u32> = (0..seqs.len() as u32).collect();
                    return Ok((seqs != expected).then(|| format!("seqs {seqs:?}")));
                }
            }
            if this_stream >= 2 && !dropped && client != Client::Stays {
                dropped = true;
                drop(stream);
                if client == Client::WalksAway {
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        }
    }
}

/// Run `id`'s record once it is finished; a walked-away run ends within the
/// server's grace period, so this waits up to 30 s for one still open.
async fn finished_record(addr: &str, id: &str) -> Option<RunRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = call(addr, "GET", &format!("/api/runs/{id}"), None)
            .await
            .ok()?;
        let record: Option<RunRecord> = (status == 200)
            .then(|| serde_json::from_str(&text).ok())
            .flatten();
        match record {
            Some(r)
                if matches!(r.state, RunState::Queued | RunState::Running)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some(r) => return Some(r),
            None => {
                eprintln!("GET /api/runs/{id} answered {status}: {text:.300}");
                return None;
            }
        }
    }
}

/// SIGKILL, then `stacklab serve` again on the same address and data;
/// how long until it listened.
fn kill_and_restart(server: &mut Server, data: &std::path::Path) -> anyhow::Result<Duration> {
    let killed = Instant::now();
    server.child.kill()?;
    server.child.wait()?;
    let again = Server::spawn(data, &server.addr, &server.docker_host)?;
    anyhow::ensure!(
        again.addr == server.addr,
        "the restarted server listens on {}, not {}",
        again.addr,
        server.addr
    );
    *server = again;
    Ok(killed.elapsed())
}

/// Time until a fresh micro-VM run succeeds on the restarted server.
async fn first_run_after_restart(addr: &str, code: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let learner = "soak-after-restart";
    join(addr, code, learner).await?;
    let body = format!(r#"{{"demo":"micro-vm","learner":"{learner}","class":"{code}"}}"#);
    let (status, text) = call(addr, "POST", "/api/runs", Some((&body, false))).await?;
    anyhow::ensure!(
        status == 202,
        "POST /api/runs after the restart answered {status}: {text}"
    );
    let id = serde_json::from_str::<RunCreated>(&text)?.id;
    super::client::events(addr, &id).await?;
    Ok(started.elapsed())
}
