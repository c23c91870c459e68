//! `GET /api/health`: what this server can run, and its connections.
//!
//! The engine probes (Docker's `info` and image list, opening `/dev/kvm`)
//! cost a round trip to the Docker engine and a few system calls; asked on
//! every request they let anyone hammering `/api/health` hammer the Docker
//! engine too. So they are cached for [`PROBE_TTL`], and requests that
//! arrive while a probe runs wait for that one instead of starting more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use bollard::Docker;
use stacklab_api::{DockerStatus, ErrorCode, Health, ImageStatus, KvmStatus, LinuxGuestStatus};

use super::AppState;
use crate::backends::docker::image::{self, ImageKind, PresentImage};

/// How long the health check waits for the Docker engine.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(3);

const START_DOCKER_HINT: &str =
    "start it with `dockerd &` (as root) or run the README's setup command";

/// How long a probe's findings are served before the engines are asked
/// again.
pub const PROBE_TTL: Duration = Duration::from_secs(5);

/// What the engine probes found.
#[derive(Debug, Clone)]
struct Probed {
    docker: DockerStatus,
    postgres_image: ImageStatus,
    kvm: KvmStatus,
    linux_guests: LinuxGuestStatus,
}

/// The last probe's findings, and how many probes ran.
#[derive(Debug, Default)]
pub struct Probes {
    last: tokio::sync::Mutex<Option<(Instant, Probed)>>,
    count: AtomicU64,
}

impl Probes {
    /// Probes run since start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The handler.
#[utoipa::path(get, path = "/health", tag = "lab",
    responses((status = 200, description = "What this server can run, and why not", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(report(&state).await)
}

/// What this server can run now (also what a replica heart-beats).
pub(super) async fn report(state: &AppState) -> Health {
    let probed = {
        // Held across the probe: who comes meanwhile waits for its answer.
        let mut last = state.probes.last.lock().await;
        match &*last {
            Some((at, probed)) if at.elapsed() < PROBE_TTL => probed.clone(),
            _ => {
                state.probes.count.fetch_add(1, Ordering::Relaxed);
                let probed = probe(state).await;
                *last = Some((Instant::now(), probed.clone()));
                probed
            }
        }
    };
    Health {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel_release: crate::backends::host::kernel_release(),
        docker: probed.docker,
        postgres_image: probed.postgres_image,
        kvm: probed.kvm,
        linux_guests: probed.linux_guests,
        capacity: state.labs.capacity(),
        connections: state.connections.status(),
    }
}

/// Asks the Docker engine and `/dev/kvm` now.
async fn probe(state: &AppState) -> Probed {
    let (docker, postgres_image) = docker_status(state.labs.docker()).await;
    let probe = tokio::task::spawn_blocking(stacklab_vmm::host::probe).await;
    let (kvm, linux_guests) = match probe {
        Ok(probe) => (
            kvm_status(&probe),
            match state.labs.linux_guests(&probe) {
                Ok(()) => LinuxGuestStatus::Available,
                Err(u) => LinuxGuestStatus::Unavailable {
                    code: u.code,
                    reason: u.message,
                },
            },
        ),
        Err(e) => {
            let reason = format!("the KVM probe failed: {e}");
            (
                KvmStatus::Unavailable {
                    reason: reason.clone(),
                },
                LinuxGuestStatus::Unavailable {
                    code: ErrorCode::KvmUnavailable,
                    reason,
                },
            )
        }
    };
    Probed {
        docker,
        postgres_image,
        kvm,
        linux_guests,
    }
}

async fn docker_status(docker: Option<&Docker>) -> (DockerStatus, ImageStatus) {
    let Some(docker) = docker else {
        let reason = format!("no Docker client could be configured; {START_DOCKER_HINT}");
        return unreachable(reason);
    };
    let info = match tokio::time::timeout(DOCKER_TIMEOUT, docker.info()).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            return unreachable(format!(
                "the Docker engine did not answer ({e}); {START_DOCKER_HINT}"
            ))
        }
        Err(_) => {
            return unreachable(format!(
                "the Docker engine did not answer within {DOCKER_TIMEOUT:?}; {START_DOCKER_HINT}"
            ))
        }
    };
    let status = DockerStatus::Reachable {
        version: info.server_version.unwrap_or_default(),
        storage_driver: info.driver.unwrap_or_default(),
        cgroup_version: info
            .cgroup_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
    };
    (status, image_status(docker).await)
}

fn unreachable(reason: String) -> (DockerStatus, ImageStatus) {
    let image = ImageStatus::Missing {
        reason: "unknown: the Docker engine is unreachable".to_owned(),
    };
    (DockerStatus::Unreachable { reason }, image)
}

async fn image_status(docker: &Docker) -> ImageStatus {
    match image::find(docker).await {
        Ok(PresentImage {
            reference,
            kind: ImageKind::Official,
            size_bytes,
            ..
        }) => ImageStatus::Official {
            reference: reference.to_owned(),
            size_bytes,
        },
        Ok(PresentImage {
            reference,
            kind: ImageKind::OfflineBuilt,
            size_bytes,
            ..
        }) => ImageStatus::OfflineBuilt {
            reference: reference.to_owned(),
            size_bytes,
        },
        Err(e) => ImageStatus::Missing {
            reason: e.to_string(),
        },
    }
}

fn kvm_status(
    probe: &Result<stacklab_vmm::host::KvmHost, stacklab_vmm::host::ProbeError>,
) -> KvmStatus {
    match probe {
        Ok(host) => KvmStatus::Available {
            api_version: host.api_version,
            backing: host.backing,
            explanation: host.explanation().to_owned(),
        },
        Err(e) => KvmStatus::Unavailable {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Settings;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test(flavor = "multi_thread")]
    async fn many_health_requests_cost_one_probe() {
        let state = AppState::with_docker(None, None, Settings::default());
        let asks = (0..40).map(|_| {
            let app = super::super::app(state.clone());
            tokio::spawn(async move {
                let req = Request::get("/api/health").body(Body::empty()).unwrap();
                app.oneshot(req).await.unwrap().status()
            })
        });
        for ask in futures_util::future::join_all(asks).await {
            assert_eq!(ask.unwrap(), StatusCode::OK);
        }
        for _ in 0..10 {
            let req = Request::get("/api/health").body(Body::empty()).unwrap();
            let res = super::super::app(state.clone()).oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        assert_eq!(state.probes.count(), 1, "50 requests at once and after");
    }
}
