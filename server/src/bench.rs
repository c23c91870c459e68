//! `stacklab bench container`: cold starts of the container demo, timed the
//! way the server times them, interleaved with the Docker CLI doing the same
//! (`docker run -d` with the same image and limits, then a `pg_isready`
//! loop), so both see the same machine state. Prints medians and ratios.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::Docker;
use stacklab_api::{DemoId, EventKind, Outcome, RunRecord};

use crate::container::{image, ContainerSpec, DockerRuntime, Owner, NETWORK};
use crate::runs::{Queue, Runs};

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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of results: median, min and max of `v` (never empty: `-n` is
/// at least 1).
fn row(name: &str, v: &[Duration]) {
    println!(
        "{name:<44} median {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
        ms(median(v)),
        ms(v.iter().min().copied().unwrap_or_default()),
        ms(v.iter().max().copied().unwrap_or_default())
    )
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
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
    let at = |name: &str| phase_at(&record, name);
    match record.outcome() {
        Some(Outcome::Ready { measurements, .. }) => {
            let create_to_ready = measurements
                .iter()
                .find(|m| m.key == "create_to_ready")
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

fn phase_at(record: &RunRecord, name: &str) -> Option<u64> {
    record.events.iter().find_map(|e| match &e.kind {
        EventKind::Phase { phase, .. } if phase == name => Some(e.at_us),
        _ => None,
    })
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

// ---------------------------------------------------------------------------
// Micro-VM
// ---------------------------------------------------------------------------

/// One child-process run: spawn → ready and spawn → exit, the VMM's own
/// create → ready, and its RSS.
struct VmSample {
    spawn_to_ready: Duration,
    spawn_to_exit: Duration,
    create_to_ready: Duration,
    rss: u64,
}

fn vmm_child(artifacts: &crate::microvm::VmArtifacts) -> anyhow::Result<VmSample> {
    use stacklab_vmm::protocol::Line;
    use std::io::BufRead;
    let spawned_ns = stacklab_vmm::vm::monotonic_ns();
    let start = Instant::now();
    let mut child = std::process::Command::new(&artifacts.vmm)
        .arg("--image")
        .arg(&artifacts.guest)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut first = None;
    let mut ready = None;
    let mut rss = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        match serde_json::from_str::<Line>(&line?)? {
            Line::Event(e) => {
                first.get_or_insert(e.mono_ns);
                if e.phase == "ready" {
                    ready = Some(e.mono_ns);
                }
            }
            Line::Done { vmm_rss_bytes, .. } => rss = vmm_rss_bytes,
            Line::Error { message, .. } => bail!("the VMM failed: {message}"),
        }
    }
    child.wait()?;
    let spawn_to_exit = start.elapsed();
    let (first, ready) = (first.context("no events")?, ready.context("never ready")?);
    Ok(VmSample {
        spawn_to_ready: Duration::from_nanos(ready - spawned_ns),
        spawn_to_exit,
        create_to_ready: Duration::from_nanos(ready - first),
        rss,
    })
}

/// The same guest under QEMU (`-M microvm -enable-kvm`), from spawn until
/// it exits through `isa-debug-exit` right after its ready signal.
fn qemu(guest: &std::path::Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm",
            "-enable-kvm",
            "-cpu",
            "host",
            "-m",
            "16M",
            "-smp",
            "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "null",
        ])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel",
        ])
        .arg(guest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU did not finish the guest within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let elapsed = start.elapsed();
    // isa-debug-exit: the guest wrote 0, QEMU exits with (0 << 1) | 1.
    if status.code() != Some(1) {
        bail!("QEMU did not exit through isa-debug-exit ({status})");
    }
    Ok(elapsed)
}

/// `stacklab bench vm`: the micro-VM, in-process and as a child process,
/// its throughput on all cores, and the same guest under QEMU.
pub fn vm(n: usize) -> anyhow::Result<()> {
    use stacklab_vmm::vm::{run, VmConfig};
    let artifacts = crate::microvm::VmArtifacts::locate().map_err(anyhow::Error::msg)?;
    let image = std::fs::read(&artifacts.guest)?;
    let config = VmConfig::default();
    println!(
        "micro-VM: {n} runs of each kind; guest {} ({} bytes); host KVM: {}",
        artifacts.guest.display(),
        image.len(),
        stacklab_vmm::host::probe()
            .map(|h| format!("{:?}", h.backing))
            .unwrap_or_else(|e| e.to_string())
    );

    // In-process (a thread per VM): the VMM's own create → ready.
    let mut in_process = Vec::new();
    let mut teardown = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let report = run(&image, &config, &mut |_| {})?;
        let whole = t.elapsed();
        let ready = report
            .span("kvm_opened", "ready")
            .context("no ready step")?;
        in_process.push(ready);
        teardown.push(whole.saturating_sub(ready));
    }

    // Child process per VM, interleaved with QEMU on the same guest.
    let mut child = Vec::new();
    let mut qemu_runs = Vec::new();
    let qemu_ok = qemu(&artifacts.guest);
    if let Err(e) = &qemu_ok {
        println!("QEMU comparison skipped: {e:#}");
    }
    for _ in 0..n {
        child.push(vmm_child(&artifacts)?);
        if qemu_ok.is_ok() {
            qemu_runs.push(qemu(&artifacts.guest)?);
        }
    }

    // Throughput: one worker per core, each running VMs back to back.
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let per_worker = n.max(20);
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..per_worker {
                        vmm_child(&artifacts)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    let throughput = (cores * per_worker) as f64 / t.elapsed().as_secs_f64();

    println!();
    row("in-process (thread): /dev/kvm open → ready", &in_process);
    row("in-process: VM teardown after ready", &teardown);
    let c = |f: fn(&VmSample) -> Duration| child.iter().map(f).collect::<Vec<_>>();
    row(
        "child process: VMM create → ready",
        &c(|s| s.create_to_ready),
    );
    row("child process: spawn → ready", &c(|s| s.spawn_to_ready));
    row("child process: spawn → exit", &c(|s| s.spawn_to_exit));
    if !qemu_runs.is_empty() {
        row("QEMU -M microvm -enable-kvm: spawn → exit", &qemu_runs);
    }
    let rss = {
        let mut r: Vec<u64> = child.iter().map(|s| s.rss).collect();
        r.sort();
        r[r.len() / 2]
    };
    let process_cost = ms(median(&c(|s| s.spawn_to_ready))) - ms(median(&c(|s| s.create_to_ready)));
    println!();
    let ready = ms(median(&c(|s| s.create_to_ready)));
    println!(
        "ready (VMM create → ready, median): {ready:.2} ms   target <= 1 ms   {}",
        verdict(ready <= 1.0)
    );
    println!(
        "VMM RSS (median): {:.2} MiB   target <= 2 MiB   {}",
        rss as f64 / 1048576.0,
        verdict(rss <= 2 << 20)
    );
    println!(
        "throughput, {cores} workers, child processes: {throughput:.0} runs/s   target >= 300   {}",
        verdict(throughput >= 300.0)
    );
    println!("cost of a process per VM (spawn → VMM start): {process_cost:.2} ms per run");
    if !qemu_runs.is_empty() {
        let ratio = ms(median(&qemu_runs)) / ms(median(&c(|s| s.spawn_to_exit)));
        println!(
            "QEMU / stacklab (spawn → exit, medians): {ratio:.1}x   target >= 50x   {}",
            verdict(ratio >= 50.0)
        );
    }
    Ok(())
}
