//! One clock, two shares: every single-instance result is timed from the
//! moment the server accepted the request, and split into the platform's
//! share (until the container's process runs, or the VM's vCPU is about to
//! run the guest's first instruction) and the workload's (from there until
//! ready). Computed here, once, from the run's own timeline, so every demo
//! is split the same way.

use stacklab_api::{DemoId, Metric, RunRecord, Unit};

use crate::backends::Ready;

/// Adds request → ready and its two shares to `ready`, or says why one is
/// missing. Density sweeps have their own figures and get none.
pub fn add(demo: DemoId, record: &RunRecord, ready: &mut Ready) {
    if demo.density_of().is_some() {
        return;
    }
    let (platform, done) = (demo.platform_phase(), demo.ready_phase());
    let Some(ready_us) = record.phase_at(done) else {
        ready.missing(
            Metric::RequestToReady,
            "Request → ready",
            format!("the run has no {done:?} phase"),
        );
        return;
    };
    ready.measure(
        Metric::RequestToReady,
        "Request → ready",
        ready_us as f64,
        Unit::Micros,
        &format!("from the moment the server accepted the request to the {done:?} phase, on the server's monotonic clock (times the VMM observed are placed on it from CLOCK_MONOTONIC)"),
    );
    match record.phase_at(platform) {
        Some(platform_us) if platform_us <= ready_us => {
            ready.measure(
                Metric::PlatformShare,
                "Platform's share",
                platform_us as f64,
                Unit::Micros,
                &format!("request accepted → {platform:?}: {}", if demo.is_container() {
                    "the engine's work until the container's process runs (create, file system, namespaces, cgroups, start)"
                } else {
                    "the VMM's work until the vCPU is about to run the guest's first instruction (process spawn, image read, KVM set-up)"
                }),
            );
            ready.measure(
                Metric::WorkloadShare,
                "Workload's share",
                (ready_us - platform_us) as f64,
                Unit::Micros,
                &format!("{platform:?} → {done:?}: what the program (or guest) itself did to become ready"),
            );
        }
        other => ready.missing(
            Metric::PlatformShare,
            "Platform's share",
            match other {
                None => format!("the run has no {platform:?} phase"),
                Some(at) => format!("{platform:?} at {at} µs came after {done:?} at {ready_us} µs"),
            },
        ),
    }
}
