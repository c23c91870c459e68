//! Cards for the live-demo directives. In this version they say clearly
//! that the live run is not wired up yet; the container and micro-VM labs
//! replace them with real runs.

use leptos::prelude::*;

use crate::lessons::DemoId;

/// ```` ```demo <id> ````.
#[component]
pub fn DemoPlaceholder(demo: DemoId) -> impl IntoView {
    let what = match demo {
        DemoId::PostgresContainer => {
            "Starts a real PostgreSQL 15 container on this server through the Docker engine and reports each phase (created, started, ready) with its time and memory."
        }
        DemoId::MicroVm => {
            "Boots a tiny guest kernel in a real KVM virtual machine on this server and reports each boot step with its time and memory."
        }
    };
    view! {
        <section class="demo-card" data-demo=demo.as_str() aria-label=format!("Live demo: {}", demo.title())>
            <p class="badge">"Live demo"</p>
            <h3>{demo.title()}</h3>
            <p>{what}</p>
            <p class="unavailable" role="note">
                "Not available yet: this version of stacklab does not run live demos. The lesson text above stands on its own."
            </p>
        </section>
    }
}

/// ```` ```compare ````.
#[component]
pub fn ComparePlaceholder() -> impl IntoView {
    view! {
        <section class="demo-card" data-demo="compare" aria-label="Live demo: measured side by side">
            <p class="badge">"Live demo"</p>
            <h3>"Container and VM, measured side by side"</h3>
            <p>
                "Will show the time to ready and the memory of your own container and micro-VM runs next to each other."
            </p>
            <p class="unavailable" role="note">
                "Not available yet: this version of stacklab does not run live demos."
            </p>
        </section>
    }
}
