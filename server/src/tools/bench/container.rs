//! `stacklab bench container`: cold starts of the container demo, timed the
//! way the server times them, interleaved with the Docker CLI doing the same
//! (`docker run -d` with the same image and limits, then `SELECT 1` polled
//! by psql from one host shell), so both see the same machine state; then
//! the smallest container's platform share against the micro-VM's.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::Docker;
use stacklab_api::{DemoId, Metric, Phase, RunRecord};

use super::{median, ms, row, through_server, verdict};
use crate::backends::docker::hello::HelloRuntime;
use crate::backends::docker::{image, ContainerSpec, DockerRuntime, Owner, NETWORK};
use crate::backends::kvm::{KvmRuntime, VmArtifacts};
use crate::engine::{Queue, Runs};

/// One stacklab sample.
struct Sample {
    create_to_ready: Duration,
    /// Request → the container's process running.
    platform: Duration,
    /// ready − the second "ready to accept connections" log line.
    lag: Duration,
}

/// Runs the benchmark and prints its report.
pub async fn container(docker: Docker, n: usize) -> anyhow::Result<()> {
    let image = image::find(&docker).await?;
    println!(
        "container cold start: {n} runs each, interleaved; image {} ({:?}, {:.0} MiB)",
        image.reference,
        image.kind,
        image.size_bytes as f64 / 1048576.0
    );
    println!("host: {}", crate::backends::host::describe());
    let owner = Owner::current();
    let runtime = Arc::new(DockerRuntime::new(
        docker.clone(),
        ContainerSpec::postgres_demo(),
        owner.clone(),
    ));
    let runs = Arc::new(Runs::default());
    let queue = Arc::new(Queue::new(1));
    // One untimed run of each to warm the page cache for the image.
    let _ = ours(&runs, &runtime, &queue).await;
    let _ = cli(&image, &owner).await;

    let mut stacklab = Vec::new();
    let mut baseline = Vec::new();
    let mut extra_spawns = Vec::new();
    for i in 0..n {
        let s = ours(&runs, &runtime, &queue).await?;
        let (b, spawns) = cli(&image, &owner).await?;
        println!(
            "  run {:>2}: stacklab create→SELECT 1 {:>7.1} ms (platform {:>6.1} ms, lag {:>5.1} ms)   docker run + psql loop {:>7.1} ms (of which extra spawns {:>5.1} ms)",
            i + 1,
            ms(s.create_to_ready),
            ms(s.platform),
            ms(s.lag),
            ms(b),
            ms(spawns)
        );
        stacklab.push(s);
        baseline.push(b);
        extra_spawns.push(spawns);
    }
    runs.shut_down().await;
    let ours_t: Vec<Duration> = stacklab.iter().map(|s| s.create_to_ready).collect();
    let platform: Vec<Duration> = stacklab.iter().map(|s| s.platform).collect();
    let lags: Vec<Duration> = stacklab.iter().map(|s| s.lag).collect();
    println!();
    row("stacklab (create → SELECT 1)", &ours_t);
    row("stacklab platform share (start → running)", &platform);
    row("CLI (docker run → SELECT 1, host psql loop)", &baseline);
    row(
        "CLI: of which extra spawns (docker inspect, sh)",
        &extra_spawns,
    );
    row("readiness lag", &lags);
    let ratio = ms(median(&ours_t)) / ms(median(&baseline));
    let without: Vec<Duration> = baseline
        .iter()
        .zip(&extra_spawns)
        .map(|(b, s)| b.saturating_sub(*s))
        .collect();
    println!();
    println!(
        "ratio stacklab / CLI (medians): {ratio:.3}   target <= 0.95   {}",
        verdict(ratio <= 0.95)
    );
    println!(
        "ratio stacklab / CLI less its extra spawns (medians): {:.3} (the CLI baseline's docker inspect and sh spawns, measured: median {:.1} ms)",
        ms(median(&ours_t)) / ms(median(&without)),
        ms(median(&extra_spawns))
    );
    let lag = ms(median(&lags));
    println!(
        "readiness lag (median): {lag:.1} ms   target <= 20 ms   {}",
        verdict(lag <= 20.0)
    );
    platforms(docker, owner, n).await
}

/// Platform against platform: the smallest container and the tiny
/// micro-VM, each through the server's own path, `n` runs each,
/// interleaved; their platform shares and the ratio of the medians.
async fn platforms(docker: Docker, owner: Owner, n: usize) -> anyhow::Result<()> {
    let runs = Arc::new(Runs::default());
    let queue = Arc::new(Queue::new(1));
    let hello = Arc::new(HelloRuntime::new(docker, owner));
    let vm = VmArtifacts::locate()
        .ok()
        .filter(|_| stacklab_vmm::host::probe().is_ok())
        .map(|a| Arc::new(KvmRuntime::new(a, Default::default())));
    if vm.is_none() {
        println!("micro-VM platform share skipped: no KVM or no VMM here");
    }
    let share = |record: RunRecord| {
        record
            .outcome()
            .and_then(|o| o.value(Metric::PlatformShare))
            .map(|us| Duration::from_micros(us as u64))
            .context("no platform share")
    };
    let (mut containers, mut vms) = (Vec::new(), Vec::new());
    let _ = through_server(&runs, DemoId::HelloContainer, hello.clone(), &queue).await;
    for _ in 0..n {
        containers.push(share(
            through_server(&runs, DemoId::HelloContainer, hello.clone(), &queue).await?,
        )?);
        if let Some(vm) = &vm {
            vms.push(share(
                through_server(&runs, DemoId::MicroVm, vm.clone(), &queue).await?,
            )?);
        }
    }
    runs.shut_down().await;
    println!();
    row("hello-container platform share", &containers);
    if !vms.is_empty() {
        row("micro-VM platform share", &vms);
        println!(
            "platform shares, hello-container / micro-VM (medians of {n}): {:.2}x",
            ms(median(&containers)) / ms(median(&vms))
        );
    }
    Ok(())
}

async fn ours(
    runs: &Arc<Runs>,
    runtime: &Arc<DockerRuntime>,
    queue: &Arc<Queue>,
) -> anyhow::Result<Sample> {
    let record = through_server(runs, DemoId::PostgresContainer, runtime.clone(), queue).await?;
    let outcome = record.outcome().context("no outcome")?;
    let us = |key: Metric| {
        outcome
            .value(key)
            .map(|v| Duration::from_micros(v as u64))
            .with_context(|| format!("no {key}"))
    };
    let at = |which: Phase| record.phase_at(which);
    let lag = at(Phase::Ready)
        .zip(at(Phase::ServerReady))
        .map(|(r, s)| Duration::from_micros(r.saturating_sub(s)))
        .context("no ready/server_ready phases")?;
    Ok(Sample {
        create_to_ready: us(Metric::CreateToReady)?,
        platform: us(Metric::PlatformShare)?,
        lag,
    })
}

/// `docker run -d` with the demo's image and limits, then one host shell
/// polling `SELECT 1` with psql until it answers; the container is removed
/// afterwards. Returns the whole time and, measured within it, what the
/// baseline spends spawning processes ours does not need before it polls
/// (`docker inspect` for the address, the `sh` that loops).
async fn cli(image: &image::PresentImage, owner: &Owner) -> anyhow::Result<(Duration, Duration)> {
    let (uid, gid) = image.postgres_uid_gid.unwrap_or((999, 999));
    let spec = ContainerSpec::postgres_demo();
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--network".into(),
        NETWORK.into(),
    ];
    for (k, v) in owner.labels() {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.extend([
        "--user".into(),
        format!("{uid}:{gid}"),
        "--read-only".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--memory".into(),
        spec.memory_bytes.to_string(),
        "--pids-limit".into(),
        spec.pids_limit.to_string(),
        "--cpus".into(),
        format!("{}", spec.nano_cpus as f64 / 1e9),
        "--tmpfs".into(),
        format!(
            "/var/lib/postgresql/data:rw,size={},uid={uid},gid={gid},mode=0700",
            spec.data_tmpfs_bytes
        ),
        "--tmpfs".into(),
        format!("/var/run/postgresql:rw,size=1m,uid={uid},gid={gid},mode=0775"),
        "--tmpfs".into(),
        "/tmp:rw,size=8m,mode=1777".into(),
        "-e".into(),
        "PGDATA=/var/lib/postgresql/data/pgdata".into(),
        "-e".into(),
        "POSTGRES_PASSWORD=bench".into(),
        image.reference.into(),
    ]);
    let start = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args(&args)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // Readiness the cheapest way the CLI allows, and as strict as ours (a
    // login and SELECT 1 over TCP): one host shell looping psql against
    // the container's address. (A loop inside the container, through one
    // `docker exec`, would run every psql inside the container's 1-CPU
    // quota, beside initdb, and slow the very start it measures.)
    let result = async {
        let spawns_from = Instant::now();
        let ip = tokio::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &id,
            ])
            .output()
            .await?;
        let ip = String::from_utf8_lossy(&ip.stdout).trim().to_owned();
        // The shell stamps the moment it starts (its own spawn is the rest
        // of the extra cost) on stderr, then loops.
        let poll = format!("date +%s%N >&2; until psql -h {ip} -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; do sleep 0.005; done");
        let inspected = spawns_from.elapsed();
        // `date +%s%N` reads the wall clock: so does this.
        let before_sh = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let shell = tokio::process::Command::new("sh")
            .args(["-c", &poll])
            .env("PGPASSWORD", "bench")
            .env("PGCONNECT_TIMEOUT", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match tokio::time::timeout(Duration::from_secs(60), shell).await {
            Ok(Ok(out)) if out.status.success() => {
                let whole = start.elapsed();
                let sh_started: u64 = String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .parse()
                    .context("the shell did not stamp its start")?;
                let sh_spawn = Duration::from_nanos(sh_started.saturating_sub(before_sh));
                Ok((whole, inspected + sh_spawn))
            }
            Ok(Ok(out)) => bail!("the psql loop ended with {}", out.status),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context("sh/psql (apt-get install postgresql-client)")),
            Err(_) => bail!("SELECT 1 never succeeded within 60 s"),
        }
    }
    .await;
    let _ = tokio::process::Command::new("docker")
        .args(["rm", "-f", "-v", &id])
        .output()
        .await;
    result
}
