//! `stacklab bench`: benchmarks that print medians and ratios measured in
//! one run against a baseline (`container`: the Docker CLI; `vm`: QEMU;
//! `room`: the same server's runs alone), with the platform's share of
//! each start; and `soak`, which counts what faults cost (nothing, it
//! checks).

mod client;
mod container;
mod private_engine;
mod room;
mod soak;
mod vm;

use std::sync::Arc;
use std::time::Duration;

use stacklab_api::{DemoId, Outcome, RunRecord};

use crate::backends::Runtime;
use crate::engine::{Queue, Runs};

pub use container::container;
pub use room::room;
pub use soak::soak;
pub use vm::vm;

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of results: median, min and max of `v` (never empty: `-n` is
/// at least 1).
pub(crate) fn row(name: &str, v: &[Duration]) {
    println!(
        "{name:<44} median {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
        ms(median(v)),
        ms(v.iter().min().copied().unwrap_or_default()),
        ms(v.iter().max().copied().unwrap_or_default())
    )
}

pub(crate) fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One run of `demo` on `runtime` through the server's own path (accepted,
/// queued, timed, shared out), waited for; its record, or why it failed.
pub(crate) async fn through_server<R: Runtime>(
    runs: &Arc<Runs>,
    demo: DemoId,
    runtime: Arc<R>,
    queue: &Arc<Queue>,
) -> anyhow::Result<RunRecord> {
    let run = runs.start(demo, runtime, queue.clone(), Duration::from_secs(60));
    let mut changes = run.subscribe();
    while !run.is_finished() {
        changes.changed().await?;
    }
    let record = run.record();
    match record.outcome() {
        Some(Outcome::Ready { .. }) => Ok(record),
        other => anyhow::bail!("a {demo} run failed: {other:?}"),
    }
}
