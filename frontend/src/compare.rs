//! The ```` ```compare ```` block: each demo beside its counterpart, like
//! with like (the smallest container with the tiny micro-VM: platform
//! against platform; PostgreSQL in a container with PostgreSQL in a VM: the
//! same workload), filled from the learner's own history on the server, so
//! a reload keeps it. Medians where the learner has several runs. Before the
//! learner has run any of these demos it says only what it will compare (no
//! one else's numbers shown as theirs). The kernel row ("shared / own")
//! comes from the latest runs' x-rays.

use leptos::prelude::*;
use stacklab_api::{
    DemoFigures, DemoId, FactKey, FigureText, Outcome, RunPage, RunRecord, RunState, RunSummary,
    XRay, XRayKey, XRayRow,
};

use crate::charts::{fmt_mib, fmt_ms};
use crate::live::{self, LinuxGuestNote};
use crate::num::fixed;
use crate::widgets::{host_explanation, HostClaim};

/// Bumped whenever a run finishes in this tab, so the block asks again.
#[derive(Clone, Copy)]
pub struct LatestRuns {
    finished: RwSignal<u32>,
}

impl LatestRuns {
    /// Provides the store to the component tree.
    pub fn provide() {
        provide_context(LatestRuns {
            finished: RwSignal::new(0),
        });
    }

    /// The store, if an ancestor provided one. Call while rendering: event
    /// callbacks run outside the component tree and cannot look it up.
    pub fn get() -> Option<LatestRuns> {
        use_context::<LatestRuns>()
    }

    /// Says that a run finished (its result is in the server's history).
    pub fn record(&self) {
        self.finished.update(|n| *n += 1);
    }
}

/// Median, least and most of some figures, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        crate::num::sort_by_key(&mut values, |v| *v);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        })
    }

    /// "12.3 ms (median of 5, 11.0–14.2)".
    pub fn show(&self, fmt: fn(f64) -> String) -> String {
        if self.n == 1 {
            format!("{} (1 run)", fmt(self.median))
        } else {
            format!(
                "{} (median of {}, {}–{})",
                fmt(self.median),
                self.n,
                fmt(self.min),
                fmt(self.max)
            )
        }
    }
}

/// One demo's figures from the learner's history.
#[derive(Debug, Clone, Default)]
struct Figures {
    total: Option<Spread>,
    platform: Option<Spread>,
    waited: Option<Spread>,
    memory: Option<Spread>,
    /// The latest successful run's record (for its facts).
    latest: Option<RunRecord>,
}

impl Figures {
    fn fact(&self, key: FactKey) -> Option<String> {
        match self.latest.as_ref()?.outcome()? {
            Outcome::Ready { facts, .. } => {
                facts.iter().find(|f| f.key == key).map(|f| f.value.clone())
            }
            Outcome::Failed { .. } => None,
        }
    }

    /// The x-ray row `key` of the latest successful run, or why there is
    /// none (no run, no x-ray in it, or the x-ray's own reason).
    fn xray_row(&self, key: XRayKey) -> Result<&XRayRow, &str> {
        let run = self.latest.as_ref().ok_or("no run yet")?;
        let xray = XRay::of_run(&run.events).ok_or("no x-ray in that run")?;
        xray.row(key)
            .ok_or_else(|| xray.missing(key).unwrap_or("no kernel reading"))
    }
}

/// One side of the "kernel: shared / own" row, as its x-ray read it, or
/// missing with the reason.
fn kernel_side(row: Result<&XRayRow, &str>) -> String {
    match row {
        // Not compared is not "own".
        Ok(r) => format!(
            "{}: {} inside, {} on the host",
            match r.same {
                Some(true) => "shared",
                Some(false) => "own",
                None => "not compared",
            },
            r.inside.as_deref().unwrap_or("not read"),
            r.host.as_deref().unwrap_or("not read")
        ),
        Err(why) => format!("missing ({why})"),
    }
}

fn figures(runs: &[RunSummary], demo: DemoId) -> Figures {
    let ok: Vec<&RunSummary> = runs
        .iter()
        .filter(|r| r.demo == demo && r.state == RunState::Succeeded)
        .collect();
    Figures {
        total: Spread::of(ok.iter().filter_map(|r| r.time_to_ready_us).collect()),
        platform: Spread::of(ok.iter().filter_map(|r| r.platform_us).collect()),
        waited: Spread::of(ok.iter().filter_map(|r| r.queue_wait_us).collect()),
        memory: Spread::of(ok.iter().filter_map(|r| r.memory_bytes).collect()),
        latest: None,
    }
}

/// The pairs, like with like: each with its title and what its numbers
/// answer (so a tiny VM ready before a container does not read as "VMs
/// start fast", against the table's "slower").
const PAIRS: [(DemoId, DemoId, &str, &str); 2] = [
    (
        DemoId::HelloContainer,
        DemoId::MicroVm,
        "Platform against platform: the smallest program in a container, and the tiny guest in a micro-VM",
        "This guest has no operating system to boot: most of its start is the platform's work (a process, its jail, a handful of KVM calls). \
         KVM itself is not what makes a VM slow to start; a general-purpose guest operating system is (and, with a classic VMM, firmware and emulated devices).",
    ),
    (
        DemoId::PostgresContainer,
        DemoId::PostgresVm,
        "The same workload: PostgreSQL 15 in a container, and in a Linux VM",
        "Here the VM boots Debian's Linux kernel before PostgreSQL starts: the boot a general-purpose VM pays for.",
    ),
];

/// Every demo's figures, fetched together, and what each figure is.
#[derive(Debug, Clone, Default)]
struct Loaded {
    /// Whether the learner has run any of the compared demos.
    ran: bool,
    by_demo: Vec<(DemoId, Figures)>,
    named: Vec<DemoFigures>,
}

impl Loaded {
    /// What `pick` says of `demo`'s figure, from the server's table
    /// (empty if the server did not say).
    fn text(&self, demo: DemoId, pick: fn(&DemoFigures) -> Option<&FigureText>) -> FigureText {
        self.named
            .iter()
            .find(|f| f.demo == demo)
            .and_then(pick)
            .cloned()
            .unwrap_or_default()
    }

    fn get(&self, demo: DemoId) -> Figures {
        self.by_demo
            .iter()
            .find(|(d, _)| *d == demo)
            .map(|(_, f)| f.clone())
            .unwrap_or_default()
    }
}

async fn load() -> Result<Loaded, String> {
    let learner = live::learner_id().ok_or("this browser keeps no learner id")?;
    let text = live::get_text(&format!("/api/runs?limit=500&learner={learner}")).await?;
    let page: RunPage = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let ran = page
        .runs
        .iter()
        .any(|r| PAIRS.iter().any(|(c, v, ..)| r.demo == *c || r.demo == *v));
    if !ran {
        return Ok(Loaded::default());
    }
    let mut by_demo = Vec::new();
    for (c, v, ..) in PAIRS {
        for demo in [c, v] {
            let mut f = figures(&page.runs, demo);
            let latest = page
                .runs
                .iter()
                .find(|r| r.demo == demo && r.state == RunState::Succeeded);
            if let Some(r) = latest {
                if let Ok(text) = live::get_text(&format!("/api/runs/{}", r.id)).await {
                    f.latest = crate::wire::record(&text).ok();
                }
            }
            by_demo.push((demo, f));
        }
    }
    let named = live::figures().await?;
    Ok(Loaded {
        ran,
        by_demo,
        named,
    })
}

/// Two horizontal bars on one scale, each with its median and spread. The
/// bars are HTML, not a scaled SVG, so their labels and values keep the
/// page's text size on a phone.
#[component]
fn Bars(
    title: String,
    how: String,
    fmt: fn(f64) -> String,
    left: (&'static str, Option<Spread>),
    right: (&'static str, Option<Spread>),
) -> impl IntoView {
    let max = [left.1, right.1]
        .iter()
        .flatten()
        .map(|s| s.max)
        .fold(1.0, f64::max);
    let bar = move |(label, s): (&'static str, Option<Spread>), class: &'static str| {
        let width = s.map(|s| 100.0 * s.median / max).unwrap_or(0.0).max(0.5);
        let text = s.map(|s| s.show(fmt)).unwrap_or_else(|| "—".into());
        view! {
            <div class=format!("bar-row {class}")>
                <span class="bar-label">{label}</span>
                <span class="bar-track">
                    <span class="bar" style=format!("width:{}%", fixed(width, 1))></span>
                </span>
                <span class="bar-value">{text}</span>
            </div>
        }
    };
    view! {
        <figure class="bars">
            <figcaption>{title}</figcaption>
            {bar(left, "b-container")}
            {bar(right, "b-vm")}
            <p class="how">{how}</p>
        </figure>
    }
}

/// A bar pair's title and explanation, from the server's figure table:
/// one sentence if both sides define the figure alike, else each side's.
fn named(
    loaded: &Loaded,
    (c, v): (DemoId, DemoId),
    prefix: &str,
    pick: fn(&DemoFigures) -> Option<&FigureText>,
) -> (String, String) {
    let (fc, fv) = (loaded.text(c, pick), loaded.text(v, pick));
    let how = if fc.how == fv.how {
        fc.how
    } else {
        format!("Container: {}. VM: {}", fc.how, fv.how)
    };
    (format!("{prefix}{}", fc.label), how)
}

/// One pair: what it answers, its bars, and why the VM side cannot run
/// here if it cannot (`linux_unavailable`, from the server's health) with
/// a reference figure from elsewhere, outside the bars (never in a
/// measured row).
fn pair_view(
    loaded: &Loaded,
    linux_unavailable: Option<String>,
    (c, v, title, note): (DemoId, DemoId, &'static str, &'static str),
) -> impl IntoView {
    let (fc, fv) = (loaded.get(c), loaded.get(v));
    let time = named(loaded, (c, v), "", |f| Some(&f.time));
    let platform = named(loaded, (c, v), "Of which: ", |f| f.platform.as_ref());
    let waited = named(loaded, (c, v), "In neither (before the start): ", |f| {
        Some(&f.waited)
    });
    let memory = named(loaded, (c, v), "", |f| Some(&f.memory));
    let cannot = (v.is_linux_guest() && fv.total.is_none())
        .then_some(linux_unavailable)
        .flatten();
    let host = HostClaim::get().map(|c| (c, c.ticket()));
    view! {
        <div class="pair" data-pair=format!("{}+{}", c.as_str(), v.as_str())>
            <h4>{title}</h4>
            <p class="pair-note">{note}</p>
            {cannot.map(|why| view! {
                <p class="host-note" role="note"><strong>{format!("{}: not on this server. ", v.title())}</strong>{host_explanation(host, "A Linux guest does not boot on this server.", why)}</p>
                <p class="reference">"For reference, not measured here: Firecracker's published specification (SPECIFICATION.md in its repository) promises at most 125 ms from the API call that starts a microVM to its Linux guest's /sbin/init, with a minimal kernel tuned for Firecracker on an AWS i3.metal host: to /sbin/init, not to PostgreSQL ready."</p>
            })}
            <Bars title=time.0 fmt=fmt_ms how=time.1
                left=("Container", fc.total) right=("VM", fv.total) />
            <Bars title=platform.0 fmt=fmt_ms how=platform.1
                left=("Container", fc.platform) right=("VM", fv.platform) />
            <Bars title=waited.0 fmt=fmt_ms how=waited.1
                left=("Container", fc.waited) right=("VM", fv.waited) />
            <Bars title=memory.0 fmt=fmt_mib how=memory.1
                left=("Container", fc.memory) right=("VM", fv.memory) />
        </div>
    }
}

/// ```` ```compare ````.
#[component]
pub fn CompareBlock() -> impl IntoView {
    let finished = LatestRuns::get().map(|s| s.finished);
    let linux_note = match LinuxGuestNote::get() {
        Some(note) => note.fetched(),
        None => RwSignal::new(None),
    };
    let loaded = RwSignal::new(None::<Result<Loaded, String>>);
    let host_ticket = HostClaim::get().map(|c| (c, c.ticket()));
    Effect::new(move |_| {
        if let Some(f) = finished {
            f.track();
        }
        leptos::task::spawn_local(async move { loaded.set(Some(load().await)) });
    });
    let body = move || {
        match loaded.get() {
        None => view! { <p class="status">"Reading your runs…"</p> }.into_any(),
        Some(Err(why)) => {
            view! { <p class="status">{format!("Your runs could not be read: {why}")}</p> }
                .into_any()
        }
        Some(Ok(l)) if !l.ran => view! {
            <p class="status before-run">"Your own runs of a container and a VM, like with like (time to ready, memory held, kernel shared or own): this fills in after you run one of these demos (lessons 2, 3 and 5)."</p>
        }
        .into_any(),
        Some(Ok(l)) => {
            let empty = l.by_demo.iter().all(|(_, f)| f.total.is_none());
            let (hello, vm, pg) = (
                l.get(DemoId::HelloContainer),
                l.get(DemoId::MicroVm),
                l.get(DemoId::PostgresContainer),
            );
            let kernel = (
                kernel_side(
                    hello
                        .xray_row(XRayKey::KernelRelease)
                        .or_else(|_| pg.xray_row(XRayKey::KernelRelease)),
                ),
                kernel_side(vm.xray_row(XRayKey::GuestKernel)),
            );
            let host = vm
                .fact(FactKey::Host)
                .or_else(|| hello.fact(FactKey::Host))
                .or_else(|| pg.fact(FactKey::Host));
            view! {
                {empty.then(|| view! { <p class="status">"Run the live demos in lesson 5 to fill this: each figure is the median of your own runs."</p> })}
                {PAIRS.into_iter().map(|p| pair_view(&l, linux_note.get(), p)).collect_view()}
                <table class="results compare-table">
                    <caption>"What your runs showed beside the common claims about containers and VMs"</caption>
                    <thead>
                        <tr><th scope="col">"Feature"</th><th scope="col">"The common claim"</th><th scope="col">"Measured in your runs"</th></tr>
                    </thead>
                    <tbody>
                        <tr data-row="kernel"><th scope="row">"Kernel: shared / own"</th><td>"VM: a kernel of its own; container: the host's kernel, shared"</td><td class="measured"><span class="side" data-side="container">"Container: "{kernel.0}</span><span class="side" data-side="vm">"VM: "{kernel.1}</span></td></tr>
                        <tr data-row="security"><th scope="row">"Security boundary"</th><td>"VM: stronger; container: weaker (shared kernel)"</td><td class="measured">"No run measures a wall's strength. What your runs show is the kernel row above: one kernel shared with the host, or one of the VM's own. How strong each wall is shows in its flaws: lesson 4's security cases."</td></tr>
                    </tbody>
                </table>
                {host.map(|h| view! { <p class="how">"Measured on: " {host_explanation(host_ticket, "this server.", h)}</p> })}
            }
            .into_any()
        }
    }
    };
    view! {
        <section class="demo-card compare" data-demo="compare" aria-label="Containers and VMs, measured side by side">
            <p class="badge">"Live comparison"</p>
            <h3>"Container and VM, like with like"</h3>
            <p>"From your own runs on this server (kept there, so a reload keeps them)."</p>
            {body}
        </section>
    }
}
