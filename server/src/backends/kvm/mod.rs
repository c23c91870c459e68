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

use std::process::Stdio;
use std::time::Duration;

use stacklab_api::{ErrorCode, FactKey, RunError};
use stacklab_vmm::protocol::Line;
use stacklab_vmm::report::VmEvent;
use stacklab_vmm::VmConfig;
use tokio::io::AsyncBufReadExt;

pub use artifacts::{LinuxArtifacts, LinuxGuest, LinuxGuestKind, VmArtifacts};
pub use measure::{measure_linux, measure_tiny};

use crate::backends::{Ready, RunContext, Runtime};

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

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.artifacts.vmm);
        let (address_space, cpu_secs) = match &self.guest {
            Guest::Tiny(config) => {
                cmd.arg("--image")
                    .arg(&self.artifacts.guest)
                    .arg("--mem-mib")
                    .arg((config.mem_bytes >> 20).to_string())
                    .arg("--deadline-ms")
                    .arg(config.deadline.as_millis().to_string())
                    .arg("--mode")
                    .arg(config.mode.to_string());
                // Guest RAM (at most 256 MiB) plus the VMM itself.
                (1u64 << 30, 10)
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
                ((u64::from(linux.kind.mem_mib()) << 20) + (1 << 30), 60)
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: between fork and exec only async-signal-safe calls
        // (setrlimit, prctl) are made.
        unsafe {
            cmd.pre_exec(move || {
                let limit = |resource, value: u64| {
                    let l = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    libc::setrlimit(resource, &l);
                };
                limit(libc::RLIMIT_NOFILE, 32);
                limit(libc::RLIMIT_CORE, 0);
                limit(libc::RLIMIT_CPU, cpu_secs);
                limit(libc::RLIMIT_AS, address_space);
                // If the server dies (even by SIGKILL), the kernel kills
                // its VMMs too: no VM outlives the server that started it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd
    }
}

impl Runtime for KvmRuntime {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        let mut child = self.command().spawn().map_err(|e| RunError {
            code: ErrorCode::Vmm,
            message: format!("cannot start the VMM {}: {e}", self.artifacts.vmm.display()),
        })?;
        let pid = child.id().unwrap_or(0);
        ctx.phase(
            "vmm_started",
            "VMM process started",
            format!("stacklab-vmm started as host process {pid} (one process per VM)"),
        );
        let stdout = child.stdout.take().expect("piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let read = async {
            let mut events: Vec<VmEvent> = Vec::new();
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
                        ctx.phase_observed(e.mono_ns, &e.phase, &e.label, e.detail.clone());
                        events.push(e);
                    }
                    Ok(Line::Done {
                        report,
                        vmm_rss_bytes,
                        vmm_pss_bytes,
                        guest,
                    }) => {
                        return Ok((report, vmm_rss_bytes, vmm_pss_bytes, guest));
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
        let (report, rss, pss, guest) = result?;
        for line in report.console.lines() {
            ctx.log(line);
        }
        let mut ready = match (&self.guest, guest) {
            (Guest::Linux(linux), Some(view)) => {
                measure_linux(&report, &view, linux.kind, rss, pss)
            }
            _ => measure_tiny(&report, rss, pss),
        };
        ready.fact(
            FactKey::HostPids,
            "Its processes, as the host sees them",
            format!("{pid} (stacklab-vmm); the guest's kernel and app run inside it and are not host processes"),
            "the PID of the VMM process the server started; the host's process list has nothing else for this VM",
        );
        Ok(ready)
    }
}
