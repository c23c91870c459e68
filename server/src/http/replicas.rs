//! Replicas sharing a PostgreSQL store: this one's heartbeat (with what it
//! can run, as `/api/health` reports it), closing the runs of replicas
//! that stopped heart-beating as `host_lost`, and this replica's name on
//! every response (`X-Stacklab-Replica`, for load-balancer checks and the
//! room benchmark's per-replica count).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::backends::docker::reaper;
use crate::store::now_ms;

/// The response header naming the replica that answered.
pub const REPLICA_HEADER: &str = "x-stacklab-replica";

/// Heart-beats every `every` and closes lost replicas' runs (those silent
/// for `lost_after`), for as long as the server runs.
pub fn start(state: AppState, every: Duration, lost_after: Duration) {
    tokio::spawn(async move {
        let started = now_ms();
        let history = state.runs.history().clone();
        let mut can = String::new();
        for beat in 0u64.. {
            // What this host can run changes rarely (an engine that comes
            // or goes): checked every tenth beat.
            if beat % 10 == 0 {
                can =
                    serde_json::to_string(&super::health::report(&state).await).unwrap_or_default();
            }
            let (h, json) = (history.clone(), can.clone());
            let lost_ms = lost_after.as_millis() as i64;
            let done = tokio::task::spawn_blocking(move || {
                h.heartbeat(&json, started)?;
                h.close_lost(lost_ms)
            })
            .await;
            match done {
                Ok(Ok(closed)) if !closed.is_empty() => {
                    tracing::warn!(
                        "closed {} run(s) of replicas silent for {lost_after:?} as host_lost: {}",
                        closed.len(),
                        closed.join(", ")
                    );
                    // A lost replica on this host left its containers
                    // behind (their owner process is gone): remove them.
                    if let Some(docker) = state.labs.docker() {
                        if let Err(e) = reaper::reap_orphans(docker).await {
                            tracing::warn!("could not look for orphaned demo containers: {e}");
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("heartbeat: {e}"),
                Err(e) => tracing::warn!("heartbeat task failed: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Names this replica on every response.
pub async fn name(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(state.runs.history().host()) {
        response.headers_mut().insert(REPLICA_HEADER, value);
    }
    response
}
