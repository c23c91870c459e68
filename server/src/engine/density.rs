//! Density: start 1, 2, … N instances of a demo at the same time and record,
//! for each N, how long until all were ready and how much memory they held
//! together. The same [`Runtime`] runs each instance, so a density run of
//! containers and one of micro-VMs measure the same things the same way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use stacklab_api::{phase_at, DemoId, DensityMetric, ErrorCode, Key, Metric, Phase, RunError};

use super::derive;
use super::timeline::Timeline;
use crate::backends::{Ready, RunContext, Runtime, Snapshot};

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
        let memory_key: Key = self.demo.memory_key().into();
        let mut ready = Ready::default();
        let mut totals: Vec<(u32, f64)> = Vec::new();
        for n in 1..=self.max_n {
            let step_start_us = ctx.elapsed_us();
            ctx.phase_at(
                step_start_us,
                Phase::StepStart(n),
                format!("{n} × {} started at the same moment", self.demo),
                None,
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
            let snapshot = Snapshot::new(n as usize);
            let results = join_all(instances.iter().enumerate().map(|(i, timeline)| {
                let inner = self.inner.clone();
                let c = RunContext::new(timeline.clone(), budget, step.child_token())
                    .with_snapshot(snapshot.clone(), i);
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
            // One instance's failure cancels its siblings: report it, not
            // the cancellations it caused.
            if let Some((i, e)) = results
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
                .min_by_key(|(_, e)| e.code == ErrorCode::Cancelled)
            {
                return Err(RunError {
                    message: format!("with {n} at once, instance {} failed: {}", i + 1, e.message),
                    code: e.code,
                });
            }
            let mut all_ready_us = 0;
            let mut total = Ok(0.0);
            let mut anon = Ok(Vec::new());
            for (i, (result, timeline)) in results.into_iter().zip(&instances).enumerate() {
                let instance = result.map_err(|e| RunError {
                    message: format!("with {n} at once, instance {} failed: {}", i + 1, e.message),
                    code: e.code,
                })?;
                let events = timeline.record().events;
                let ready_us =
                    phase_at(&events, self.demo.ready_phase()).ok_or_else(|| RunError {
                        code: ErrorCode::Internal,
                        message: format!(
                            "with {n} at once, instance {} reported no ready phase",
                            i + 1
                        ),
                    })?;
                all_ready_us = all_ready_us.max(ready_us);
                let memory = derive::value(self.demo, memory_key, &events, &instance)
                    .map_err(|why| format!("instance {}'s memory is missing: {why}", i + 1));
                total = total.and_then(|t| Ok(t + memory?));
                let private = instance
                    .value(Metric::MemoryAnon)
                    .ok_or_else(|| format!("instance {}'s anonymous memory was not read", i + 1));
                anon = anon.and_then(|mut all: Vec<f64>| {
                    all.push(private?);
                    Ok(all)
                });
            }
            // The moment the last instance was observed ready, on the
            // sweep's clock (the instances' clocks started with the step).
            ctx.phase_at(
                step_start_us + all_ready_us,
                Phase::StepReady(n),
                match &total {
                    Ok(t) => format!(
                        "all {n} were ready {:.1} ms after they were started (this step alone), holding {:.1} MiB together",
                        all_ready_us as f64 / 1000.0,
                        t / 1048576.0
                    ),
                    Err(why) => format!(
                        "all {n} were ready {:.1} ms after they were started (this step alone); their memory together is missing ({why})",
                        all_ready_us as f64 / 1000.0
                    ),
                },
                total.as_ref().ok().map(|t| (*t as u64, "the memory the step's instances held together, read in one pass once all were ready")),
            );
            if let Ok(t) = &total {
                totals.push((n, *t));
            }
            ready.read(Key::Density(DensityMetric::MemoryTotal, n), total);
            ready.read(
                Key::Density(DensityMetric::AnonMedian, n),
                anon.map(|mut all| {
                    all.sort_by(f64::total_cmp);
                    let mid = all.len() / 2;
                    if all.len() % 2 == 1 {
                        all[mid]
                    } else {
                        (all[mid - 1] + all[mid]) / 2.0
                    }
                }),
            );
        }
        ready.read_noted(
            Metric::MemoryPerExtraInstance,
            per_extra_instance(&totals).map(|(median, _)| median),
            per_extra_instance(&totals).ok().map(|(_, spread)| spread),
        );
        ctx.phase(
            Phase::Ready,
            format!(
                "sweep complete: measured 1 to {} instances at once",
                self.max_n
            ),
        );
        Ok(ready)
    }
}

/// For each step N > 1, the memory added per extra instance against the
/// first step, `(total(N) − total(1)) / (N − 1)`: the median, and the
/// spread in words.
fn per_extra_instance(totals: &[(u32, f64)]) -> Result<(f64, String), String> {
    let (_, one) = totals
        .iter()
        .find(|(n, _)| *n == 1)
        .ok_or("the step with one instance has no memory figure")?;
    let mut each: Vec<f64> = totals
        .iter()
        .filter(|(n, _)| *n > 1)
        .map(|(n, t)| (t - one) / f64::from(n - 1))
        .collect();
    if each.is_empty() {
        return Err("no step with more than one instance has a memory figure".into());
    }
    each.sort_by(f64::total_cmp);
    let median = if each.len() % 2 == 1 {
        each[each.len() / 2]
    } else {
        (each[each.len() / 2 - 1] + each[each.len() / 2]) / 2.0
    };
    let kib = |b: f64| format!("{:.0} KiB", b / 1024.0);
    Ok((
        median,
        format!(
            "{} step(s): from {} to {}",
            each.len(),
            kib(each[0]),
            kib(each[each.len() - 1])
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::per_extra_instance;

    /// Planted totals: 10 MiB for one, then 4 MiB more per instance, with
    /// one noisy step; the median ignores the noise, the spread shows it.
    #[test]
    fn the_increment_per_extra_instance_is_the_median_of_the_steps() {
        let mib = 1048576.0;
        let totals = [
            (1, 10.0 * mib),
            (2, 14.0 * mib),
            (3, 18.0 * mib),
            (4, 30.0 * mib),
            (5, 26.0 * mib),
        ];
        let (median, spread) = per_extra_instance(&totals).unwrap();
        assert_eq!(median, 4.0 * mib);
        assert!(
            spread.contains("4 step(s)") && spread.contains("6827 KiB"),
            "{spread}"
        );
        assert!(
            per_extra_instance(&totals[1..]).is_err(),
            "no N=1: missing, not 0"
        );
    }
}
