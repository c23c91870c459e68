//! Replicas sharing a PostgreSQL store: this one's heartbeat (with what it
//! can run, as `/api/health` reports it, and where it is reached),
//! closing the runs of replicas that stopped heart-beating as `host_lost`,
//! handing a run request this host cannot serve to a replica that can,
//! and this replica's name on every response (`X-Stacklab-Replica`, for
//! load-balancer checks and the room benchmark's per-replica count).
//!
//! Why hand over on the server, not redirect the client (`307` +
//! `Location`): the replicas sit behind one load balancer and one origin;
//! a redirect would send the browser to a replica's own address (another
//! origin, often not reachable from outside at all). The replica that got
//! the request forwards it over the internal network to one whose last
//! heartbeat says it can run the demo, and answers with that replica's
//! answer. The run's events then reach the learner through any replica
//! (see `engine::relay`).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use stacklab_api::{DemoId, DockerStatus, Health, ImageStatus, KvmStatus, LinuxGuestStatus};

use super::AppState;
use crate::backends::docker::reaper::{self, Peers, Replica};
use crate::store::{now_ms, History, HistoryError};

/// The response header naming the replica that answered.
pub const REPLICA_HEADER: &str = "x-stacklab-replica";

/// Set on a handed-over request (the replica that handed it): it is not
/// handed on again.
pub const HANDED_BY: &str = "x-stacklab-handed-by";
/// On the answer to a handed-over request: the replica that took it.
pub const HANDED_TO: &str = "x-stacklab-handed-to";

/// Heart-beats every `every` as `me` (saying it is reached at `url`),
/// closes lost replicas' runs (those silent for `lost_after`) and removes
/// the demo containers of replicas that are gone, for as long as the server
/// runs. The first heartbeat is [`register`]'s, before serving.
pub fn start(state: AppState, me: Replica, url: String, every: Duration, lost_after: Duration) {
    tokio::spawn(async move {
        let history = state.runs.history().clone();
        let mut can = String::new();
        for beat in 0u64.. {
            // What this host can run changes rarely (an engine that comes
            // or goes): checked every tenth beat.
            if beat % 10 == 0 {
                can =
                    serde_json::to_string(&super::health::report(&state).await).unwrap_or_default();
            }
            let lost_ms = lost_after.as_millis() as i64;
            let started = me.started_at_ms;
            // Both on the heartbeat's own connection (see `History::heartbeat`).
            let done = match history.heartbeat(&can, started, Some(&url)).await {
                Ok(()) => history.close_lost(lost_ms).await,
                Err(e) => Err(e),
            };
            let mut sweep = beat % 10 == 5;
            match done {
                Ok(closed) if !closed.is_empty() => {
                    tracing::warn!(
                        "closed {} run(s) of replicas silent for {lost_after:?} as host_lost: {}",
                        closed.len(),
                        closed.join(", ")
                    );
                    // A lost replica on this engine left its containers.
                    sweep = true;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("heartbeat: {e}"),
            }
            if sweep {
                reap(&state, &me, lost_after).await;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// This replica's first heartbeat, before it serves (so no container of
/// it exists that its store row does not vouch for): who it is, with the
/// store's id and this start.
pub async fn register(history: &History, url: &str) -> Result<Replica, HistoryError> {
    let me = Replica {
        name: history.host().to_owned(),
        started_at_ms: now_ms(),
        store: history.store_id().await?,
    };
    history.heartbeat("", me.started_at_ms, Some(url)).await?;
    Ok(me)
}

/// What replica `me` knows of its peers now, from the store.
pub async fn peers(
    history: &History,
    me: &Replica,
    lost_after: Duration,
) -> Result<Peers, HistoryError> {
    let hosts = history
        .hosts()
        .await?
        .into_iter()
        .map(|h| (h.name, (h.started_at_ms, h.heartbeat_at_ms)))
        .collect();
    Ok(Peers {
        me: Some(me.clone()),
        hosts,
        now_ms: now_ms(),
        lost_after_ms: lost_after.as_millis() as i64,
        ..Peers::lone()
    })
}

/// Removes the demo containers of replicas that are gone (and those of
/// this replica's earlier runs) from this host's engine.
pub async fn reap(state: &AppState, me: &Replica, lost_after: Duration) {
    let Some(docker) = state.labs.docker() else {
        return;
    };
    let peers = match peers(state.runs.history(), me, lost_after).await {
        Ok(p) => p,
        Err(e) => return tracing::warn!("could not read the replicas' heartbeats: {e}"),
    };
    if let Err(e) = reaper::reap_orphans(docker, &peers).await {
        tracing::warn!("could not look for orphaned demo containers: {e}");
    }
}

/// Names this replica on every response.
pub async fn name(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(state.runs.history().host()) {
        response.headers_mut().insert(REPLICA_HEADER, value);
    }
    response
}

/// Whether a replica whose health is `health` can run `demo`.
pub fn can_run(health: &Health, demo: DemoId) -> bool {
    let docker = matches!(health.docker, DockerStatus::Reachable { .. });
    let kvm = matches!(health.kvm, KvmStatus::Available { .. });
    match demo.density_of().unwrap_or(demo) {
        DemoId::MicroVm => kvm,
        DemoId::LinuxVm | DemoId::PostgresVm => {
            matches!(health.linux_guests, LinuxGuestStatus::Available)
        }
        DemoId::HelloContainer => docker,
        _ => docker && !matches!(health.postgres_image, ImageStatus::Missing { .. }),
    }
}

/// A run request this replica cannot serve, handed to a live replica
/// that can: `(its name, its status, its body)`, or `None` when no replica
/// can (or none answers). The client's address goes along as
/// `X-Forwarded-For`, so a replica that trusts this one (`--trusted-proxy`)
/// counts the run against the client, not against this replica.
pub async fn hand_off(
    state: &AppState,
    demo: DemoId,
    body: &str,
    authorization: Option<&str>,
    client: Option<std::net::IpAddr>,
    lost_after: Duration,
) -> Option<(String, u16, String)> {
    let history = state.runs.history();
    let me = history.host().to_owned();
    let hosts = history.hosts().await.ok()?;
    let fresh_since = now_ms() - lost_after.as_millis() as i64;
    for host in hosts {
        let Some(url) = &host.url else { continue };
        if host.name == me || host.heartbeat_at_ms < fresh_since {
            continue;
        }
        let Ok(health) = serde_json::from_str::<Health>(&host.can_json) else {
            continue;
        };
        if !can_run(&health, demo) {
            continue;
        }
        match forward(url, &me, body, authorization, client).await {
            Ok((status, answer)) => return Some((host.name, status, answer)),
            Err(e) => tracing::warn!("could not hand a {demo} run to {}: {e}", host.name),
        }
    }
    None
}

/// `POST {url}/api/runs` with `body`, marked as handed over by `me`.
async fn forward(
    url: &str,
    me: &str,
    body: &str,
    authorization: Option<&str>,
    client: Option<std::net::IpAddr>,
) -> std::io::Result<(u16, String)> {
    let addr = url.strip_prefix("http://").unwrap_or(url);
    let stream = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await??;
    let client = client.map(|ip| ip.to_string());
    let mut headers = vec![(HANDED_BY, me)];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    headers.extend(client.as_deref().map(|ip| ("X-Forwarded-For", ip)));
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        crate::http1::exchange(stream, addr, "POST", "/api/runs", &headers, body),
    )
    .await??;
    Ok((answer.status, answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The handed-over request names the client, so the receiving
    /// replica (trusting this one) limits the client, not this replica.
    #[tokio::test]
    async fn a_handover_forwards_the_clients_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n{}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.0 202 Accepted\r\n\r\n{\"id\":\"x\"}")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let client = "203.0.113.7".parse().ok();
        let (status, body) = forward(&url, "one", "{}", None, client).await.unwrap();
        assert_eq!((status, body.as_str()), (202, r#"{"id":"x"}"#));
        let request = received.await.unwrap();
        assert!(
            request.contains("\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\n{HANDED_BY}: one\r\n")),
            "{request}"
        );
    }
}
