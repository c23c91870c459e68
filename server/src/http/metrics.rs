//! `GET /metrics`: the Prometheus text format (version 0.0.4), written
//! here from the engine's counters (a few families; no registry needed).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::engine::{Histogram, BUCKETS};

/// The handler.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state),
    )
}

fn render(state: &AppState) -> String {
    let stats = state.runs.stats().snapshot();
    let mut out = String::new();
    family(
        &mut out,
        "stacklab_runs_started_total",
        "counter",
        "Runs accepted, by demo.",
    );
    for (demo, n) in &stats.started {
        let _ = writeln!(out, "stacklab_runs_started_total{{demo=\"{demo}\"}} {n}");
    }
    family(
        &mut out,
        "stacklab_runs_finished_total",
        "counter",
        "Runs finished, by demo and outcome (succeeded, or the error code).",
    );
    for ((demo, outcome), n) in &stats.finished {
        let _ = writeln!(
            out,
            "stacklab_runs_finished_total{{demo=\"{demo}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut out,
        "stacklab_runs_in_progress",
        "gauge",
        "Runs between leaving their queue and finishing.",
    );
    let _ = writeln!(out, "stacklab_runs_in_progress {}", state.runs.active());
    for (name, help, pick) in [
        (
            "stacklab_queue_slots",
            "Runs at once, per queue.",
            (|c: &stacklab_api::Capacity| c.slots) as fn(&stacklab_api::Capacity) -> u32,
        ),
        (
            "stacklab_queue_in_use",
            "Slots taken now, per queue.",
            |c| c.in_use,
        ),
        (
            "stacklab_queue_waiting",
            "Runs waiting now, per queue.",
            |c| c.queued,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for c in state.labs.capacity() {
            let queue = c.demos.first().map_or("", |d| d.as_str());
            let _ = writeln!(out, "{name}{{queue=\"{queue}\"}} {}", pick(&c));
        }
    }
    histograms(
        &mut out,
        "stacklab_queue_wait_seconds",
        "Time from a run's acceptance to leaving its queue, by demo.",
        &stats.queue_wait,
    );
    histograms(
        &mut out,
        "stacklab_time_to_ready_seconds",
        "Request → ready of succeeded runs (the demo's headline time), by demo.",
        &stats.ready,
    );
    family(
        &mut out,
        "stacklab_event_streams_open",
        "gauge",
        "Server-Sent Event streams open now.",
    );
    let _ = writeln!(out, "stacklab_event_streams_open {}", state.streams.open());
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    by_demo: &std::collections::BTreeMap<stacklab_api::DemoId, Histogram>,
) {
    family(out, name, "histogram", help);
    for (demo, h) in by_demo {
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{demo=\"{demo}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{demo=\"{demo}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{demo=\"{demo}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{demo=\"{demo}\"}} {}", h.count);
    }
}
