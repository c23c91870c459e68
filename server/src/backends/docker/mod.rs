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
//! | `hello.rs` | `hello-container`: a hand-written program in a `FROM scratch` image |
//! | `reaper.rs` | ownership labels (replica + heartbeat, or PID), removing a gone owner's containers |
//! | `xray.rs` | the x-ray: the container as it sees itself and as the host sees it, and the calls that built it |

mod drive;
pub mod hello;
pub mod image;
pub mod measure;
mod readiness;
pub mod reaper;
mod spec;
pub mod xray;

use std::collections::HashMap;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use stacklab_api::{ErrorCode, Phase, RunError};

use crate::backends::{Ready, RunContext, Runtime};
use image::ImageKind;
pub use reaper::{Owner, Replica};
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

    /// Creates the demo network unless it exists. The engine allows two
    /// networks of one name (and then refuses to use the name), so
    /// creation is serialised in this process, and duplicates another
    /// process made at the same moment are removed: the oldest one stays.
    async fn create_network(&self) -> Result<(), bollard::errors::Error> {
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = CREATING.lock().await;
        if self.docker.inspect_network(NETWORK, None).await.is_err() {
            let request = NetworkCreateRequest {
                name: NETWORK.to_owned(),
                driver: Some("bridge".into()),
                internal: Some(true),
                labels: Some(HashMap::from([("stacklab.network".into(), "demo".into())])),
                ..Default::default()
            };
            self.docker.create_network(request).await?;
        }
        let mut same_name: Vec<_> = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&HashMap::from([("name", vec![NETWORK])]))
                    .build(),
            ))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(NETWORK))
            .collect();
        same_name.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        for extra in same_name.iter().skip(1) {
            if let Some(id) = &extra.id {
                tracing::warn!(network = %id, "removing a duplicate {NETWORK} network");
                let _ = self.docker.remove_network(id).await;
            }
        }
        Ok(())
    }

    fn labels(&self, run_id: &str) -> HashMap<String, String> {
        let mut labels = self.owner.labels();
        labels.insert("stacklab.run".into(), run_id.to_owned());
        labels
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
        let image = image::find(&self.docker)
            .await
            .map_err(image::ImageError::run_error)?;
        let how = match image.kind {
            ImageKind::Official => "the official image, already present",
            ImageKind::OfflineBuilt => {
                "stacklab's image built offline from Debian's postgresql-15, already present"
            }
        };
        self.ensure_network().await.map_err(docker_error)?;
        if ctx.is_cancelled() {
            return Err(ctx.stopped().await);
        }
        let run_id = ctx.run_id().to_owned();
        let xray = xray::begin(ctx);
        ctx.phase(
            Phase::ImageReady,
            format!(
                "{}: {how}; the create request follows at once",
                image.reference
            ),
        );
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
        let drive = self.drive(ctx, &created.id, &image, xray);
        drive_then_remove(&self.docker, ctx, &created.id, drive).await
    }
}

/// A container just started: its output (and input, if attached), its
/// exit, the moment its start call returned, and what the engine says of
/// it now.
struct Started {
    output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    exited: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::models::ContainerWaitResponse, bollard::errors::Error>,
                > + Send,
        >,
    >,
    started_us: u64,
    info: bollard::models::ContainerInspectResponse,
}

impl Started {
    /// The container's main process, as a host PID (0 if the engine did
    /// not say).
    fn pid(&self) -> u32 {
        self.info.state.as_ref().and_then(|s| s.pid).unwrap_or(0) as u32
    }
}

/// Attaches to container `id` (before starting it, so not a byte of
/// output is missed; with `stdin`, its standard input too), starts it, and
/// notes the moment the engine said it started: where the platform's share
/// ends.
async fn attach_and_start(
    docker: &Docker,
    ctx: &RunContext,
    id: &str,
    stdin: bool,
) -> Result<Started, RunError> {
    let attach = docker
        .attach_container(
            id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(stdin)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(!stdin)
                    .build(),
            ),
        )
        .await
        .map_err(docker_error)?;
    let exited = Box::pin(docker.wait_container(id, None));
    docker
        .start_container(id, None)
        .await
        .map_err(docker_error)?;
    let started_us = ctx.elapsed_us();
    let info = docker
        .inspect_container(id, None)
        .await
        .map_err(docker_error)?;
    Ok(Started {
        output: attach.output,
        input: attach.input,
        exited,
        started_us,
        info,
    })
}

/// Adds the engine's facts to a result: its version, storage driver and
/// cgroup version (or why they could not be read).
async fn engine_facts(docker: &Docker, ready: &mut Ready) {
    let text = match docker.info().await {
        Ok(info) => format!(
            "Docker {}, storage driver {}, cgroup v{}",
            info.server_version.unwrap_or_else(|| "?".into()),
            info.driver.unwrap_or_else(|| "?".into()),
            info.cgroup_version.map_or("?".into(), |v| v.to_string()),
        ),
        Err(e) => format!("unknown: the engine's info could not be read ({e})"),
    };
    ready.fact(
        stacklab_api::FactKey::Engine,
        "Container engine",
        text,
        "the Docker engine's GET /info",
    );
}

/// Records that container `id` was created, drives it with `drive` (until
/// ready, or until the run must stop), and removes it whatever happened.
async fn drive_then_remove(
    docker: &Docker,
    ctx: &RunContext,
    id: &str,
    drive: impl std::future::Future<Output = Result<Ready, RunError>>,
) -> Result<Ready, RunError> {
    ctx.phase(
        Phase::ContainerCreated,
        format!(
            "the engine created container {} (file system prepared, nothing running yet)",
            &id[..12.min(id.len())]
        ),
    );
    let result = tokio::select! {
        r = drive => r,
        e = ctx.stopped() => Err(e),
    };
    remove(docker, id).await;
    result
}

/// Removes a demo container (killing it if it runs) and its volumes.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, "could not remove the demo container: {e}");
    }
}

fn docker_error(e: bollard::errors::Error) -> RunError {
    RunError {
        code: ErrorCode::Docker,
        message: format!("the Docker engine refused a step: {e}"),
    }
}
