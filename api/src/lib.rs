//! The wire types of stacklab's HTTP API.
//!
//! Both the axum server and the Leptos frontend depend on this crate, so a
//! field renamed here is renamed on both sides of the wire at once. Keep it
//! small and free of heavy dependencies: it is compiled into the WASM bundle.

#![forbid(unsafe_code)]

mod class;
mod codes;
pub mod figures;
mod guess;
mod keys;
mod phases;
mod wire_enum;
mod xray;

pub use class::{
    valid_class_code, Capacity, Class, ClassView, CreateClass, DemoFigures, FigureText, JoinClass,
    LearningKept, LearningReport, LessonRef, Member, MemberLearning, QuizAnswer, RemovedMember,
    RoomChange, RoomGuess, RoomLesson, RoomNow, RoomPoint, RoomPoints, CLASS_CODE_ALPHABET,
    CLASS_CODE_LEN, DEFAULT_CLASS_SECS, DEFAULT_MAX_MEMBERS, MAX_CLASS_SECS, MAX_MAX_MEMBERS,
};
pub use codes::ErrorCode;
pub use figures::{Clock, Definition, Figure, Question};
pub use guess::{orders_off, Guess, Off, Quantity, Scale};
pub use keys::{DensityMetric, FactKey, Key, Metric};
pub use phases::Phase;
pub use xray::{XRay, XRayCall, XRayCount, XRayKey, XRayMissing, XRayOf, XRayRow};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The built-in live demos. A learner can only ever pick one of these; the
/// server maps each to a fixed, vetted specification (no image names or
/// commands travel over the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum DemoId {
    /// A PostgreSQL 15 container started through the Docker engine.
    PostgresContainer,
    /// A tiny guest kernel booted by stacklab's own KVM-based VMM.
    MicroVm,
    /// Density: 1, 2, … 5 PostgreSQL containers started at once.
    DensityContainer,
    /// Density: 1, 2, … 5 micro-VMs started at once.
    DensityMicroVm,
    /// Debian's Linux kernel booted by stacklab's VMM, to its userspace.
    LinuxVm,
    /// PostgreSQL 15 inside a Linux guest booted by stacklab's VMM.
    PostgresVm,
    /// The smallest program in a container: it prints a line and waits.
    /// The micro-VM's counterpart: platform against platform.
    HelloContainer,
}

impl DemoId {
    /// Every demo, in the order lessons introduce them.
    pub const ALL: [DemoId; 7] = [
        DemoId::HelloContainer,
        DemoId::PostgresContainer,
        DemoId::MicroVm,
        DemoId::DensityContainer,
        DemoId::DensityMicroVm,
        DemoId::LinuxVm,
        DemoId::PostgresVm,
    ];

    /// The largest N a density demo starts at once.
    pub const DENSITY_MAX: u32 = 5;

    /// The identifier used in lessons (```` ```demo <id> ````) and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DemoId::PostgresContainer => "postgres-container",
            DemoId::MicroVm => "micro-vm",
            DemoId::DensityContainer => "density-container",
            DemoId::DensityMicroVm => "density-micro-vm",
            DemoId::LinuxVm => "linux-vm",
            DemoId::PostgresVm => "postgres-vm",
            DemoId::HelloContainer => "hello-container",
        }
    }

    /// A short human title for cards and buttons.
    pub fn title(self) -> &'static str {
        match self {
            DemoId::PostgresContainer => "PostgreSQL 15 in a container",
            DemoId::MicroVm => "A tiny guest in a micro-VM",
            DemoId::DensityContainer => "Density: 1 to 5 containers at once",
            DemoId::DensityMicroVm => "Density: 1 to 5 micro-VMs at once",
            DemoId::LinuxVm => "A Linux kernel in a VM",
            DemoId::PostgresVm => "PostgreSQL 15 in a Linux VM",
            DemoId::HelloContainer => "The smallest program in a container",
        }
    }

    /// What the demo does, in a sentence for the card that runs it.
    pub fn description(self) -> &'static str {
        match self {
            DemoId::HelloContainer => {
                "A real container on this server running a program of under 200 bytes that prints one line and waits: what it costs is the platform's own cost."
            }
            DemoId::PostgresContainer => {
                "A real PostgreSQL 15 container on this server, started through the Docker engine. Ready means its first SELECT 1 succeeded."
            }
            DemoId::MicroVm => {
                "Boots a tiny guest kernel in a real KVM virtual machine on this server and times every boot step."
            }
            DemoId::DensityContainer => {
                "1, then 2, 3, 4 and 5 PostgreSQL containers started at the same moment: how long until all answered, and the memory they hold together."
            }
            DemoId::LinuxVm => {
                "Debian's own Linux kernel in a KVM virtual machine, timed until the guest's first program runs."
            }
            DemoId::PostgresVm => {
                "Debian's Linux kernel in a KVM virtual machine, then PostgreSQL 15 initialised and started inside it: the guide's VM, measured like the container."
            }
            DemoId::DensityMicroVm => {
                "1, then 2, 3, 4 and 5 micro-VMs started at the same moment: how long until all were ready, and the memory their VMM processes hold together."
            }
        }
    }

    /// Whether this demo runs containers (single or a density sweep).
    pub fn is_container(self) -> bool {
        matches!(
            self.density_of().unwrap_or(self),
            DemoId::PostgresContainer | DemoId::HelloContainer
        )
    }

    /// The phase where the platform's share ends and the workload's
    /// begins: the container's process is running, or the VM's vCPU is
    /// about to run the guest's first instruction.
    pub fn platform_phase(self) -> Phase {
        if self.is_container() {
            Phase::ContainerStarted
        } else {
            Phase::VcpuCreated
        }
    }

    /// The phase that means "ready" for this demo's workload.
    pub fn ready_phase(self) -> Phase {
        match self {
            DemoId::PostgresVm => Phase::PostgresReady,
            _ => Phase::Ready,
        }
    }

    /// The demo it is compared with, like with like: the smallest container
    /// with the tiny micro-VM (platform against platform), PostgreSQL in a
    /// container with PostgreSQL in a VM (the same workload).
    pub fn counterpart(self) -> Option<DemoId> {
        match self {
            DemoId::HelloContainer => Some(DemoId::MicroVm),
            DemoId::MicroVm => Some(DemoId::HelloContainer),
            DemoId::PostgresContainer => Some(DemoId::PostgresVm),
            DemoId::PostgresVm => Some(DemoId::PostgresContainer),
            _ => None,
        }
    }

    /// Whether this demo boots a Linux guest (which needs hardware KVM).
    pub fn is_linux_guest(self) -> bool {
        matches!(self, DemoId::LinuxVm | DemoId::PostgresVm)
    }

    /// For a density demo, the single-instance demo it multiplies.
    pub fn density_of(self) -> Option<DemoId> {
        match self {
            DemoId::DensityContainer => Some(DemoId::PostgresContainer),
            DemoId::DensityMicroVm => Some(DemoId::MicroVm),
            _ => None,
        }
    }

    /// How many times a density sweep repeats each of its steps: several
    /// where a step costs milliseconds (micro-VMs), so each N is reported
    /// as the median, least and most of its samples; once where a step
    /// costs seconds (PostgreSQL containers), so each N is one sample and
    /// is shown as one. 1 for a demo that is not a sweep. The figure table,
    /// the sweep and the charts all read it here.
    pub fn samples_per_step(self) -> u32 {
        match self {
            DemoId::DensityMicroVm => 5,
            _ => 1,
        }
    }

    /// The keys of this demo's headline time and memory measurements (kept
    /// in the history), from the figure table ([`figures::headline`]): for
    /// a single instance start → ready and the memory it held; for a
    /// density sweep the whole sweep and the largest step's memory.
    pub fn headline_keys(self) -> (Key, Key) {
        (
            figures::headline(self, Question::Time).key,
            figures::headline(self, Question::Memory).key,
        )
    }

    /// The key of the memory figure of one instance (what a density sweep
    /// adds up): for every demo the memory it held, counted the same way
    /// (see [`Metric::MemoryHeld`]).
    pub fn memory_key(self) -> Metric {
        Metric::MemoryHeld
    }
}

impl fmt::Display for DemoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a string names no built-in demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDemo(pub String);

impl fmt::Display for UnknownDemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = DemoId::ALL.iter().map(|d| d.as_str()).collect();
        write!(
            f,
            "unknown demo {:?}; the built-in demos are: {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownDemo {}

impl FromStr for DemoId {
    type Err = UnknownDemo;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DemoId::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDemo(s.to_owned()))
    }
}

/// The JSON body of every API error (4xx and 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `not_found`.
    pub error: ErrorCode,
    /// A sentence for a person: what was wrong and, where possible, what to do.
    pub message: String,
}

/// `GET /api/health`: what this server can run, as measured at request time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// The stacklab version (the server crate's version).
    pub version: String,
    /// The host's kernel release, as `uname -r` prints it (what a
    /// container's x-ray reports as its own kernel).
    #[serde(default)]
    pub kernel_release: String,
    /// The Docker engine, as seen through its API socket.
    pub docker: DockerStatus,
    /// The PostgreSQL 15 image the container demo would run.
    pub postgres_image: ImageStatus,
    /// `/dev/kvm` and what kind of virtualisation backs it.
    pub kvm: KvmStatus,
    /// Whether the Linux-guest demos (`linux-vm`, `postgres-vm`) can run.
    pub linux_guests: LinuxGuestStatus,
    /// The run queues: slots, in use, waiting, recent median.
    #[serde(default)]
    pub capacity: Vec<Capacity>,
    /// Connection limits and the connections open now.
    #[serde(default)]
    pub connections: ConnectionsStatus,
}

/// The server's connection limits (`--header-read-timeout-secs`,
/// `--idle-timeout-secs`, `--max-connections-per-address`,
/// `--max-connections`) and its connections now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionsStatus {
    /// Seconds a client has to send a request's headers.
    pub header_read_timeout_s: f64,
    /// Seconds a connection may pass without a byte either way.
    pub idle_timeout_s: f64,
    /// Connections one client address (IPv6: its /64) may hold open.
    pub per_address_cap: u32,
    /// Connections open at once in all (below the descriptor limit).
    pub total_cap: u32,
    /// The process's file-descriptor limit (`RLIMIT_NOFILE`).
    pub fd_limit: u64,
    /// Connections open now.
    pub open: u32,
    /// Client addresses with a connection open now.
    pub addresses: u32,
    /// The most connections one address holds open now.
    pub busiest_address: u32,
    /// Connections closed at once since start, for a cap.
    pub refused_total: u64,
    /// Connections closed for being idle since start.
    pub idle_closed_total: u64,
}

/// Whether a Linux kernel can boot in this server's VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinuxGuestStatus {
    /// KVM is hardware-backed and the kernel and archives are installed.
    Available,
    /// They cannot run here; `code` is the error a run request would get.
    Unavailable {
        /// e.g. `linux_guest_unsupported`, `linux_guest_missing`.
        code: ErrorCode,
        /// Why, for a learner.
        reason: String,
    },
}

/// Whether the Docker engine answers, and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DockerStatus {
    /// The engine answered `GET /version`.
    Reachable {
        /// Engine version, e.g. `20.10.24+dfsg1`.
        version: String,
        /// Storage driver, e.g. `overlay2`.
        storage_driver: String,
        /// `1` or `2`.
        cgroup_version: String,
    },
    /// The engine could not be reached; `reason` says why and how to fix it.
    Unreachable { reason: String },
}

/// Which PostgreSQL 15 image is present in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ImageStatus {
    /// The official image from a registry.
    Official { reference: String, size_bytes: u64 },
    /// stacklab's own image, built offline from Debian's `postgresql-15`.
    OfflineBuilt { reference: String, size_bytes: u64 },
    /// Neither is present (or the engine is unreachable, so nobody knows).
    Missing { reason: String },
}

/// What `/dev/kvm` offers on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KvmStatus {
    /// `/dev/kvm` opened and answered `KVM_GET_API_VERSION`.
    Available {
        /// The KVM API version (12 on every Linux since 2.6.22).
        api_version: i32,
        /// How guest code is executed.
        backing: KvmBacking,
        /// One sentence for a learner explaining `backing`.
        explanation: String,
    },
    /// `/dev/kvm` is missing or could not be opened.
    Unavailable { reason: String },
}

/// How KVM runs guest code on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KvmBacking {
    /// The CPU's own virtualisation extensions (Intel VT-x or AMD-V).
    HardwareAssisted,
    /// This host is itself a VM and KVM is provided by a nested,
    /// paravirtual module (`kvm_pvm`): guest kernel code is emulated.
    NestedPvm,
    /// `/dev/kvm` works but neither of the above could be confirmed.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ids_round_trip_through_json_and_strings() {
        for demo in DemoId::ALL {
            let json = serde_json::to_string(&demo).unwrap();
            assert_eq!(json, format!("\"{}\"", demo.as_str()));
            assert_eq!(serde_json::from_str::<DemoId>(&json).unwrap(), demo);
            assert_eq!(demo.as_str().parse::<DemoId>().unwrap(), demo);
        }
    }

    #[test]
    fn unknown_demo_lists_the_known_ones() {
        let err = "bash".parse::<DemoId>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"bash\""), "{text}");
        assert!(text.contains("postgres-container") && text.contains("micro-vm"));
    }

    #[test]
    fn health_status_enums_are_tagged() {
        let s = serde_json::to_value(DockerStatus::Unreachable { reason: "x".into() }).unwrap();
        assert_eq!(s["state"], "unreachable");
        let k = serde_json::to_value(KvmBacking::NestedPvm).unwrap();
        assert_eq!(k, "nested_pvm");
    }
}

// ---------------------------------------------------------------------------
// Runs: one click on a demo's "run" button. Container and VM runs share these
// types, so the browser draws both timelines with the same code.
// ---------------------------------------------------------------------------

/// `POST /api/runs` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// Which built-in demo to run.
    pub demo: DemoId,
    /// The browser's own random identifier (see [`valid_learner`]), so that
    /// "my runs" lists this learner's runs. Optional; never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_-]{8,64}$"))]
    pub learner: Option<String>,
    /// The class the learner joined (its code), so the run counts for the
    /// room. Needs `learner`, a member of that class; a class that has
    /// expired is ignored (the run is the learner's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[2-9A-HJKMNP-Za-hjkmnp-z]{6}$")
    )]
    pub class: Option<String>,
    /// The learner's guesses, locked as the run starts (in a class, the
    /// instructor sees them beside the room's results; never on the room's
    /// stream). One per quantity at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 2))]
    pub guesses: Vec<Guess>,
    /// Capture the kernel's own events for the run's x-ray (the system
    /// calls that built a container, KVM's events for a VM). Off unless
    /// asked: switching the tracepoints on and off costs more than 5 % of
    /// the platform's share (measured; see README), so only the x-ray
    /// cards ask. The rest of the x-ray is read for every single run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace: bool,
}

/// What [`valid_learner`] asks, as an error message says it.
pub const LEARNER_RULE: &str = "learner must be 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_'";

/// Whether `s` is an acceptable learner identifier: 8 to 64 characters of
/// `A-Z a-z 0-9 - _` (a UUID fits).
pub fn valid_learner(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One line of the run history (`GET /api/runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSummary {
    /// Position in the history; pass it as `before` to page on.
    pub seq: i64,
    /// The run's id.
    pub id: String,
    /// Which demo ran.
    pub demo: DemoId,
    /// Where it is (runs cut short by a server crash read `failed`).
    pub state: RunState,
    /// When the server accepted it (Unix time, ms, the server's wall clock).
    pub accepted_at_ms: i64,
    /// When it finished, if it has.
    pub finished_at_ms: Option<i64>,
    /// Its headline time (µs): start → ready, or for a density sweep the
    /// whole sweep (see [`DemoId::headline_keys`]). Runs recorded before
    /// the queue had its own figure hold request → ready here.
    pub time_to_ready_us: Option<f64>,
    /// The platform's share of that time (µs), for a single instance.
    #[serde(default)]
    pub platform_us: Option<f64>,
    /// How long it waited in line before its work started (µs); absent for
    /// runs recorded before it was kept.
    #[serde(default)]
    pub queue_wait_us: Option<f64>,
    /// Its headline memory figure (bytes; see [`DemoId::headline_keys`]).
    pub memory_bytes: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<RunError>,
}

/// `GET /api/runs?limit=…&before=…`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunPage {
    /// Up to `limit` runs, newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// `202 Accepted` body of `POST /api/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunCreated {
    /// The run's id, for `/api/runs/{id}` and `/api/runs/{id}/events`.
    pub id: String,
}

/// One entry of a run's timeline, as sent over Server-Sent Events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunEvent {
    /// 0, 1, 2… in the order the server recorded them.
    pub seq: u32,
    /// Microseconds since the server accepted the request (a monotonic clock).
    pub at_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a [`RunEvent`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Waiting for a free slot; `position` 1 is next. `estimate_ms`: the
    /// expected wait, from recent runs' slot times (absent before any).
    Queued {
        position: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimate_ms: Option<u64>,
    },
    /// A step of the start-up reached.
    Phase {
        /// Which step, e.g. `container_created`.
        phase: Phase,
        /// Short human name, e.g. "Container created" ([`Phase::label`]).
        label: String,
        /// What exactly was observed, in a sentence.
        detail: String,
        /// Memory in use at that moment (what it counts is in `memory_how`).
        memory_bytes: Option<u64>,
        /// How `memory_bytes` was measured.
        memory_how: Option<String>,
    },
    /// A line of console output (container log or guest serial console).
    Log { line: String },
    /// What the workload sees beside what the host sees, read while the
    /// instance was held at ready (single-instance demos only).
    #[serde(rename = "x_ray")]
    XRay { xray: XRay },
    /// The run ended; no more events follow.
    Finished { outcome: Outcome },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The demo reached "ready" and was measured.
    Ready {
        /// Numbers, each saying what it measures and how.
        measurements: Vec<Measurement>,
        /// Observations that are not numbers (kernel release, PIDs, image,
        /// the host and the load it ran under).
        facts: Vec<Fact>,
        /// Readings that were tried and failed: absent, with why (never 0).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing: Vec<Missing>,
    },
    /// The demo failed; `error` says why in words for a learner.
    Failed { error: RunError },
}

/// A measured number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Measurement {
    /// What it is, e.g. `memory_pss`.
    pub key: Key,
    /// Short human name.
    pub label: String,
    /// The value, in `unit`.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// What it measures and how, in a sentence.
    pub how: String,
}

/// A reading that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Missing {
    /// Which figure it would have been.
    pub key: Key,
    /// Its human name.
    pub label: String,
    /// Why it is absent, e.g. "could not read /proc/123/smaps_rollup: process gone".
    pub reason: String,
}

/// Units of a [`Measurement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Microseconds.
    Micros,
    /// A plain count.
    Count,
}

/// A non-numeric observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fact {
    /// What it is, e.g. `kernel_inside`.
    pub key: FactKey,
    /// Short human name.
    pub label: String,
    /// What was observed.
    pub value: String,
    /// How it was observed.
    pub how: String,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunError {
    /// Why, as a stable code: `deadline`, `oom_killed`, `cancelled`…
    pub code: ErrorCode,
    /// A sentence for a learner.
    pub message: String,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a free slot.
    Queued,
    /// Started, not finished.
    Running,
    /// Reached ready.
    Succeeded,
    /// Ended with an error.
    Failed,
}

/// `GET /api/runs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    /// The run's id.
    pub id: String,
    /// Which demo ran.
    pub demo: DemoId,
    /// Where it is now.
    pub state: RunState,
    /// When the server accepted it (Unix time, ms, the server's wall
    /// clock); absent in records stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<i64>,
    /// Every event so far, in order.
    pub events: Vec<RunEvent>,
}

impl Outcome {
    /// The value of the measurement with this key, if the run was ready.
    pub fn value(&self, key: impl Into<Key>) -> Option<f64> {
        let key = key.into();
        match self {
            Outcome::Ready { measurements, .. } => {
                measurements.iter().find(|m| m.key == key).map(|m| m.value)
            }
            Outcome::Failed { .. } => None,
        }
    }

    /// The state a run with this outcome is in.
    pub fn state(&self) -> RunState {
        match self {
            Outcome::Ready { .. } => RunState::Succeeded,
            Outcome::Failed { .. } => RunState::Failed,
        }
    }
}

/// When phase `which` was first reached among `events`, in µs on the
/// run's clock.
pub fn phase_at(events: &[RunEvent], which: Phase) -> Option<u64> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::Phase { phase, .. } if *phase == which => Some(e.at_us),
        _ => None,
    })
}

impl RunRecord {
    /// When phase `which` was reached (see [`phase_at`]).
    pub fn phase_at(&self, which: Phase) -> Option<u64> {
        phase_at(&self.events, which)
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::Finished { outcome } => Some(outcome),
            _ => None,
        })
    }
}
