//! `stacklab bench vm`: the micro-VM in-process and as a child process,
//! its throughput on all cores, and the same guest under QEMU.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use std::sync::Arc;

use stacklab_api::{DemoId, Metric, Phase};

use super::{median, ms, row, through_server, verdict};
use crate::backends::kvm::{KvmRuntime, VmArtifacts};
use crate::engine::{Queue, Runs};

/// One child-process run: spawn → ready and spawn → exit, the VMM's own
/// create → ready, and its RSS.
struct VmSample {
    spawn_to_ready: Duration,
    spawn_to_exit: Duration,
    create_to_ready: Duration,
    rss: u64,
}

/// One `stacklab-vmm` child run of the tiny guest, in its jail (as the
/// server runs it) or bare.
fn vmm_child(artifacts: &VmArtifacts, jailed: bool) -> anyhow::Result<VmSample> {
    use stacklab_vmm::protocol::Line;
    use std::io::BufRead;
    let spawned_ns = stacklab_vmm::report::monotonic_ns();
    let start = Instant::now();
    let mut command = std::process::Command::new(&artifacts.vmm);
    command.arg("--image").arg(&artifacts.guest);
    if jailed {
        let ids = artifacts.jail;
        command
            .arg("--jail")
            .arg(format!("{}:{}", ids.uid, ids.gid));
    }
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut first = None;
    let mut ready = None;
    let mut rss = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        match serde_json::from_str::<Line>(&line?)? {
            Line::Event(e) => {
                if e.phase == Phase::KvmOpened {
                    first = Some(e.mono_ns);
                }
                if e.phase == Phase::Ready {
                    ready = Some(e.mono_ns);
                }
            }
            Line::Done { vmm_rss_bytes, .. } => {
                rss = vmm_rss_bytes.context("the VMM could not read its own RSS")?
            }
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

/// `stacklab-vmm --floor`: the bare sequence in a child process, from
/// spawn until it has exited.
fn floor_in_child(artifacts: &VmArtifacts) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = std::process::Command::new(&artifacts.vmm)
        .arg("--floor")
        .stdin(Stdio::null())
        .output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "the floor run failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(elapsed)
}

/// The same guest under QEMU (`-M microvm -enable-kvm`), from spawn until
/// it exits through `isa-debug-exit` right after its ready signal.
fn qemu(guest: &std::path::Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = stacklab_vmm::qemu::microvm(guest, "null")
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
pub async fn vm(n: usize) -> anyhow::Result<()> {
    use stacklab_vmm::{run, VmConfig};
    let artifacts = VmArtifacts::locate().map_err(anyhow::Error::msg)?;
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

    // The floor first: the bare KVM sequence, in-process and as a child.
    let mut floor = Vec::new();
    let mut floor_child = Vec::new();
    for _ in 0..n {
        floor.push(stacklab_vmm::floor::run_floor(config.mem_bytes)?);
        floor_child.push(floor_in_child(&artifacts)?);
    }

    // In-process (a thread per VM): the VMM's own create → ready, the
    // guest's own share of it, and the teardown, timed from the moment it
    // starts to the moment it ends (nothing else in between).
    let mut in_process = Vec::new();
    let mut guest_own = Vec::new();
    let mut teardown = Vec::new();
    for _ in 0..n {
        let finished = run(&image, &config, &mut |_| {})?;
        let report = finished.report.clone();
        let t = Instant::now();
        finished.tear_down();
        teardown.push(t.elapsed());
        in_process.push(
            report
                .span(Phase::KvmOpened, Phase::Ready)
                .context("no ready step")?,
        );
        guest_own.push(
            report
                .span(Phase::GuestEntry, Phase::Ready)
                .context("no guest entry")?,
        );
    }

    // Child process per VM, back to back with nothing else running: the
    // latency figures, bare and in the jail the server uses.
    let (mut child, mut jailed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        child.push(vmm_child(&artifacts, false)?);
        jailed.push(vmm_child(&artifacts, true)?);
    }
    // The same guest under QEMU, each run paired with a stacklab run so both
    // see the same host (a QEMU exit leaves kernel teardown work behind that
    // slows whatever starts next: that is why these pairs are kept apart
    // from the latency runs above).
    let mut paired = Vec::new();
    let mut qemu_runs = Vec::new();
    match qemu(&artifacts.guest) {
        Err(e) => println!("QEMU comparison skipped: {e:#}"),
        Ok(_) => {
            for _ in 0..n {
                paired.push(vmm_child(&artifacts, false)?.spawn_to_exit);
                qemu_runs.push(qemu(&artifacts.guest)?);
            }
        }
    }

    // Throughput: one worker per core, each running jailed VMs (as the
    // server does) back to back.
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
                        vmm_child(&artifacts, true)?;
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

    // Through the server's own path: request accepted → vCPU about to run
    // the guest's first instruction (the platform's share), and → ready.
    let runs = Arc::new(Runs::default());
    let queue = Arc::new(Queue::new(1));
    let runtime = Arc::new(KvmRuntime::new(artifacts.clone(), VmConfig::default()));
    let (mut platform, mut total) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let record = through_server(&runs, DemoId::MicroVm, runtime.clone(), &queue).await?;
        let us = |key: Metric| {
            record
                .outcome()
                .and_then(|o| o.value(key))
                .map(|v| Duration::from_micros(v as u64))
                .with_context(|| format!("no {key}"))
        };
        platform.push(us(Metric::PlatformShare)?);
        total.push(us(Metric::StartToReady)?);
    }
    // Let the history writes of those runs finish before anything else.
    runs.shut_down().await;

    println!();
    let f = |pick: fn(&stacklab_vmm::floor::Floor) -> Duration| {
        floor.iter().map(pick).collect::<Vec<_>>()
    };
    let (floor_ready, floor_teardown) = (f(|x| x.opened_to_first_exit), f(|x| x.teardown));
    row(
        "floor: opening /dev/kvm → first exit",
        &f(|x| x.open_to_first_exit),
    );
    row("floor: /dev/kvm opened → first exit", &floor_ready);
    row(
        "floor: of which KVM_SET_USER_MEMORY_REGION",
        &f(|x| x.set_memory),
    );
    row("floor: teardown", &floor_teardown);
    row("floor as a child process: spawn → exit", &floor_child);
    row("guest's own entry → ready (in-process runs)", &guest_own);
    row("server path: start (left the queue) → ready", &total);
    row(
        "server path: platform share (start → first instruction)",
        &platform,
    );
    row("in-process (thread): /dev/kvm open → ready", &in_process);
    row("in-process: VM teardown (tear_down() alone)", &teardown);
    let c = |f: fn(&VmSample) -> Duration| child.iter().map(f).collect::<Vec<_>>();
    row(
        "child process: VMM create → ready",
        &c(|s| s.create_to_ready),
    );
    row("child process: spawn → ready", &c(|s| s.spawn_to_ready));
    row("child process: spawn → exit", &c(|s| s.spawn_to_exit));
    let j = |f: fn(&VmSample) -> Duration| jailed.iter().map(f).collect::<Vec<_>>();
    row(
        "jailed child (as the server runs it): spawn → ready",
        &j(|s| s.spawn_to_ready),
    );
    row("jailed child: spawn → exit", &j(|s| s.spawn_to_exit));
    if !qemu_runs.is_empty() {
        row("paired with QEMU: stacklab spawn → exit", &paired);
        row(
            "paired: QEMU -M microvm -enable-kvm spawn → exit",
            &qemu_runs,
        );
    }
    let rss = {
        let mut r: Vec<u64> = child.iter().map(|s| s.rss).collect();
        r.sort();
        r[r.len() / 2]
    };
    let process_cost = ms(median(&c(|s| s.spawn_to_ready))) - ms(median(&c(|s| s.create_to_ready)));
    println!();
    let ready = ms(median(&c(|s| s.create_to_ready)));
    let bound = ms(median(&floor_ready)) + ms(median(&guest_own));
    println!(
        "VMM create → ready / (floor /dev/kvm opened → first exit + guest entry → ready; all three start after the open), medians: {ready:.2} / {bound:.2} ms = {:.2}x   target <= 2x and <= 2 ms   {}",
        ready / bound,
        verdict(ready <= 2.0 * bound && ready <= 2.0)
    );
    let down = ms(median(&teardown));
    println!(
        "teardown (in-process, tear_down() alone, median): {down:.2} ms = {:.1}x the floor's   target <= 1 ms   {}",
        down / ms(median(&floor_teardown)),
        verdict(down <= 1.0)
    );
    println!(
        "child spawn → exit / floor child spawn → exit (medians): {:.2}x",
        ms(median(&c(|s| s.spawn_to_exit))) / ms(median(&floor_child))
    );
    println!(
        "VMM RSS (median): {:.2} MiB   target <= 2 MiB   {}",
        rss as f64 / 1048576.0,
        verdict(rss <= 2 << 20)
    );
    println!(
        "throughput, {cores} workers, jailed child processes: {throughput:.0} runs/s   target >= 300   {}",
        verdict(throughput >= 300.0)
    );
    println!("cost of a process per VM (spawn → VMM start): {process_cost:.2} ms per run");
    println!(
        "cost of the jail (spawn → ready, jailed − bare, medians): {:.2} ms per run",
        ms(median(&j(|s| s.spawn_to_ready))) - ms(median(&c(|s| s.spawn_to_ready)))
    );
    if !qemu_runs.is_empty() {
        let ratio = ms(median(&qemu_runs)) / ms(median(&paired));
        println!(
            "QEMU / stacklab (spawn → exit, medians of the pairs): {ratio:.1}x   target >= 50x   {}",
            verdict(ratio >= 50.0)
        );
    }
    Ok(())
}
