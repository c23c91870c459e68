//! The stacklab server: the lessons' static files and the live-demo API.
//!
//! [`app`] builds the whole HTTP surface from an [`AppState`], so tests drive
//! it with `tower::ServiceExt::oneshot` exactly as a browser would.

pub mod cli;
pub mod error;
pub mod health;
mod static_files;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::routing::get;
use axum::Router;
use bollard::Docker;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::cli::ServeArgs;
use crate::error::AppError;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The Docker engine client (`None` if it could not even be configured).
    pub docker: Option<Docker>,
    /// The built frontend, if one was found.
    pub static_dir: Option<PathBuf>,
}

impl AppState {
    /// Connects to the local Docker engine (honouring `DOCKER_HOST`). The
    /// connection is lazy: an engine that is down shows up in `/api/health`,
    /// not here.
    pub fn new(static_dir: Option<PathBuf>) -> Self {
        let docker = Docker::connect_with_local_defaults()
            .inspect_err(|e| tracing::warn!("Docker client not configured: {e}"))
            .ok();
        AppState { docker, static_dir }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed);
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

/// `stacklab serve`: bind, serve until SIGINT/SIGTERM, then drain.
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
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!("stacklab listening on http://{}", listener.local_addr()?);
    run(listener, AppState::new(static_dir), shutdown_signal()).await
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
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
