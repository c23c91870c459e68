//! Running a vCPU: the next exit, and the watchdog that kicks a vCPU out of
//! `KVM_RUN` when the deadline has passed.

use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::error::VmError;
use crate::report::Recorder;

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

/// Runs `vcpu_loop` on this thread while a watchdog thread kicks it out of
/// KVM_RUN once `deadline` has passed.
pub(crate) fn with_watchdog<R>(deadline: Instant, vcpu_loop: impl FnOnce() -> R) -> R {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
    // SAFETY: pthread_self has no preconditions. Kept as an integer: on
    // musl pthread_t is a pointer, which may not cross threads as such.
    let this_thread = unsafe { libc::pthread_self() } as usize;
    let done = std::sync::atomic::AtomicBool::new(false);

    std::thread::scope(|scope| {
        // The watchdog: after the deadline, signal the vCPU thread every
        // 5 ms until it has left KVM_RUN for good.
        let watchdog = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let now = Instant::now();
                if now >= deadline {
                    // SAFETY: the target thread is alive until `done` is set
                    // (the scope joins us before it returns).
                    unsafe { libc::pthread_kill(this_thread as libc::pthread_t, kick_signal()) };
                    std::thread::sleep(Duration::from_millis(5));
                } else {
                    std::thread::park_timeout((deadline - now).min(Duration::from_millis(50)));
                }
            }
        });
        let result = vcpu_loop();
        done.store(true, std::sync::atomic::Ordering::Release);
        // Wake it now rather than at its next timeout, so the run ends here.
        watchdog.thread().unpark();
        result
    })
}

/// Runs the vCPU until its next exit, counting exits and recording the
/// first. `None` when KVM_RUN was interrupted (the watchdog's signal): the
/// caller loops, and the deadline check here ends the run.
pub(crate) fn next_exit<'a>(
    vcpu: &'a mut VcpuFd,
    deadline: Instant,
    limit: Duration,
    exits: &mut u64,
    rec: &mut Recorder,
) -> Result<Option<VcpuExit<'a>>, VmError> {
    if Instant::now() >= deadline {
        return Err(VmError::Deadline(limit));
    }
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Ok(None),
        Err(e) => {
            return Err(VmError::Kvm {
                what: "KVM_RUN",
                source: e,
            })
        }
    };
    *exits += 1;
    if *exits == 1 {
        rec.step(
            "first_exit",
            "First VM exit",
            "the guest ran its first instructions and handed control back to the VMM".into(),
            None,
        );
    }
    Ok(Some(exit))
}
