//! The jailed VMM's seccomp filter: the system calls it may make, each with
//! why, and a SIGSYS handler that turns any other into a clear error line.
//!
//! The list was derived from traced runs of the static (musl) VMM:
//! `strace -f` of the tiny guest held at ready and released, of a Linux
//! guest up to its deadline, and of the nested test's full Linux boot
//! (which fails loudly, naming the call, if one is missing). The test
//! `a_traced_run_stays_inside_the_allow_list` traces a run again and
//! checks every call it makes after the jail is on this list.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls the VMM makes once jailed, and why.
pub const VMM_ALLOWED: &[(&str, libc::c_long, &str)] = &[
    (
        "read",
        libc::SYS_read,
        "the server's release line on stdin; eventfds",
    ),
    ("write", libc::SYS_write, "the JSON lines on stdout"),
    (
        "open",
        libc::SYS_open,
        "/dev/kvm, the only file in the jail",
    ),
    (
        "openat",
        libc::SYS_openat,
        "/dev/kvm, the only file in the jail",
    ),
    (
        "close",
        libc::SYS_close,
        "file descriptors of the VM and vCPU",
    ),
    (
        "fcntl",
        libc::SYS_fcntl,
        "close-on-exec flags (the C library)",
    ),
    ("fstat", libc::SYS_fstat, "the C library's buffered I/O"),
    (
        "lseek",
        libc::SYS_lseek,
        "re-reading the VMM's own memory figures",
    ),
    (
        "pread64",
        libc::SYS_pread64,
        "re-reading the VMM's own memory figures",
    ),
    (
        "ioctl",
        libc::SYS_ioctl,
        "KVM's API (request type 0xAE only)",
    ),
    (
        "mmap",
        libc::SYS_mmap,
        "guest RAM, the vCPU's run area, the heap",
    ),
    ("munmap", libc::SYS_munmap, "teardown, the heap"),
    ("mremap", libc::SYS_mremap, "the heap"),
    ("mprotect", libc::SYS_mprotect, "the heap"),
    ("madvise", libc::SYS_madvise, "the heap"),
    ("brk", libc::SYS_brk, "the heap"),
    (
        "mincore",
        libc::SYS_mincore,
        "counting the guest pages touched",
    ),
    (
        "eventfd2",
        libc::SYS_eventfd2,
        "a Linux guest's interrupt lines",
    ),
    ("poll", libc::SYS_poll, "the C library"),
    ("futex", libc::SYS_futex, "locks (stdout's)"),
    ("sched_yield", libc::SYS_sched_yield, "locks"),
    (
        "clock_gettime",
        libc::SYS_clock_gettime,
        "the monotonic clock every step is timed on",
    ),
    ("clock_nanosleep", libc::SYS_clock_nanosleep, "waits"),
    ("nanosleep", libc::SYS_nanosleep, "waits"),
    ("timer_create", libc::SYS_timer_create, "the run's deadline"),
    (
        "timer_settime",
        libc::SYS_timer_settime,
        "the run's deadline",
    ),
    ("timer_delete", libc::SYS_timer_delete, "the run's deadline"),
    (
        "rt_sigaction",
        libc::SYS_rt_sigaction,
        "the deadline's signal handler",
    ),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask, "the C library"),
    (
        "rt_sigreturn",
        libc::SYS_rt_sigreturn,
        "returning from a signal handler",
    ),
    (
        "sigaltstack",
        libc::SYS_sigaltstack,
        "Rust's stack-overflow guard",
    ),
    ("getpid", libc::SYS_getpid, "the C library"),
    ("gettid", libc::SYS_gettid, "the C library"),
    ("tkill", libc::SYS_tkill, "abort() on a panic"),
    ("getrandom", libc::SYS_getrandom, "hash maps' seeds"),
    ("exit", libc::SYS_exit, "the end"),
    ("exit_group", libc::SYS_exit_group, "the end"),
];

/// The waiter outside the PID namespace only waits and exits (and frees
/// the filter's own memory once it is applied).
const WAITER_ALLOWED: &[libc::c_long] = &[
    libc::SYS_munmap,
    libc::SYS_wait4,
    libc::SYS_kill,
    libc::SYS_rt_sigreturn,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// KVM's ioctl type (`KVMIO`), in bits 8..16 of every KVM request.
const KVMIO: u64 = 0xAE;

/// What the filter could not be built or applied for.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("building the filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("applying the filter: {0}")]
    Apply(#[from] seccompiler::Error),
}

fn program(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, FilterError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// The VMM's filter: [`VMM_ALLOWED`], `ioctl` only for KVM. Anything else
/// raises SIGSYS, whose handler reports the call and ends the process.
/// Returns how many calls are allowed.
pub fn apply_vmm_filter() -> Result<usize, FilterError> {
    let kvm_only = SeccompRule::new(vec![SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(0xff00),
        KVMIO << 8,
    )?])?;
    let rules = VMM_ALLOWED
        .iter()
        .map(|&(_, nr, _)| {
            let conditions = if nr == libc::SYS_ioctl {
                vec![kvm_only.clone()]
            } else {
                vec![]
            };
            (nr, conditions)
        })
        .collect();
    let program = program(rules)?;
    install_sigsys_handler();
    seccompiler::apply_filter(&program)?;
    Ok(VMM_ALLOWED.len())
}

/// The waiter's filter: [`WAITER_ALLOWED`] only.
pub fn apply_waiter_filter() -> Result<(), FilterError> {
    let program = program(WAITER_ALLOWED.iter().map(|&nr| (nr, vec![])).collect())?;
    seccompiler::apply_filter(&program)?;
    Ok(())
}

/// Names for the calls a compromised VMM would try first.
const NAMED: &[(i32, &str)] = &[
    (libc::SYS_socket as i32, "socket"),
    (libc::SYS_connect as i32, "connect"),
    (libc::SYS_execve as i32, "execve"),
    (libc::SYS_execveat as i32, "execveat"),
    (libc::SYS_fork as i32, "fork"),
    (libc::SYS_clone as i32, "clone"),
    (libc::SYS_clone3 as i32, "clone3"),
    (libc::SYS_ptrace as i32, "ptrace"),
    (libc::SYS_mount as i32, "mount"),
    (libc::SYS_kill as i32, "kill"),
    (libc::SYS_bpf as i32, "bpf"),
    (libc::SYS_unshare as i32, "unshare"),
];

/// The exit status of a VMM stopped by its filter (128 + SIGSYS).
pub const FORBIDDEN_EXIT: i32 = 128 + libc::SIGSYS;

fn install_sigsys_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler only formats into a
    // stack buffer and calls write and _exit, both async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
    }
}

/// Writes one protocol error line naming the forbidden call, then exits.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a SIGSYS siginfo; `si_syscall` sits after
    // the three ints, their padding and `si_call_addr` (x86_64: byte 24).
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut line = Line::default();
    line.push(b"{\"error\":{\"code\":\"syscall_forbidden\",\"message\":\"the jail's seccomp filter stopped system call ");
    line.push_number(nr);
    let name = NAMED.iter().find(|(n, _)| *n == nr).map(|(_, s)| *s);
    if let Some(name) = name {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    line.push(b": it is not on the VMM's allow-list, so the VMM was ended\"}}\n");
    // SAFETY: write and _exit are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(1, line.buf.as_ptr().cast(), line.len);
        libc::_exit(FORBIDDEN_EXIT);
    }
}

/// A fixed buffer a signal handler can fill without allocating.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            digits[i] = b'-';
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handlers_line_is_a_protocol_error() {
        let mut line = Line::default();
        line.push(b"call ");
        line.push_number(41);
        line.push(b" ");
        line.push_number(-3);
        assert_eq!(&line.buf[..line.len], b"call 41 -3");
    }

    #[test]
    fn the_filter_compiles_with_every_listed_call_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, nr, _) in VMM_ALLOWED {
            assert!(seen.insert(*nr), "{name} is listed twice");
        }
        assert!(!seen.contains(&libc::SYS_socket) && !seen.contains(&libc::SYS_execve));
        let rules = VMM_ALLOWED.iter().map(|&(_, nr, _)| (nr, vec![])).collect();
        assert!(!program(rules).unwrap().is_empty());
    }
}
