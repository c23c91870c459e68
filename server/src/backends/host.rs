//! Facts about the host that every backend reports beside its figures, and
//! the `/proc` readings both backends measure memory with.

use std::io;
use std::sync::OnceLock;

/// The host's kernel release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// What one process's `smaps_rollup` says of its memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    /// `Pss:`: private pages plus a fair share of shared ones.
    pub pss: u64,
    /// `Private_Clean:` + `Private_Dirty:` (USS): pages no one else maps.
    pub uss: u64,
    /// `Pss_Anon:` + `Pss_Shmem:`: anonymous and shared memory, split
    /// among the processes that map it.
    pub anon: u64,
}

impl std::ops::Add for Rollup {
    type Output = Rollup;
    fn add(self, o: Rollup) -> Rollup {
        Rollup {
            pss: self.pss + o.pss,
            uss: self.uss + o.uss,
            anon: self.anon + o.anon,
        }
    }
}

fn rollup_from(text: &str) -> Option<Rollup> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        })
    };
    Some(Rollup {
        pss: field("Pss:")?,
        uss: field("Private_Clean:")? + field("Private_Dirty:")?,
        anon: field("Pss_Anon:")? + field("Pss_Shmem:")?,
    })
}

/// The PIDs of process `pid`'s children (`/proc/PID/task/PID/children`).
pub fn children(pid: u32) -> io::Result<Vec<u32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    Ok(text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// A process held by a pidfd (`pidfd_open(2)`): unlike its PID, which the
/// kernel may give to a new process once it is reaped, the pidfd names this
/// process only, and becomes readable when it terminates.
pub struct Pinned {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Pinned {
    /// Pins process `pid`. Sound only while `pid` cannot have been reused:
    /// call it while the process is known to run (a child, or a child of
    /// a live child, not yet reaped). Inside a tokio runtime only.
    pub fn new(pid: u32) -> io::Result<Pinned> {
        use std::os::fd::FromRawFd;
        let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
        // SAFETY: pidfd_open takes a PID and flags and returns a new file
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        let interest = tokio::io::Interest::READABLE;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which alone owns
        // it until dropped: it stays open and names the same pidfd.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest)? };
        Ok(Pinned { fd })
    }

    /// Waits at most `within` for the process to terminate (a zombie
    /// counts: it holds no memory any more). Returns whether it did.
    pub async fn exited(&self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, self.fd.readable())
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits until process `pid`, named `comm`, has exited (gone, a zombie, or
/// its PID now names another program), polling `/proc` for at most
/// `within`. A zombie holds no memory any more. Returns whether it did.
pub async fn exited(pid: u32, comm: &str, within: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let named = format!("({comm}) ");
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => match stat.split_once(&named) {
                None => true,
                Some((_, rest)) => rest.starts_with('Z') || rest.starts_with('X'),
            },
        };
        if gone {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The memory of process `pid` and its children, summed. A process of
/// the tree that is gone is an error: the tree is read while it is held.
pub fn tree_rollup(pid: u32) -> io::Result<Rollup> {
    let one = |p: u32| match process_memory(p)? {
        ProcessMemory::Read(r) => Ok(r),
        ProcessMemory::Exited => Err(io::Error::other(format!("process {p} has exited"))),
    };
    let mut total = one(pid)?;
    for child in children(pid)? {
        total = total + one(child)?;
    }
    Ok(total)
}

/// What reading one process of a group found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMemory {
    /// Its memory.
    Read(Rollup),
    /// It has exited (or is exiting): it holds nothing any more.
    Exited,
}

/// Reads process `pid`'s memory, telling a process that has just exited
/// from a reading that failed: a process that is gone (no `/proc/PID`), or
/// whose address space is already released (an empty `smaps_rollup`, as
/// while it exits or as a zombie), holds no memory.
pub fn process_memory(pid: u32) -> io::Result<ProcessMemory> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(ProcessMemory::Exited)
        }
        Err(e) => return Err(e),
    };
    if text.trim().is_empty() {
        return Ok(ProcessMemory::Exited);
    }
    rollup_from(&text)
        .map(ProcessMemory::Read)
        .ok_or_else(|| io::Error::other(format!("no Pss/Private lines for process {pid}")))
}

/// The host a result was measured on, in one sentence: its CPUs, whether it
/// is itself a virtual machine (and how that was seen), and what backs
/// KVM. Read once per server process.
pub fn describe() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        describe_from(
            &cpuinfo,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            dmi("sys_vendor").zip(dmi("product_name")),
            &match stacklab_vmm::host::probe() {
                Ok(h) => h.explanation().to_owned(),
                Err(e) => format!("no KVM ({e})"),
            },
        )
    })
}

fn dmi(field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/dmi/id/{field}"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn describe_from(cpuinfo: &str, cpus: usize, dmi: Option<(String, String)>, kvm: &str) -> String {
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU model");
    let hypervisor_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let virtual_machine = match (hypervisor_flag, dmi) {
        (true, Some((vendor, product))) => format!("itself a virtual machine (the CPU's hypervisor flag is set; DMI says {vendor} {product})"),
        (true, None) => "itself a virtual machine (the CPU's hypervisor flag is set; no DMI table)".to_owned(),
        (false, Some((vendor, product))) => format!("not a virtual machine as far as the CPU says (no hypervisor flag; DMI says {vendor} {product})"),
        (false, None) => "not a virtual machine as far as the CPU says (no hypervisor flag)".to_owned(),
    };
    format!("{cpus} CPU(s), {model}; {virtual_machine}; KVM: {kvm}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_described_from_what_was_read() {
        let cpuinfo = "model name\t: Test CPU @ 1 GHz\nflags\t\t: fpu hypervisor sse\n";
        let text = describe_from(cpuinfo, 2, None, "nested kvm-pvm");
        assert_eq!(text, "2 CPU(s), Test CPU @ 1 GHz; itself a virtual machine (the CPU's hypervisor flag is set; no DMI table); KVM: nested kvm-pvm");
        let bare = describe_from(
            "flags : fpu sse\n",
            8,
            Some(("Acme".into(), "Box".into())),
            "hardware",
        );
        assert!(
            bare.contains("no hypervisor flag; DMI says Acme Box"),
            "{bare}"
        );
        assert!(bare.contains("unknown CPU model"), "{bare}");
        assert!(!describe().is_empty());
    }

    /// A live process is waited for until the bound; once killed it counts
    /// as exited while still a zombie (not yet reaped), since it holds no
    /// memory; a PID naming another program counts as exited too.
    #[tokio::test]
    async fn a_process_has_exited_once_dead_even_unreaped() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        let short = std::time::Duration::from_millis(30);
        assert!(!exited(pid, "sleep", short).await, "sleep is still running");
        assert!(
            exited(pid, "not-sleep", short).await,
            "another program's PID"
        );
        sleeper.kill().unwrap();
        assert!(
            exited(pid, "sleep", std::time::Duration::from_secs(5)).await,
            "killed, a zombie until reaped"
        );
        sleeper.wait().unwrap();
        assert!(exited(pid, "sleep", short).await, "reaped: gone");
    }

    /// A pinned process: still running at the bound, then exited once
    /// killed (unreaped), and so on after it is reaped.
    #[tokio::test]
    async fn a_pinned_process_is_seen_to_exit() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pinned = Pinned::new(sleeper.id()).unwrap();
        let short = std::time::Duration::from_millis(50);
        assert!(!pinned.exited(short).await, "sleep is still running");
        sleeper.kill().unwrap();
        assert!(
            pinned.exited(std::time::Duration::from_secs(5)).await,
            "killed, a zombie until reaped"
        );
        sleeper.wait().unwrap();
        assert!(pinned.exited(short).await, "reaped");
    }
}
