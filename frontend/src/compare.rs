//! The learner's own latest results, shared across lessons, and the
//! ```` ```compare ```` block that puts the container and the VM side by side.

use leptos::prelude::*;
use stacklab_api::{Fact, FactKey, Measurement, Metric, Outcome, Unit};

use crate::lessons::DemoId;

/// The latest successful outcome of each demo in this browser tab.
#[derive(Clone, Copy)]
pub struct LatestRuns {
    container: RwSignal<Option<(Vec<Measurement>, Vec<Fact>)>>,
    vm: RwSignal<Option<(Vec<Measurement>, Vec<Fact>)>>,
}

impl LatestRuns {
    /// Provides an empty store to the component tree.
    pub fn provide() {
        provide_context(LatestRuns {
            container: RwSignal::new(None),
            vm: RwSignal::new(None),
        });
    }

    /// The store, if an ancestor provided one. Call while rendering: event
    /// callbacks run outside the component tree and cannot look it up.
    pub fn get() -> Option<LatestRuns> {
        use_context::<LatestRuns>()
    }

    /// Records a finished run.
    pub fn record(&self, demo: DemoId, outcome: &Outcome) {
        let Outcome::Ready {
            measurements,
            facts,
        } = outcome
        else {
            return;
        };
        let slot = match demo {
            DemoId::PostgresContainer => self.container,
            DemoId::MicroVm => self.vm,
            // A density sweep has no single-instance figures to compare, and
            // the Linux guests have their own lesson.
            DemoId::DensityContainer
            | DemoId::DensityMicroVm
            | DemoId::LinuxVm
            | DemoId::PostgresVm => return,
        };
        slot.set(Some((measurements.clone(), facts.clone())));
    }
}

fn value(runs: &Option<(Vec<Measurement>, Vec<Fact>)>, key: Metric) -> Option<f64> {
    runs.as_ref()?
        .0
        .iter()
        .find(|m| m.key == key.into())
        .map(|m| m.value)
}

fn fact(runs: &Option<(Vec<Measurement>, Vec<Fact>)>, key: FactKey) -> Option<String> {
    runs.as_ref()?
        .1
        .iter()
        .find(|f| f.key == key)
        .map(|f| f.value.clone())
}

fn shown(v: Option<f64>, unit: Unit) -> String {
    match (v, unit) {
        (None, _) => "not run yet".into(),
        (Some(us), Unit::Micros) => format!("{:.1} ms", us / 1000.0),
        (Some(b), Unit::Bytes) => format!("{:.1} MiB", b / 1048576.0),
        (Some(n), Unit::Count) => format!("{n}"),
    }
}

/// Two horizontal bars on one scale.
#[component]
fn Bars(
    title: &'static str,
    how: &'static str,
    unit: Unit,
    container: Option<f64>,
    vm: Option<f64>,
) -> impl IntoView {
    let max = container.unwrap_or(0.0).max(vm.unwrap_or(0.0)).max(1.0);
    let bar = move |y: f64, label: &'static str, v: Option<f64>, class: &'static str| {
        let w = v.map(|v| 300.0 * v / max).unwrap_or(0.0);
        view! {
            <g class=class>
                <text x=0 y=y + 15.0>{label}</text>
                <rect x=130 y=y width=w.max(1.0) height=20 rx=3 />
                <text x=140.0 + w y=y + 15.0>{shown(v, unit)}</text>
            </g>
        }
    };
    view! {
        <figure class="bars">
            <figcaption>{title}</figcaption>
            <svg viewBox="0 0 560 60" role="img" aria-label=format!("{title}: container {}, micro-VM {}", shown(container, unit), shown(vm, unit))>
                {bar(5.0, "Container", container, "b-container")}
                {bar(33.0, "Micro-VM", vm, "b-vm")}
            </svg>
            <p class="how">{how}</p>
        </figure>
    }
}

/// ```` ```compare ````.
#[component]
pub fn CompareBlock() -> impl IntoView {
    let Some(store) = LatestRuns::get() else {
        return view! { <p>"(no run store)"</p> }.into_any();
    };
    let body = move || {
        let c = store.container.get();
        let v = store.vm.get();
        let rows: [(&str, &str, &str, String, String); 6] = [
            (
                "OS isolation",
                "Full guest OS per VM",
                "Shared host OS kernel",
                fact(&v, FactKey::KernelInside).unwrap_or_else(|| "not run yet".into()),
                match (
                    fact(&c, FactKey::KernelInside),
                    fact(&c, FactKey::KernelHost),
                ) {
                    (Some(i), Some(h)) if i == h => {
                        format!("kernel inside = kernel on the host ({i})")
                    }
                    (Some(i), Some(h)) => format!("inside {i}, host {h}"),
                    _ => "not run yet".into(),
                },
            ),
            (
                "Resource usage",
                "High (multiple OS overhead)",
                "Low (just processes + libs)",
                format!(
                    "VMM process {} (PSS)",
                    shown(value(&v, Metric::VmmPss), Unit::Bytes)
                ),
                format!(
                    "processes {} (PSS); with its in-memory data files {}",
                    shown(value(&c, Metric::MemoryPss), Unit::Bytes),
                    shown(value(&c, Metric::MemoryCgroup), Unit::Bytes)
                ),
            ),
            (
                "Startup time",
                "Minutes",
                "Seconds or less",
                format!(
                    "{} (hypervisor {}, guest kernel {})",
                    shown(value(&v, Metric::CreateToReady), Unit::Micros),
                    shown(value(&v, Metric::HypervisorSetup), Unit::Micros),
                    shown(value(&v, Metric::GuestBoot), Unit::Micros)
                ),
                format!(
                    "{} to the first SELECT 1",
                    shown(value(&c, Metric::CreateToReady), Unit::Micros)
                ),
            ),
            (
                "Portability",
                "Lower (OS-specific configs)",
                "High (runs the same everywhere)",
                "not measured here".into(),
                fact(&c, FactKey::Image).unwrap_or_else(|| "not run yet".into()),
            ),
            (
                "Security boundary",
                "Stronger (hardware emulation)",
                "Weaker (shared kernel risks)",
                fact(&v, FactKey::HostPids).unwrap_or_else(|| "not run yet".into()),
                fact(&c, FactKey::HostPids)
                    .map(|p| format!("its processes are host processes: {p}"))
                    .unwrap_or_else(|| "not run yet".into()),
            ),
            (
                "Use case fit",
                "Legacy apps, full isolation",
                "Microservices, CI/CD, cloud-native apps",
                "not measurable".into(),
                "not measurable".into(),
            ),
        ];
        let host = fact(&v, FactKey::KvmHost);
        view! {
            <Bars title="Time to ready" how="container: create → first SELECT 1; micro-VM: /dev/kvm opened → boot-complete write. Each measured by the server on a monotonic clock." unit=Unit::Micros container=value(&c, Metric::CreateToReady) vm=value(&v, Metric::CreateToReady) />
            <Bars title="Memory" how="container: PSS of its processes; micro-VM: PSS of the VMM process, guest pages included." unit=Unit::Bytes container=value(&c, DemoId::PostgresContainer.memory_key()) vm=value(&v, DemoId::MicroVm.memory_key()) />
            <table class="results compare-table">
                <caption>"The guide's table, with a column measured on this server"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Feature"</th>
                        <th scope="col">"Virtual machine"</th>
                        <th scope="col">"Docker container"</th>
                        <th scope="col">"Measured here: micro-VM"</th>
                        <th scope="col">"Measured here: container"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows
                        .into_iter()
                        .map(|(f, vm, ct, mv, mc)| view! {
                            <tr><th scope="row">{f}</th><td>{vm}</td><td>{ct}</td><td class="measured">{mv}</td><td class="measured">{mc}</td></tr>
                        })
                        .collect_view()}
                </tbody>
            </table>
            {host.map(|h| view! { <p class="how">"This server: " {h}</p> })}
        }
    };
    view! {
        <section class="demo-card compare" data-demo="compare" aria-label="Container and micro-VM, measured side by side">
            <p class="badge">"Live comparison"</p>
            <h3>"Container and VM, measured side by side"</h3>
            <p>"Filled from your own runs of the two demos (the latest of each, in this browser tab)."</p>
            {body}
        </section>
    }
    .into_any()
}
