//! The x-ray card: a run's [`XRay`] as two columns, "inside" and "as the
//! host sees it", then what the platform did (calls on the run's clock)
//! and what was counted, every reading that failed with its reason. It
//! renders the API type generically: labels and explanations come from
//! the server (no per-row text here, to keep the bundle small).
//!
//! Imports `stacklab_api`, leptos and `charts` (number formats) only.

use std::cell::RefCell;

use leptos::prelude::*;
use stacklab_api::{RunEvent, XRay};

use crate::charts::fmt_ms;
use crate::lessons::{DemoId, Prediction};
use crate::widgets::DemoWidget;

thread_local! {
    /// Demos an x-ray block is shown for: their runs ask for the kernel's
    /// events (`CreateRun::trace`), which cost the platform's share.
    static TRACED: RefCell<Vec<DemoId>> = const { RefCell::new(Vec::new()) };
}

/// Whether runs of `demo` ask for the kernel-event capture.
pub fn trace_asked(demo: DemoId) -> bool {
    TRACED.with(|t| t.borrow().contains(&demo))
}

/// Makes runs of `demo` ask for the kernel-event capture.
pub fn ask_trace(demo: DemoId) {
    TRACED.with(|t| {
        let mut t = t.borrow_mut();
        if !t.contains(&demo) {
            t.push(demo);
        }
    });
}

/// ```` ```x-ray <demo> ````: the demo's card asking the x-ray's questions
/// first (see `predict`), its runs asking for the kernel's events; the
/// verdict answers them from the run's x-ray.
#[component]
pub fn XRayBlock(demo: DemoId, prediction: &'static Prediction) -> impl IntoView {
    // Only while the block is on the page: the same demo's card in another
    // lesson times untraced runs (the capture costs time, see the README).
    ask_trace(demo);
    on_cleanup(move || TRACED.with(|t| t.borrow_mut().retain(|d| *d != demo)));
    view! {
        <div class="xray-block" data-demo=demo.as_str()>
            <DemoWidget demo prediction=Some(prediction) xray=true />
        </div>
    }
}

/// The card; empty until the run's x-ray event arrives.
#[component]
pub fn XRayCard(events: RwSignal<Vec<RunEvent>>) -> impl IntoView {
    move || {
        events.with(|v| XRay::of_run(v).cloned()).map(|x| {
            let rows = x
                .rows
                .into_iter()
                .map(|r| {
                    let mark = match r.same {
                        Some(true) => "same",
                        Some(false) => "differs",
                        None => "",
                    };
                    view! {
                        <tr data-xray=r.key.as_str() data-same=mark title=r.how>
                            <th scope="row">{r.label}</th>
                            <td class="inside">{r.inside.unwrap_or_else(|| "–".into())}</td>
                            <td class="host">{r.host.unwrap_or_else(|| "–".into())}</td>
                        </tr>
                    }
                })
                .collect_view();
            let n = x.calls.len();
            let calls = x
                .calls
                .into_iter()
                .map(|c| {
                    view! {
                        <li>
                            <span class="at">{fmt_ms(c.at_us as f64)}</span>" "
                            <code>{c.name}</code>" "{c.detail}
                            {c.took_us.map(|t| format!(" ({t} µs)"))}
                            {c.by.map(|b| format!(" [{b}]"))}
                        </li>
                    }
                })
                .collect_view();
            let counts = x
                .counts
                .into_iter()
                .map(|c| view! { <li data-xray=c.key.as_str() title=c.how>{c.label}": "<strong>{c.value}</strong></li> })
                .collect_view();
            let missing = x
                .missing
                .into_iter()
                .map(|m| view! { <li data-xray=m.key.as_str()>{m.label}": "{m.reason}</li> })
                .collect_view();
            view! {
                <section class="xray" aria-label="X-ray of this run">
                    <h4>"X-ray: inside, and as the host sees it"</h4>
                    <p class="how">"Read by the server from the host side while the instance was held at ready; hover a row for how."</p>
                    <table class="xray-table">
                        <thead><tr><th class="what"></th><th scope="col">"Inside"</th><th scope="col">"As the host sees it"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                    {(n > 0).then(|| view! {
                        <details class="calls">
                            <summary>{format!("{} ({n}), on the run's clock", x.calls_title)}</summary>
                            <p class="how">{x.calls_how}</p>
                            <ol>{calls}</ol>
                        </details>
                    })}
                    <ul class="counts">{counts}</ul>
                    <ul class="missing">{missing}</ul>
                </section>
            }
        })
    }
}
