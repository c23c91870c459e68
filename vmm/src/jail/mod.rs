//! The VMM's jail, in the spirit of Firecracker's jailer: before it touches
//! a guest, `stacklab-vmm --jail UID:GID` moves itself into
//!
//! - its own mount, PID, network and IPC namespaces (PID 1 of an empty PID
//!   namespace, no network interface but a downed loopback, no System V
//!   IPC shared with anyone);
//! - an empty, read-only root: a small tmpfs holding nothing but
//!   `/dev/kvm` (the guest's files were read before, so they need no path);
//! - an unprivileged user and group with no supplementary groups, not
//!   dumpable, with `no_new_privs`;
//! - a seccomp filter that allows only the system calls a traced run made
//!   (see [`seccomp`]), `ioctl` only with KVM's request type.
//!
//! The PID namespace needs one fork: the process the server started stays
//! outside as a waiter (itself unprivileged and filtered) and passes on
//! the VMM's exit status; the VMM is its only child. Either one dying
//! takes the other with it (`PR_SET_PDEATHSIG`), and the server's own
//! death signal reaches the waiter, so no VM outlives its server.
//!
//! Everything here runs while the process has one thread, before any run.
//! Only `libc` and `seccompiler` are used; nothing here knows about guests.

pub mod seccomp;

use std::ffi::CString;
use std::io;

/// Where the jail could not be entered: the step and the kernel's error.
#[derive(Debug, thiserror::Error)]
#[error("jail: {step}: {source}")]
pub struct JailError {
    step: &'static str,
    #[source]
    source: io::Error,
}

/// The unprivileged identity the VMM runs as inside the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailIds {
    pub uid: u32,
    pub gid: u32,
}

impl std::str::FromStr for JailIds {
    type Err = String;

    /// `UID:GID`, both numeric and not 0 (root is what the jail drops).
    fn from_str(s: &str) -> Result<Self, String> {
        let (uid, gid) = s
            .split_once(':')
            .ok_or_else(|| format!("--jail wants UID:GID, got {s:?}"))?;
        let num = |v: &str| v.parse::<u32>().map_err(|e| format!("--jail {s:?}: {e}"));
        let ids = JailIds {
            uid: num(uid)?,
            gid: num(gid)?,
        };
        if ids.uid == 0 || ids.gid == 0 {
            return Err("--jail: the VMM never runs as user or group 0".into());
        }
        Ok(ids)
    }
}

/// What the jail is, in words, for the run's report.
#[derive(Debug, Clone)]
pub struct Jailed {
    /// How the root was changed: `pivot_root`, or `chroot` where the
    /// current root cannot be pivoted (an initramfs).
    pub root_change: &'static str,
    pub ids: JailIds,
    /// How many system calls the filter allows.
    pub allowed_syscalls: usize,
}

impl Jailed {
    /// One sentence for the VMM's "jailed" step.
    pub fn detail(&self) -> String {
        format!(
            "own mount, PID, network and IPC namespaces; an empty read-only root with only /dev/kvm ({}); user {} group {}, no_new_privs; a seccomp filter allowing {} system calls (ioctl only for KVM)",
            self.root_change, self.ids.uid, self.ids.gid, self.allowed_syscalls
        )
    }
}

/// Turns a libc return value into a [`JailError`] naming `step`.
fn check(step: &'static str, rc: libc::c_int) -> Result<libc::c_int, JailError> {
    if rc < 0 {
        Err(JailError {
            step,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a fixed path")
}

/// Inside the namespaces and the empty root, as the unprivileged user;
/// the seccomp filter is the last step ([`Inside::lock_down`]), so a
/// self-test can look around first.
pub struct Inside {
    root_change: &'static str,
    ids: JailIds,
}

impl Inside {
    /// Applies the seccomp filter: from here on only the listed calls work.
    pub fn lock_down(self) -> Result<Jailed, JailError> {
        let allowed_syscalls = seccomp::apply_vmm_filter().map_err(|e| JailError {
            step: "seccomp",
            source: io::Error::other(e.to_string()),
        })?;
        Ok(Jailed {
            root_change: self.root_change,
            ids: self.ids,
            allowed_syscalls,
        })
    }
}

/// Enters the jail's namespaces, root and user. Returns in the jailed VMM
/// only: the process that called it becomes the waiter and exits with the
/// VMM's status. Call it with one thread, before `/dev/kvm` or any guest
/// is touched.
pub fn enter(ids: JailIds) -> Result<Inside, JailError> {
    // SAFETY: unshare only changes this process's namespaces.
    check("unshare", unsafe {
        libc::unshare(
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC,
        )
    })?;
    // SAFETY: getppid has no preconditions.
    let server = unsafe { libc::getppid() };
    // SAFETY: the process has one thread (the caller's contract), so the
    // child is a full copy that may use any call.
    let child = check("fork", unsafe { libc::fork() })?;
    if child > 0 {
        wait_for(child, server, ids);
    }
    // The VMM: PID 1 of its own namespace from here on.
    crate::report::keep_own_memory_readable();
    let root_change = empty_root(ids)?;
    drop_privileges(ids)?;
    Ok(Inside { root_change, ids })
}

/// The waiter: drops to `ids` with the server's death signal set again,
/// and passes on `child`'s exit (a signal as 128 + its number, as shells
/// do).
fn wait_for(child: libc::pid_t, server: libc::pid_t, ids: JailIds) -> ! {
    // SAFETY: only plain system calls on this process; `_exit` ends it
    // without running destructors the child also owns copies of.
    unsafe {
        // The server may have died before the death signal was set again.
        if drop_privileges(ids).is_err()
            || libc::getppid() != server
            || seccomp::apply_waiter_filter().is_err()
        {
            libc::kill(child, libc::SIGKILL);
            libc::_exit(1);
        }
        let mut status = 0;
        loop {
            let rc = libc::waitpid(child, &mut status, 0);
            if rc == child {
                break;
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        libc::_exit(128 + libc::WTERMSIG(status));
    }
}

/// A private mount tree whose root is a fresh tmpfs holding only
/// `/dev/kvm` (owned by `ids`, mode 0600), remounted read-only. Returns
/// how the root was changed.
fn empty_root(ids: JailIds) -> Result<&'static str, JailError> {
    let (root, new_root) = (cstr("/"), cstr("/tmp"));
    let (tmpfs, dev, kvm, old) = (cstr("tmpfs"), cstr("dev"), cstr("dev/kvm"), cstr("old"));
    // SAFETY: each call gets NUL-terminated strings that outlive it, or
    // null where the kernel allows; all act on this mount namespace only.
    unsafe {
        // Nothing mounted from here on propagates back to the host.
        check(
            "make mounts private",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        )?;
        let mut kvm_stat: libc::stat = std::mem::zeroed();
        check(
            "stat /dev/kvm",
            libc::stat(cstr("/dev/kvm").as_ptr(), &mut kvm_stat),
        )?;
        check(
            "mount the jail's tmpfs",
            libc::mount(
                tmpfs.as_ptr(),
                new_root.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                cstr("size=16k,mode=0755").as_ptr().cast(),
            ),
        )?;
        check("chdir into the jail", libc::chdir(new_root.as_ptr()))?;
        check("mkdir dev", libc::mkdir(dev.as_ptr(), 0o755))?;
        check(
            "mknod dev/kvm",
            libc::mknod(kvm.as_ptr(), libc::S_IFCHR | 0o600, kvm_stat.st_rdev),
        )?;
        check("chown dev/kvm", libc::chown(kvm.as_ptr(), ids.uid, ids.gid))?;
        check("mkdir old", libc::mkdir(old.as_ptr(), 0o700))?;
        let pivoted = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), old.as_ptr()) == 0;
        let how = if pivoted {
            check(
                "detach the old root",
                libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH),
            )?;
            check("rmdir old", libc::rmdir(c"/old".as_ptr()))?;
            "pivot_root"
        } else {
            // An initramfs (rootfs) cannot be pivoted away from; chroot
            // holds here because the VMM loses every capability below.
            check("rmdir old", libc::rmdir(old.as_ptr()))?;
            check("chroot", libc::chroot(c".".as_ptr()))?;
            "chroot: the host's root is an initramfs"
        };
        check("chdir /", libc::chdir(root.as_ptr()))?;
        check(
            "remount the root read-only",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
        )?;
        Ok(how)
    }
}

/// Becomes `ids` with no supplementary groups, not dumpable, with the
/// server's death signal set again (a credential change clears it).
fn drop_privileges(ids: JailIds) -> Result<(), JailError> {
    // SAFETY: credential calls on this process only.
    unsafe {
        check("setgroups", libc::setgroups(0, std::ptr::null()))?;
        check("setresgid", libc::setresgid(ids.gid, ids.gid, ids.gid))?;
        check("setresuid", libc::setresuid(ids.uid, ids.uid, ids.uid))?;
        check("not dumpable", libc::prctl(libc::PR_SET_DUMPABLE, 0))?;
        check(
            "parent death signal",
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
        )?;
    }
    Ok(())
}

/// What the jail's inside looks like, for `--jail-selftest probe`: the
/// tests check that the host's files and network are out of reach.
pub fn probe(connect_to: Option<&str>) -> serde_json::Value {
    let passwd = match std::fs::metadata("/etc/passwd") {
        Ok(_) => "present".to_owned(),
        Err(e) => format!("absent: {e}"),
    };
    let root: Vec<String> = std::fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let network = connect_to.map(|addr| match std::net::TcpStream::connect(addr) {
        Ok(_) => format!("connected to {addr}"),
        Err(e) => format!("unreachable: {e}"),
    });
    // SAFETY: plain getters.
    let (pid, uid, gid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
    serde_json::json!({
        "pid": pid, "uid": uid, "gid": gid,
        "etc_passwd": passwd, "root_entries": root, "network": network,
    })
}
