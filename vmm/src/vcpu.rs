//! Running a vCPU: the next exit, and the watchdog that kicks a vCPU out of
//! `KVM_RUN` when the deadline has passed.

use stacklab_api::Phase;
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::error::VmError;
use crate::report::{ExitCounts, Recorder};

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

/// Runs `vcpu_loop` on this thread while a per-thread POSIX timer kicks it
/// out of KVM_RUN once `deadline` has passed, and every 5 ms after that
/// until the loop has returned. (A timer, not a watchdog thread: a thread
/// per run costs a clone and a malloc arena whose mapping and unmapping
/// interrupt the running vCPU.)
pub(crate) fn with_watchdog<T>(
    deadline: Instant,
    vcpu_loop: impl FnOnce() -> Result<T, VmError>,
) -> Result<T, VmError> {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
    let _timer = KickTimer::arm(deadline)?;
    vcpu_loop()
}

/// A `timer_create` timer aimed at the calling thread; deleted on drop.
struct KickTimer(libc::timer_t);

impl KickTimer {
    fn arm(deadline: Instant) -> Result<KickTimer, VmError> {
        let fail = |what| VmError::Timer {
            what,
            source: vmm_sys_util::errno::Error::last(),
        };
        // SAFETY: an all-zero sigevent is a valid "no notification" value;
        // the fields that matter are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the timer
        // signals this thread, which outlives it (deleted on drop, here).
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
            return Err(fail("timer_create"));
        }
        let timer = KickTimer(timer);
        let first = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1)); // zero would disarm it
        let spec = libc::itimerspec {
            it_value: timespec(first),
            it_interval: timespec(Duration::from_millis(5)),
        };
        // SAFETY: a timer created above and a valid itimerspec.
        if unsafe { libc::timer_settime(timer.0, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(fail("timer_settime"));
        }
        Ok(timer)
    }
}

impl Drop for KickTimer {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `arm` and is deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Runs the vCPU until its next exit, counting exits and recording the
/// first. `None` when KVM_RUN was interrupted (the watchdog's signal): the
/// caller loops, and the deadline check here ends the run.
pub(crate) fn next_exit<'a>(
    vcpu: &'a mut VcpuFd,
    deadline: Instant,
    limit: Duration,
    exits: &mut ExitCounts,
    rec: &mut Recorder,
) -> Result<Option<VcpuExit<'a>>, VmError> {
    if Instant::now() >= deadline {
        return Err(VmError::Deadline(limit));
    }
    let first = rec.kvm_runs == 0;
    rec.kvm_runs += 1;
    let issued = crate::report::monotonic_ns();
    let result = vcpu.run();
    if first {
        rec.ioctls.push(crate::report::IoctlCall {
            name: "KVM_RUN (the first: until the guest's first exit)".into(),
            mono_ns: issued,
            took_ns: crate::report::monotonic_ns().saturating_sub(issued),
        });
    }
    let exit = match result {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Ok(None),
        Err(e) => {
            return Err(VmError::Kvm {
                what: "KVM_RUN",
                source: e,
            })
        }
    };
    exits.count(&exit);
    if exits.total() == 1 {
        rec.step(
            Phase::FirstExit,
            "the guest ran its first instructions and handed control back to the VMM".into(),
            None,
        );
    }
    Ok(Some(exit))
}
