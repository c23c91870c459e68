//! Memory of a container, read straight from the kernel: its memory cgroup
//! (what the kernel charges the container) and `/proc/PID/smaps_rollup`
//! (what its processes map, shared pages split evenly between sharers).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use stacklab_api::{FactKey, Metric};

use super::image::{ImageKind, PresentImage};
use super::readiness::server_version;
use super::DockerRuntime;
use crate::backends::host::{process_memory, ProcessMemory, Rollup};
use crate::backends::Ready;

/// A container's memory cgroup (v1 `memory` controller or a v2 group).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub(super) dir: PathBuf,
    v2: bool,
}

/// One reading of a cgroup's memory counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// `memory.usage_in_bytes` (v1) / `memory.current` (v2): everything
    /// charged, page cache and tmpfs included.
    pub usage: u64,
    /// Page cache the kernel may drop first (`inactive_file`), if
    /// `memory.stat` has it.
    pub inactive_file: Option<u64>,
}

impl CgroupMemory {
    /// What `docker stats` shows: usage minus inactive page cache.
    pub fn docker_stats(&self) -> Result<u64, String> {
        self.inactive_file
            .map(|i| self.usage.saturating_sub(i))
            .ok_or_else(|| "memory.stat has no inactive_file line".to_owned())
    }
}

impl Cgroup {
    /// The group's directory under `/sys/fs/cgroup`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The memory cgroup of process `pid` (on the host's PID namespace).
    pub fn of_pid(pid: u32) -> io::Result<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        Self::from_proc_cgroup(&text, Path::new("/sys/fs/cgroup"))
            .ok_or_else(|| io::Error::other(format!("process {pid} has no memory cgroup")))
    }

    fn from_proc_cgroup(text: &str, root: &Path) -> Option<Cgroup> {
        let mut v2_path = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                return Some(Cgroup {
                    dir: root.join("memory").join(path),
                    v2: false,
                });
            }
            if controllers.is_empty() {
                v2_path = Some(path.to_owned());
            }
        }
        v2_path.map(|p| Cgroup {
            dir: root.join(p),
            v2: true,
        })
    }

    /// Reads the counters now.
    pub fn memory(&self) -> io::Result<CgroupMemory> {
        let usage_file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        let usage = read_u64(&self.dir.join(usage_file))?;
        let stat = std::fs::read_to_string(self.dir.join("memory.stat"))?;
        // v1 reports the group's own and hierarchical (`total_`) figures.
        let inactive = if self.v2 {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        Ok(CgroupMemory {
            usage,
            inactive_file: stat_field(&stat, inactive),
        })
    }

    /// The processes in the group, as host PIDs.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

fn read_u64(path: &Path) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The PID a process has inside its own PID namespace (last `NSpid` field).
pub fn pid_in_namespace(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The tmpfs mounts of the container whose process is `pid`, as the
/// kernel lists them in its mount namespace (`/proc/PID/mountinfo`, mount
/// points without symlinks), but `/dev/shm`: POSIX shared memory there is
/// mapped by the processes that use it, so PSS already counts it.
pub fn tmpfs_mounts(pid: u32) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE SUPER
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            (right.split(' ').next()? == "tmpfs" && point != "/dev/shm").then(|| point.to_owned())
        })
        .collect())
}

/// Used bytes of the tmpfs mounted at `mount` inside the container whose
/// process is `pid` (statvfs through `/proc/PID/root`): the pages its
/// files hold.
pub fn tmpfs_used_bytes(pid: u32, mount: &str) -> io::Result<u64> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/root{mount}"))
        .map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: `path` is a NUL-terminated string we own; `st` is a plain C
    // struct the call fills, zeroed before.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    Ok((st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64)
}

/// The memory readings of a container, read now: the PSS of its
/// processes and the files on its tmpfs mounts (the parts of the memory
/// it holds), plus its cgroup's figures for comparison. A reading that
/// fails is missing, with why.
pub fn read_container(cgroup: &Result<Cgroup, String>, pid: u32) -> Ready {
    let mut ready = Ready::default();
    let files = tmpfs_mounts(pid)
        .map_err(|e| format!("could not read /proc/{pid}/mountinfo: {e}"))
        .and_then(|mounts| {
            mounts
                .iter()
                .map(|m| {
                    tmpfs_used_bytes(pid, m).map_err(|e| {
                        format!(
                            "could not statvfs the tmpfs at {m} through process {pid}'s root: {e}"
                        )
                    })
                })
                .sum::<Result<u64, String>>()
        });
    ready.read(Metric::MemoryTmpfsFiles, files.map(|b| b as f64));
    let cg = match cgroup {
        Ok(cg) => cg,
        Err(why) => {
            for key in [
                Metric::MemoryPss,
                Metric::MemoryUss,
                Metric::MemoryAnon,
                Metric::Processes,
                Metric::MemoryCgroup,
                Metric::MemoryDockerStats,
            ] {
                ready.read(key, Err(format!("no memory cgroup: {why}")));
            }
            return ready;
        }
    };
    let pss = match cg.pids() {
        Err(e) => {
            let why = format!("could not read {}/cgroup.procs: {e}", cg.dir.display());
            ready.read(Metric::Processes, Err(why.clone()));
            ready.read(Metric::MemoryUss, Err(why.clone()));
            ready.read(Metric::MemoryAnon, Err(why.clone()));
            Err(why)
        }
        Ok(pids) => {
            ready.read(Metric::Processes, Ok(pids.len() as f64));
            let listed: Vec<String> = pids
                .iter()
                .map(|p| match pid_in_namespace(*p) {
                    Some(inner) => format!("{p} (inside: {inner})"),
                    None => p.to_string(),
                })
                .collect();
            ready.fact(FactKey::HostPids, "Its processes, as the host sees them", listed.join(", "), "host PIDs from the cgroup; the PID inside the container's own PID namespace from NSpid in /proc/PID/status");
            let mut exited = 0;
            pids.iter()
                .map(|p| match process_memory(*p) {
                    Ok(ProcessMemory::Read(r)) => Ok(r),
                    Ok(ProcessMemory::Exited) => {
                        exited += 1;
                        Ok(Rollup::default())
                    }
                    Err(e) => Err(format!("could not read /proc/{p}/smaps_rollup: {e}")),
                })
                .try_fold(Rollup::default(), |total, r| r.map(|r| total + r))
                .map(|b| (b, exited))
        }
    };
    let note = match &pss {
        Ok((_, n)) if *n > 0 => Some(format!(
            "{n} of them exited between being listed and being read, and hold nothing"
        )),
        _ => None,
    };
    let part = |pick: fn(&Rollup) -> u64| {
        pss.as_ref()
            .map(|(r, _)| pick(r) as f64)
            .map_err(Clone::clone)
    };
    ready.read(Metric::MemoryUss, part(|r| r.uss));
    ready.read(Metric::MemoryAnon, part(|r| r.anon));
    ready.read_noted(Metric::MemoryPss, part(|r| r.pss), note);
    let counters = cg
        .memory()
        .map_err(|e| format!("could not read the memory cgroup {}: {e}", cg.dir.display()));
    ready.read(
        Metric::MemoryCgroup,
        counters
            .as_ref()
            .map(|m| m.usage as f64)
            .map_err(Clone::clone),
    );
    ready.read(
        Metric::MemoryDockerStats,
        counters.and_then(|m| m.docker_stats().map(|b| b as f64)),
    );
    ready
}

impl DockerRuntime {
    /// The figures of a ready PostgreSQL container beside its memory: the
    /// image, the kernels, the server's version.
    pub(super) async fn describe(
        &self,
        ready: &mut Ready,
        id: &str,
        image: &PresentImage,
        ip: IpAddr,
        password: &str,
    ) {
        ready.read(Metric::ImageSize, Ok(image.size_bytes as f64));
        ready.fact(FactKey::Image, "Image", match image.kind {
                ImageKind::Official => format!("{} (the official image)", image.reference),
                ImageKind::OfflineBuilt => format!("{} (built offline by stacklab from Debian's postgresql-15: no registry is reachable here)", image.reference),
            }, "the image the container was created from");
        let inside = self.exec_output(id, &["uname", "-r"]).await;
        ready.fact(
            FactKey::KernelInside,
            "Kernel release inside the container",
            inside.unwrap_or_else(|e| format!("unknown ({e})")),
            "`uname -r` executed inside the container",
        );
        ready.fact(FactKey::KernelHost, "Kernel release on the host", crate::backends::host::kernel_release(), "/proc/sys/kernel/osrelease read by the server: the same kernel, because a container shares it");
        if let Ok(version) = server_version(ip, password).await {
            ready.fact(
                FactKey::PostgresVersion,
                "PostgreSQL version",
                version,
                "SELECT version() over the wire protocol",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup_dir(files: &[(&str, String)]) -> (tempfile::TempDir, Result<Cgroup, String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let cgroup = Ok(Cgroup {
            dir: dir.path().to_path_buf(),
            v2: true,
        });
        (dir, cgroup)
    }

    /// A reading that fails is missing with why (never a 0), and what
    /// could be read is there.
    #[test]
    fn a_reading_that_fails_is_missing_with_its_reason() {
        let (_dir, cgroup) = cgroup_dir(&[
            ("memory.current", "4096\n".into()),
            ("memory.stat", "shmem 8192\n".into()),
        ]);
        let ready = read_container(&cgroup, u32::MAX);
        let reason = |key: Metric| match ready.readings.iter().find(|r| r.key == key.into()) {
            Some(r) => r.value.clone().err().unwrap_or_default(),
            None => panic!("{key} not reported at all: {:?}", ready.readings),
        };
        assert!(
            reason(Metric::MemoryPss).contains("cgroup.procs"),
            "{:?}",
            ready.readings
        );
        assert!(reason(Metric::Processes).contains("cgroup.procs"));
        assert!(reason(Metric::MemoryTmpfsFiles).contains("mountinfo"));
        assert!(reason(Metric::MemoryDockerStats).contains("inactive_file"));
        assert_eq!(
            ready.value(Metric::MemoryCgroup),
            Some(4096.0),
            "what could be read is there"
        );
    }

    /// A process that exits between being listed and being read holds
    /// nothing: that is a reading (said in its note), not a failure.
    #[test]
    fn a_process_that_just_exited_holds_nothing() {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let me = std::process::id();
        let (_dir, cgroup) = cgroup_dir(&[
            ("cgroup.procs", format!("{me}\n{pid}\n")),
            ("memory.current", "4096\n".into()),
            ("memory.stat", "inactive_file 0\n".into()),
        ]);
        let ready = read_container(&cgroup, me);
        assert!(
            ready.readings.iter().all(|r| r.value.is_ok()),
            "{:?}",
            ready.readings
        );
        let mine = own_pss(me) as f64;
        let pss = ready.value(Metric::MemoryPss).unwrap();
        assert!(pss > 0.5 * mine && pss < 2.0 * mine, "{pss} vs {mine}");
        let note = ready
            .readings
            .iter()
            .find(|r| r.key == Metric::MemoryPss.into())
            .and_then(|r| r.note.clone())
            .unwrap_or_default();
        assert!(note.contains("1 of them exited"), "{note}");
        assert_eq!(
            ready.value(Metric::MemoryTmpfsFiles),
            Some(0.0),
            "no tmpfs mounts: nothing"
        );
    }

    /// This test process's PSS, read independently of `read_container`.
    fn own_pss(me: u32) -> u64 {
        match process_memory(me).unwrap() {
            ProcessMemory::Read(r) => r.pss,
            ProcessMemory::Exited => unreachable!("this process runs"),
        }
    }

    #[test]
    fn finds_v1_and_v2_memory_cgroups() {
        let v1 = "9:name=systemd:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n";
        let cg = Cgroup::from_proc_cgroup(v1, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(cg.dir, Path::new("/sys/fs/cgroup/memory/docker/abc"));
        assert!(!cg.v2);
        let v2 = "0::/system.slice/docker-abc.scope\n";
        let cg = Cgroup::from_proc_cgroup(v2, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(
            cg.dir,
            Path::new("/sys/fs/cgroup/system.slice/docker-abc.scope")
        );
        assert!(cg.v2);
    }

    #[test]
    fn reads_stat_fields_exactly() {
        let stat = "inactive_file 5\ntotal_inactive_file 7\nshmem 3\n";
        assert_eq!(stat_field(stat, "inactive_file"), Some(5));
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(7));
        assert_eq!(stat_field(stat, "missing"), None);
    }

    #[test]
    fn measures_this_process() {
        let me = std::process::id();
        assert!(
            own_pss(me) > 100 * 1024,
            "a test binary maps more than 100 KiB"
        );
        assert_eq!(
            pid_in_namespace(me),
            Some(me),
            "tests run in the host PID namespace"
        );
        let cg = Cgroup::of_pid(me).unwrap();
        assert!(!cg.pids().unwrap().is_empty() || cg.v2);
    }
}
