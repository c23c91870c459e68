//! The micro-VM lab: stacklab's own VMM boots its tiny guest kernel on KVM,
//! one `stacklab-vmm` child process per VM.
//!
//! Why a process and not a thread: a guest can only ever hurt the process
//! that runs its vCPU. In a child, a VMM bug, a stuck ioctl or a runaway
//! guest cannot take the server (and every other learner) down; the kernel
//! reclaims the VM's memory and file descriptors when the child exits; and
//! the server can always end it with SIGKILL. The price, measured by
//! `stacklab bench vm`, is the process start.

mod artifacts;
mod measure;
pub mod xray;

use std::process::Stdio;
use std::time::Duration;

use stacklab_api::{ErrorCode, FactKey, Phase, RunError};
use stacklab_vmm::protocol::Line;
use stacklab_vmm::VmConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub use artifacts::{LinuxArtifacts, LinuxGuest, LinuxGuestKind, VmArtifacts};
pub use measure::{measure_linux, measure_tiny};

use crate::backends::host::{self, children};
use crate::backends::{MemoryProbe, Ready, RunContext, Runtime};

/// What a [`KvmRuntime`] boots.
#[derive(Debug, Clone)]
enum Guest {
    Tiny(VmConfig),
    Linux(LinuxGuest),
}

/// Runs a VM demo in child processes: the tiny guest, or a Linux guest.
pub struct KvmRuntime {
    artifacts: VmArtifacts,
    guest: Guest,
}

/// File descriptors a VMM process may hold.
const VMM_FILES: u64 = 32;

/// The VMM's own deadline for a Linux guest (the server's is the run's).
const LINUX_DEADLINE: Duration = Duration::from_secs(55);

impl KvmRuntime {
    /// A runtime starting `artifacts.vmm` on `artifacts.guest` with `config`.
    pub fn new(artifacts: VmArtifacts, config: VmConfig) -> Self {
        KvmRuntime {
            artifacts,
            guest: Guest::Tiny(config),
        }
    }

    /// A runtime booting a Linux guest with `artifacts.vmm`.
    pub fn linux(artifacts: VmArtifacts, guest: LinuxGuest) -> Self {
        KvmRuntime {
            artifacts,
            guest: Guest::Linux(guest),
        }
    }

    /// Guest RAM, vCPUs and the VMM's rlimits, in words.
    fn limits_text(&self) -> String {
        let (mem_mib, (address_space, cpu_secs)) = match &self.guest {
            Guest::Tiny(config) => ((config.mem_bytes >> 20) as u64, self.rlimits()),
            Guest::Linux(linux) => (u64::from(linux.kind.mem_mib()), self.rlimits()),
        };
        format!(
            "{mem_mib} MiB guest RAM, 1 vCPU; the VMM process: {VMM_FILES} file descriptors, {} MiB address space, {cpu_secs} s of CPU",
            address_space >> 20
        )
    }

    /// The VMM process's address-space and CPU-time limits.
    fn rlimits(&self) -> (u64, u64) {
        match &self.guest {
            // Guest RAM (at most 256 MiB) plus the VMM itself.
            Guest::Tiny(_) => (1u64 << 30, 10),
            Guest::Linux(linux) => ((u64::from(linux.kind.mem_mib()) << 20) + (1 << 30), 60),
        }
    }

    /// The VMM's command line; `xray`: the tiny guest writes its x-ray
    /// line after ready (asked only for runs that are x-rayed: it costs
    /// the run's end about 2 ms where ring 0 is emulated).
    fn command(&self, xray: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.artifacts.vmm);
        match &self.guest {
            Guest::Tiny(config) => {
                let asked = if xray {
                    stacklab_vmm::protocol::XRAY_LINE
                } else {
                    0
                };
                cmd.arg("--image")
                    .arg(&self.artifacts.guest)
                    .arg("--mem-mib")
                    .arg((config.mem_bytes >> 20).to_string())
                    .arg("--deadline-ms")
                    .arg(config.deadline.as_millis().to_string())
                    .arg("--mode")
                    .arg((config.mode | asked).to_string())
                    .arg("--hold");
            }
            Guest::Linux(linux) => {
                cmd.arg("--kernel")
                    .arg(&linux.kernel)
                    .arg("--initrd")
                    .arg(&linux.initrd)
                    .arg("--mem-mib")
                    .arg(linux.kind.mem_mib().to_string())
                    .arg("--deadline-ms")
                    .arg(LINUX_DEADLINE.as_millis().to_string());
            }
        }
        let jail = self.artifacts.jail;
        cmd.arg("--jail").arg(format!("{}:{}", jail.uid, jail.gid));
        let (address_space, cpu_secs) = self.rlimits();
        let stdin = match self.guest {
            Guest::Tiny(_) => Stdio::piped(),
            Guest::Linux(_) => Stdio::null(),
        };
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: between fork and exec only async-signal-safe calls
        // (setrlimit, prctl) are made, and no memory is allocated.
        unsafe {
            cmd.pre_exec(move || {
                let limit = |resource, value: u64| {
                    let l = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &l) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                limit(libc::RLIMIT_NOFILE, VMM_FILES)?;
                limit(libc::RLIMIT_CORE, 0)?;
                limit(libc::RLIMIT_CPU, cpu_secs)?;
                limit(libc::RLIMIT_AS, address_space)?;
                // If the server dies (even by SIGKILL), the kernel kills
                // its VMMs too: no VM outlives the server that started it.
                // (The jail's waiter sets it again for the VMM it forks.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Runtime for KvmRuntime {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        // The x-ray (single runs): KVM's events are captured from before
        // the VMM starts.
        let mut xray = stacklab_api::XRay::default();
        let capture = if !ctx.is_single() {
            None
        } else if ctx.trace_asked() {
            xray::start_capture(&mut xray)
        } else {
            xray::not_asked(&mut xray);
            None
        };
        let mut tids = std::collections::HashSet::new();
        let spawn_at = ctx.elapsed_us();
        let mut child = self
            .command(ctx.is_single())
            .spawn()
            .map_err(|e| RunError {
                code: ErrorCode::Vmm,
                message: format!("cannot start the VMM {}: {e}", self.artifacts.vmm.display()),
            })?;
        let pid = child.id().unwrap_or(0);
        ctx.phase_at(
            spawn_at,
            Phase::VmmStarted,
            format!("the server asked the kernel to start stacklab-vmm, which became host process {pid} (one process per VM)"),
            None,
        );
        let stdout = child.stdout.take().expect("piped");
        let mut stdin = child.stdin.take();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut held = None;
        let mut jailed_pid = None;
        let mut jailed_pin = None;
        let read = async {
            loop {
                let line = lines.next_line().await.ok().flatten();
                let Some(line) = line else {
                    return Err(RunError {
                        code: ErrorCode::VmmCrashed,
                        message: "the VMM process ended without a result".into(),
                    });
                };
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Event(e)) => {
                        ctx.phase_observed(e.mono_ns, e.phase, e.detail.clone());
                        if e.phase == Phase::Jailed {
                            jailed_pid = children(pid).ok().and_then(|c| c.first().copied());
                            // Pinned while its waiter lives (its PID cannot
                            // be reused before the waiter reaps it).
                            jailed_pin = jailed_pid.and_then(|p| host::Pinned::new(p).ok());
                        }
                        if e.phase == Phase::Ready {
                            let hold = stdin.take();
                            if hold.is_some() {
                                // The VMM holds the VM at ready: measure it
                                // now (with the other instances of a step).
                                held = Some(ctx.read_memory(MemoryProbe::Vm { root: pid }).await);
                            }
                            // The x-ray's host side, held or not (a Linux
                            // guest is not held: its VMM is read as it runs).
                            if ctx.is_single() {
                                xray::read_held(&mut xray, pid, jailed_pid);
                                tids.extend(xray::threads(pid));
                                tids.extend(jailed_pid.map(xray::threads).unwrap_or_default());
                            }
                            if let Some(mut stdin) = hold {
                                let _ = stdin.write_all(b"go\n").await;
                            }
                        }
                    }
                    Ok(Line::Done { report, guest, .. }) => {
                        return Ok((*report, guest));
                    }
                    Ok(Line::Error { code, message }) => return Err(RunError { code, message }),
                    Err(e) => {
                        return Err(RunError {
                            code: ErrorCode::VmmProtocol,
                            message: format!("unreadable line from the VMM ({e}): {line:.200}"),
                        })
                    }
                }
            }
        };
        let result = tokio::select! {
            r = read => r,
            e = ctx.stopped() => Err(e),
        };
        // Whatever happened, the VM is gone when its process is.
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        // The jailed VMM dies with its waiter (PR_SET_PDEATHSIG), but a
        // moment later: it was seen running, or tearing its VM down in the
        // kernel, after the waiter had been reaped. The run ends when its VM
        // is gone, so that nothing outlives it and the next step of a density
        // sweep does not share the program's pages with the last one's VMMs.
        if let Some(vmm) = jailed_pid {
            let within = Duration::from_secs(5);
            let exited = match &jailed_pin {
                Some(pin) => pin.exited(within).await,
                // No pidfd (a kernel before 5.3, or a filter that refuses
                // it): its PID, checked to still name the VMM.
                None => host::exited(vmm, "stacklab-vmm", within).await,
            };
            if !exited {
                tracing::warn!(pid = vmm, "a jailed VMM outlived its waiter by 5 s");
            }
        }
        let (report, guest) = result?;
        if ctx.is_single() {
            let captured = capture.map(|c| {
                let absent = c.absent.clone();
                (c.read().map_err(|e| e.to_string()), absent)
            });
            xray::complete(
                &mut xray,
                &report,
                guest.as_ref().and_then(|g| g.kernel_release.as_deref()),
                &|ns| ctx.us_at_mono(ns),
                captured,
                &tids,
            );
            ctx.xray(xray);
        }
        // The guest's x-ray line is shown in the x-ray, not the console.
        for line in report
            .console
            .lines()
            .filter(|l| !l.starts_with(stacklab_vmm::protocol::XRAY_LINE_PREFIX))
        {
            ctx.log(line);
        }
        let mut ready = match (&self.guest, guest) {
            (Guest::Linux(linux), Some(view)) => measure_linux(&report, &view, linux.kind),
            _ => measure_tiny(&report),
        };
        ready.fact(
            FactKey::Limits,
            "Its limits",
            self.limits_text(),
            "the VM's configuration and the VMM process's rlimits, fixed in the server's code",
        );
        if matches!(self.guest, Guest::Tiny(_)) {
            ready.extend(held.unwrap_or_else(|| {
                MemoryProbe::Vm { root: pid }.not_read("the VMM never held the VM at ready")
            }));
        }
        ready.fact(
            FactKey::HostPids,
            "Its processes, as the host sees them",
            match jailed_pid {
                Some(vmm) => format!("{pid} (the jail's waiter) and {vmm} (stacklab-vmm, PID 1 of its own PID namespace); the guest's kernel and app run inside it and are not host processes"),
                None => format!("{pid} (stacklab-vmm); the guest's kernel and app run inside it and are not host processes"),
            },
            "the PID of the process the server started and of its one child (/proc/PID/task/PID/children); the host's process list has nothing else for this VM",
        );
        Ok(ready)
    }
}
