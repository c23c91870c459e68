//! Density: start 1, 2, … N instances of a demo at the same time and record,
//! for each N, how long until all were ready and how much memory they held
//! together. The same [`Runtime`] runs each instance, so a density run of
//! containers and one of micro-VMs measure the same things the same way.
//!
//! Where a step is cheap (micro-VMs: milliseconds), each step is taken
//! several times ([`DemoId::samples_per_step`]) and reported as the median
//! with the least and most of its samples, and how many there were; where
//! it costs seconds (PostgreSQL containers), once. `StepStart(n)` is the
//! moment the step's first sample started its instances, `StepReady(n)` the
//! moment the last instance of its last sample was observed ready.
//!
//! Imports: the backends' [`Runtime`] interface and the engine's derive
//! step and timeline; nothing of HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use stacklab_api::figures::DENSITY_SAMPLING_S;
use stacklab_api::{phase_at, DemoId, DensityMetric, ErrorCode, Key, Metric, Phase, RunError};

use super::derive;
use super::timeline::Timeline;
use crate::backends::{Ready, RunContext, Runtime, Snapshot};

/// A density sweep over `inner`.
pub struct Density<R> {
    inner: Arc<R>,
    demo: DemoId,
    max_n: u32,
    samples: u32,
    /// A further sample of a step starts only while the step's samples so
    /// far took less than this.
    sampling: Duration,
}

impl<R: Runtime> Density<R> {
    /// A sweep of 1 ..= `max_n` instances of `demo`, each run by `inner`,
    /// each step taken once.
    pub fn new(inner: Arc<R>, demo: DemoId, max_n: u32) -> Self {
        Density {
            inner,
            demo,
            max_n: max_n.max(1),
            samples: 1,
            sampling: Duration::from_secs(DENSITY_SAMPLING_S),
        }
    }

    /// This sweep, each step taken up to `samples` times (the sweep demo's
    /// [`DemoId::samples_per_step`]).
    pub fn with_samples(mut self, samples: u32) -> Self {
        self.samples = samples.max(1);
        self
    }
}

/// One sample of one step: when the last instance was ready (on the
/// instances' clock, which started with the sample), the memory the
/// instances held together, and each one's anonymous memory.
struct Sample {
    all_ready_us: u64,
    total: Result<f64, String>,
    anon: Result<Vec<f64>, String>,
}

impl<R: Runtime> Density<R> {
    /// Starts `n` instances at once (sample `s`) and waits for all of them.
    async fn sample(&self, ctx: &RunContext, n: u32, s: u32) -> Result<Sample, RunError> {
        let memory_key: Key = self.demo.memory_key().into();
        let budget = ctx.remaining().max(Duration::from_millis(1));
        let which = if self.samples > 1 {
            format!("with {n} at once (sample {s})")
        } else {
            format!("with {n} at once")
        };
        // Each instance on its own timeline, whose clock starts when the
        // sample starts them all; its id (`<sweep id>.<N>.<i>`, or
        // `<sweep id>.<N>.<sample>.<i>` where steps repeat) goes into its
        // container's labels.
        let instances: Vec<Arc<Timeline>> = (1..=n)
            .map(|i| {
                let id = if self.samples > 1 {
                    format!("{}.{n}.{s}.{i}", ctx.run_id())
                } else {
                    format!("{}.{n}.{i}", ctx.run_id())
                };
                Arc::new(Timeline::new(id, self.demo))
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
                message: format!("{which}, instance {} failed: {}", i + 1, e.message),
                code: e.code,
            });
        }
        let mut all_ready_us = 0;
        let mut total = Ok(0.0);
        let mut anon = Ok(Vec::new());
        for (i, (result, timeline)) in results.into_iter().zip(&instances).enumerate() {
            let instance = result.map_err(|e| RunError {
                message: format!("{which}, instance {} failed: {}", i + 1, e.message),
                code: e.code,
            })?;
            let events = timeline.record().events;
            let ready_us = phase_at(&events, self.demo.ready_phase()).ok_or_else(|| RunError {
                code: ErrorCode::Internal,
                message: format!("{which}, instance {} reported no ready phase", i + 1),
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
        Ok(Sample {
            all_ready_us,
            total,
            anon,
        })
    }
}

impl<R: Runtime> Runtime for Density<R> {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        let mut ready = Ready::default();
        let mut totals: Vec<(u32, f64)> = Vec::new();
        let repeated = self.samples > 1;
        for n in 1..=self.max_n {
            let step_start_us = ctx.elapsed_us();
            ctx.phase_at(
                step_start_us,
                Phase::StepStart(n),
                if repeated {
                    format!(
                        "{n} × {} started at the same moment (the first of up to {} samples of this step, one after another)",
                        self.demo, self.samples
                    )
                } else {
                    format!("{n} × {} started at the same moment", self.demo)
                },
                None,
            );
            let began = Instant::now();
            let mut samples = Vec::new();
            let mut last_start_us = step_start_us;
            for s in 1..=self.samples {
                // A further sample only while the step has been cheap: the
                // sweep's time stays bounded however slow the host is.
                if s > 1 && began.elapsed() >= self.sampling {
                    break;
                }
                last_start_us = ctx.elapsed_us();
                samples.push(self.sample(ctx, n, s).await?);
            }
            let times: Vec<f64> = samples.iter().map(|s| s.all_ready_us as f64).collect();
            // The first sample is always taken; an error would have
            // returned above.
            let (Some(last), Some(time)) = (samples.last(), Spread::of(&times)) else {
                return Err(RunError {
                    code: ErrorCode::Internal,
                    message: format!("with {n} at once, no sample was taken"),
                });
            };
            let taken = samples.len();
            let totals_read: Vec<f64> = samples
                .iter()
                .filter_map(|s| s.total.as_ref().ok().copied())
                .collect();
            let total: Result<f64, String> = if repeated {
                Spread::of(&totals_read)
                    .map(|s| s.median)
                    .ok_or_else(|| why_none(&samples))
            } else {
                last.total.clone()
            };
            // The moment the last instance of the last sample was observed
            // ready, on the sweep's clock (the instances' clocks started
            // with their sample).
            let ms = |us: f64| format!("{:.1} ms", us / 1000.0);
            let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
            let time_words = if repeated {
                let each: Vec<String> = times.iter().map(|t| ms(*t)).collect();
                format!(
                    "the last of {taken} samples; all {n} were ready after {} in each (this step alone)",
                    each.join(", ")
                )
            } else {
                format!(
                    "all {n} were ready {} after they were started (this step alone)",
                    ms(last.all_ready_us as f64)
                )
            };
            let memory_words = match (&total, repeated) {
                (Ok(t), false) => format!("holding {} together", mib(*t)),
                (Ok(t), true) => format!(
                    "holding {} together (median of the {} sample(s) read)",
                    mib(*t),
                    totals_read.len()
                ),
                (Err(why), _) => format!("their memory together is missing ({why})"),
            };
            ctx.phase_at(
                last_start_us + last.all_ready_us,
                Phase::StepReady(n),
                format!("{time_words}, {memory_words}"),
                total.as_ref().ok().map(|t| {
                    (
                        *t as u64,
                        if repeated {
                            "the memory the step's instances held together, read in one pass once all were ready (median of the step's samples)"
                        } else {
                            "the memory the step's instances held together, read in one pass once all were ready"
                        },
                    )
                }),
            );
            if let Ok(t) = &total {
                totals.push((n, *t));
            }
            let key = |m: DensityMetric| Key::Density(m, n);
            // Of a repeated step: every instance of the samples whose
            // instances were all read.
            let read: Vec<&Vec<f64>> = samples
                .iter()
                .filter_map(|s| s.anon.as_ref().ok())
                .collect();
            let anon: Result<Vec<f64>, String> =
                match samples.iter().find_map(|s| s.anon.as_ref().err()) {
                    Some(why) if read.is_empty() => Err(why.clone()),
                    _ => Ok(read.iter().copied().flatten().copied().collect()),
                };
            ready.read_noted(
                key(DensityMetric::AnonMedian),
                anon.and_then(|all| {
                    Spread::of(&all)
                        .map(|s| s.median)
                        .ok_or_else(|| "no instance's anonymous memory was read".into())
                }),
                repeated.then(|| format!("from {} of {taken} sample(s)", read.len())),
            );
            if !repeated {
                ready.read(key(DensityMetric::MemoryTotal), total);
                continue;
            }
            let from = |k: usize| Some(format!("from {k} of {taken} sample(s)"));
            ready.read_noted(key(DensityMetric::AllReady), Ok(time.median), from(taken));
            ready.read_noted(key(DensityMetric::AllReadyMin), Ok(time.min), from(taken));
            ready.read_noted(key(DensityMetric::AllReadyMax), Ok(time.max), from(taken));
            ready.read(key(DensityMetric::Samples), Ok(taken as f64));
            let memory = Spread::of(&totals_read).ok_or_else(|| why_none(&samples));
            let note = from(totals_read.len()).map(|from| {
                match samples.iter().find_map(|s| s.total.as_ref().err()) {
                    Some(why) if totals_read.len() < taken => {
                        format!("{from} (the others' memory is missing: {why})")
                    }
                    _ => from,
                }
            });
            for (metric, value) in [
                (DensityMetric::MemoryTotal, memory.clone().map(|s| s.median)),
                (DensityMetric::MemoryTotalMin, memory.clone().map(|s| s.min)),
                (DensityMetric::MemoryTotalMax, memory.map(|s| s.max)),
            ] {
                ready.read_noted(key(metric), value, note.clone());
            }
            ready.read(
                key(DensityMetric::MemorySamples),
                Ok(totals_read.len() as f64),
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

/// Why no sample of a step has a memory figure: the first one's reason.
fn why_none(samples: &[Sample]) -> String {
    let why = samples
        .iter()
        .find_map(|s| s.total.as_ref().err())
        .map_or("none was taken", String::as_str);
    format!("no sample's memory was read: {why}")
}

/// The least, the median and the most of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    /// Of `values`; none for no values.
    fn of(values: &[f64]) -> Option<Spread> {
        let mut all = values.to_vec();
        all.sort_by(f64::total_cmp);
        let mid = all.len() / 2;
        let median = match all.len() {
            0 => return None,
            len if len % 2 == 1 => all[mid],
            _ => (all[mid - 1] + all[mid]) / 2.0,
        };
        Some(Spread {
            min: all[0],
            median,
            max: all[all.len() - 1],
        })
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
    let each: Vec<f64> = totals
        .iter()
        .filter(|(n, _)| *n > 1)
        .map(|(n, t)| (t - one) / f64::from(n - 1))
        .collect();
    let Some(Spread { min, median, max }) = Spread::of(&each) else {
        return Err("no step with more than one instance has a memory figure".into());
    };
    let kib = |b: f64| format!("{:.0} KiB", b / 1024.0);
    Ok((
        median,
        format!("{} step(s): from {} to {}", each.len(), kib(min), kib(max)),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use stacklab_api::{phase_at, DemoId, DensityMetric, Key, Metric, Phase, RunError};
    use tokio_util::sync::CancellationToken;

    use super::{per_extra_instance, Density};
    use crate::backends::{Ready, RunContext, Runtime};
    use crate::engine::timeline::Timeline;

    const KIB: f64 = 1024.0;
    const MIB: f64 = 1048576.0;
    /// Sample s's time to ready of step N's slowest instance: this × N ms.
    const TIMES_MS: [u64; 5] = [3, 1, 5, 2, 4];
    /// Sample s's memory held per instance, MiB.
    const MEMORY_MIB: [f64; 5] = [3.0, 1.0, 5.0, 2.0, 4.0];

    /// A micro-VM that is ready after a planted time and holds planted
    /// memory, chosen by its id (`<sweep>.<N>.<sample>.<i>`): instance 1
    /// is the slowest, at `TIMES_MS[s] × N` ms; each holds
    /// `MEMORY_MIB[s]`, and `s` KiB of anonymous memory; at N = 2 the
    /// third sample's memory reading fails.
    struct Planted;

    impl Runtime for Planted {
        async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
            let id: Vec<u64> = ctx
                .run_id()
                .split('.')
                .skip(1)
                .map(|p| p.parse().unwrap())
                .collect();
            let (n, s, i) = (id[0], id[1] as usize, id[2]);
            let ready_us = TIMES_MS[s - 1] * n * 1000 / i;
            tokio::time::sleep(Duration::from_micros(ready_us)).await;
            // Observed at the planted moment (the sleep overshoots it).
            ctx.phase_at(ready_us, Phase::Ready, "planted", None);
            let mut ready = Ready::default();
            ready.read(
                Metric::MemoryPss,
                if (n, s) == (2, 3) {
                    Err("planted failure".into())
                } else {
                    Ok(MEMORY_MIB[s - 1] * MIB)
                },
            );
            ready.read(Metric::MemoryAnon, Ok(s as f64 * KIB));
            Ok(ready)
        }
    }

    async fn sweep(density: Density<Planted>) -> (Ready, Vec<stacklab_api::RunEvent>) {
        let timeline = Arc::new(Timeline::new("sweep".into(), DemoId::DensityMicroVm));
        let ctx = RunContext::new(
            timeline.clone(),
            Duration::from_secs(30),
            CancellationToken::new(),
        );
        let ready = density.run(&ctx).await.unwrap();
        (ready, timeline.record().events)
    }

    /// Five samples per step with planted times and memory: each N's
    /// median, least and most are the planted ones (times 3N, 1N, 5N ms;
    /// memory 3N, 1N, 5N MiB), a sample whose memory failed is left out
    /// of the memory figures (and counted), and the step's phases hold
    /// every sample: the first's start to the last's ready.
    #[tokio::test]
    async fn each_step_reports_the_median_least_and_most_of_its_samples() {
        let density = Density::new(Arc::new(Planted), DemoId::MicroVm, 5)
            .with_samples(DemoId::DensityMicroVm.samples_per_step());
        let (ready, events) = sweep(density).await;
        let get = |m: DensityMetric, n: u32| {
            ready
                .value(Key::Density(m, n))
                .unwrap_or_else(|| panic!("no {m}@{n}: {:?}", ready.readings))
        };
        let note = |m: DensityMetric, n: u32| {
            let key = Key::Density(m, n);
            let r = ready.readings.iter().find(|r| r.key == key).unwrap();
            r.note.clone().unwrap_or_default()
        };
        for n in 1..=5u32 {
            let ms = 1000.0 * f64::from(n);
            assert_eq!(get(DensityMetric::AllReady, n), 3.0 * ms, "N={n}");
            assert_eq!(get(DensityMetric::AllReadyMin, n), ms, "N={n}");
            assert_eq!(get(DensityMetric::AllReadyMax, n), 5.0 * ms, "N={n}");
            assert_eq!(get(DensityMetric::Samples, n), 5.0);
            assert!(note(DensityMetric::AllReady, n).contains("from 5 of 5"));
            assert_eq!(get(DensityMetric::AnonMedian, n), 3.0 * KIB, "N={n}");
            let mib = MIB * f64::from(n);
            if n == 2 {
                // Samples read: 3, 1, 2, 4 MiB per VM (the 5 MiB one failed).
                assert_eq!(get(DensityMetric::MemoryTotal, n), 2.5 * mib);
                assert_eq!(get(DensityMetric::MemoryTotalMin, n), mib);
                assert_eq!(get(DensityMetric::MemoryTotalMax, n), 4.0 * mib);
                assert_eq!(get(DensityMetric::MemorySamples, n), 4.0);
                let said = note(DensityMetric::MemoryTotal, n);
                assert!(
                    said.contains("from 4 of 5") && said.contains("planted failure"),
                    "{said}"
                );
            } else {
                assert_eq!(get(DensityMetric::MemoryTotal, n), 3.0 * mib, "N={n}");
                assert_eq!(get(DensityMetric::MemoryTotalMin, n), mib, "N={n}");
                assert_eq!(get(DensityMetric::MemoryTotalMax, n), 5.0 * mib, "N={n}");
                assert_eq!(get(DensityMetric::MemorySamples, n), 5.0);
            }
            // The step's phases: its first sample's start, its last
            // sample's ready; all five samples (15 N ms) lie between.
            let start = phase_at(&events, Phase::StepStart(n)).unwrap();
            let end = phase_at(&events, Phase::StepReady(n)).unwrap();
            assert!(
                end >= start + 15 * 1000 * u64::from(n),
                "N={n}: {start} → {end}"
            );
            if n < 5 {
                assert!(phase_at(&events, Phase::StepStart(n + 1)).unwrap() >= end);
            }
        }
        // Per extra instance, from the medians: N=1 3 MiB, N=2 5 MiB, then
        // 3 MiB per VM: 2, 3, 3, 3 MiB → 3 MiB.
        assert_eq!(ready.value(Metric::MemoryPerExtraInstance), Some(3.0 * MIB));
    }

    /// One sample per step (the containers' sweep): no least, most or
    /// count figures; a step's failed memory stays missing, not 0.
    #[tokio::test]
    async fn a_sweep_of_single_samples_reports_each_step_once() {
        struct One;
        impl Runtime for One {
            async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
                let n: u64 = ctx.run_id().split('.').nth(1).unwrap().parse().unwrap();
                ctx.phase_at(1000, Phase::Ready, "planted", None);
                let mut ready = Ready::default();
                ready.read(
                    Metric::MemoryPss,
                    if n == 2 {
                        Err("planted failure".into())
                    } else {
                        Ok(MIB)
                    },
                );
                ready.read(Metric::MemoryAnon, Ok(KIB));
                Ok(ready)
            }
        }
        let density = Density::new(Arc::new(One), DemoId::MicroVm, 3);
        let timeline = Arc::new(Timeline::new("one".into(), DemoId::DensityMicroVm));
        let ctx = RunContext::new(timeline, Duration::from_secs(10), CancellationToken::new());
        let ready = density.run(&ctx).await.unwrap();
        assert_eq!(
            ready.value(Key::Density(DensityMetric::MemoryTotal, 3)),
            Some(3.0 * MIB)
        );
        let two = ready
            .readings
            .iter()
            .find(|r| r.key == Key::Density(DensityMetric::MemoryTotal, 2))
            .unwrap();
        assert!(two.value.as_ref().unwrap_err().contains("planted failure"));
        assert!(ready.readings.iter().all(|r| !matches!(
            r.key,
            Key::Density(
                DensityMetric::AllReadyMin | DensityMetric::MemoryTotalMax | DensityMetric::Samples,
                _
            )
        )));
    }

    /// A step that is slow takes no further samples once its samples took
    /// the sampling time: the sweep stays bounded, and says how many.
    #[tokio::test]
    async fn a_slow_step_stops_sampling() {
        let mut density = Density::new(Arc::new(Planted), DemoId::MicroVm, 1).with_samples(5);
        // Step 1's samples take 3, 1, 5, 2, 4 ms (15 ms for all five):
        // past 6 ms after the third at the latest.
        density.sampling = Duration::from_millis(6);
        let (ready, _) = sweep(density).await;
        let samples = ready
            .value(Key::Density(DensityMetric::Samples, 1))
            .unwrap();
        assert!((1.0..=3.0).contains(&samples), "{samples} samples");
        assert!(ready
            .readings
            .iter()
            .find(|r| r.key == Key::Density(DensityMetric::AllReady, 1))
            .and_then(|r| r.note.clone())
            .unwrap()
            .contains(&format!("of {samples} sample(s)")));
    }

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
