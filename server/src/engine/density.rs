//! Density: start 1, 2, … N instances of a demo at the same time and record,
//! for each N, how long until all were ready and how much memory they held
//! together. The same [`Runtime`] runs each instance, so a density run of
//! containers and one of micro-VMs measure the same things the same way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use stacklab_api::{DemoId, DensityMetric, ErrorCode, Key, RunError, Unit};

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
            let mut total = Ok(0.0);
            for (i, (result, timeline)) in results.into_iter().zip(&instances).enumerate() {
                let instance = result.map_err(|e| RunError {
                    message: format!("with {n} at once, instance {} failed: {}", i + 1, e.message),
                    code: e.code,
                })?;
                let ready_us =
                    timeline
                        .phase_at(self.demo.ready_phase())
                        .ok_or_else(|| RunError {
                            code: ErrorCode::Internal,
                            message: format!(
                                "with {n} at once, instance {} reported no ready phase",
                                i + 1
                            ),
                        })?;
                all_ready_us = all_ready_us.max(ready_us);
                let memory = instance.value(memory_key).ok_or_else(|| {
                    let why = instance
                        .missing
                        .iter()
                        .find(|m| m.key == memory_key.into())
                        .map_or("not measured".to_owned(), |m| m.reason.clone());
                    format!("instance {}'s memory is missing: {why}", i + 1)
                });
                total = total.and_then(|t| Ok(t + memory?));
            }
            let memory_how = match self.demo {
                DemoId::MicroVm => "the sum of each VMM process's PSS (guest pages included), read by the server while all N VMs were held at ready at the same moment",
                _ => "the sum of each container's PSS (its processes) plus its tmpfs pages, read while all N had answered and were running at the same moment",
            };
            ctx.phase_with_memory(
                &format!("n{n}_ready"),
                &format!("{n} ready"),
                match &total {
                    Ok(t) => format!(
                        "all {n} were ready {:.1} ms after they were started, holding {:.1} MiB together",
                        all_ready_us as f64 / 1000.0,
                        t / 1048576.0
                    ),
                    Err(why) => format!(
                        "all {n} were ready {:.1} ms after they were started; their memory together is missing ({why})",
                        all_ready_us as f64 / 1000.0
                    ),
                },
                total.as_ref().ok().map(|t| (*t as u64, memory_how)),
            );
            ready.measure(
                Key::Density(DensityMetric::AllReady, n),
                &format!("{n} at once: all ready"),
                all_ready_us as f64,
                Unit::Micros,
                "from starting them all at the same moment until the last one reported ready (server's monotonic clock)",
            );
            ready.measure_or_missing(
                Key::Density(DensityMetric::MemoryTotal, n),
                &format!("{n} at once: memory held together"),
                total,
                Unit::Bytes,
                memory_how,
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
