//! `GET /api/health`: what this server can run, checked at request time.

use std::time::Duration;

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

/// The handler.
#[utoipa::path(get, path = "/health", tag = "lab",
    responses((status = 200, description = "What this server can run, and why not", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(report(&state).await)
}

/// What this server can run now (also what a replica heart-beats).
pub(super) async fn report(state: &AppState) -> Health {
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
    Health {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        docker,
        postgres_image,
        kvm,
        linux_guests,
        capacity: state.labs.capacity(),
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
