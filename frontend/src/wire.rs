//! The server's run events and records, read through flat mirrors of their
//! JSON. The API's own types are an internally tagged enum flattened into
//! its envelope (`{"seq", "at_us", "type": "phase", ...}`), which serde can
//! only read by buffering every event into a generic tree first: that
//! deserialiser alone cost the bundle about 20 KB of code. These mirrors
//! read the same JSON in one pass (unknown fields are ignored, as before)
//! and turn it into the API's types, so the rest of the app is unchanged.
//!
//! Imports only `stacklab_api` and serde; `live`, `history` and `compare`
//! call it.

use serde::Deserialize;
use stacklab_api::{
    DemoId, EventKind, Fact, Measurement, Missing, Outcome, Phase, RunError, RunEvent, RunRecord,
    RunState, XRay,
};

/// `RunEvent`, flat: `kind` names which of the optional fields are there.
#[derive(Deserialize)]
struct WireEvent {
    seq: u32,
    at_us: u64,
    #[serde(rename = "type")]
    kind: WireKind,
    position: Option<u32>,
    estimate_ms: Option<u64>,
    phase: Option<Phase>,
    label: Option<String>,
    detail: Option<String>,
    memory_bytes: Option<u64>,
    memory_how: Option<String>,
    line: Option<String>,
    outcome: Option<WireOutcome>,
    xray: Option<XRay>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    Queued,
    Phase,
    Log,
    Finished,
    #[serde(rename = "x_ray")]
    XRay,
}

/// `Outcome`, flat (`result` names the variant).
#[derive(Deserialize)]
struct WireOutcome {
    result: WireResult,
    #[serde(default)]
    measurements: Vec<Measurement>,
    #[serde(default)]
    facts: Vec<Fact>,
    #[serde(default)]
    missing: Vec<Missing>,
    error: Option<RunError>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum WireResult {
    Ready,
    Failed,
}

/// `RunRecord`, with its events flat.
#[derive(Deserialize)]
struct WireRecord {
    id: String,
    demo: DemoId,
    state: RunState,
    accepted_at_ms: Option<i64>,
    events: Vec<WireEvent>,
}

impl WireOutcome {
    fn into_api(self) -> Option<Outcome> {
        Some(match self.result {
            WireResult::Ready => Outcome::Ready {
                measurements: self.measurements,
                facts: self.facts,
                missing: self.missing,
            },
            WireResult::Failed => Outcome::Failed { error: self.error? },
        })
    }
}

impl WireEvent {
    /// The API's event; `None` when a field its kind needs is missing
    /// (the typed reader would have refused it too).
    fn into_api(self) -> Option<RunEvent> {
        let kind = match self.kind {
            WireKind::Queued => EventKind::Queued {
                position: self.position?,
                estimate_ms: self.estimate_ms,
            },
            WireKind::Phase => EventKind::Phase {
                phase: self.phase?,
                label: self.label?,
                detail: self.detail?,
                memory_bytes: self.memory_bytes,
                memory_how: self.memory_how,
            },
            WireKind::Log => EventKind::Log { line: self.line? },
            WireKind::Finished => EventKind::Finished {
                outcome: self.outcome?.into_api()?,
            },
            WireKind::XRay => EventKind::XRay { xray: self.xray? },
        };
        Some(RunEvent {
            seq: self.seq,
            at_us: self.at_us,
            kind,
        })
    }
}

/// One event of `/api/runs/{id}/events` (an SSE `data:` line).
pub fn event(json: &str) -> Option<RunEvent> {
    serde_json::from_str::<WireEvent>(json).ok()?.into_api()
}

/// `GET /api/runs/{id}`.
pub fn record(json: &str) -> Result<RunRecord, String> {
    let r: WireRecord = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let events = r
        .events
        .into_iter()
        .map(WireEvent::into_api)
        .collect::<Option<Vec<_>>>()
        .ok_or("an event lacks a field its type needs")?;
    Ok(RunRecord {
        id: r.id,
        demo: r.demo,
        state: r.state,
        accepted_at_ms: r.accepted_at_ms,
        events,
    })
}
