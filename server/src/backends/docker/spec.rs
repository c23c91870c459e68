//! The demo container's specification and security policy: what it may
//! use and how it is confined. Fixed in code; a learner only picks the
//! demo, never an image, a command or a limit.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};

use super::image::PresentImage;

/// The internal bridge network demo containers join: no route out, nothing
/// published on the host; the server reaches containers by their IP.
pub const NETWORK: &str = "stacklab-demo";
/// Where the data directory lives (a tmpfs) and PGDATA below it.
const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// The socket directory, a small tmpfs.
const RUN_MOUNT: &str = "/var/run/postgresql";
/// Scratch space, a small tmpfs.
const TMP_MOUNT: &str = "/tmp";

const PGDATA: &str = "/var/lib/postgresql/data/pgdata";

/// The caps every demo container gets. 64 MiB gets PostgreSQL's initdb
/// OOM-killed; 256 MiB leaves room for its tmpfs data files (~40 MiB) and
/// the server.
pub(super) const DEMO_MEMORY_BYTES: u64 = 256 << 20;
/// See [`DEMO_MEMORY_BYTES`].
pub(super) const DEMO_PIDS: i64 = 64;
/// See [`DEMO_MEMORY_BYTES`]: one CPU.
pub(super) const DEMO_NANO_CPUS: i64 = 1_000_000_000;

/// The caps and confinement every demo container shares, in words.
pub(super) fn caps_text(memory_bytes: u64, pids_limit: i64, nano_cpus: i64) -> String {
    format!(
        "{} MiB memory (no swap), {pids_limit} processes, {} CPU; read-only root, no capabilities, no-new-privileges",
        memory_bytes >> 20,
        nano_cpus as f64 / 1e9
    )
}

/// What a demo container may use. Fixed in code: a learner only picks the
/// demo, never an image, a command or a limit.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Hard memory limit (and memory+swap limit: no swap).
    pub memory_bytes: u64,
    /// Maximum number of processes.
    pub pids_limit: i64,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: i64,
    /// PostgreSQL's `max_connections`, kept well inside `pids_limit`.
    pub max_connections: u32,
    /// Size of the tmpfs holding the database files.
    pub data_tmpfs_bytes: u64,
    /// `POSTGRES_PASSWORD`; `None` leaves it unset (to show the error).
    pub password: Option<String>,
}

impl ContainerSpec {
    /// The built-in PostgreSQL demo.
    pub fn postgres_demo() -> Self {
        ContainerSpec {
            memory_bytes: DEMO_MEMORY_BYTES,
            pids_limit: DEMO_PIDS,
            nano_cpus: DEMO_NANO_CPUS,
            max_connections: 20,
            data_tmpfs_bytes: 128 << 20,
            password: Some(uuid::Uuid::new_v4().simple().to_string()),
        }
    }
}

impl ContainerSpec {
    /// The limits and confinement, in words for a result.
    pub fn limits_text(&self) -> String {
        format!(
            "{}, an internal network with no route out; PGDATA on a {} MiB tmpfs (in memory, not on disk)",
            caps_text(self.memory_bytes, self.pids_limit, self.nano_cpus),
            self.data_tmpfs_bytes >> 20
        )
    }

    /// The create request for one demo container from `image`, carrying
    /// `labels`.
    pub(super) fn container_body(
        &self,
        image: &PresentImage,
        labels: HashMap<String, String>,
    ) -> ContainerCreateBody {
        let spec = self;
        let (uid, gid) = image.postgres_uid_gid.unwrap_or((999, 999));
        let mut env = vec![format!("PGDATA={PGDATA}")];
        if let Some(pw) = &spec.password {
            env.push(format!("POSTGRES_PASSWORD={pw}"));
        }
        let tmpfs = HashMap::from([
            (
                DATA_MOUNT.to_owned(),
                format!(
                    "rw,nosuid,nodev,size={},uid={uid},gid={gid},mode=0700",
                    spec.data_tmpfs_bytes
                ),
            ),
            (
                RUN_MOUNT.to_owned(),
                format!("rw,nosuid,nodev,noexec,size=1m,uid={uid},gid={gid},mode=0775"),
            ),
            (
                TMP_MOUNT.to_owned(),
                "rw,nosuid,nodev,noexec,size=8m,mode=1777".to_owned(),
            ),
        ]);
        ContainerCreateBody {
            image: Some(image.reference.to_owned()),
            // Run as the postgres user from the first instruction: no
            // capabilities are needed at all.
            user: Some(format!("{uid}:{gid}")),
            env: Some(env),
            cmd: Some(vec![
                "postgres".into(),
                "-c".into(),
                format!("max_connections={}", spec.max_connections),
                "-c".into(),
                "jit=off".into(),
            ]),
            stop_signal: Some("SIGINT".into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory: Some(spec.memory_bytes as i64),
                memory_swap: Some(spec.memory_bytes as i64),
                pids_limit: Some(spec.pids_limit),
                nano_cpus: Some(spec.nano_cpus),
                network_mode: Some(NETWORK.into()),
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".into(), "1m".into()),
                        ("max-file".into(), "1".into()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
