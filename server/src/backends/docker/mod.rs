//! The container backend: PostgreSQL 15 started through the Docker engine
//! (bollard), every start-up phase timed, the memory measured from the
//! kernel.
//!
//! | file | what |
//! | --- | --- |
//! | `spec.rs` | the demo's limits and confinement (the create request) |
//! | `drive.rs` | created → ready: output, log-line phases, exit reasons |
//! | `readiness.rs` | the `SELECT 1` probe |
//! | `measure.rs` | memory from the cgroup and `/proc`, the result's figures |
//! | `image.rs` | the PostgreSQL 15 image: official, or built offline |
//! | `reaper.rs` | labels, and removing a crashed server's containers |

mod drive;
pub mod image;
pub mod measure;
mod readiness;
pub mod reaper;
mod spec;

use std::collections::HashMap;
use std::time::Instant;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use stacklab_api::{ErrorCode, RunError};

use crate::backends::{Ready, RunContext, Runtime};
use image::ImageKind;
pub use reaper::Owner;
pub use spec::{ContainerSpec, NETWORK};

/// Runs [`ContainerSpec`]s on a Docker engine.
pub struct DockerRuntime {
    docker: Docker,
    spec: ContainerSpec,
    owner: Owner,
    /// Set once the demo network is known to exist.
    network_ready: std::sync::atomic::AtomicBool,
}

impl DockerRuntime {
    /// A runtime for `spec`; containers carry `owner`'s labels.
    pub fn new(docker: Docker, spec: ContainerSpec, owner: Owner) -> Self {
        DockerRuntime {
            docker,
            spec,
            owner,
            network_ready: Default::default(),
        }
    }

    /// The engine's client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn ensure_network(&self) -> Result<(), bollard::errors::Error> {
        use std::sync::atomic::Ordering;
        if self.network_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.create_network().await?;
        self.network_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn create_network(&self) -> Result<(), bollard::errors::Error> {
        if self.docker.inspect_network(NETWORK, None).await.is_ok() {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: NETWORK.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(HashMap::from([("stacklab.network".into(), "demo".into())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Another run created it first.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn labels(&self, run_id: &str) -> HashMap<String, String> {
        let mut labels = self.owner.labels();
        labels.insert("stacklab.run".into(), run_id.to_owned());
        labels
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(id, Some(options)).await {
            tracing::warn!(container = %id, "could not remove the demo container: {e}");
        }
    }

    async fn exec_output(&self, id: &str, cmd: &[&str]) -> Result<String, bollard::errors::Error> {
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = output.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
        }
        Ok(text.trim().to_owned())
    }
}

impl Runtime for DockerRuntime {
    async fn run(&self, ctx: &RunContext) -> Result<Ready, RunError> {
        let image = image::find(&self.docker).await.map_err(|e| RunError {
            code: ErrorCode::ImageMissing,
            message: e.to_string(),
        })?;
        let how = match image.kind {
            ImageKind::Official => "the official image, already present",
            ImageKind::OfflineBuilt => {
                "stacklab's image built offline from Debian's postgresql-15, already present"
            }
        };
        ctx.phase(
            "image_ready",
            "Image ready",
            format!("{}: {how}", image.reference),
        );
        self.ensure_network().await.map_err(docker_error)?;
        if ctx.is_cancelled() {
            return Err(ctx.stopped().await);
        }
        let run_id = ctx.run_id().to_owned();
        let created_at = Instant::now();
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().build()),
                self.spec.container_body(&image, self.labels(&run_id)),
            )
            .await
            .map_err(|e| {
                // Perhaps the network was removed behind our back: check again next time.
                self.network_ready
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                docker_error(e)
            })?;
        ctx.phase(
            "container_created",
            "Container created",
            format!(
                "the engine created container {} (file system prepared, nothing running yet)",
                &created.id[..12]
            ),
        );
        let result = tokio::select! {
            r = self.drive(ctx, &created.id, &image, created_at) => r,
            e = ctx.stopped() => Err(e),
        };
        self.remove(&created.id).await;
        result
    }
}

fn docker_error(e: bollard::errors::Error) -> RunError {
    RunError {
        code: ErrorCode::Docker,
        message: format!("the Docker engine refused a step: {e}"),
    }
}
