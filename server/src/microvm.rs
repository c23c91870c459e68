//! The micro-VM lab: stacklab's own VMM boots its tiny guest kernel on KVM,
//! one `stacklab-vmm` child process per VM.
//!
//! Why a process and not a thread: a guest can only ever hurt the process
//! that runs its vCPU. In a child, a VMM bug, a stuck ioctl or a runaway
//! guest cannot take the server (and every other learner) down; the kernel
//! reclaims the VM's memory and file descriptors when the child exits; and
//! the server can always end it with SIGKILL. The price, measured by
//! `stacklab bench vm`, is the process start.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use stacklab_api::{RunError, Unit};
use stacklab_vmm::linux::GuestView;
use stacklab_vmm::protocol::Line;
use stacklab_vmm::vm::{VmConfig, VmEvent, VmReport};
use tokio::io::AsyncBufReadExt;

use crate::runtime::{Ready, RunContext, Runtime};

/// Where the VMM binary and the guest image are.
#[derive(Debug, Clone)]
pub struct VmArtifacts {
    /// The `stacklab-vmm` executable.
    pub vmm: PathBuf,
    /// The guest kernel ELF.
    pub guest: PathBuf,
}

impl VmArtifacts {
    /// `STACKLAB_VMM_BIN` / `STACKLAB_GUEST_IMAGE`, else next to this
    /// executable and in the cargo target directory above it.
    pub fn locate() -> Result<VmArtifacts, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let near = |env: &str, names: &[&str]| -> Option<PathBuf> {
            if let Some(p) = std::env::var_os(env) {
                return Some(PathBuf::from(p));
            }
            // Each name in order of preference, in every directory above the
            // executable (target/release/stacklab → target/…).
            names
                .iter()
                .flat_map(|n| exe.ancestors().skip(1).map(move |dir| dir.join(n)))
                .find(|p| p.is_file())
        };
        // The static musl build first: a smaller process (about 0.5 MiB RSS
        // against 2.4 MiB for the glibc one) that starts faster.
        let vmm = near("STACKLAB_VMM_BIN", &["x86_64-unknown-linux-musl/release/stacklab-vmm", "stacklab-vmm"]).ok_or(
            "the stacklab-vmm binary was not found (build it: cargo build --release -p stacklab-vmm --target x86_64-unknown-linux-musl)",
        )?;
        let guest = near("STACKLAB_GUEST_IMAGE", &["x86_64-unknown-none/guest/stacklab-guest"]).ok_or(
            "the guest kernel was not found (build it: cargo build -p stacklab-guest --profile guest --target x86_64-unknown-none)",
        )?;
        Ok(VmArtifacts { vmm, guest })
    }
}

/// A Linux guest: Debian's kernel with one of the project's initramfs
/// archives (see [`crate::linux_guest`]).
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Guest RAM, MiB.
    pub mem_mib: u32,
    /// Whether its `/init` starts PostgreSQL (and reports it ready).
    pub postgres: bool,
}

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
                    .arg(linux.mem_mib.to_string())
                    .arg("--deadline-ms")
                    .arg(LINUX_DEADLINE.as_millis().to_string());
                ((u64::from(linux.mem_mib) << 20) + (1 << 30), 60)
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
            code: "vmm".into(),
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
                        code: "vmm_crashed".into(),
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
                            code: "vmm_protocol".into(),
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
            (Guest::Linux(linux), Some(view)) => measure_linux(&report, &view, linux, rss, pss),
            _ => measure(&report, rss, pss),
        };
        ready.fact(
            "host_pids",
            "Its processes, as the host sees them",
            format!("{pid} (stacklab-vmm); the guest's kernel and app run inside it and are not host processes"),
            "the PID of the VMM process the server started; the host's process list has nothing else for this VM",
        );
        Ok(ready)
    }
}

/// The figures a learner sees for a Linux guest's run, from the VMM's
/// report and what the guest's `/init` said.
pub fn measure_linux(
    report: &VmReport,
    view: &GuestView,
    linux: &LinuxGuest,
    rss: u64,
    pss: u64,
) -> Ready {
    let mut ready = Ready::default();
    if let Some(us) = span_us(report, "kvm_opened", "ready") {
        ready.measure("create_to_ready", "VM create → userspace", us, Unit::Micros,
            "from opening /dev/kvm until the guest's /init wrote the boot-complete value, on the VMM's monotonic clock");
    }
    if let Some(us) = span_us(report, "kvm_opened", "vcpu_created") {
        ready.measure("hypervisor_setup", "Hypervisor work (VM, memory, kernel load, vCPU)", us, Unit::Micros,
            "from opening /dev/kvm until the vCPU is ready to run the kernel: the hypervisor's share");
    }
    if let Some(us) = span_us(report, "vcpu_created", "ready") {
        ready.measure("guest_boot", "Linux kernel boot → userspace", us, Unit::Micros,
            "from the kernel's first instruction to /init's boot-complete write: the guest OS's share");
    }
    if linux.postgres {
        if let Some(us) = span_us(report, "ready", "postgres_ready") {
            ready.measure("postgres_start", "PostgreSQL init + start inside the guest", us, Unit::Micros,
                "from /init's boot-complete write to its first successful SELECT 1 over the guest's Unix socket: the application's share");
        }
        if let Some(us) = span_us(report, "kvm_opened", "postgres_ready") {
            ready.measure("create_to_postgres", "VM create → PostgreSQL ready", us, Unit::Micros,
                "from opening /dev/kvm to the guest's PostgreSQL answering SELECT 1: comparable with the container's create → ready");
        }
    }
    ready.measure(
        "guest_ram",
        "Guest RAM configured",
        f64::from(linux.mem_mib) * 1048576.0,
        Unit::Bytes,
        "the memory the VM was given (an anonymous host mapping registered with KVM)",
    );
    if let Some(total) = view.mem_total_bytes {
        ready.measure("guest_mem_total", "Guest's MemTotal", total as f64, Unit::Bytes,
            "MemTotal from /proc/meminfo inside the guest: RAM minus what its kernel reserved for itself");
    }
    if let Some(available) = view.mem_available_bytes {
        ready.measure(
            "guest_mem_available",
            "Guest's MemAvailable",
            available as f64,
            Unit::Bytes,
            "MemAvailable from /proc/meminfo inside the guest, read by its /init after boot",
        );
    }
    ready.measure(
        "guest_touched",
        "Guest RAM actually used",
        report.touched_bytes as f64,
        Unit::Bytes,
        "pages of the guest's RAM mapping backed by host memory at the end (mincore)",
    );
    measure_vmm_memory(&mut ready, rss, pss);
    ready.measure(
        "exits",
        "VM exits",
        report.exits as f64,
        Unit::Count,
        "times the guest handed control to the VMM (console bytes, device probes, milestones)",
    );
    if let Some(release) = &view.kernel_release {
        ready.fact(
            "kernel_inside",
            "Kernel inside the VM",
            release.clone(),
            "`uname -r` run by the guest's /init: the guest's own kernel, not the host's",
        );
    }
    ready.fact(
        "kernel_host",
        "Kernel release on the host",
        crate::container::measure::host_kernel_release(),
        "/proc/sys/kernel/osrelease read by the server",
    );
    ready
}

/// The VMM process's memory, as the VMM read it just before tearing the VM
/// down.
fn measure_vmm_memory(ready: &mut Ready, rss: u64, pss: u64) {
    ready.measure("vmm_rss", "VMM process memory (RSS)", rss as f64, Unit::Bytes,
        "Rss of the stacklab-vmm process from /proc/self/smaps_rollup, read by the VMM at the end of the run, before it tears the VM down: the guest pages it touched included");
    ready.measure(
        "vmm_pss",
        "VMM process memory (PSS)",
        pss as f64,
        Unit::Bytes,
        "Pss of the same process at the same moment: shared library pages split among their users",
    );
}

fn span_us(report: &VmReport, from: &str, to: &str) -> Option<f64> {
    // Whole microseconds: the clocks behind these spans are not finer.
    report.span(from, to).map(|d| d.as_micros() as f64)
}

fn measure(report: &VmReport, rss: u64, pss: u64) -> Ready {
    let mut ready = Ready::default();
    if let Some(us) = span_us(report, "kvm_opened", "ready") {
        ready.measure("create_to_ready", "VM create → ready", us, Unit::Micros,
            "from opening /dev/kvm to the guest's boot-complete write, on the VMM's monotonic clock");
    }
    if let Some(us) = span_us(report, "kvm_opened", "vcpu_created") {
        ready.measure("hypervisor_setup", "Hypervisor work (VM, memory, vCPU)", us, Unit::Micros,
            "from opening /dev/kvm until the vCPU is ready to run: the hypervisor's share of the start");
    }
    if let Some(us) = span_us(report, "guest_entry", "ready") {
        ready.measure(
            "guest_boot",
            "Guest kernel boot",
            us,
            Unit::Micros,
            "from the guest's first instruction to its boot-complete write: the guest OS's share",
        );
    }
    ready.measure(
        "guest_ram",
        "Guest RAM configured",
        report.mem_bytes as f64,
        Unit::Bytes,
        "the memory the VM was given (an anonymous host mapping registered with KVM)",
    );
    ready.measure("guest_touched", "Guest RAM actually used", report.touched_bytes as f64, Unit::Bytes,
        "pages of that mapping backed by host memory at the end (mincore): only what the guest touched");
    measure_vmm_memory(&mut ready, rss, pss);
    ready.measure("exits", "VM exits", report.exits as f64, Unit::Count,
        "times the guest handed control to the VMM: each milestone and signal is one; console bytes are batched through KVM's coalesced I/O ring where the host supports it");
    if let Some(cycles) = report.app_cycles {
        let us = (cycles as f64 * 1000.0 / report.tsc_khz.max(1) as f64).round();
        ready.measure(
            "app_ring3",
            "App's own work in ring 3",
            us,
            Unit::Micros,
            "the ring-3 app's TSC cycles for its loop, converted with KVM's TSC frequency",
        );
    }
    let kvm = match stacklab_vmm::host::probe() {
        Ok(h) => h.explanation().to_owned(),
        Err(e) => e.to_string(),
    };
    ready.fact(
        "kvm_host",
        "KVM on this server",
        kvm,
        "CPU flags in /proc/cpuinfo and loaded kernel modules",
    );
    ready.fact(
        "kernel_inside",
        "Kernel inside the VM",
        "stacklab-guest, its own kernel (not the host's)".into(),
        "the VM boots the guest image it was given; the host kernel is not shared",
    );
    ready
}
