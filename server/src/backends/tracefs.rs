//! The kernel's own event tracing (tracefs), read by the x-rays: which
//! system calls built a container, what KVM did inside the kernel for a VM.
//!
//! One tracefs instance per [`EventSet`] (`instances/stacklab-<pid>-<set>`,
//! its own ring buffer on CLOCK_MONOTONIC, the clock runs are timed on),
//! shared by the runs capturing at the same time: the first [`Capture`]
//! makes the instance and enables the set's events, the last one gone
//! disables them and removes the instance with its buffers (enabled
//! syscall tracepoints cost every system call on the host a little, so
//! they are on only while a run captures). Each run reads the
//! events since its own start and keeps those of its own processes.
//! Instances left by a server that died are removed by the next one.
//!
//! May import only `std`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where tracefs is mounted on every current distribution.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU ring buffer of an instance, KiB.
const BUFFER_KIB: u32 = 4096;

/// A group of events captured together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSet {
    /// The system calls that build a container, and process creation.
    Container,
    /// KVM's in-kernel events.
    Kvm,
}

impl EventSet {
    fn name(self) -> &'static str {
        match self {
            EventSet::Container => "syscalls",
            EventSet::Kvm => "kvm",
        }
    }

    /// The events (`system/event`) of the set. Events this kernel lacks
    /// are skipped (and reported missing by the reader).
    pub fn events(self) -> &'static [&'static str] {
        match self {
            EventSet::Container => &[
                "syscalls/sys_enter_clone",
                "syscalls/sys_enter_clone3",
                "syscalls/sys_enter_unshare",
                "syscalls/sys_enter_setns",
                "syscalls/sys_enter_sethostname",
                "syscalls/sys_enter_mount",
                "syscalls/sys_enter_pivot_root",
                "syscalls/sys_enter_execve",
                "sched/sched_process_fork",
                "sched/sched_process_exec",
            ],
            EventSet::Kvm => &[
                "kvm/kvm_exit",
                "kvm/kvm_emulate_insn",
                "kvm/kvm_pio",
                "kvm/kvm_mmio",
                "kvm/kvm_userspace_exit",
                "kvm/kvm_page_fault",
                "kvmmmu/fast_page_fault",
                "kvmmmu/kvm_mmu_set_spte",
                "kvmmmu/kvm_mmu_pagetable_walk",
            ],
        }
    }
}

/// One event from a trace buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The task's name when it happened.
    pub comm: String,
    /// The thread id (what tracefs calls the pid).
    pub pid: u32,
    /// When, on CLOCK_MONOTONIC, in ns (tracefs prints µs).
    pub mono_ns: u64,
    /// The event's name, e.g. `sys_unshare` or `sched_process_fork`.
    pub name: String,
    /// Its fields as printed.
    pub args: String,
}

impl TraceEvent {
    /// The value of `field=` or `field: ` in the printed arguments.
    pub fn field(&self, field: &str) -> Option<&str> {
        for sep in ["=", ": "] {
            let pat = format!("{field}{sep}");
            let mut from = 0;
            while let Some(i) = self.args[from..].find(&pat) {
                let at = from + i;
                let boundary =
                    at == 0 || matches!(self.args.as_bytes()[at - 1], b' ' | b',' | b'(');
                if boundary {
                    let rest = &self.args[at + pat.len()..];
                    let end = rest.find([',', ' ', ')']).unwrap_or(rest.len());
                    return Some(&rest[..end]);
                }
                from = at + pat.len();
            }
        }
        None
    }

    /// A system call's argument (`sys_*` events). The kernel prints these
    /// in hex: bare (`3d0f00`) up to Linux 6.16, `0x`-prefixed from 10 on
    /// since; read as hex either way (a value below 10 is the same in both).
    pub fn syscall_arg(&self, field: &str) -> Option<u64> {
        let v = self.field(field)?;
        u64::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()
    }

    /// A numeric field of a tracepoint that prints with `%d`/`%x` of its
    /// own (`sched_*`: decimal, or `0x` hex).
    pub fn num(&self, field: &str) -> Option<u64> {
        let v = self.field(field)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Parses one line of a `trace` file (`comm-pid [cpu] flags secs.us: event: args`).
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    if line.starts_with('#') {
        return None;
    }
    // The CPU column, "[001]", follows "comm-pid" (a comm may hold spaces
    // and dashes; the pid is after the last dash before it).
    let open = line.find(" [")?;
    let close = open + line[open..].find(']')?;
    let (comm, pid) = line[..open].trim().rsplit_once('-')?;
    let rest = line[close + 1..].trim_start();
    // Optional flags column, then the timestamp ending in ':'.
    let (head, tail) = rest.split_once(": ")?;
    let ts = head.split_whitespace().last()?;
    let (secs, frac) = ts.split_once('.')?;
    let frac_ns: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    let mono_ns = secs.parse::<u64>().ok()? * 1_000_000_000 + frac_ns;
    let (name, args) = match tail.split_once(": ") {
        Some((n, a)) if !n.contains(['(', ' ']) => (n, a),
        _ => match tail.split_once('(') {
            Some((n, a)) => (n, a.trim_end_matches(')')),
            None => (tail, ""),
        },
    };
    Some(TraceEvent {
        comm: comm.to_owned(),
        pid: pid.parse().ok()?,
        mono_ns,
        name: name.trim().to_owned(),
        args: args.to_owned(),
    })
}

/// Why a capture could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TraceError {
    /// Captures are switched off on this server.
    #[error("kernel event capture is switched off on this server (STACKLAB_XRAY_TRACE=off)")]
    Off,
    /// tracefs is not mounted and could not be.
    #[error("tracefs is not available: {0}")]
    Unavailable(String),
    /// A file of tracefs refused a read or write.
    #[error("tracefs refused {what}: {source}")]
    Io {
        /// Which file and what.
        what: String,
        /// The error.
        #[source]
        source: std::sync::Arc<io::Error>,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TraceError {
    let what = what.into();
    move |e| TraceError::Io {
        what,
        source: std::sync::Arc::new(e),
    }
}

/// The tracefs root: mounted already, or mounted now (needs root).
pub fn root() -> Result<PathBuf, TraceError> {
    let root = PathBuf::from(TRACEFS);
    if root.join("instances").is_dir() {
        return Ok(root);
    }
    let mount = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .output();
    match mount {
        Ok(out) if out.status.success() && root.join("instances").is_dir() => Ok(root),
        Ok(out) => Err(TraceError::Unavailable(format!(
            "{TRACEFS} is not mounted and `mount -t tracefs` failed ({}): the server needs root on a host with tracefs (a container deployment usually has neither)",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(TraceError::Unavailable(format!(
            "{TRACEFS} is not mounted and `mount` could not be run ({e})"
        ))),
    }
}

/// Whether captures are switched off (`STACKLAB_XRAY_TRACE=off`, or the
/// cost measurement's runs without one).
static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches captures on or off for runs that start from now on.
pub fn set_enabled(on: bool) {
    OFF.store(!on, std::sync::atomic::Ordering::Relaxed);
}

/// The sets in use: how many captures hold each.
static USERS: Mutex<Option<HashMap<EventSet, usize>>> = Mutex::new(None);

/// A capture of one [`EventSet`], from its start to [`Capture::read`];
/// the events are switched off when the last capture is dropped.
pub struct Capture {
    set: EventSet,
    dir: PathBuf,
    start_mono_ns: u64,
    /// Events of the set this kernel does not have.
    pub absent: Vec<&'static str>,
}

fn instance_dir(root: &Path, set: EventSet) -> PathBuf {
    root.join("instances")
        .join(format!("stacklab-{}-{}", std::process::id(), set.name()))
}

/// Removes instances left by stacklab servers that are no longer running.
pub fn remove_stale_instances() {
    let Ok(root) = root() else { return };
    let Ok(entries) = fs::read_dir(root.join("instances")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("stacklab-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let dir = entry.path();
            let _ = fs::write(dir.join("tracing_on"), "0");
            if let Err(e) = fs::remove_dir(&dir) {
                tracing::warn!("could not remove a stale tracefs instance {name}: {e}");
            }
        }
    }
}

impl Capture {
    /// Starts capturing `set` (or joins the capture already running).
    pub fn start(set: EventSet) -> Result<Capture, TraceError> {
        if OFF.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TraceError::Off);
        }
        let root = root()?;
        let dir = instance_dir(&root, set);
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        let count = users
            .get_or_insert_with(HashMap::new)
            .entry(set)
            .or_insert(0);
        let mut absent = Vec::new();
        if *count == 0 {
            if !dir.is_dir() {
                fs::create_dir(&dir).map_err(io_err("creating an instance"))?;
            }
            let write = |file: &str, value: &str| {
                fs::write(dir.join(file), value).map_err(io_err(format!("writing {file}")))
            };
            write("tracing_on", "0")?;
            write("trace_clock", "mono")?;
            write("buffer_size_kb", &BUFFER_KIB.to_string())?;
            write("trace", "")?;
            for event in set.events() {
                let enable = dir.join("events").join(event).join("enable");
                if enable.exists() {
                    fs::write(&enable, "1").map_err(io_err(format!("enabling {event}")))?;
                } else {
                    absent.push(*event);
                }
            }
            write("tracing_on", "1")?;
        } else {
            absent = set
                .events()
                .iter()
                .copied()
                .filter(|e| !dir.join("events").join(e).join("enable").exists())
                .collect();
        }
        *count += 1;
        Ok(Capture {
            set,
            dir,
            start_mono_ns: mono_ns(),
            absent,
        })
    }

    /// When the capture started, on CLOCK_MONOTONIC (ns).
    pub fn start_mono_ns(&self) -> u64 {
        self.start_mono_ns
    }

    /// The events recorded since this capture started (by every process:
    /// the caller keeps its own), and how many the buffer lost.
    pub fn read(&self) -> Result<(Vec<TraceEvent>, u64), TraceError> {
        let text =
            fs::read_to_string(self.dir.join("trace")).map_err(io_err("reading the trace"))?;
        let events = text
            .lines()
            .filter_map(parse_line)
            .filter(|e| e.mono_ns >= self.start_mono_ns)
            .collect();
        Ok((events, self.overruns()))
    }

    /// Events the ring buffer overwrote (all CPUs).
    fn overruns(&self) -> u64 {
        let Ok(cpus) = fs::read_dir(self.dir.join("per_cpu")) else {
            return 0;
        };
        cpus.flatten()
            .filter_map(|c| fs::read_to_string(c.path().join("stats")).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("overrun:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        let Some(count) = users.as_mut().and_then(|u| u.get_mut(&self.set)) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            let _ = fs::write(self.dir.join("tracing_on"), "0");
            for event in self.set.events() {
                let _ = fs::write(self.dir.join("events").join(event).join("enable"), "0");
            }
            let _ = fs::write(self.dir.join("trace"), "");
            // Its ring buffers are memory the kernel keeps until the
            // instance is gone: remove it (the next capture makes it anew).
            if let Err(e) = fs::remove_dir(&self.dir) {
                tracing::warn!(
                    "could not remove the tracefs instance {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

/// CLOCK_MONOTONIC now, in ns.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_syscall_and_sched_lines() {
        let e = parse_line("              sh-10430   [001] ..... 11162.637322: sys_unshare(unshare_flags: 0x6c020000)").unwrap();
        assert_eq!((e.comm.as_str(), e.pid), ("sh", 10430));
        assert_eq!(e.mono_ns, 11_162_637_322_000);
        assert_eq!(e.name, "sys_unshare");
        assert_eq!(e.syscall_arg("unshare_flags"), Some(0x6c02_0000));
        // As kernels before 6.17 print them: bare hex, digits only or not.
        let old =
            parse_line("runc-5 [000] ..... 1.0: sys_clone(clone_flags: 3d0f00, newsp: 0)").unwrap();
        assert_eq!(old.syscall_arg("clone_flags"), Some(0x3d_0f00));
        let old = parse_line("runc-5 [000] ..... 1.0: sys_unshare(unshare_flags: 20000)").unwrap();
        assert_eq!(old.syscall_arg("unshare_flags"), Some(0x2_0000));
        let f = parse_line(" runc:[2:INIT]-77 [000] d..2. 5.000001: sched_process_fork: comm=runc:[1:CHILD] pid=76 child_comm=runc:[1:CHILD] child_pid=77").unwrap();
        assert_eq!((f.comm.as_str(), f.pid), ("runc:[2:INIT]", 77));
        assert_eq!(f.name, "sched_process_fork");
        assert_eq!(f.num("pid"), Some(76));
        assert_eq!(f.num("child_pid"), Some(77));
        let x = parse_line(
            "postgres-9 [1] ..... 1.5: sched_process_exec: filename=/usr/bin/x pid=9 old_pid=9",
        )
        .unwrap();
        assert_eq!(x.field("filename"), Some("/usr/bin/x"));
        assert!(parse_line("# tracer: nop").is_none());
    }
}
