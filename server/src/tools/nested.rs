//! The nested-emulation harness: boots a Linux guest's harness archive
//! under `qemu-system-x86_64 -cpu max` (software emulation, where `kvm_amd`
//! loads) and reads the inner run's result from the serial console. How
//! the Linux-guest path is tested on a host whose own KVM cannot boot
//! Linux.

use std::process::Command;

use anyhow::{bail, Context};

use crate::backends::kvm::{LinuxArtifacts, LinuxGuestKind};

/// One inner run under nested emulation, as read from the serial console.
#[derive(Debug)]
pub struct NestedRun {
    /// The VMM's JSON lines, parsed.
    pub lines: Vec<stacklab_vmm::protocol::Line>,
    /// The VMM's exit status inside the harness.
    pub vmm_status: i32,
    /// Wall time of the whole QEMU run (emulated: not a performance figure).
    pub wall: std::time::Duration,
    /// Everything the harness printed (for a failure's message).
    pub console: String,
}

/// Boots the nested harness for `guest` under `qemu-system-x86_64 -machine
/// q35 -cpu max` (TCG, no `-enable-kvm`) and waits up to `timeout` for its
/// result. Errors carry the console's last lines.
pub fn run_nested(
    artifacts: &LinuxArtifacts,
    guest: LinuxGuestKind,
    timeout: std::time::Duration,
) -> anyhow::Result<NestedRun> {
    use std::io::Read;
    let started = std::time::Instant::now();
    let initrd = artifacts.nested_initrd(guest);
    if !initrd.is_file() {
        bail!(
            "{} is missing; build it with `stacklab linux build`",
            initrd.display()
        );
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-cpu", "max", "-m", "2048", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(artifacts.kernel())
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let tail = stacklab_vmm::guests::linux::tail(&console, 25);
    let Some(status) = status else {
        bail!("the nested run did not finish within {timeout:?}; console tail:\n{tail}");
    };
    let end = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("stacklab-nested: end "))
        .and_then(|s| s.trim().parse::<i32>().ok())
        .with_context(|| {
            format!(
                "QEMU exited ({status}) without the harness's end marker; console tail:\n{tail}"
            )
        })?;
    let lines = console
        .lines()
        .skip_while(|l| l.trim() != "stacklab-nested: begin")
        .skip(1)
        .take_while(|l| !l.trim().starts_with("stacklab-nested: end"))
        .map(|l| serde_json::from_str(l.trim()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("unreadable VMM line; console tail:\n{tail}"))?;
    Ok(NestedRun {
        lines,
        vmm_status: end,
        wall: started.elapsed(),
        console,
    })
}

/// `stacklab linux nested`: one emulated run, printed step by step.
pub fn print(guest: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use stacklab_vmm::protocol::Line;
    let kind = LinuxGuestKind::from_name(guest)
        .with_context(|| format!("no Linux guest {guest:?}; there are linux-vm and postgres-vm"))?;
    let artifacts = LinuxArtifacts::in_data_dir(data_dir);
    eprintln!("stacklab linux: booting {guest} under QEMU's full emulation (a minute or less)…");
    let run = run_nested(&artifacts, kind, std::time::Duration::from_secs(900))?;
    let mut first = None;
    for line in &run.lines {
        match line {
            Line::Event(e) => {
                let t0 = *first.get_or_insert(e.mono_ns);
                println!(
                    "+{:>9.1} ms  {:<28} {}",
                    (e.mono_ns - t0) as f64 / 1e6,
                    e.phase.label(),
                    e.detail
                );
            }
            Line::Done {
                vmm_rss_bytes,
                guest,
                ..
            } => {
                println!(
                    "VMM RSS at the end: {}; guest's own view: {guest:?}",
                    vmm_rss_bytes.map_or("unreadable".into(), |b| format!("{} KiB", b >> 10))
                );
            }
            Line::Error { code, message } => println!("error {code}: {message}"),
        }
    }
    println!(
        "QEMU ran {:.1} s in all. All times are under software emulation: they show the order and the shape, not the speed of real hardware.",
        run.wall.as_secs_f64()
    );
    anyhow::ensure!(
        run.vmm_status == 0,
        "stacklab-vmm exited with {}",
        run.vmm_status
    );
    Ok(())
}
