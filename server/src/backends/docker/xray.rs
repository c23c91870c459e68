//! A container's x-ray, read from the host side while it is held at ready:
//! its kernel, namespaces, identity, limits and locks, file system and
//! network next to the server's own, and the system calls that built it
//! (tracefs), on the run's clock.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::AsRawFd;

use stacklab_api::{XRay, XRayCall, XRayKey, XRayOf};

use crate::backends::tracefs::{Capture, TraceEvent};
use crate::backends::xray::{
    cap_names, field, flag_names, initial_inode, interfaces, lsm_label, ns_inode, seccomp_text,
    server_namespaces, status, NAMESPACES,
};

/// What the server knows of the container it x-rays.
pub struct Subject {
    /// Its main process, as a host PID.
    pub pid: u32,
    /// Its caps from the specification: memory bytes, pids, CPUs (nano).
    pub memory_bytes: u64,
    /// See `memory_bytes`.
    pub pids_limit: i64,
    /// See `memory_bytes`.
    pub nano_cpus: i64,
}

/// `uname` as seen through the UTS namespace of `pid`: a short-lived
/// thread joins it (`setns`; a thread may change its own UTS namespace)
/// and asks the kernel, as a process inside would.
fn uname_in(pid: u32) -> Result<(String, String, String), String> {
    let path = format!("/proc/{pid}/ns/uts");
    let ns = fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on an fd we own, for this thread only (UTS is
        // per task; the thread ends right after).
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
            return Err(format!(
                "setns into its UTS namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        uname()
    })
    .join()
    .map_err(|_| "the thread reading it panicked".to_owned())?
}

/// `uname` of the calling thread: (nodename, release, version).
pub fn uname() -> Result<(String, String, String), String> {
    // SAFETY: an all-zero utsname is a valid buffer for uname to fill.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(format!("uname: {}", std::io::Error::last_os_error()));
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok((s(&u.nodename), s(&u.release), s(&u.version)))
}

/// Reads everything but the calls.
pub fn read(subject: &Subject) -> XRay {
    let pid = subject.pid;
    let who = pid.to_string();
    let mut x = XRay {
        of: Some(XRayOf::Container),
        ..Default::default()
    };
    let host_uname = uname();
    let inside_uname = uname_in(pid);
    match (&inside_uname, &host_uname) {
        (Ok(i), Ok(h)) => {
            x.push_row(XRayKey::KernelRelease, "Kernel release (uname -r)", Some(i.1.clone()), Some(h.1.clone()), Some(i.1 == h.1),
                "inside: uname() from a server thread that joined the container's UTS namespace (setns), as a process inside would call it; host: the server's own uname()");
            x.push_row(
                XRayKey::KernelVersion,
                "Kernel build (uname -v)",
                Some(i.2.clone()),
                Some(h.2.clone()),
                Some(i.2 == h.2),
                "the same two uname() calls: one kernel answers both",
            );
            x.push_row(XRayKey::Hostname, "Host name", Some(i.0.clone()), Some(h.0.clone()), Some(i.0 == h.0),
                "the nodename of the same uname() calls: the UTS namespace gives the container its own name");
        }
        (Err(e), _) | (_, Err(e)) => {
            x.push_missing(XRayKey::KernelRelease, "Kernel release", e.clone());
        }
    }
    let (server, _) = server_namespaces();
    x.push_row(
        XRayKey::ServerNamespaces,
        "Where the server runs",
        None,
        Some(server),
        None,
        "the server's /proc/self/ns inode numbers against the kernel's fixed numbers for its initial namespaces",
    );
    let mut shared = 0;
    let mut compared = 0;
    for ns in NAMESPACES {
        let key = ns_key(ns);
        match (ns_inode(&who, ns), ns_inode("self", ns)) {
            (Ok(inside), Ok(host)) => {
                compared += 1;
                if inside == host {
                    shared += 1;
                }
                let initial = initial_inode(ns)
                    .filter(|i| *i == host)
                    .map_or("", |_| " (the host's first)");
                x.push_row(
                    key,
                    &format!("{ns} namespace"),
                    Some(format!("{ns}:[{inside}]")),
                    Some(format!("{ns}:[{host}]{initial}")),
                    Some(inside == host),
                    &format!("readlink /proc/PID/ns/{ns} of the container's process and of the server (/proc/self/ns/{ns}): the same inode is the same namespace"),
                );
            }
            (Err(e), _) | (_, Err(e)) => x.push_missing(key, &format!("{ns} namespace"), e),
        }
    }
    if compared > 0 {
        x.push_row(
            XRayKey::NsShared,
            "Namespaces shared with the host",
            Some(format!("{shared} of {compared}")),
            Some(format!("{} of {compared} are the container's own", compared - shared)),
            None,
            "counted from the rows above; a shared user namespace means a UID inside is the same UID on the host (root inside would be root outside)",
        );
    }
    identity(&mut x, &who);
    limits(&mut x, subject);
    locks(&mut x, &who);
    mounts(&mut x, &who);
    match (interfaces(&who), interfaces("self")) {
        (Ok(i), Ok(h)) => x.push_row(
            XRayKey::Interfaces,
            "Network interfaces",
            Some(i.join(", ")),
            Some(h.join(", ")),
            Some(i == h),
            "/proc/PID/net/dev of the container's process (its network namespace) and of the server",
        ),
        (Err(e), _) | (_, Err(e)) => x.push_missing(XRayKey::Interfaces, "Network interfaces", e),
    }
    x
}

fn ns_key(ns: &str) -> XRayKey {
    match ns {
        "pid" => XRayKey::NsPid,
        "net" => XRayKey::NsNet,
        "mnt" => XRayKey::NsMnt,
        "uts" => XRayKey::NsUts,
        "ipc" => XRayKey::NsIpc,
        "cgroup" => XRayKey::NsCgroup,
        "user" => XRayKey::NsUser,
        _ => XRayKey::NsTime,
    }
}

fn identity(x: &mut XRay, who: &str) {
    let st = match status(who) {
        Ok(s) => s,
        Err(e) => {
            x.push_missing(XRayKey::Pid, "Process id", e);
            return;
        }
    };
    if let Some(nspid) = field(&st, "NSpid") {
        let ids: Vec<&str> = nspid.split_whitespace().collect();
        x.push_row(
            XRayKey::Pid,
            "Process id",
            ids.last().map(|p| p.to_string()),
            ids.first().map(|p| p.to_string()),
            None,
            "NSpid in /proc/PID/status: its id in each PID namespace, the host's first, its own last",
        );
    }
    let map = fs::read_to_string(format!("/proc/{who}/uid_map"))
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let identity_map = map == "0 0 4294967295";
    for (key, label, name) in [
        (XRayKey::Uid, "User id", "Uid"),
        (XRayKey::Gid, "Group id", "Gid"),
    ] {
        if let Some(v) = field(&st, name) {
            let effective = v.split_whitespace().nth(1).unwrap_or(v).to_owned();
            x.push_row(
                key,
                label,
                Some(effective.clone()),
                Some(if identity_map {
                    format!("{effective} (the user namespace maps every id to itself: uid_map \"{map}\")")
                } else {
                    format!("mapped by uid_map \"{map}\"")
                }),
                Some(identity_map),
                &format!("{name} (effective) in /proc/PID/status, and /proc/PID/uid_map"),
            );
        }
    }
}

/// A cgroup controller's directory for `pid` (v1: per controller; v2: one).
fn cgroup_dir(who: &str, controller: &str) -> Result<(String, bool), String> {
    let path = format!("/proc/{who}/cgroup");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut v2 = None;
    for line in text.lines() {
        let mut p = line.splitn(3, ':');
        let (_, ctl, dir) = (p.next(), p.next().unwrap_or(""), p.next().unwrap_or(""));
        if ctl.split(',').any(|c| c == controller) {
            return Ok((format!("/sys/fs/cgroup/{controller}{dir}"), false));
        }
        if ctl.is_empty() {
            v2 = Some(format!("/sys/fs/cgroup{dir}"));
        }
    }
    let dir = v2.ok_or_else(|| format!("{path} names no {controller} cgroup"))?;
    if std::path::Path::new(&format!("{dir}/cgroup.controllers")).exists() {
        Ok((dir, true))
    } else {
        Err(format!("{path} names no {controller} cgroup"))
    }
}

fn read_trim(path: &str) -> Result<String, String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("{path}: {e}"))
}

/// A limit's row: key, label, controller, v1 files, v2 file, what the
/// specification asked.
type LimitRow = (
    XRayKey,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    String,
);

fn limits(x: &mut XRay, s: &Subject) {
    let who = s.pid.to_string();
    // (key, label, controller, v1 files, v2 file, what the spec asked)
    let rows: [LimitRow; 3] = [
        (
            XRayKey::MemoryLimit,
            "Memory limit",
            "memory",
            &["memory.limit_in_bytes"],
            "memory.max",
            format!("{} bytes", s.memory_bytes),
        ),
        (
            XRayKey::PidsLimit,
            "Process limit",
            "pids",
            &["pids.max"],
            "pids.max",
            s.pids_limit.to_string(),
        ),
        (
            XRayKey::CpuQuota,
            "CPU quota",
            "cpu",
            &["cpu.cfs_quota_us", "cpu.cfs_period_us"],
            "cpu.max",
            format!("{} CPU", s.nano_cpus as f64 / 1e9),
        ),
    ];
    for (key, label, controller, v1, v2, asked) in rows {
        let (dir, is_v2) = match cgroup_dir(&who, controller) {
            Ok(d) => d,
            Err(e) => {
                x.push_missing(key, label, e);
                continue;
            }
        };
        let files: Vec<&str> = if is_v2 { vec![v2] } else { v1.to_vec() };
        let host: Result<Vec<String>, String> = files
            .iter()
            .map(|f| read_trim(&format!("{dir}/{f}")).map(|v| format!("{f} = {v}")))
            .collect();
        // Inside, the same files where the container's /sys/fs/cgroup shows them.
        let inside_dir = if is_v2 {
            format!("/proc/{who}/root/sys/fs/cgroup")
        } else {
            format!("/proc/{who}/root/sys/fs/cgroup/{controller}")
        };
        let inside: Option<Vec<String>> = files
            .iter()
            .map(|f| {
                read_trim(&format!("{inside_dir}/{f}"))
                    .ok()
                    .map(|v| format!("{f} = {v}"))
            })
            .collect();
        match host {
            Ok(host) => x.push_row(
                key,
                label,
                inside.map(|v| v.join(", ")),
                Some(format!("{} (in {dir}; asked: {asked})", host.join(", "))),
                None,
                &format!(
                    "cgroup v{} files of the container's {controller} group, read on the host, and the same names under the container's own /sys/fs/cgroup",
                    if is_v2 { 2 } else { 1 }
                ),
            ),
            Err(e) => x.push_missing(key, label, e),
        }
    }
}

fn locks(x: &mut XRay, who: &str) {
    let (st, own) = match (status(who), status("self")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            x.push_missing(XRayKey::Seccomp, "Seccomp", e);
            return;
        }
    };
    let pair = |name: &str| {
        (
            field(&st, name).map(str::to_owned),
            field(&own, name).map(str::to_owned),
        )
    };
    let (i, h) = pair("Seccomp");
    x.push_row(
        XRayKey::Seccomp,
        "Seccomp",
        i.as_deref().map(seccomp_text),
        h.as_deref().map(seccomp_text),
        None,
        "Seccomp: in /proc/PID/status of the container's process and of the server",
    );
    let (i, h) = pair("Seccomp_filters");
    x.push_row(
        XRayKey::SeccompFilters,
        "Seccomp filters",
        i,
        h,
        None,
        "Seccomp_filters: in the same files",
    );
    let (i, h) = pair("NoNewPrivs");
    x.push_row(XRayKey::NoNewPrivs, "No new privileges", i, h, None,
        "NoNewPrivs: in the same files (1: execve can never gain privileges, setuid bits are ignored)");
    let (i, h) = pair("CapEff");
    x.push_row(
        XRayKey::CapEff,
        "Effective capabilities",
        i.as_deref().map(cap_names),
        h.as_deref().map(cap_names),
        None,
        "CapEff: in the same files, each bit decoded into its capability's name",
    );
    match lsm_label(who) {
        Ok(label) => x.push_row(
            XRayKey::Lsm,
            "Security module label",
            Some(label),
            lsm_label("self").ok(),
            None,
            "/proc/PID/attr/apparmor/current or /proc/PID/attr/current",
        ),
        Err(e) => x.push_missing(XRayKey::Lsm, "Security module label", e),
    }
}

fn mounts(x: &mut XRay, who: &str) {
    let path = format!("/proc/{who}/mountinfo");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            x.push_missing(
                XRayKey::RootMount,
                "Root file system",
                format!("{path}: {e}"),
            );
            return;
        }
    };
    let mut tmpfs = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        let (Some(point), Some(opts), Some(fstype)) = (l.get(4), l.get(5), r.first()) else {
            continue;
        };
        let ro = opts.split(',').any(|o| o == "ro");
        if *point == "/" {
            let supers = r.get(2).copied().unwrap_or("");
            let lower = supers
                .split(',')
                .find_map(|o| o.strip_prefix("lowerdir="))
                .map_or(0, |l| l.split(':').count());
            let upper = supers.split(',').any(|o| o.starts_with("upperdir="));
            let host_root = fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (a, b) = l.split_once(" - ")?;
                        (a.split_whitespace().nth(4)? == "/")
                            .then(|| b.split_whitespace().next().map(str::to_owned))?
                    })
                });
            x.push_row(
                XRayKey::RootMount,
                "Root file system",
                Some(format!(
                    "{fstype}{}, mounted {}",
                    if *fstype == "overlay" {
                        format!(": {lower} read-only image layer(s){}", if upper { " + 1 writable layer" } else { "" })
                    } else {
                        String::new()
                    },
                    if ro { "read-only" } else { "read-write" }
                )),
                host_root.map(|t| format!("the server's / is {t}")),
                None,
                "the \"/\" line of /proc/PID/mountinfo (the kernel's view of its mount namespace): type, lowerdir entries counted, mount flags",
            );
        } else if *fstype == "tmpfs" && !point.starts_with("/proc") && !point.starts_with("/sys") {
            tmpfs.push(format!("{point}{}", if ro { " (ro)" } else { "" }));
        }
    }
    x.push_row(
        XRayKey::TmpfsMounts,
        "tmpfs mounts (in memory)",
        Some(tmpfs.join(", ")),
        None,
        None,
        "the tmpfs lines of /proc/PID/mountinfo, but under /proc and /sys (where the runtime masks files)",
    );
}

/// `clone`/`unshare` flags (`include/uapi/linux/sched.h`); the low byte
/// of `clone`'s is the exit signal.
const CLONE_FLAGS: [(u64, &str); 23] = [
    (0x80, "CLONE_NEWTIME"),
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
];

/// `mount` flags (`include/uapi/linux/mount.h`).
const MOUNT_FLAGS: [(u64, &str); 18] = [
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (32, "MS_REMOUNT"),
    (128, "MS_DIRSYNC"),
    (1024, "MS_NOATIME"),
    (2048, "MS_NODIRATIME"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (32768, "MS_SILENT"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 24, "MS_STRICTATIME"),
];

/// Daemons that outlive every run: following a container's ancestry stops
/// below them, so two containers started at once are never mixed up.
const DAEMONS: [&str; 3] = ["containerd", "dockerd", "systemd"];

/// A call's argument `field` in words, or that the kernel's line did not
/// give it (never a 0 it did not say).
fn with_arg(e: &TraceEvent, field: &str, say: impl FnOnce(u64) -> String) -> String {
    match e.syscall_arg(field) {
        Some(v) => say(v),
        None => unread(e, field),
    }
}

/// That the kernel's line for a call did not give `field` (a tracepoint
/// format this server does not know), with the line's arguments as printed.
fn unread(e: &TraceEvent, field: &str) -> String {
    format!("{field} not read from the kernel's line ({})", e.args)
}

/// The calls that built the container whose main process is `pid`, from
/// `events` (the capture's, every process): the runtime's processes are
/// the tree the daemon forked for this container (followed through
/// `sched_process_fork`, threads included), down to the container's
/// process. `at_us` places a CLOCK_MONOTONIC instant on the run's clock;
/// calls made after `platform_end_us` are counted as the workload's.
pub fn calls(
    x: &mut XRay,
    events: &[TraceEvent],
    pid: u32,
    at_us: &dyn Fn(u64) -> u64,
    platform_end_us: u64,
) {
    let mut parent: HashMap<u32, (u32, String)> = HashMap::new();
    for e in events.iter().filter(|e| e.name == "sched_process_fork") {
        if let (Some(p), Some(c)) = (e.num("pid"), e.num("child_pid")) {
            let comm = e.field("comm").unwrap_or("").to_owned();
            parent.entry(c as u32).or_insert((p as u32, comm));
        }
    }
    // Up from the container's process to what the daemon forked.
    let mut root = pid;
    let mut seen = HashSet::new();
    while let Some((p, comm)) = parent.get(&root) {
        if DAEMONS.iter().any(|d| comm.starts_with(d)) || !seen.insert(root) {
            break;
        }
        root = *p;
    }
    // Down: everything forked from there.
    let mut tree: HashSet<u32> = HashSet::from([root]);
    let mut grew = true;
    while grew {
        grew = false;
        for (child, (p, _)) in &parent {
            if tree.contains(p) && tree.insert(*child) {
                grew = true;
            }
        }
    }
    let execs: Vec<&TraceEvent> = events
        .iter()
        .filter(|e| e.name == "sched_process_exec" && tree.contains(&e.pid))
        .collect();
    // The platform's work ends with the container process's first execve
    // (its entrypoint): what its tree does after is the workload's, even
    // before the engine's start call has returned.
    let entry_ns = events
        .iter()
        .find(|e| e.pid == pid && e.name == "sys_execve")
        .map(|e| e.mono_ns);
    let mut listed = Vec::new();
    let (mut thread_clones, mut workload) = (0u64, 0u64);
    for e in events
        .iter()
        .filter(|e| tree.contains(&e.pid) && e.name.starts_with("sys_"))
    {
        let name = e.name.trim_start_matches("sys_");
        let t = at_us(e.mono_ns);
        let detail = match name {
            "clone" => match e.syscall_arg("clone_flags") {
                Some(flags) if flags & 0x10000 != 0 && flags & 0x7e02_0000 == 0 => {
                    thread_clones += 1;
                    continue;
                }
                Some(flags) => format!(
                    "flags {} (+ exit signal {})",
                    flag_names(flags & !0xff, &CLONE_FLAGS),
                    flags & 0xff
                ),
                None => unread(e, "clone_flags"),
            },
            "clone3" => "flags in a struct the tracepoint does not copy (at uargs)".into(),
            "unshare" => with_arg(e, "unshare_flags", |f| {
                format!("flags {}", flag_names(f, &CLONE_FLAGS))
            }),
            // `flags` since Linux 5.8, `nstype` before.
            "setns" => {
                let field = if e.field("flags").is_some() {
                    "flags"
                } else {
                    "nstype"
                };
                with_arg(e, field, |f| {
                    format!("nstype {}", flag_names(f, &CLONE_FLAGS))
                })
            }
            "sethostname" => with_arg(e, "len", |n| format!("a name of {n} bytes")),
            "mount" => with_arg(e, "flags", |f| {
                format!(
                    "flags {} (paths are user memory the tracepoint does not copy)",
                    flag_names(f, &MOUNT_FLAGS)
                )
            }),
            "pivot_root" => {
                "the container's root becomes /; the host's is detached below it".into()
            }
            "execve" => {
                let file = execs
                    .iter()
                    .find(|x| x.pid == e.pid && x.mono_ns >= e.mono_ns)
                    .and_then(|x| x.field("filename"))
                    .unwrap_or("(failed or not seen)");
                format!("runs {file}")
            }
            _ => e.args.clone(),
        };
        let after = match entry_ns {
            Some(entry) => e.mono_ns > entry,
            None => t > platform_end_us,
        };
        if after {
            workload += 1;
            continue;
        }
        let by = Some(format!("{} {}", e.comm, e.pid));
        // A run of the same call by the same thread is one line, counted.
        if let Some((last, n)) = listed.last_mut() {
            let last: &mut XRayCall = last;
            if last.name == name && last.by == by && last.detail == detail {
                *n += 1;
                continue;
            }
        }
        listed.push((
            XRayCall {
                at_us: t,
                took_us: None,
                name: name.to_owned(),
                detail,
                by,
            },
            1u32,
        ));
    }
    let listed: Vec<XRayCall> = listed
        .into_iter()
        .map(|(mut c, n)| {
            if n > 1 {
                c.detail = format!("{} (×{n} in a row; the time is the first's)", c.detail);
            }
            c
        })
        .collect();
    x.calls_title = "System calls that built the container".into();
    x.calls_how = format!(
        "the kernel's syscall tracepoints (tracefs, clock mono), kept for the {} processes and threads forked from the daemon for this container down to its process {pid}, followed through sched_process_fork; each time on the run's clock",
        tree.len()
    );
    x.calls = listed;
    x.push_count(
        XRayKey::ThreadClones,
        "Threads the runtime started",
        thread_clones,
        "clone calls with CLONE_THREAD and no namespace flag by the same processes (not listed)",
    );
    x.push_count(XRayKey::WorkloadCalls, "Calls of these kinds by the workload, after the platform's share", workload,
        "the same calls by the same process tree after the container's process ran its entrypoint (its first execve)");
}

/// Starts a capture of the calls, or notes why none can be made.
pub fn start_capture(x: &mut XRay) -> Option<Capture> {
    match Capture::start(crate::backends::tracefs::EventSet::Container) {
        Ok(c) => Some(c),
        Err(e) => {
            x.push_missing(
                XRayKey::PlatformCalls,
                "System calls that built the container",
                e.to_string(),
            );
            None
        }
    }
}

/// Why a run has no kernel events in its x-ray unless it asked.
pub const NOT_ASKED: &str = "not captured: this run did not ask for it (\"trace\": true); switching the kernel's tracepoints on and off for a run costs more than 5 % of the platform's share, so only the x-ray cards ask";

/// An x-ray begun before the container was created: the capture of the
/// calls runs from here to ready.
pub struct Pending {
    xray: XRay,
    capture: Option<Capture>,
}

/// Begins an x-ray for a single-instance run (`None` for a member of a
/// density step, which is not x-rayed).
pub fn begin(ctx: &crate::backends::RunContext) -> Option<Pending> {
    if !ctx.is_single() {
        return None;
    }
    let mut xray = XRay::default();
    let capture = if ctx.trace_asked() {
        start_capture(&mut xray)
    } else {
        xray.push_missing(
            XRayKey::PlatformCalls,
            "System calls that built the container",
            NOT_ASKED,
        );
        None
    };
    Some(Pending { xray, capture })
}

impl Pending {
    /// Reads the x-ray of `subject` (held at ready), the calls up to
    /// `platform_end_us`, and records it in the run's timeline.
    pub async fn finish(
        self,
        ctx: &crate::backends::RunContext,
        subject: Subject,
        platform_end_us: u64,
    ) {
        let ctx2 = ctx.clone();
        let task = tokio::task::spawn_blocking(move || {
            let Pending {
                xray: early,
                capture,
            } = self;
            let mut x = read(&subject);
            x.missing.extend(early.missing);
            if let Some(capture) = capture {
                match capture.read() {
                    Ok((events, lost)) => {
                        calls(
                            &mut x,
                            &events,
                            subject.pid,
                            &|ns| ctx2.us_at_mono(ns),
                            platform_end_us,
                        );
                        if lost > 0 {
                            x.calls_how.push_str(&format!("; the trace buffer overwrote {lost} events meanwhile (busy host): some calls may be missing"));
                        }
                    }
                    Err(e) => x.push_missing(
                        XRayKey::PlatformCalls,
                        "System calls that built the container",
                        e.to_string(),
                    ),
                }
            }
            x
        });
        match task.await {
            Ok(x) => ctx.xray(x),
            Err(e) => tracing::warn!("the x-ray reader failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tracefs::parse_line;

    /// The calls of the container whose process is `pid`, from planted
    /// trace lines (the run's clock starts at 1 s).
    fn calls_from(lines: &[impl AsRef<str>], pid: u32) -> XRay {
        let events: Vec<_> = lines
            .iter()
            .filter_map(|l| parse_line(l.as_ref()))
            .collect();
        let mut x = XRay::default();
        calls(&mut x, &events, pid, &|ns| ns / 1000 - 1_000_000, 100);
        x
    }

    #[test]
    fn follows_the_runtime_tree_and_not_a_neighbour() {
        let lines = [
            "containerd-10 [000] ..... 1.000000: sched_process_fork: comm=containerd pid=10 child_comm=containerd child_pid=20",
            "containerd-10 [000] ..... 1.000001: sched_process_fork: comm=containerd pid=10 child_comm=containerd child_pid=90",
            "shim-20 [000] ..... 1.000010: sched_process_fork: comm=shim pid=20 child_comm=shim child_pid=21",
            "runc-21 [000] ..... 1.000020: sys_clone(clone_flags: 0x3d0f00, newsp: 0)",
            "runc-21 [000] ..... 1.000021: sched_process_fork: comm=runc pid=21 child_comm=runc child_pid=22",
            "runc-22 [000] ..... 1.000030: sys_unshare(unshare_flags: 0x6c020000)",
            "runc-22 [000] ..... 1.000031: sched_process_fork: comm=runc pid=22 child_comm=runc child_pid=23",
            "runc-23 [000] ..... 1.000040: sys_pivot_root(new_root: 0x1, put_old: 0x2)",
            "runc-23 [000] ..... 1.000050: sys_execve(filename: 0x1, argv: 0x2, envp: 0x3)",
            "postgres-23 [000] ..... 1.000051: sched_process_exec: filename=/usr/bin/postgres pid=23 old_pid=23",
            "other-90 [000] ..... 1.000060: sys_unshare(unshare_flags: 0x20000)",
            "postgres-23 [000] ..... 1.000900: sys_execve(filename: 0x1, argv: 0x2, envp: 0x3)",
        ];
        let x = calls_from(&lines, 23);
        let names: Vec<&str> = x.calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["unshare", "pivot_root", "execve"], "{:?}", x.calls);
        assert_eq!(
            x.calls[0].detail,
            "flags CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID|CLONE_NEWNET"
        );
        assert_eq!(x.calls[2].detail, "runs /usr/bin/postgres");
        assert_eq!(x.calls[2].at_us, 50);
        assert_eq!(x.count(XRayKey::ThreadClones), Some(1));
        assert_eq!(x.count(XRayKey::WorkloadCalls), Some(1));
    }

    /// The same calls as kernels before 6.17 print them (bare hex) and as
    /// later ones do (`0x` from 10 on) read the same; setns's argument is
    /// `flags` since 5.8.
    #[test]
    fn syscall_arguments_are_hex_in_either_kernel_format() {
        let said = |args: [&str; 4]| {
            let lines = [
                "containerd-10 [000] ..... 1.000000: sched_process_fork: comm=containerd pid=10 child_comm=runc child_pid=22".to_owned(),
                format!("runc-22 [000] ..... 1.000010: sys_clone({})", args[0]),
                format!("runc-22 [000] ..... 1.000020: sys_unshare({})", args[1]),
                format!("runc-22 [000] ..... 1.000030: sys_setns({})", args[2]),
                format!("runc-22 [000] ..... 1.000040: sys_mount({})", args[3]),
            ];
            let x = calls_from(&lines, 22);
            let details: Vec<String> = x.calls.iter().map(|c| c.detail.clone()).collect();
            (details, x.count(XRayKey::ThreadClones))
        };
        let bare = said([
            "clone_flags: 3d0f00, newsp: 7f00",
            "unshare_flags: 20000",
            "fd: 5, flags: 40000000",
            "dev_name: 0, dir_name: 7f00, type: 0, flags: 44000, data: 0",
        ]);
        let prefixed = said([
            "clone_flags: 0x3d0f00, newsp: 0x7f00",
            "unshare_flags: 0x20000",
            "fd: 5, flags: 0x40000000",
            "dev_name: 0, dir_name: 0x7f00, type: 0, flags: 0x44000, data: 0",
        ]);
        assert_eq!(bare, prefixed);
        assert_eq!(
            bare.0,
            [
                "flags CLONE_NEWNS",
                "nstype CLONE_NEWNET",
                "flags MS_REC|MS_PRIVATE (paths are user memory the tracepoint does not copy)",
            ]
        );
        assert_eq!(bare.1, Some(1), "the thread clone is counted, not listed");
    }

    /// A call whose line lacks the argument it is described by says so;
    /// it does not read as flags of 0 (or "a name of 0 bytes"), and a clone
    /// without flags is listed, not taken for a thread.
    #[test]
    fn an_argument_the_line_lacks_is_said_unread() {
        let lines = [
            "containerd-10 [000] ..... 1.000000: sched_process_fork: comm=containerd pid=10 child_comm=runc child_pid=22",
            "runc-22 [000] ..... 1.000010: sys_clone(newsp: 0)",
            "runc-22 [000] ..... 1.000020: sys_unshare(flagz: 0x20000)",
            "runc-22 [000] ..... 1.000030: sys_sethostname(name: 0x1)",
            "runc-22 [000] ..... 1.000040: sys_mount(dev_name: 0x1, dir_name: 0x2)",
            "runc-22 [000] ..... 1.000050: sys_setns(fd: 3)",
        ];
        let x = calls_from(&lines, 22);
        let said: Vec<(&str, &str)> = x
            .calls
            .iter()
            .map(|c| (c.name.as_str(), c.detail.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    "clone",
                    "clone_flags not read from the kernel's line (newsp: 0)"
                ),
                (
                    "unshare",
                    "unshare_flags not read from the kernel's line (flagz: 0x20000)"
                ),
                (
                    "sethostname",
                    "len not read from the kernel's line (name: 0x1)"
                ),
                (
                    "mount",
                    "flags not read from the kernel's line (dev_name: 0x1, dir_name: 0x2)"
                ),
                ("setns", "nstype not read from the kernel's line (fd: 3)"),
            ]
        );
        assert_eq!(x.count(XRayKey::ThreadClones), Some(0));
    }

    #[test]
    fn reads_its_own_process_like_a_container() {
        let me = std::process::id();
        let x = read(&Subject {
            pid: me,
            memory_bytes: 1,
            pids_limit: 1,
            nano_cpus: 1,
        });
        let release = x.row(XRayKey::KernelRelease).expect("kernel row");
        assert_eq!(release.same, Some(true));
        assert_eq!(x.row(XRayKey::NsPid).unwrap().same, Some(true));
    }
}
