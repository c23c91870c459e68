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
        "The headline time of succeeded runs, by demo: start (left the queue) → ready, a density sweep the whole sweep (GET /api/figures names each); the wait in line is stacklab_queue_wait_seconds.",
        &stats.ready,
    );
    family(
        &mut out,
        "stacklab_event_streams_open",
        "gauge",
        "Server-Sent Event streams open now.",
    );
    let _ = writeln!(out, "stacklab_event_streams_open {}", state.streams.open());
    connections(&mut out, &state.connections.status());
    out
}

fn connections(out: &mut String, c: &stacklab_api::ConnectionsStatus) {
    for (name, kind, help, value) in [
        (
            "stacklab_connections_open",
            "gauge",
            "TCP connections open now.",
            f64::from(c.open),
        ),
        (
            "stacklab_connections_addresses",
            "gauge",
            "Client addresses (IPv6: /64s) with a connection open now.",
            f64::from(c.addresses),
        ),
        (
            "stacklab_connections_busiest_address",
            "gauge",
            "The most connections one address holds open now.",
            f64::from(c.busiest_address),
        ),
        (
            "stacklab_connections_per_address_cap",
            "gauge",
            "Connections one address may hold open.",
            f64::from(c.per_address_cap),
        ),
        (
            "stacklab_connections_cap",
            "gauge",
            "Connections open at once in all, below the descriptor limit.",
            f64::from(c.total_cap),
        ),
        (
            "stacklab_fd_limit",
            "gauge",
            "The process's file-descriptor limit (RLIMIT_NOFILE).",
            c.fd_limit as f64,
        ),
        (
            "stacklab_header_read_timeout_seconds",
            "gauge",
            "Time a client has to send a request's headers.",
            c.header_read_timeout_s,
        ),
        (
            "stacklab_idle_timeout_seconds",
            "gauge",
            "Time a connection may pass without a byte either way.",
            c.idle_timeout_s,
        ),
        (
            "stacklab_connections_refused_total",
            "counter",
            "Connections closed at once for a cap.",
            c.refused_total as f64,
        ),
        (
            "stacklab_connections_idle_closed_total",
            "counter",
            "Connections closed for being idle.",
            c.idle_closed_total as f64,
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
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
