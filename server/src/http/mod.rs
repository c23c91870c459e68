//! The HTTP surface: routes, handlers, extractors, the one error type, the
//! static frontend and `/api/health`; who a client is ([`client`]) and the
//! accept loop that holds connections to their limits ([`conn`]).
//!
//! [`app`] builds the whole application from an [`AppState`], so tests drive
//! it with `tower::ServiceExt::oneshot` exactly as a browser would.
//!
//! May import `engine`, `store`, `backends` (for what health reports) and
//! `cli` (the serve flags); nothing imports `http` but `main`.

mod auth;
mod classes;
pub mod client;
pub mod conn;
mod demos;
mod embed;
mod error;
mod extract;
mod guard;
mod health;
mod limits;
mod metrics;
mod openapi;
mod replicas;
mod room;
mod runs;
mod static_files;
#[cfg(test)]
mod store_tests;
mod streams;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, OriginalUri};
use axum::http::Method;
use axum::routing::get;
use axum::Router;
use bollard::Docker;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

pub use error::AppError;

use crate::backends::docker::reaper;
use crate::cli::ServeArgs;
use crate::engine::{Labs, Runs, Settings, Slots};
use crate::site::Shell;
use crate::store::{History, Retention};

/// Largest request body the API reads (a run request is ~30 bytes).
const MAX_BODY_BYTES: usize = 4096;

/// Longest an API request may take to get its response. An event stream's
/// response starts at once, so its (long) body is not bounded by this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers 503 `request_timeout` when a handler takes longer than
/// [`REQUEST_TIMEOUT`].
async fn deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::Unavailable {
            code: stacklab_api::ErrorCode::RequestTimeout,
            message: format!(
                "the server did not answer within {} s; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        }
        .into_response(),
    }
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The built frontend, if one was found.
    pub static_dir: Option<PathBuf>,
    /// Its `index.html`, ready to take pages (absent without a frontend).
    pub shell: Option<Arc<Shell>>,
    /// Whether the app's pages go out with their static form inside.
    pub prerender: bool,
    /// Every run this server knows.
    pub runs: Arc<Runs>,
    /// Which runtime serves each demo here, and its queue.
    pub labs: Arc<Labs>,
    /// The instructor's token (workshop mode).
    pub instructor_token: Arc<str>,
    /// The pace of run requests per client.
    pub run_limit: Arc<limits::RateLimit>,
    /// The pace of class joins per client address.
    pub join_limit: Arc<limits::JoinLimit>,
    /// Event streams open now (runs' and rooms'), capped.
    pub streams: Arc<streams::Streams>,
    /// The names and origins the API answers.
    pub allowed: Arc<guard::Allowed>,
    /// What other replicas sharing the store say (with PostgreSQL).
    pub notices: Option<tokio::sync::broadcast::Sender<crate::store::Notice>>,
    /// Silence after which a replica counts as lost (`--host-lost-secs`).
    pub host_lost_after: Duration,
    /// The proxies whose `X-Forwarded-For` names the client
    /// (`--trusted-proxy`); see [`client`].
    pub trusted_proxies: client::TrustedProxies,
    /// The connections open now and their limits (see [`conn`]).
    pub connections: Arc<conn::Connections>,
    /// The health check's cached engine probes.
    pub probes: Arc<health::Probes>,
    /// The pace of density sweeps per client outside a class.
    pub density_limit: Arc<limits::RateLimit>,
    /// What rooms' streams say besides run changes (see `classes`).
    pub room_news: tokio::sync::broadcast::Sender<classes::RoomNews>,
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

    /// This state with `token` as the instructor's token (a random one
    /// otherwise).
    pub fn with_instructor_token(mut self, token: &str) -> Self {
        self.instructor_token = token.into();
        self
    }

    /// This state with run requests limited to `burst` at once, then one
    /// per `every` per client.
    pub fn with_run_limit(mut self, burst: f64, every: Duration) -> Self {
        self.run_limit = Arc::new(limits::RateLimit::new(burst, every));
        self
    }

    /// This state with at most `per_client` event streams per client and
    /// `total` in all.
    pub fn with_stream_caps(mut self, per_client: usize, total: usize) -> Self {
        self.streams = Arc::new(streams::Streams::new(per_client, total));
        self
    }

    /// This state answering, besides loopback names and IP literals, to
    /// `public_url`'s host and pages of its origin, and to pages of the
    /// `embed_origins` (with CORS; they may frame `/embed/…`).
    pub fn with_origins(
        mut self,
        public_url: Option<&str>,
        embed_origins: &[String],
    ) -> anyhow::Result<Self> {
        self.allowed =
            Arc::new(guard::Allowed::new(public_url, embed_origins).map_err(anyhow::Error::msg)?);
        Ok(self)
    }

    /// This state answering also to the host of `url` (a replica's
    /// advertised address, which the others send as `Host`).
    pub fn answering_to(mut self, url: &str) -> anyhow::Result<Self> {
        let allowed = (*self.allowed).clone().with_host_of(url);
        self.allowed = Arc::new(allowed.map_err(anyhow::Error::msg)?);
        Ok(self)
    }

    /// This state reading the client's address from `X-Forwarded-For` /
    /// `Forwarded` of requests whose peer is in `proxies`.
    pub fn with_trusted_proxies(mut self, proxies: client::TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// This state holding connections to `limits` (call before serving).
    pub fn with_connection_limits(mut self, limits: conn::ConnLimits) -> Self {
        self.connections = Arc::new(conn::Connections::new(limits));
        self
    }

    /// This state with density sweeps outside a class limited to `burst`
    /// at once, then one per `every` per client.
    pub fn with_density_limit(mut self, burst: f64, every: Duration) -> Self {
        self.density_limit = Arc::new(limits::RateLimit::new(burst, every));
        self
    }

    /// This state sending the bare app shell for the app's pages.
    pub fn without_prerender(mut self) -> Self {
        self.prerender = false;
        self
    }

    /// This state with its run history kept in `history` (call before any
    /// run starts).
    pub fn with_history(mut self, history: History) -> Self {
        self.runs = Arc::new(Runs::new(history));
        self
    }

    /// This state with runs cancelled `grace` after their last watcher
    /// left (call before any run starts).
    pub fn with_watch_grace(mut self, grace: Duration) -> Self {
        self.runs = Arc::new(Runs::new(self.runs.history().clone()).with_watch_grace(grace));
        self
    }

    /// As [`AppState::new`] with a given Docker client.
    pub fn with_docker(
        docker: Option<Docker>,
        static_dir: Option<PathBuf>,
        settings: Settings,
    ) -> Self {
        let shell = static_dir.as_deref().and_then(|dir| {
            Shell::load(dir)
                .inspect_err(|e| tracing::warn!("pages go out without their text: {e}"))
                .ok()
                .map(Arc::new)
        });
        AppState {
            static_dir,
            shell,
            prerender: true,
            runs: Arc::new(Runs::default()),
            labs: Arc::new(Labs::new(docker, &settings)),
            instructor_token: auth::new_token().into(),
            run_limit: Arc::new(limits::RateLimit::default()),
            join_limit: Arc::default(),
            streams: Arc::default(),
            allowed: Arc::default(),
            notices: None,
            host_lost_after: Duration::from_secs(10),
            trusted_proxies: client::TrustedProxies::default(),
            connections: Arc::default(),
            probes: Arc::default(),
            density_limit: Arc::new(limits::RateLimit::density()),
            room_news: tokio::sync::broadcast::channel(256).0,
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = openapi::api_routes()
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ));
    Router::new()
        .nest("/api", api)
        // The same guard as the API: a foreign page (or a rebound name)
        // reads nothing of this lab.
        .route(
            "/metrics",
            get(metrics::metrics).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                guard::guard,
            )),
        )
        .route("/class", get(room::page))
        .route("/class/{code}", get(room::page))
        .route("/join/{code}", get(room::page))
        .route("/room/room.js", get(room::script))
        .route("/room/room.css", get(room::style))
        .route("/embed.js", get(embed::script))
        .route("/embed/frame.js", get(embed::frame_script))
        .route("/embed/{demo}", get(embed::page))
        .fallback(static_files::serve)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            replicas::name,
        ))
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
    let mut slots = Slots::for_host();
    if let Some(n) = args.max_container_runs {
        slots.container = n;
        slots.container_sized_by = "set with --max-container-runs".into();
    }
    if let Some(n) = args.max_vm_runs {
        slots.vm = n;
        slots.vm_sized_by = "set with --max-vm-runs".into();
    }
    tracing::info!(
        "slots: {} container run(s) at once ({}), {} micro-VM run(s) ({})",
        slots.container,
        slots.container_sized_by,
        slots.vm,
        slots.vm_sized_by
    );
    let mut settings = Settings {
        slots,
        run_deadline: Duration::from_secs(args.run_deadline_secs),
        queue_timeout: Duration::from_secs(args.queue_timeout_secs),
        data_dir: args.data_dir.clone(),
        replica: None,
    };
    // SQLite: this server alone on its data dir. PostgreSQL: one replica
    // of several, named in the store.
    let mut _data_dir_lock = None;
    let limits = crate::store::Limits {
        size: args.db_connections as usize,
        statement: Duration::from_millis(args.db_statement_timeout_ms),
        ..crate::store::Limits::default()
    };
    let history = match &args.database_url {
        None => {
            _data_dir_lock = Some(crate::store::lock_data_dir(&args.data_dir)?);
            History::open_with(&args.data_dir, limits).await?
        }
        Some(url) => {
            let replica = args
                .replica
                .clone()
                .unwrap_or_else(|| format!("{}:{}", hostname(), args.addr.port()));
            History::connect_with(url, &replica, limits).await?
        }
    };
    tracing::info!(
        "run history in {} (replica {}; up to {} connections, statements bounded at {:?})",
        history.path(),
        history.host(),
        limits.size,
        limits.statement
    );
    // Listening now queues connections until serving begins; a replica
    // needs its address to register before its labs exist.
    let listener =
        conn::listen(args.addr).with_context(|| format!("cannot listen on {}", args.addr))?;
    let local = listener.local_addr()?;
    // Where the other replicas reach this one: as told, else this address
    // (a wildcard one by this host's name).
    let advertise = args.advertise_url.clone().unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            format!("http://{}:{}", hostname(), local.port())
        } else {
            format!("http://{local}")
        }
    });
    if args.database_url.is_some() {
        // Registered before any container of it can exist: its containers
        // are labelled with this start, and the store vouches for it.
        let me = replicas::register(&history, &advertise).await?;
        tracing::info!(
            "replica {} of store {} registered (started {})",
            me.name,
            me.store,
            me.started_at_ms
        );
        settings.replica = Some(me);
    }
    let keep = Retention {
        ms: (args.history_keep_days > 0).then(|| args.history_keep_days as i64 * 24 * 3600 * 1000),
        max_runs: (args.history_max_runs > 0).then_some(args.history_max_runs),
    };
    {
        let history = history.clone();
        tokio::spawn(async move {
            loop {
                match history.prune(keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("{n} run(s) past the kept history removed"),
                    Err(e) => tracing::warn!("could not prune the history: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    }
    let token = match &args.instructor_token {
        Some(t) => t.clone(),
        None => auth::new_token(),
    };
    let mut state = AppState::new(static_dir, settings.clone())
        .with_history(history)
        .with_instructor_token(&token)
        .with_origins(args.public_url.as_deref(), &args.embed_origins)?;
    if settings.replica.is_some() {
        // Other replicas hand runs over with this name as `Host`.
        state = state.answering_to(&advertise)?;
    }
    if args.no_prerender {
        state = state.without_prerender();
    }
    let trusted =
        client::TrustedProxies::parse(&args.trusted_proxies).map_err(anyhow::Error::msg)?;
    if !args.trusted_proxies.is_empty() {
        tracing::info!(
            "client addresses read from X-Forwarded-For of requests from {}",
            args.trusted_proxies.join(", ")
        );
    }
    let limits = conn::ConnLimits::new(
        Duration::from_secs(args.header_read_timeout_secs),
        Duration::from_secs(args.idle_timeout_secs),
        args.max_connections_per_address,
        args.max_connections,
    );
    tracing::info!(
        "connections: {} per address, {} in all (descriptor limit {}), headers within {} s, idle {} s",
        limits.per_address,
        limits.total,
        limits.fd_limit,
        args.header_read_timeout_secs,
        args.idle_timeout_secs
    );
    state = state
        .with_trusted_proxies(trusted)
        .with_connection_limits(limits);
    state.host_lost_after = Duration::from_secs(args.host_lost_secs);
    if let Some(url) = &args.database_url {
        let notices = crate::store::listen(url);
        crate::engine::relay::follow_notices(state.runs.clone(), notices.subscribe());
        state.notices = Some(notices);
    }
    if !args.embed_origins.is_empty() {
        tracing::info!(
            "docs sites allowed to embed demos: {}",
            args.embed_origins.join(", ")
        );
    }
    // Kernel event captures a killed server left enabled cost every
    // system call on the host: switch them off.
    tokio::task::spawn_blocking(crate::backends::tracefs::remove_stale_instances);
    if std::env::var("STACKLAB_XRAY_TRACE").is_ok_and(|v| v == "off") {
        crate::backends::tracefs::set_enabled(false);
    }
    match &settings.replica {
        Some(me) => replicas::reap(&state, me, state.host_lost_after).await,
        None => {
            if let Some(docker) = state.labs.docker() {
                if let Err(e) = reaper::reap_orphans(docker, &reaper::Peers::lone()).await {
                    tracing::warn!("could not look for orphaned demo containers: {e}");
                }
            }
        }
    }
    tracing::info!("stacklab listening on http://{local}");
    if let Some(me) = settings.replica {
        replicas::start(
            state.clone(),
            me,
            advertise,
            Duration::from_secs(args.heartbeat_secs),
            state.host_lost_after,
        );
    }
    if args.instructor_token.is_none() {
        // The fragment never reaches a server log; the page keeps it for the tab.
        tracing::info!(
            "instructor page (keep this link to yourself): http://{local}/class#token={token}"
        );
    } else {
        tracing::info!("instructor page: http://{local}/class (token from --instructor-token)");
    }
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
    let connections = state.connections.clone();
    let trusted = state.trusted_proxies.clone();
    conn::serve(listener, app(state), connections, trusted, stop).await;
    Ok(())
}

/// This machine's name (for replica names and addresses).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "stacklab".into())
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
