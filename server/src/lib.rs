//! The stacklab server: the lessons' static files and the live-demo API.
//!
//! [`app`] builds the whole HTTP surface from an [`AppState`], so tests drive
//! it with `tower::ServiceExt::oneshot` exactly as a browser would.

pub mod api;
pub mod bench;
pub mod cli;
pub mod container;
pub mod density;
pub mod error;
pub mod health;
pub mod history;
pub mod linux_guest;
pub mod microvm;
pub mod runs;
pub mod runtime;
mod static_files;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, OriginalUri};
use axum::http::Method;
use axum::routing::{get, post};
use axum::Router;
use bollard::Docker;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::cli::ServeArgs;
use crate::container::{ContainerSpec, DockerRuntime, Owner};
use crate::error::AppError;
use crate::microvm::{KvmRuntime, VmArtifacts};
use crate::runs::{Queue, Runs};
use stacklab_vmm::vm::VmConfig;

/// Largest request body the API reads (a run request is ~30 bytes).
const MAX_BODY_BYTES: usize = 4096;

/// Limits that shape how runs are scheduled.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Container runs at once.
    pub max_container_runs: usize,
    /// Micro-VM runs at once.
    pub max_vm_runs: usize,
    /// Time budget of one run after it leaves the queue.
    pub run_deadline: Duration,
    /// Where the Linux guests' archives are (`<data dir>/linux`).
    pub data_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_container_runs: 4,
            max_vm_runs: 2,
            run_deadline: Duration::from_secs(60),
            data_dir: PathBuf::from("data"),
        }
    }
}

/// The micro-VM lab's share of the state.
pub struct VmLab {
    /// Where the VMM and guest are, or why they are not.
    pub runtime: Result<Arc<KvmRuntime>, String>,
    /// The Linux guest (`linux-vm`), or why it cannot run.
    pub linux: Result<Arc<KvmRuntime>, String>,
    /// PostgreSQL in a Linux guest (`postgres-vm`), or why it cannot run.
    pub postgres: Result<Arc<KvmRuntime>, String>,
    /// Runs waiting for one of the slots.
    pub queue: Arc<Queue>,
    /// Per-run deadline (the server's; the VMM has its own, shorter one).
    pub deadline: Duration,
}

/// The container lab's share of the state.
pub struct ContainerLab {
    /// `None` when no Docker client could be configured.
    pub runtime: Option<Arc<DockerRuntime>>,
    /// Runs waiting for one of the slots.
    pub queue: Arc<Queue>,
    /// Per-run deadline.
    pub deadline: Duration,
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The Docker engine client (`None` if it could not even be configured).
    pub docker: Option<Docker>,
    /// The built frontend, if one was found.
    pub static_dir: Option<PathBuf>,
    /// Every run this server knows.
    pub runs: Arc<Runs>,
    /// The container demo.
    pub containers: Arc<ContainerLab>,
    /// The micro-VM demo.
    pub vms: Arc<VmLab>,
    /// Density sweeps run one at a time (each starts up to five instances).
    pub density_queue: Arc<Queue>,
}

impl AppState {
    /// Connects to the local Docker engine (honouring `DOCKER_HOST`). The
    /// connection is lazy: an engine that is down shows up in `/api/health`
    /// and as a 503 when a run is requested, not here.
    pub fn new(static_dir: Option<PathBuf>, settings: Settings) -> Self {
        let docker = Docker::connect_with_local_defaults()
            .inspect_err(|e| tracing::warn!("Docker client not configured: {e}"))
            .ok();
        Self::with_docker(docker, static_dir, settings)
    }

    /// This state with its run history kept in `history` (call before any
    /// run starts).
    pub fn with_history(mut self, history: history::History) -> Self {
        self.runs = Arc::new(Runs::new(history));
        self
    }

    /// As [`AppState::new`] with a given Docker client.
    pub fn with_docker(
        docker: Option<Docker>,
        static_dir: Option<PathBuf>,
        settings: Settings,
    ) -> Self {
        let owner = Owner::current();
        let vm_artifacts = VmArtifacts::locate();
        let runtime = docker
            .clone()
            .map(|d| Arc::new(DockerRuntime::new(d, ContainerSpec::postgres_demo(), owner)));
        AppState {
            docker,
            static_dir,
            runs: Arc::new(Runs::default()),
            containers: Arc::new(ContainerLab {
                runtime,
                queue: Arc::new(Queue::new(settings.max_container_runs)),
                deadline: settings.run_deadline,
            }),
            vms: Arc::new(VmLab {
                runtime: vm_artifacts
                    .clone()
                    .map(|a| Arc::new(KvmRuntime::new(a, VmConfig::default()))),
                linux: linux_runtime(&vm_artifacts, &settings.data_dir, false),
                postgres: linux_runtime(&vm_artifacts, &settings.data_dir, true),
                queue: Arc::new(Queue::new(settings.max_vm_runs)),
                deadline: settings.run_deadline,
            }),
            density_queue: Arc::new(Queue::new(1)),
        }
    }
}

/// A runtime for a Linux guest, if its VMM, kernel and initramfs are there.
fn linux_runtime(
    vm: &Result<VmArtifacts, String>,
    data_dir: &std::path::Path,
    postgres: bool,
) -> Result<Arc<KvmRuntime>, String> {
    let vm = vm.clone()?;
    let files = linux_guest::LinuxArtifacts::in_data_dir(data_dir);
    let (name, mem_mib) = if postgres {
        (linux_guest::POSTGRES_VM, linux_guest::POSTGRES_VM_MEM_MIB)
    } else {
        (linux_guest::LINUX_VM, linux_guest::LINUX_VM_MEM_MIB)
    };
    files.check(name)?;
    Ok(Arc::new(KvmRuntime::linux(
        vm,
        microvm::LinuxGuest {
            kernel: files.kernel(),
            initrd: files.initrd(name),
            mem_mib,
            postgres,
        },
    )))
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/runs", post(api::create_run).get(api::list_runs))
        .route("/runs/export", get(api::export_runs))
        .route("/runs/{id}", get(api::get_run))
        .route("/runs/{id}/events", get(api::run_events))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .nest("/api", api)
        .fallback(static_files::serve)
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

// Inside `nest("/api", …)` the request URI has lost its `/api` prefix;
// `OriginalUri` still has the path the client sent.

async fn api_not_found(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::NotFound(format!(
        "no API route {method} {}; GET /api/health lists what this server can do",
        uri.path()
    ))
}

async fn api_method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// `stacklab serve`: reap orphans, bind, serve until SIGINT/SIGTERM, then
/// cancel the runs, remove their containers and drain.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let static_dir = args.resolve_static_dir();
    match &static_dir {
        Some(dir) => tracing::info!("serving the frontend from {}", dir.display()),
        None => tracing::warn!(
            "no built frontend found (frontend/dist/index.html); serving the API only. Build it with `trunk build --release` in frontend/"
        ),
    }
    let settings = Settings {
        max_container_runs: args.max_container_runs,
        max_vm_runs: args.max_vm_runs,
        run_deadline: Duration::from_secs(args.run_deadline_secs),
        data_dir: args.data_dir.clone(),
    };
    let history = history::History::open(&args.data_dir)?;
    tracing::info!("run history in {}", history.path());
    let state = AppState::new(static_dir, settings).with_history(history);
    if let Some(docker) = &state.docker {
        if let Err(e) = container::reaper::reap_orphans(docker).await {
            tracing::warn!("could not look for orphaned demo containers: {e}");
        }
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!("stacklab listening on http://{}", listener.local_addr()?);
    run(listener, state, shutdown_signal()).await
}

/// Serves `app(state)` on `listener` until `shutdown` completes; then
/// cancels every run, waits for their clean-up, and lets in-flight requests
/// finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runs = state.runs.clone();
    let stop = async move {
        shutdown.await;
        // Ends every event stream too, so the graceful drain can finish.
        runs.shut_down().await;
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(stop)
        .await
        .context("server error")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
