//! `stacklab bench container`: cold starts of the container demo, timed the
//! way the server times them, interleaved with the Docker CLI doing the same
//! (`docker run -d` with the same image and limits, then a `pg_isready`
//! loop), so both see the same machine state.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::Docker;
use stacklab_api::{DemoId, Metric, Outcome};

use super::{median, ms, row, verdict};
use crate::backends::docker::{image, ContainerSpec, DockerRuntime, Owner, NETWORK};
use crate::engine::{Queue, Runs};

/// One stacklab sample.
struct Sample {
    create_to_ready: Duration,
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
    let owner = Owner::current();
    let runtime = Arc::new(DockerRuntime::new(
        docker,
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
    for i in 0..n {
        let s = ours(&runs, &runtime, &queue).await?;
        let b = cli(&image, &owner).await?;
        println!(
            "  run {:>2}: stacklab create→SELECT 1 {:>7.1} ms (lag {:>5.1} ms)   docker run + pg_isready {:>7.1} ms",
            i + 1,
            ms(s.create_to_ready),
            ms(s.lag),
            ms(b)
        );
        stacklab.push(s);
        baseline.push(b);
    }
    let ours_t: Vec<Duration> = stacklab.iter().map(|s| s.create_to_ready).collect();
    let lags: Vec<Duration> = stacklab.iter().map(|s| s.lag).collect();
    println!();
    row("stacklab (create → SELECT 1)", &ours_t);
    row("CLI (docker run → pg_isready)", &baseline);
    row("readiness lag", &lags);
    let ratio = ms(median(&ours_t)) / ms(median(&baseline));
    println!();
    println!(
        "ratio stacklab / CLI (medians): {ratio:.3}   target <= 0.95   {}",
        verdict(ratio <= 0.95)
    );
    let lag = ms(median(&lags));
    println!(
        "readiness lag (median): {lag:.1} ms   target <= 20 ms   {}",
        verdict(lag <= 20.0)
    );
    Ok(())
}

async fn ours(
    runs: &Arc<Runs>,
    runtime: &Arc<DockerRuntime>,
    queue: &Arc<Queue>,
) -> anyhow::Result<Sample> {
    let run = runs.start(
        DemoId::PostgresContainer,
        runtime.clone(),
        queue.clone(),
        Duration::from_secs(60),
    );
    let mut changes = run.subscribe();
    while !run.is_finished() {
        changes.changed().await?;
    }
    let record = run.record();
    let at = |name: &str| run.phase_at(name);
    match record.outcome() {
        Some(Outcome::Ready { measurements, .. }) => {
            let create_to_ready = measurements
                .iter()
                .find(|m| m.key == Metric::CreateToReady.into())
                .map(|m| Duration::from_micros(m.value as u64))
                .context("no create_to_ready")?;
            let lag = at("ready")
                .zip(at("server_ready"))
                .map(|(r, s)| Duration::from_micros(r.saturating_sub(s)))
                .context("no ready/server_ready phases")?;
            Ok(Sample {
                create_to_ready,
                lag,
            })
        }
        other => bail!("a stacklab run failed: {other:?}"),
    }
}

/// `docker run -d` with the demo's image and limits, then `pg_isready` until
/// it answers; the container is removed afterwards.
async fn cli(image: &image::PresentImage, owner: &Owner) -> anyhow::Result<Duration> {
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
    let result = async {
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
        loop {
            let status = tokio::process::Command::new("pg_isready")
                .args(["-q", "-h", &ip, "-p", "5432", "-t", "1"])
                .stdout(Stdio::null())
                .status()
                .await
                .context("pg_isready (apt-get install postgresql-client)")?;
            if status.success() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("pg_isready never succeeded");
            }
        }
    }
    .await;
    let _ = tokio::process::Command::new("docker")
        .args(["rm", "-f", "-v", &id])
        .output()
        .await;
    result
}
