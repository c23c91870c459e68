//! The derive step: a run's phases and its backend's raw readings in,
//! every figure of its demo out, as the figure table
//! (`stacklab_api::figures`) defines them. A figure that cannot be derived
//! (a phase absent, a reading failed or never taken, a part of a sum
//! missing) is listed as missing with the reason, automatically: never a 0.
//!
//! Backends only emit phases and readings; nothing else computes a figure.

use stacklab_api::figures::{self, Definition, Figure};
use stacklab_api::{phase_at, DemoId, Key, Measurement, Missing, RunEvent};

use crate::backends::Ready;

/// Every figure of `demo`, from its timeline `events` and `ready`'s
/// readings: measured, or missing with why.
pub fn derive(
    demo: DemoId,
    events: &[RunEvent],
    ready: &Ready,
) -> (Vec<Measurement>, Vec<Missing>) {
    let table = figures::figures(demo);
    let mut measurements = Vec::new();
    let mut missing = Vec::new();
    for figure in &table {
        match evaluate(demo, figure, events, ready) {
            Ok((value, note)) => measurements.push(Measurement {
                key: figure.key,
                label: figure.label.clone().into_owned(),
                value,
                unit: figure.unit,
                how: match note {
                    Some(note) => format!("{}; {note}", figure.how),
                    None => figure.how.clone().into_owned(),
                },
            }),
            Err(reason) => missing.push(Missing {
                key: figure.key,
                label: figure.label.clone().into_owned(),
                reason,
            }),
        }
    }
    for r in &ready.readings {
        if !table.iter().any(|f| f.key == r.key) {
            tracing::warn!(%demo, key = %r.key, "a reading the figure table does not list for this demo; dropped");
        }
    }
    (measurements, missing)
}

/// The value of figure `key` of `demo`, or why it cannot be had.
pub fn value(demo: DemoId, key: Key, events: &[RunEvent], ready: &Ready) -> Result<f64, String> {
    let figure =
        figures::figure(demo, key).ok_or_else(|| format!("the {demo} demo has no figure {key}"))?;
    evaluate(demo, &figure, events, ready).map(|(v, _)| v)
}

fn evaluate(
    demo: DemoId,
    figure: &Figure,
    events: &[RunEvent],
    ready: &Ready,
) -> Result<(f64, Option<String>), String> {
    match &figure.definition {
        // One clock so far: the run's (see `figures::Clock`).
        Definition::Span {
            from,
            to,
            clock: figures::Clock::Run,
        } => {
            let start =
                phase_at(events, *from).ok_or_else(|| format!("the run has no {from} phase"))?;
            let end = phase_at(events, *to).ok_or_else(|| format!("the run has no {to} phase"))?;
            if end < start {
                return Err(format!("{to} at {end} µs came before {from} at {start} µs"));
            }
            Ok(((end - start) as f64, None))
        }
        Definition::Reading => match ready.readings.iter().find(|r| r.key == figure.key) {
            Some(r) => r.value.clone().map(|v| (v, r.note.clone())),
            None => Err("the backend took no such reading in this run".into()),
        },
        Definition::Sum(parts) => {
            let mut total = 0.0;
            for part in parts.iter() {
                let key = Key::from(*part);
                let v = value(demo, key, events, ready).map_err(|why| {
                    let label = figures::figure(demo, key)
                        .map_or(key.to_string(), |f| f.label.into_owned());
                    format!("its part \"{label}\" is missing: {why}")
                })?;
                total += v;
            }
            Ok((total, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use stacklab_api::figures::{figures, Definition};
    use stacklab_api::{DemoId, Key, Metric, Outcome, Phase, RunError, RunEvent};

    use super::derive;
    use crate::backends::{phase_event, Ready, RunContext, Runtime};
    use crate::engine::{Queue, Runs};

    const MIB: f64 = 1048576.0;

    /// A runtime with planted delays: the engine's work until the
    /// container runs, then the workload's until ready; and planted memory.
    struct Planted {
        engine: Duration,
        workload: Duration,
    }

    impl Runtime for Planted {
        async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
            ctx.phase(Phase::ImageReady, "planted");
            tokio::time::sleep(self.engine).await;
            ctx.phase(Phase::ContainerStarted, "planted");
            tokio::time::sleep(self.workload).await;
            ctx.phase(Phase::Ready, "planted");
            let mut ready = Ready::default();
            ready.read(Metric::MemoryPss, Ok(3.0 * MIB));
            ready.read(Metric::MemoryTmpfsFiles, Ok(2.0 * MIB));
            Ok(ready)
        }
    }

    async fn finished(run: &crate::engine::Run) -> Outcome {
        let mut changes = run.subscribe();
        while !run.is_finished() {
            changes.changed().await.unwrap();
        }
        run.record().outcome().cloned().unwrap()
    }

    /// Planted: a run that must wait behind another for the one slot
    /// (queue, 600 ms), then 400 ms of engine work, then 200 ms of
    /// workload. The derived figures equal the plants: the wait is its own
    /// figure and is in neither the platform's share nor start → ready.
    #[tokio::test]
    async fn derived_figures_equal_the_planted_delays() {
        let runs = Arc::new(Runs::default());
        let queue = Arc::new(Queue::new(1));
        let budget = Duration::from_secs(10);
        let blocker = Arc::new(Planted {
            engine: Duration::from_millis(600),
            workload: Duration::ZERO,
        });
        let planted = Arc::new(Planted {
            engine: Duration::from_millis(400),
            workload: Duration::from_millis(200),
        });
        let first = runs.start(DemoId::HelloContainer, blocker, queue.clone(), budget);
        let second = runs.start(DemoId::HelloContainer, planted, queue, budget);
        let _ = finished(&first).await;
        let outcome = finished(&second).await;
        let ms = |m: Metric| {
            outcome
                .value(m)
                .unwrap_or_else(|| panic!("no {m}: {outcome:?}"))
                / 1000.0
        };
        // Sleeps overshoot on a busy host, never undershoot. The slack
        // (150 ms) stays under what a wrong span would add: the other part
        // (200 or 400 ms) or the queue's 600 ms.
        let about = |got: f64, plant: f64| got >= plant - 1.0 && got <= plant + 150.0;
        assert!(
            ms(Metric::QueueWait) >= 599.0,
            "waited {}",
            ms(Metric::QueueWait)
        );
        assert!(
            about(ms(Metric::PlatformShare), 400.0),
            "platform {}",
            ms(Metric::PlatformShare)
        );
        assert!(
            about(ms(Metric::WorkloadShare), 200.0),
            "workload {}",
            ms(Metric::WorkloadShare)
        );
        assert!(
            about(ms(Metric::StartToReady), 600.0),
            "start → ready {}",
            ms(Metric::StartToReady)
        );
        assert!(
            ms(Metric::RequestToReady) >= ms(Metric::QueueWait) + 599.0,
            "the person's wait holds both"
        );
        assert_eq!(
            outcome.value(Metric::MemoryHeld),
            Some(5.0 * MIB),
            "the planted parts, summed"
        );
        runs.shut_down().await;
    }

    /// Every phase and reading `demo`'s figures need, at distinct times.
    fn complete(demo: DemoId) -> (Vec<RunEvent>, Ready) {
        let mut phases = Vec::new();
        let mut ready = Ready::default();
        for f in figures(demo) {
            match f.definition {
                Definition::Span { from, to, .. } => {
                    for p in [from, to] {
                        if !phases.contains(&p) {
                            phases.push(p);
                        }
                    }
                }
                Definition::Reading => ready.read(f.key, Ok(1.0)),
                Definition::Sum(_) => {}
            }
        }
        // In the order a run reaches them, so every span is forward.
        let order = |p: &Phase| match p {
            Phase::Accepted => 0,
            Phase::SlotGranted => 1,
            Phase::StepStart(n) => 10 * n + 2,
            Phase::StepReady(n) => 10 * n + 3,
            Phase::ImageReady | Phase::KvmOpened => 100,
            Phase::ContainerStarted | Phase::VcpuCreated => 101,
            Phase::GuestEntry => 102,
            Phase::Ready => 1000,
            Phase::PostgresReady => 1001,
            _ => 500,
        };
        phases.sort_by_key(order);
        let events = phases
            .iter()
            .enumerate()
            .map(|(i, p)| RunEvent {
                seq: i as u32,
                at_us: 1000 * i as u64,
                kind: phase_event(*p, String::new(), None),
            })
            .collect();
        (events, ready)
    }

    /// For every demo: with everything there, every figure is measured;
    /// take away any one phase or reading and each figure that needs it
    /// is listed as missing with a reason naming it (never dropped, never
    /// 0), and the rest stay measured.
    #[test]
    fn a_figure_that_cannot_be_derived_is_missing_with_its_reason() {
        for demo in DemoId::ALL {
            let (events, ready) = complete(demo);
            let (measured, missing) = derive(demo, &events, &ready);
            assert!(missing.is_empty(), "{demo}: {missing:?}");
            assert_eq!(measured.len(), figures(demo).len(), "{demo}");

            for (i, e) in events.iter().enumerate() {
                let mut fewer = events.clone();
                fewer.remove(i);
                let stacklab_api::EventKind::Phase { phase, .. } = e.kind else {
                    unreachable!()
                };
                let (measured, missing) = derive(demo, &fewer, &ready);
                let needs = |key: Key| {
                    figures(demo).into_iter().any(|f| f.key == key && matches!(f.definition, Definition::Span { from, to, .. } if from == phase || to == phase))
                };
                for f in figures(demo) {
                    let gone = missing.iter().find(|m| m.key == f.key);
                    if needs(f.key) {
                        let m = gone.unwrap_or_else(|| {
                            panic!("{demo}: without {phase}, {} is not missing", f.key)
                        });
                        assert!(
                            m.reason.contains(&phase.to_string()),
                            "{demo}: {}",
                            m.reason
                        );
                    } else {
                        assert!(
                            measured.iter().any(|m| m.key == f.key),
                            "{demo}: {} lost without {phase}",
                            f.key
                        );
                    }
                }
            }

            for r in &ready.readings {
                let mut failed = ready.clone();
                failed.readings.retain(|x| x.key != r.key);
                failed.read(r.key, Err("planted failure".into()));
                let (_, missing) = derive(demo, &events, &failed);
                let m = missing.iter().find(|m| m.key == r.key).unwrap();
                assert_eq!(m.reason, "planted failure");
                // A sum with this part is missing too, and says which part.
                for f in figures(demo) {
                    if let Definition::Sum(parts) = f.definition {
                        if parts.iter().any(|p| Key::from(*p) == r.key) {
                            let sum = missing.iter().find(|m| m.key == f.key).unwrap();
                            assert!(sum.reason.contains("planted failure"), "{}", sum.reason);
                        }
                    }
                }
                let mut absent = ready.clone();
                absent.readings.retain(|x| x.key != r.key);
                let (_, missing) = derive(demo, &events, &absent);
                assert!(
                    missing.iter().any(|m| m.key == r.key),
                    "{demo}: {} never read, not missing",
                    r.key
                );
            }
        }
    }
}
