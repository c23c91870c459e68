//! Command-line interface. Every flag also reads an environment variable, so
//! a service manager can configure stacklab without a wrapper script.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// stacklab: learn how a container differs from a virtual machine by running both.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve the lessons and the live-demo API.
    Serve(ServeArgs),
    /// Benchmarks: measured ratios against a baseline, printed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage the PostgreSQL 15 image the container demo runs.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The Linux guests' kernel and initramfs archives.
    #[command(subcommand)]
    Linux(LinuxCommand),
    /// Write the lessons as a static site: one HTML page per lesson (its
    /// text, headings and diagrams, readable without JavaScript) plus the
    /// app, which takes the page over when it loads.
    Export(ExportArgs),
}

/// Options of `stacklab export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The folder to write (created; files of the same name are replaced).
    /// Serve it at the root of its host.
    #[arg(long)]
    pub out: PathBuf,
    /// The lab the exported pages' demos run on (`https://lab.example.org`;
    /// it must allow the site's origin with `--embed-origin`). Without it,
    /// the pages talk to the host that serves them.
    #[arg(long, value_parser = |s: &str| parse_origin("--lab", s))]
    pub lab: Option<String>,
    /// The built frontend, as for `serve`.
    #[arg(long, env = "STACKLAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
}

/// `url` as an origin (`scheme://host[:port]`, lower case), or why it is
/// not one, naming `flag`.
pub fn parse_origin(flag: &str, url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "http" | "https"))
        .ok_or_else(|| format!("{flag} must start with http:// or https://, not {url:?}"))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{flag} is an origin (scheme://host[:port]), with no path: {url:?}"
        ));
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// The frontend folder: `flag` if given, else the first `frontend/dist`
/// holding an `index.html` in the current directory or above the
/// executable (`target/<profile>/stacklab` → repository root).
pub fn resolve_static_dir(flag: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.to_path_buf());
    }
    let mut candidates = vec![PathBuf::from("frontend/dist")];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join("frontend/dist")));
    }
    candidates
        .into_iter()
        .find(|c| c.join("index.html").is_file())
}

/// `stacklab linux …`.
#[derive(Debug, Subcommand)]
pub enum LinuxCommand {
    /// Fetch Debian's cloud kernel and busybox-static (`apt-get download`,
    /// once) and write the guests' initramfs archives into
    /// `<data dir>/linux/`.
    Build {
        /// Where to keep them.
        #[arg(long, env = "STACKLAB_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// The static (musl) stacklab-vmm the nested harness carries.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-musl/release/stacklab-vmm"
        )]
        vmm: PathBuf,
        /// Write the archives again even if they are newer than their inputs.
        #[arg(long)]
        force: bool,
    },
    /// Boot a Linux guest with stacklab-vmm inside QEMU's full emulation
    /// (`-cpu max`, no KVM), where KVM can load: the way to see the Linux
    /// path work on a host whose own KVM cannot boot Linux. Prints each
    /// step; the times are emulated, not performance figures.
    Nested {
        /// `linux-vm` or `postgres-vm`.
        #[arg(long, default_value = "linux-vm")]
        guest: String,
        /// Where `stacklab linux build` put the archives.
        #[arg(long, env = "STACKLAB_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

/// `stacklab bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Cold starts of the container demo against `docker run` + `pg_isready`.
    Container {
        /// Runs of each kind.
        #[arg(short, long, default_value_t = 10, value_parser = at_least_one())]
        n: usize,
    },
    /// A workshop arriving at once: N learners join a class and each starts
    /// the container and micro-VM demos at the same moment, against the
    /// same server's runs alone; then a client flooding the API; then
    /// leaks. Starts its own `stacklab serve` on a free port.
    Room {
        /// Learners in the room.
        #[arg(long, default_value_t = 50, value_parser = at_least_one())]
        learners: usize,
        /// Container slots of the server under test (its default, sized
        /// from this host, when not given).
        #[arg(long, value_parser = at_least_one())]
        container_slots: Option<usize>,
        /// A lab already running (`http://127.0.0.1:8080`, or a load
        /// balancer in front of replicas) instead of a server of its own;
        /// its instructor token must be `bench-instructor`. The report then
        /// counts runs per replica.
        #[arg(long, value_parser = |s: &str| parse_origin("--url", s), conflicts_with = "container_slots")]
        url: Option<String>,
    },
    /// Mixed runs (micro-VMs, containers, density sweeps) with client
    /// disconnects, a dockerd restart and a server kill -9 in the middle;
    /// then whether any accepted run was lost and what was left behind.
    /// Starts its own `stacklab serve` on a Docker engine of its own (its
    /// own dockerd, socket and data root): the host's engine is untouched.
    Soak {
        /// Runs in all.
        #[arg(long, default_value_t = 500, value_parser = at_least_one())]
        runs: usize,
    },
    /// The micro-VM: in-process vs a process per VM, throughput, and QEMU.
    Vm {
        /// Runs of each kind.
        #[arg(short, long, default_value_t = 20, value_parser = at_least_one())]
        n: usize,
    },
}

/// `stacklab image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make sure a PostgreSQL 15 image is present: pull the official
    /// `postgres:15` where a registry answers, else build
    /// `stacklab/postgres:15-offline` from Debian's packages.
    Build {
        /// Skip the registry and build offline right away.
        #[arg(long)]
        offline: bool,
        /// Build again even if an image is present.
        #[arg(long)]
        force: bool,
        /// Where to assemble the root file system.
        #[arg(long, env = "STACKLAB_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Say which image the container demo would run.
    Status,
}

/// Options of `stacklab serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback unless a reverse proxy
    /// with its own access control stands in front.
    #[arg(long, env = "STACKLAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where stacklab keeps its state (run history).
    #[arg(long, env = "STACKLAB_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The built frontend (Trunk's dist folder). By default
    /// `frontend/dist` under the current directory, or next to the binary's
    /// repository checkout.
    #[arg(long, env = "STACKLAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Container demo runs at once; more wait in a queue. By default one
    /// per CPU (and per 512 MiB of available memory), so that runs sharing
    /// the host do not inflate each other's measured times (see `stacklab
    /// bench room`).
    #[arg(long, env = "STACKLAB_MAX_CONTAINER_RUNS", value_parser = at_least_one())]
    pub max_container_runs: Option<usize>,
    /// Micro-VM demo runs at once; more wait in a queue. By default one
    /// per CPU.
    #[arg(long, env = "STACKLAB_MAX_VM_RUNS", value_parser = at_least_one())]
    pub max_vm_runs: Option<usize>,
    /// Days a finished run stays in the history (checked at start and every
    /// hour); 0 keeps runs of any age.
    #[arg(
        long,
        alias = "keep-history-days",
        env = "STACKLAB_HISTORY_KEEP_DAYS",
        default_value_t = 90
    )]
    pub history_keep_days: u64,
    /// Finished runs the history keeps at most, newest first (checked at
    /// start and every hour); 0 keeps any number.
    #[arg(long, env = "STACKLAB_HISTORY_MAX_RUNS", default_value_t = 100_000)]
    pub history_max_runs: u64,
    /// Seconds a run may wait in a queue before it gives up with
    /// `queue_timeout`.
    #[arg(long, env = "STACKLAB_QUEUE_TIMEOUT_SECS", default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_timeout_secs: u64,
    /// The lab's public origin (`https://lab.example.org`) when it is
    /// reached by a name: the API answers only loopback names, IP literals
    /// and this host (against DNS rebinding), and pages of this origin.
    #[arg(long, env = "STACKLAB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A docs site allowed to embed this lab's demos
    /// (`https://docs.example.org`; repeat the flag for more): its pages
    /// may frame `/embed/{demo}` and call the API (CORS). None by default:
    /// only the lab's own pages.
    #[arg(
        long = "embed-origin",
        env = "STACKLAB_EMBED_ORIGINS",
        value_delimiter = ','
    )]
    pub embed_origins: Vec<String>,
    /// Send the bare app shell for the app's pages instead of their
    /// pre-rendered text (the way stacklab served them before; for
    /// measuring what pre-rendering buys).
    #[arg(long)]
    pub no_prerender: bool,
    /// The instructor's token for workshop mode (creating classes, the
    /// room's view with names). A random one is made and printed at start
    /// when this is not set.
    #[arg(long, env = "STACKLAB_INSTRUCTOR_TOKEN", hide_env_values = true)]
    pub instructor_token: Option<String>,
    /// The PostgreSQL database replicas share (`postgres://user@host/db`;
    /// the password may be in the URL or in `PGPASSWORD`-style config of
    /// the URL). Without it the history is SQLite in the data dir, and
    /// only one `stacklab serve` may use that.
    #[arg(long, env = "STACKLAB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections the history's pool opens at most (SQLite or
    /// PostgreSQL); a call waits at most 5 s for a free one, then answers
    /// 503 `request_timeout`.
    #[arg(long, env = "STACKLAB_DB_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub db_connections: u64,
    /// Milliseconds one statement on the history may run before it is
    /// stopped (SQLite: interrupted; PostgreSQL: `statement_timeout`) and
    /// its request answers 503 `request_timeout`.
    #[arg(long, env = "STACKLAB_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub db_statement_timeout_ms: u64,
    /// This replica's name in the shared store: what its runs and
    /// heartbeats are recorded under. By default `<hostname>:<port>`.
    #[arg(long, env = "STACKLAB_REPLICA")]
    pub replica: Option<String>,
    /// Where the other replicas reach this one (`http://10.0.0.5:8080`),
    /// for handing over runs this host cannot serve. By default the
    /// address it listens on.
    #[arg(long, env = "STACKLAB_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Seconds between a replica's heartbeats (with --database-url).
    #[arg(long, env = "STACKLAB_HEARTBEAT_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which the other replicas close
    /// a replica's unfinished runs as `host_lost`.
    #[arg(long, env = "STACKLAB_HOST_LOST_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub host_lost_secs: u64,
    /// Seconds a demo run may take once it leaves the queue.
    #[arg(long, env = "STACKLAB_RUN_DEADLINE_SECS", default_value_t = 60)]
    pub run_deadline_secs: u64,
    /// A reverse proxy or load balancer (`10.0.0.5`, `10.0.0.0/8`,
    /// `fd00::/8`; repeat the flag for more) whose `X-Forwarded-For` (or
    /// `Forwarded`) names the client. Only requests whose TCP peer is one
    /// of these have the header read, and the client is the rightmost
    /// address in it that is not one of these. Without it, limits count
    /// the TCP peer: behind a proxy, everyone as one client.
    #[arg(
        long = "trusted-proxy",
        env = "STACKLAB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Seconds a client has to send a request's headers before its
    /// connection is closed.
    #[arg(long, env = "STACKLAB_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may pass without a byte sent or received
    /// before it is closed (event streams send one every 15 s).
    #[arg(long, env = "STACKLAB_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(16..))]
    pub idle_timeout_secs: u64,
    /// Connections one client address (IPv6: its /64) may hold open;
    /// more are closed at once. Trusted proxies are exempt. The default
    /// fits a workshop of 100 behind one NAT.
    #[arg(long, env = "STACKLAB_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = crate::http::conn::PER_ADDRESS, value_parser = at_least_one())]
    pub max_connections_per_address: usize,
    /// Connections open at once in all. By default (and at most) the
    /// process's file-descriptor limit less a reserve for its own work
    /// (a quarter of it, at least 256).
    #[arg(long, env = "STACKLAB_MAX_CONNECTIONS", value_parser = at_least_one())]
    pub max_connections: Option<usize>,
}

impl ServeArgs {
    /// The frontend folder to serve (see [`resolve_static_dir`]).
    pub fn resolve_static_dir(&self) -> Option<PathBuf> {
        resolve_static_dir(self.static_dir.as_deref())
    }
}

/// A run count: a whole number, 1 or more.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
