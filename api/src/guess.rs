//! Predictions: what a learner may guess before a demo runs, each
//! quantity defined once here — its scale and range, which cards ask it,
//! how its true value is read from the run (the figure table's keys for
//! figures, the x-ray's keys for what the x-ray shows) and how a guess is
//! compared with it. The frontend's sliders, the server's check of a
//! run's guesses and the instructor's room view all read this.
//!
//! Imports the crate's own types only.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;
use crate::{
    DemoId, DensityMetric, EventKind, Key, Metric, Outcome, Question, RunEvent, XRay, XRayKey,
};

wire_enum! {
    /// What a learner's guess is of.
    pub enum Quantity {
        /// The headline time ([`crate::figures::headline`]), in µs.
        Time => "time",
        /// The headline memory, in bytes.
        Memory => "memory",
        /// The platform's share of start → ready, in percent.
        PlatformShare => "platform_share",
        /// A density sweep's memory held together at N = 5 over N = 1, a
        /// ratio.
        DensitySlope => "density_slope",
        /// Exits to the VMM, a count.
        Exits => "exits",
        /// Whether the workload reports the host's kernel: 1 yes, 0 no.
        SameKernel => "same_kernel",
        /// How many namespaces the container shares with the host.
        SharedNamespaces => "shared_namespaces",
        /// Guest memory faults KVM resolved for the micro-VM (page faults,
        /// or where this KVM does not trace them, the pages it mapped on
        /// first touch), a count.
        PageFaults => "page_faults",
    }
}

/// How a quantity is guessed and how far a guess is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A log-scale slider; off by orders of magnitude.
    Log,
    /// Whole numbers (or percent) on a linear slider; off by the
    /// difference.
    Linear,
    /// Yes (1) or no (0); right or wrong.
    YesNo,
}

/// How far a guess was from the measured value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Off {
    /// log10(measured / guess): positive when the result was larger.
    Orders(f64),
    /// measured − guess.
    By(f64),
    /// Whether a yes/no guess was right.
    Right(bool),
}

/// The x-ray's namespace rows.
const NAMESPACES: [XRayKey; 8] = [
    XRayKey::NsCgroup,
    XRayKey::NsIpc,
    XRayKey::NsMnt,
    XRayKey::NsNet,
    XRayKey::NsPid,
    XRayKey::NsTime,
    XRayKey::NsUser,
    XRayKey::NsUts,
];

impl Quantity {
    /// What the learner is asked, in a few words (the slider's label).
    pub fn label(self) -> &'static str {
        match self {
            Quantity::Time => "Time until ready (the card's headline)",
            Quantity::Memory => "Memory it will hold",
            Quantity::PlatformShare => "The platform's share of start → ready",
            Quantity::DensitySlope => "Memory of 5 at once, as a multiple of 1",
            Quantity::Exits => "Exits to the VMM",
            Quantity::SameKernel => "Will it report the host's kernel?",
            Quantity::SharedNamespaces => "Namespaces it shares with the host",
            Quantity::PageFaults => "Guest page faults KVM resolves",
        }
    }

    /// Its name in a verdict ("Time: you guessed …").
    pub fn name(self) -> &'static str {
        match self {
            Quantity::Time => "Time",
            Quantity::Memory => "Memory",
            Quantity::PlatformShare => "Platform's share",
            Quantity::DensitySlope => "Memory of 5 over 1",
            Quantity::Exits => "Exits to the VMM",
            Quantity::SameKernel => "Same kernel as the host",
            Quantity::SharedNamespaces => "Namespaces shared with the host",
            Quantity::PageFaults => "Guest page faults",
        }
    }

    /// The scale it is guessed on.
    pub fn scale(self) -> Scale {
        match self {
            Quantity::PlatformShare | Quantity::SharedNamespaces => Scale::Linear,
            Quantity::SameKernel => Scale::YesNo,
            _ => Scale::Log,
        }
    }

    /// The range a guess may take (the slider spans it): 100 µs to 10 min,
    /// 100 KiB to 10 GiB, 0 to 100 %, ×1 to ×10, 1 to a million, 0 to 8
    /// namespaces.
    pub fn range(self) -> (f64, f64) {
        match self {
            Quantity::Time => (100.0, 600e6),
            Quantity::Memory => (100.0 * 1024.0, 10.0 * 1024.0 * 1024.0 * 1024.0),
            Quantity::PlatformShare => (0.0, 100.0),
            Quantity::DensitySlope => (1.0, 10.0),
            Quantity::Exits | Quantity::PageFaults => (1.0, 1e6),
            Quantity::SameKernel => (0.0, 1.0),
            Quantity::SharedNamespaces => (0.0, NAMESPACES.len() as f64),
        }
    }

    /// The figure table's question this quantity is the headline of.
    pub fn headline(self) -> Option<Question> {
        match self {
            Quantity::Time => Some(Question::Time),
            Quantity::Memory => Some(Question::Memory),
            _ => None,
        }
    }

    /// The quantities a card of `demo` asks: its demo card (`xray`
    /// false: time, memory and one more) or its x-ray block (the x-ray's
    /// questions).
    pub fn asked(demo: DemoId, xray: bool) -> &'static [Quantity] {
        use Quantity as Q;
        match (xray, demo) {
            (false, DemoId::DensityContainer | DemoId::DensityMicroVm) => {
                &[Q::Time, Q::Memory, Q::DensitySlope]
            }
            (false, DemoId::MicroVm) => &[Q::Time, Q::Memory, Q::Exits],
            (false, _) => &[Q::Time, Q::Memory, Q::PlatformShare],
            (true, DemoId::HelloContainer | DemoId::PostgresContainer) => {
                &[Q::SameKernel, Q::SharedNamespaces]
            }
            (true, DemoId::MicroVm) => &[Q::SameKernel, Q::PageFaults],
            (true, DemoId::LinuxVm | DemoId::PostgresVm) => &[Q::SameKernel],
            (true, _) => &[],
        }
    }

    /// The key of `demo`'s headline figure for this quantity, for time
    /// and memory: the figure table's ([`crate::figures::headline`]; a test
    /// holds them equal), without the table's text, which the browser's
    /// bundle leaves out.
    pub fn key(self, demo: DemoId) -> Option<Key> {
        let density = demo.density_of().is_some();
        Some(match (self, density) {
            (Quantity::Time, false) => Metric::StartToReady.into(),
            (Quantity::Time, true) => Metric::SweepTotal.into(),
            (Quantity::Memory, false) => Metric::MemoryHeld.into(),
            (Quantity::Memory, true) => {
                Key::Density(DensityMetric::MemoryTotal, DemoId::DENSITY_MAX)
            }
            _ => return None,
        })
    }

    /// The true value for a run of `demo` with these `events`, or why
    /// there is none (never 0 for a reading that failed).
    pub fn measured(self, demo: DemoId, events: &[RunEvent]) -> Result<f64, String> {
        let outcome = events
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EventKind::Finished { outcome } => Some(outcome),
                _ => None,
            })
            .ok_or("the run has not finished")?;
        if let Outcome::Failed { error } = outcome {
            return Err(format!("the run failed: {}", error.message));
        }
        let xray = || XRay::of_run(events).ok_or_else(|| "this run has no x-ray".to_owned());
        let value = match self {
            Quantity::Time | Quantity::Memory => {
                figure(outcome, self.key(demo).expect("time and memory have keys"))
            }
            Quantity::PlatformShare => {
                let share = figure(outcome, Metric::PlatformShare.into())?;
                let whole = figure(outcome, Metric::StartToReady.into())?;
                if whole > 0.0 {
                    Ok(100.0 * share / whole)
                } else {
                    Err("start → ready was not positive".into())
                }
            }
            Quantity::DensitySlope => {
                let n = |n| figure(outcome, Key::Density(DensityMetric::MemoryTotal, n));
                let (one, max) = (n(1)?, n(DemoId::DENSITY_MAX)?);
                if one > 0.0 {
                    Ok(max / one)
                } else {
                    Err("the memory of one instance was not positive".into())
                }
            }
            Quantity::Exits => figure(outcome, Metric::Exits.into()),
            Quantity::SameKernel => {
                let x = xray()?;
                let key = if demo.is_container() {
                    XRayKey::KernelRelease
                } else {
                    XRayKey::GuestKernel
                };
                match x.row(key).and_then(|r| r.same) {
                    Some(same) => Ok(f64::from(u8::from(same))),
                    None => Err(why_missing(x, &[key])),
                }
            }
            Quantity::SharedNamespaces => {
                let x = xray()?;
                // A namespace not compared is not "own": the count is
                // missing unless every one was compared.
                let unread: Vec<XRayKey> = NAMESPACES
                    .into_iter()
                    .filter(|k| x.row(*k).and_then(|r| r.same).is_none())
                    .collect();
                if x.row(XRayKey::NsShared).is_none() || !unread.is_empty() {
                    return Err(why_missing(x, &unread));
                }
                let shared = NAMESPACES
                    .iter()
                    .filter(|k| x.row(**k).and_then(|r| r.same) == Some(true))
                    .count();
                Ok(shared as f64)
            }
            Quantity::PageFaults => {
                let x = xray()?;
                x.count(XRayKey::KvmPageFault)
                    .or_else(|| x.count(XRayKey::KvmSpte))
                    .map(|n| n as f64)
                    .ok_or_else(|| why_missing(x, &[XRayKey::KvmPageFault, XRayKey::KvmSpte]))
            }
        }?;
        // A log scale has no place for 0: a count of none (events the
        // capture lost, say) is not a value to compare a guess with.
        if self.scale() == Scale::Log && value <= 0.0 {
            // (No float formatting here: the frontend's bundle would carry it.)
            return Err("measured none, which a log scale cannot place".into());
        }
        Ok(value)
    }

    /// What the true value counted, where it is not what the name says:
    /// the pages KVM mapped, where this KVM does not trace its page faults.
    pub fn counted_as(self, events: &[RunEvent]) -> Option<&'static str> {
        let x = XRay::of_run(events)?;
        (self == Quantity::PageFaults
            && x.count(XRayKey::KvmPageFault).is_none()
            && x.count(XRayKey::KvmSpte).is_some())
        .then_some("counted as the mappings KVM installed on first touch (one may cover 4 KiB or 2 MiB, and KVM may map neighbours ahead): this host's KVM does not trace its page faults")
    }

    /// How far `guess` was from `measured`, on this quantity's scale.
    pub fn off(self, guess: f64, measured: f64) -> Off {
        match self.scale() {
            Scale::Log => Off::Orders(orders_off(guess, measured)),
            Scale::Linear => Off::By(measured - guess),
            Scale::YesNo => Off::Right((guess >= 0.5) == (measured >= 0.5)),
        }
    }
}

/// The figure `key` of a ready run, or why it is missing.
fn figure(outcome: &Outcome, key: Key) -> Result<f64, String> {
    if let Some(v) = outcome.value(key) {
        return Ok(v);
    }
    match outcome {
        Outcome::Ready { missing, .. } => Err(missing
            .iter()
            .find(|m| m.key == key)
            .map(|m| format!("{}: {}", m.label, m.reason))
            .unwrap_or_else(|| format!("{key} was not measured"))),
        Outcome::Failed { error } => Err(format!("the run failed: {}", error.message)),
    }
}

/// Why none of the x-ray's readings `keys` is there.
fn why_missing(x: &XRay, keys: &[XRayKey]) -> String {
    let reasons: Vec<String> = keys
        .iter()
        .filter_map(|k| x.missing(*k).map(|r| format!("{k}: {r}")))
        .collect();
    if reasons.is_empty() {
        "the x-ray did not show it".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// A learner's guess, locked when the run started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Guess {
    /// Of what.
    pub quantity: Quantity,
    /// The value guessed (in the quantity's unit, within
    /// [`Quantity::range`]; yes/no as 1/0, counts on a linear scale whole);
    /// absent: the learner chose "I'd rather not guess".
    #[serde(default)]
    pub value: Option<f64>,
}

impl Guess {
    /// Why this guess cannot be taken, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        let (low, high) = self.quantity.range();
        let whole = matches!(
            self.quantity,
            Quantity::SameKernel | Quantity::SharedNamespaces
        );
        match self.value {
            Some(v) if !(low..=high).contains(&v) => Some(format!(
                "a {} guess must be between {low} and {high}, not {v}",
                self.quantity
            )),
            Some(v) if whole && v.fract() != 0.0 => Some(format!(
                "a {} guess must be a whole number, not {v}",
                self.quantity
            )),
            _ => None,
        }
    }

    /// Why this guess cannot go with a run of `demo`, if it cannot: out of
    /// range, or a quantity no card of that demo asks.
    pub fn invalid_for(&self, demo: DemoId) -> Option<String> {
        let asked = Quantity::asked(demo, false)
            .iter()
            .chain(Quantity::asked(demo, true))
            .any(|q| *q == self.quantity);
        if !asked {
            return Some(format!("{demo} asks no {} guess", self.quantity));
        }
        self.invalid()
    }
}

/// How far a guess was off, in orders of magnitude: log10(measured /
/// guessed); positive when the result was larger than the guess.
pub fn orders_off(guess: f64, measured: f64) -> f64 {
    (measured / guess).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Measurement, Missing, RunError, Unit, XRayOf};

    #[test]
    fn a_time_or_memory_guess_is_of_the_figure_tables_headline() {
        for demo in DemoId::ALL {
            for q in Quantity::ALL {
                match q.headline() {
                    Some(question) => assert_eq!(
                        q.key(demo),
                        Some(crate::figures::headline(demo, question).key),
                        "{demo}: {q}"
                    ),
                    None => assert_eq!(q.key(demo), None, "{demo}: {q}"),
                }
            }
        }
    }

    #[test]
    fn every_figure_a_card_asks_about_is_in_the_figure_table() {
        let keys = |q: Quantity, demo: DemoId| -> Vec<Key> {
            match q {
                Quantity::PlatformShare => {
                    vec![Metric::PlatformShare.into(), Metric::StartToReady.into()]
                }
                Quantity::DensitySlope => vec![
                    Key::Density(DensityMetric::MemoryTotal, 1),
                    Key::Density(DensityMetric::MemoryTotal, DemoId::DENSITY_MAX),
                ],
                Quantity::Exits => vec![Metric::Exits.into()],
                _ => q.key(demo).into_iter().collect(),
            }
        };
        for demo in DemoId::ALL {
            let asked = Quantity::asked(demo, false);
            assert!(
                asked.len() <= 3,
                "{demo}: one question beside time and memory"
            );
            for q in asked {
                for k in keys(*q, demo) {
                    assert!(
                        crate::figures::figure(demo, k).is_some(),
                        "{demo}: {q} reads {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn guesses_outside_the_scale_or_the_card_are_refused() {
        let g = |quantity, value| Guess { quantity, value };
        assert!(g(Quantity::Time, Some(100.0)).invalid().is_none());
        assert!(g(Quantity::Time, Some(600e6)).invalid().is_none());
        assert!(g(Quantity::Time, Some(99.0)).invalid().is_some());
        assert!(g(Quantity::Memory, Some(11.0 * 1073741824.0))
            .invalid()
            .is_some());
        assert!(g(Quantity::Memory, Some(f64::NAN)).invalid().is_some());
        assert!(g(Quantity::Memory, None).invalid().is_none(), "declined");
        assert!(g(Quantity::PlatformShare, Some(101.0)).invalid().is_some());
        assert!(g(Quantity::SameKernel, Some(0.5)).invalid().is_some());
        assert!(g(Quantity::SameKernel, Some(1.0)).invalid().is_none());
        assert!(g(Quantity::SharedNamespaces, Some(9.0)).invalid().is_some());
        assert!(g(Quantity::SharedNamespaces, Some(1.5)).invalid().is_some());
        assert!(g(Quantity::Exits, Some(0.0)).invalid().is_some());
        let exits = g(Quantity::Exits, Some(100.0));
        assert!(exits.invalid_for(DemoId::MicroVm).is_none());
        assert!(exits.invalid_for(DemoId::HelloContainer).is_some());
        let ns = g(Quantity::SharedNamespaces, Some(2.0));
        assert!(ns.invalid_for(DemoId::PostgresContainer).is_none());
        assert!(ns.invalid_for(DemoId::MicroVm).is_some());
        assert!((orders_off(1000.0, 10_000.0) - 1.0).abs() < 1e-9);
        assert!((orders_off(1000.0, 100.0) + 1.0).abs() < 1e-9);
        assert_eq!(Quantity::SameKernel.off(1.0, 0.0), Off::Right(false));
        assert_eq!(Quantity::SharedNamespaces.off(3.0, 2.0), Off::By(-1.0));
    }

    fn at(kind: EventKind) -> RunEvent {
        RunEvent {
            seq: 0,
            at_us: 0,
            kind,
        }
    }

    fn ready(values: &[(Key, f64)], missing: Vec<Missing>) -> RunEvent {
        at(EventKind::Finished {
            outcome: Outcome::Ready {
                measurements: values
                    .iter()
                    .map(|(key, value)| Measurement {
                        key: *key,
                        label: String::new(),
                        value: *value,
                        unit: Unit::Count,
                        how: String::new(),
                    })
                    .collect(),
                facts: Vec::new(),
                missing,
            },
        })
    }

    #[test]
    fn the_true_values_come_from_the_runs_figures_and_x_ray() {
        let figures = ready(
            &[
                (Metric::PlatformShare.into(), 30.0),
                (Metric::StartToReady.into(), 120.0),
                (Metric::Exits.into(), 7.0),
            ],
            vec![Missing {
                key: Metric::MemoryHeld.into(),
                label: "Memory held".into(),
                reason: "process gone".into(),
            }],
        );
        let m = |q: Quantity, demo, events: &[RunEvent]| q.measured(demo, events);
        let alone = std::slice::from_ref(&figures);
        let c = DemoId::PostgresContainer;
        assert_eq!(m(Quantity::PlatformShare, c, alone), Ok(25.0));
        assert_eq!(m(Quantity::Exits, DemoId::MicroVm, alone), Ok(7.0));
        let memory = m(Quantity::Memory, c, alone).unwrap_err();
        assert!(memory.contains("process gone"), "{memory}");
        assert!(m(Quantity::Time, c, &[]).is_err(), "not finished");
        let no_xray = m(Quantity::SameKernel, c, alone).unwrap_err();
        assert!(no_xray.contains("no x-ray"), "{no_xray}");

        let mut x = XRay {
            of: Some(XRayOf::Container),
            ..Default::default()
        };
        x.push_row(XRayKey::KernelRelease, "Kernel", None, None, Some(true), "");
        // Two of eight namespaces shared; with one of them unread, the
        // count is missing with its reason (not counted as "own").
        let mut partial = x.clone();
        for key in NAMESPACES {
            let same = matches!(key, XRayKey::NsUser | XRayKey::NsTime);
            x.push_row(key, "ns", None, None, Some(same), "");
            if key == XRayKey::NsTime {
                partial.push_missing(key, "ns", "no time namespace on this kernel");
            } else {
                partial.push_row(key, "ns", None, None, Some(same), "");
            }
        }
        for x in [&mut x, &mut partial] {
            x.push_row(XRayKey::NsShared, "shared", None, None, None, "");
        }
        let events = [at(EventKind::XRay { xray: partial }), figures.clone()];
        let unread = m(Quantity::SharedNamespaces, c, &events).unwrap_err();
        assert!(unread.contains("no time namespace"), "{unread}");
        // A count of none has no place on a log scale: missing, said why.
        let mut none = x.clone();
        none.push_count(XRayKey::KvmSpte, "mapped", 0, "");
        let events = [at(EventKind::XRay { xray: none }), figures.clone()];
        let zero = m(Quantity::PageFaults, DemoId::MicroVm, &events).unwrap_err();
        assert!(zero.contains("cannot place"), "{zero}");
        x.push_missing(XRayKey::KvmPageFault, "faults", "not traced here");
        let events = [at(EventKind::XRay { xray: x.clone() }), figures.clone()];
        assert_eq!(m(Quantity::SameKernel, c, &events), Ok(1.0));
        assert_eq!(m(Quantity::SharedNamespaces, c, &events), Ok(2.0));
        let faults = m(Quantity::PageFaults, DemoId::MicroVm, &events).unwrap_err();
        assert!(faults.contains("not traced here"), "{faults}");
        x.push_count(XRayKey::KvmSpte, "mapped", 12, "");
        let events = [at(EventKind::XRay { xray: x }), figures];
        assert_eq!(m(Quantity::PageFaults, DemoId::MicroVm, &events), Ok(12.0));
        assert!(
            Quantity::PageFaults.counted_as(&events).is_some(),
            "mappings, said so"
        );
        assert!(Quantity::Exits.counted_as(&events).is_none());

        let failed = at(EventKind::Finished {
            outcome: Outcome::Failed {
                error: RunError {
                    code: crate::ErrorCode::Internal,
                    message: "it broke".into(),
                },
            },
        });
        let why = m(Quantity::Exits, DemoId::MicroVm, &[failed]).unwrap_err();
        assert!(why.contains("it broke"), "{why}");
    }
}
