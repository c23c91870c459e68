//! `stacklab bench room`: a workshop arriving at once, against the same
//! server's runs alone.
//!
//! Starts `stacklab serve` (this very binary) as a child process on a free
//! port and talks to it over plain HTTP as browsers would:
//!
//! 1. **Alone**: one learner runs the container demo a few times, one after
//!    another: the baseline of request → ready and of the server's measured
//!    create → ready.
//! 2. **Room**: N learners join one class; at one moment each starts the
//!    container demo and the micro-VM demo and follows both event streams
//!    to the end.
//! 3. **Hog**: one anonymous client fires a burst of run requests; then one
//!    learner of the class asks for a run; how long that learner waits.
//! 4. **Leaks**: demo containers and VMM processes left, and the server's
//!    open files, threads and RSS before and after.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stacklab_api::{
    Capacity, Class, DemoId, EventKind, Health, Metric, Outcome, Phase, RunCreated,
};

use super::client::{
    call, call_on, demo_containers, events, join, processes_named, spawn_server, tempdir, ServerUse,
};
use super::{median, ms, verdict};

/// Container runs each learner makes alone for the baseline.
const ALONE_RUNS: usize = 5;
/// Run requests the hog fires at once.
const HOG_REQUESTS: usize = 30;

/// One finished run as a learner saw it.
struct Seen {
    /// Client clock: request sent → `finished` received.
    wall: Duration,
    /// Server clock: accepted → left the queue (`None`: the run never
    /// left it).
    queued: Option<Duration>,
    /// The server's measured figures, when ready.
    outcome: Option<Outcome>,
    /// The replica that accepted it.
    replica: Option<String>,
}

impl Seen {
    fn value(&self, metric: Metric) -> Option<Duration> {
        self.outcome
            .as_ref()?
            .value(metric)
            .map(|us| Duration::from_secs_f64(us / 1e6))
    }
}

/// Runs the benchmark with `learners` learners (and the server's container
/// slots set to `container_slots`, when given) and prints its report.
pub async fn room(
    learners: usize,
    container_slots: Option<usize>,
    url: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(url) = url {
        // A lab someone else runs: no server process of ours to watch.
        let addr = url.split_once("://").map_or(url, |(_, rest)| rest);
        return scenario(addr, None, learners).await;
    }
    let data = tempdir("room")?;
    let extra: Vec<String> = container_slots
        .map(|n| vec!["--max-container-runs".into(), n.to_string()])
        .unwrap_or_default();
    let (mut server, addr) = spawn_server(&data, "127.0.0.1:0", &extra)?;
    let result = scenario(&addr, Some(server.id()), learners).await;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn scenario(addr: &str, pid: Option<u32>, learners: usize) -> anyhow::Result<()> {
    let health: Health = serde_json::from_str(&call(addr, "GET", "/api/health", None).await?.1)?;
    let slots = capacity_of(&health.capacity, DemoId::PostgresContainer)?.slots as usize;
    println!(
        "room: {learners} learners, each starting the container demo and the micro-VM demo at the same moment"
    );
    println!("host: {}", crate::backends::host::describe());
    for c in &health.capacity {
        println!(
            "  slots for {:?}: {} ({})",
            c.demos.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            c.slots,
            c.sized_by
        );
    }
    let class: Class = serde_json::from_str(
        &call(
            addr,
            "POST",
            "/api/classes",
            // The room's learners and the one who runs alone first.
            Some((
                &format!(
                    r#"{{"name":"bench room","expires_in_secs":3600,"max_members":{}}}"#,
                    (learners + 1).min(stacklab_api::MAX_MAX_MEMBERS as usize)
                ),
                true,
            )),
        )
        .await?
        .1,
    )?;
    let before = pid.map(ServerUse::of);

    // 1. Alone.
    let solo = learner_id(0);
    join(addr, &class.code, &solo).await?;
    let mut alone = Vec::new();
    // One untimed run warms the page cache for the image.
    run(addr, DemoId::PostgresContainer, &solo, &class.code).await?;
    for _ in 0..ALONE_RUNS {
        alone.push(run(addr, DemoId::PostgresContainer, &solo, &class.code).await?);
    }
    let alone_wall = median(&alone.iter().map(|s| s.wall).collect::<Vec<_>>());
    let alone_create = median(
        &alone
            .iter()
            .filter_map(|s| s.value(Metric::CreateToReady))
            .collect::<Vec<_>>(),
    );
    let alone_platform = median(
        &alone
            .iter()
            .filter_map(|s| s.value(Metric::PlatformShare))
            .collect::<Vec<_>>(),
    );
    println!(
        "alone ({ALONE_RUNS} runs back to back): request → ready median {:.0} ms; measured create → SELECT 1 median {:.0} ms; platform share median {:.0} ms",
        ms(alone_wall),
        ms(alone_create),
        ms(alone_platform)
    );

    // 2. The room.
    let ids: Vec<String> = (1..=learners).map(learner_id).collect();
    for id in &ids {
        join(addr, &class.code, id).await?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .flat_map(|id| {
            [DemoId::PostgresContainer, DemoId::MicroVm].map(|demo| {
                let (addr, id, code) = (addr.to_owned(), id.clone(), class.code.clone());
                tokio::spawn(async move { (demo, run(&addr, demo, &id, &code).await) })
            })
        })
        .collect();
    let mut by_demo: HashMap<DemoId, Vec<Seen>> = HashMap::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (demo, seen) = t.await?;
        match seen {
            Ok(s)
                if s.outcome
                    .as_ref()
                    .is_some_and(|o| matches!(o, Outcome::Ready { .. })) =>
            {
                by_demo.entry(demo).or_default().push(s)
            }
            Ok(s) => failed.push(format!("{demo}: {:?}", s.outcome)),
            Err(e) => failed.push(format!("{demo}: {e:#}")),
        }
    }
    let room_time = started.elapsed();
    println!(
        "room: all {} runs ended after {:.1} s; {} failed",
        learners * 2,
        room_time.as_secs_f64(),
        failed.len()
    );
    for f in failed.iter().take(5) {
        println!("  failed: {f}");
    }
    // Which replica accepted each run (one line per replica; a lone
    // server names itself too).
    let mut per_replica: std::collections::BTreeMap<String, usize> = Default::default();
    for s in by_demo.values().flatten() {
        *per_replica
            .entry(s.replica.clone().unwrap_or_else(|| "unnamed".into()))
            .or_default() += 1;
    }
    for (replica, n) in &per_replica {
        println!("  runs per replica: {replica} {n}");
    }
    for demo in [DemoId::PostgresContainer, DemoId::MicroVm] {
        let seen = by_demo.remove(&demo).unwrap_or_default();
        if seen.is_empty() {
            continue;
        }
        let mut wall: Vec<Duration> = seen.iter().map(|s| s.wall).collect();
        wall.sort();
        let q = |f: f64| wall[((wall.len() as f64 * f) as usize).min(wall.len() - 1)];
        let queued = seen
            .iter()
            .filter_map(|s| s.queued)
            .max()
            .unwrap_or_default();
        let created: Vec<Duration> = seen
            .iter()
            .filter_map(|s| s.value(Metric::CreateToReady))
            .collect();
        println!(
            "  {demo}: request → ready p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; longest queue wait {:.0} ms; measured create → ready median {:.1} ms",
            ms(q(0.5)),
            ms(q(0.95)),
            ms(q(1.0)),
            ms(queued),
            ms(median(&created))
        );
        if demo == DemoId::PostgresContainer {
            let back_to_back = alone_wall * learners as u32;
            let goal = back_to_back / slots as u32 + alone_wall;
            println!(
                "    p95 {:.1} s against the same {learners} runs back to back ÷ {slots} slot(s) + one run = {:.1} s: {} (no scheduling waste)",
                q(0.95).as_secs_f64(),
                goal.as_secs_f64(),
                verdict(q(0.95) <= goal)
            );
            // Planning: the room's measured pace, and how many learners
            // that serves within a minute (the last one's wait included).
            let pace = learners as f64 / q(1.0).as_secs_f64();
            println!(
                "    this host served {pace:.2} container runs/s to the room: about {} learners get their container result within 60 s of all clicking at once",
                (pace * 60.0).floor() as u64
            );
            let ratio = median(&created).as_secs_f64() / alone_create.as_secs_f64();
            println!(
                "    learners' measured create → ready in the room ÷ alone = {ratio:.2}× (goal ≤ 1.25×: {})",
                verdict(ratio <= 1.25)
            );
            let platform: Vec<Duration> = seen
                .iter()
                .filter_map(|s| s.value(Metric::PlatformShare))
                .collect();
            if platform.is_empty() || alone_platform.is_zero() {
                println!("    platform share: missing (no run of the room, or none alone, reported one): FAIL");
            } else {
                let ratio = median(&platform).as_secs_f64() / alone_platform.as_secs_f64();
                println!(
                    "    platform share (start → container running), median in the room {:.0} ms ÷ alone {:.0} ms = {ratio:.2}× of {} runs (goal ≤ 1.5×: {})",
                    ms(median(&platform)),
                    ms(alone_platform),
                    platform.len(),
                    verdict(ratio <= 1.5)
                );
            }
            let waits: Vec<Duration> = seen.iter().filter_map(|s| s.queued).collect();
            if waits.is_empty() {
                println!("    waited in line: missing (no run left the queue)");
            } else {
                println!(
                    "    waited in line (accepted → left the queue, its own figure): median {:.0} ms, longest {:.0} ms, of {} runs",
                    ms(median(&waits)),
                    ms(waits.iter().max().copied().unwrap_or_default()),
                    waits.len()
                );
            }
        }
    }

    // 3. The hog.
    let (hog_accepted, hog_refused, hog_runs) = hog(addr).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let honest = run(addr, DemoId::PostgresContainer, &learner_id(0), &class.code).await?;
    for t in hog_runs {
        let _ = t.await;
    }
    println!(
        "hog: {HOG_REQUESTS} requests at once from one client: {hog_accepted} accepted, {hog_refused} refused with 429"
    );
    let per_run = alone_wall;
    match honest.queued {
        Some(waited) => println!(
            "  the next learner waited {:.0} ms in the queue (one run per slot ahead would be {:.0} ms): {}",
            ms(waited),
            ms(per_run),
            verdict(waited <= per_run + per_run / 4)
        ),
        None => println!("  the next learner's run never left the queue: FAIL"),
    }

    // 4. Leaks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let containers = demo_containers();
    let vmms = processes_named("stacklab-vmm", pid);
    let server = match (before, pid.map(ServerUse::of)) {
        (Some(before), Some(after)) => format!(
            "; server open files {} → {}, threads {} → {}, RSS {:.1} → {:.1} MiB",
            before.fds,
            after.fds,
            before.threads,
            after.threads,
            before.rss_kib as f64 / 1024.0,
            after.rss_kib as f64 / 1024.0
        ),
        _ => String::new(),
    };
    println!(
        "leaks: {} demo container(s), {} VMM process(es) left{server}",
        containers.map_or("?".into(), |n| n.to_string()),
        vmms,
    );
    if !failed.is_empty() || containers != Some(0) || vmms != 0 {
        bail!("the room had failures or leaks (see above)");
    }
    Ok(())
}

/// One anonymous client's burst: how many were taken and refused, and the
/// tasks following the taken ones (a run nobody watches is dropped).
async fn hog(addr: &str) -> anyhow::Result<(usize, usize, Vec<tokio::task::JoinHandle<()>>)> {
    let posts: Vec<_> = (0..HOG_REQUESTS)
        .map(|_| {
            let addr = addr.to_owned();
            tokio::spawn(async move {
                call(
                    &addr,
                    "POST",
                    "/api/runs",
                    Some((r#"{"demo":"postgres-container"}"#, false)),
                )
                .await
            })
        })
        .collect();
    let (mut accepted, mut refused, mut follow) = (0, 0, Vec::new());
    for p in posts {
        let (status, body) = p.await??;
        match status {
            202 => {
                accepted += 1;
                let id = serde_json::from_str::<RunCreated>(&body)?.id;
                let addr = addr.to_owned();
                follow.push(tokio::spawn(async move {
                    let _ = events(&addr, &id).await;
                }));
            }
            429 => refused += 1,
            other => bail!("the hog's request got {other}: {body}"),
        }
    }
    Ok((accepted, refused, follow))
}

fn capacity_of(capacity: &[Capacity], demo: DemoId) -> anyhow::Result<&Capacity> {
    capacity
        .iter()
        .find(|c| c.demos.contains(&demo))
        .with_context(|| format!("/api/health names no queue for {demo}"))
}

fn learner_id(n: usize) -> String {
    format!("bench-learner-{n:04}")
}

/// Starts `demo` for `learner` in class `code` and follows it to the end.
async fn run(addr: &str, demo: DemoId, learner: &str, code: &str) -> anyhow::Result<Seen> {
    let started = Instant::now();
    let body = format!(r#"{{"demo":"{demo}","learner":"{learner}","class":"{code}"}}"#);
    let reply = call_on(addr, "POST", "/api/runs", Some((&body, false))).await?;
    if reply.status != 202 {
        bail!("POST /api/runs answered {}: {}", reply.status, reply.body);
    }
    let id = serde_json::from_str::<RunCreated>(&reply.body)?.id;
    let events = events(addr, &id).await?;
    let queued = stacklab_api::phase_at(&events, Phase::SlotGranted)
        .zip(stacklab_api::phase_at(&events, Phase::Accepted))
        .map(|(left, came)| Duration::from_micros(left.saturating_sub(came)));
    let outcome = events.into_iter().find_map(|e| match e.kind {
        EventKind::Finished { outcome } => Some(outcome),
        _ => None,
    });
    Ok(Seen {
        wall: started.elapsed(),
        queued,
        outcome,
        replica: reply.replica,
    })
}
