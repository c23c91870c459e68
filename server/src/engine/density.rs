//! Density: start 1, 2, … N instances of a demo at the same time and record,
//! for each N, how long until all were ready and how much memory they held
//! together. The same [`Runtime`] runs each instance, so a density run of
//! containers and one of micro-VMs measure the same things the same way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use stacklab_api::{DemoId, DensityMetric, Key, RunError, Unit};

use super::timeline::Timeline;
use crate::backends::{Ready, RunContext, Runtime};

/// A density sweep over `inner`.
pub struct Density<R> {
    inner: Arc<R>,
    demo: DemoId,
    max_n: u32,
}

impl<R: Runtime> Density<R> {
    /// A sweep of 1 ..= `max_n` instances of `demo`, each run by `inner`.
    pub fn new(inner: Arc<R>, demo: DemoId, max_n: u32) -> Self {
        Density {
            inner,
            demo,
            max_n: max_n.max(1),
        }
    }
}

impl<R: Runtime> Runtime for Density<R> {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        let memory_key = self.demo.memory_key();
        let mut ready = Ready::default();
        for n in 1..=self.max_n {
            ctx.phase(
                &format!("n{n}_start"),
                &format!("Starting {n} at once"),
                format!("{n} × {} started at the same moment", self.demo),
            );
            let budget = ctx.remaining().max(Duration::from_millis(1));
            // Each instance on its own timeline, whose clock starts when the
            // step starts them all; its id (`<sweep id>.<N>.<i>`) goes into
            // its container's labels.
            let instances: Vec<Arc<Timeline>> = (1..=n)
                .map(|i| {
                    Arc::new(Timeline::new(
                        format!("{}.{n}.{i}", ctx.run_id()),
                        self.demo,
                    ))
                })
                .collect();
            // One instance failing stops the others of its step at once.
            let step = ctx.child_token();
            let barrier = Arc::new(tokio::sync::Barrier::new(n as usize));
            let results = join_all(instances.iter().map(|timeline| {
                let inner = self.inner.clone();
                let c = RunContext::new(timeline.clone(), budget, step.child_token())
                    .with_rendezvous(barrier.clone());
                let step = step.clone();
                async move {
                    let result = inner.run(&c).await;
                    if result.is_err() {
                        step.cancel();
                    }
                    result
                }
            }))
            .await;
            let mut all_ready_us = 0;
            let mut total = 0.0;
            for (i, (result, timeline)) in results.into_iter().zip(&instances).enumerate() {
                let instance = result.map_err(|e| RunError {
                    message: format!("with {n} at once, instance {} failed: {}", i + 1, e.message),
                    code: e.code,
                })?;
                all_ready_us = all_ready_us.max(timeline.phase_at("ready").unwrap_or(0));
                total += instance
                    .measurements
                    .iter()
                    .find(|m| m.key == Key::Metric(memory_key))
                    .map_or(0.0, |m| m.value);
            }
            ctx.phase_with_memory(
                &format!("n{n}_ready"),
                &format!("{n} ready"),
                format!(
                    "all {n} were ready {:.1} ms after they were started, holding {:.1} MiB together",
                    all_ready_us as f64 / 1000.0,
                    total / 1048576.0
                ),
                Some((total as u64, "the sum of the instances' own memory figures (how each is read: under the memory chart)")),
            );
            ready.measure(
                Key::Density(DensityMetric::AllReady, n),
                &format!("{n} at once: all ready"),
                all_ready_us as f64,
                Unit::Micros,
                "from starting them all at the same moment until the last one reported ready (server's monotonic clock)",
            );
            ready.measure(
                Key::Density(DensityMetric::MemoryTotal, n),
                &format!("{n} at once: memory together"),
                total,
                Unit::Bytes,
                match self.demo {
                    DemoId::MicroVm => "the sum of each VMM process's PSS (guest pages included), each read by its VMM at the end of its run, before teardown; these VMs live about 10 ms, so they barely overlap, and PSS splits the VMM program's shared pages among whichever VMMs are alive at that moment, which makes the sum wobble a little",
                    _ => "the sum of each container's PSS (its processes, from its cgroup), read once all N had answered SELECT 1 and were running at the same moment",
                },
            );
        }
        ctx.phase(
            "ready",
            "Sweep complete",
            format!("measured 1 to {} instances at once", self.max_n),
        );
        Ok(ready)
    }
}
