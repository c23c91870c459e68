//! The container lab: PostgreSQL 15 started through the Docker engine
//! (bollard), every start-up phase timed, the memory measured from the kernel.

pub mod image;
pub mod measure;
pub mod reaper;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use stacklab_api::{RunError, Unit};

use crate::runtime::{Ready, RunContext, Runtime};
use image::{ImageKind, PresentImage};
use measure::Cgroup;
pub use reaper::Owner;

/// The internal bridge network demo containers join: no route out, nothing
/// published on the host; the server reaches containers by their IP.
pub const NETWORK: &str = "stacklab-demo";
/// Where the data directory lives (a tmpfs) and PGDATA below it.
const DATA_MOUNT: &str = "/var/lib/postgresql/data";
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// How often the readiness probe retries `SELECT 1`.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Last console lines quoted when a container dies.
const TAIL_LINES: usize = 8;

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
            // 64 MiB gets initdb OOM-killed; 256 MiB leaves room for the
            // tmpfs data files (~40 MiB) and the server.
            memory_bytes: 256 << 20,
            pids_limit: 64,
            nano_cpus: 1_000_000_000,
            max_connections: 20,
            data_tmpfs_bytes: 128 << 20,
            password: Some(uuid::Uuid::new_v4().simple().to_string()),
        }
    }
}

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

    fn container_body(&self, image: &PresentImage, run_id: &str) -> ContainerCreateBody {
        let spec = &self.spec;
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
                "/var/run/postgresql".to_owned(),
                format!("rw,nosuid,nodev,noexec,size=1m,uid={uid},gid={gid},mode=0775"),
            ),
            (
                "/tmp".to_owned(),
                "rw,nosuid,nodev,noexec,size=8m,mode=1777".to_owned(),
            ),
        ]);
        let mut labels = self.owner.labels();
        labels.insert("stacklab.run".into(), run_id.to_owned());
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

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(id, Some(options)).await {
            tracing::warn!(container = %id, "could not remove the demo container: {e}");
        }
    }

    /// Everything between "created" and "ready", plus the measurements.
    async fn drive(
        &self,
        ctx: &RunContext,
        id: &str,
        image: &PresentImage,
        created_at: Instant,
    ) -> Result<Ready, RunError> {
        let docker = &self.docker;
        // Attach before start, so not a byte of output is missed.
        let attach = docker
            .attach_container(
                id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .logs(true)
                        .build(),
                ),
            )
            .await
            .map_err(docker_error)?;
        let mut output = attach.output;
        let mut exited = Box::pin(docker.wait_container(id, None));

        docker
            .start_container(id, None)
            .await
            .map_err(docker_error)?;
        let info = docker
            .inspect_container(id, None)
            .await
            .map_err(docker_error)?;
        let pid = info.state.as_ref().and_then(|s| s.pid).unwrap_or(0) as u32;
        let ip: Option<IpAddr> = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(NETWORK))
            .and_then(|n| n.ip_address.as_deref())
            .and_then(|ip| ip.parse().ok());
        let cgroup = Cgroup::of_pid(pid).ok();
        let cgroup_how =
            "the container's memory cgroup: memory.usage_in_bytes (v1) or memory.current (v2)";
        let memory_now = || {
            cgroup
                .as_ref()
                .and_then(|c| c.memory().ok())
                .map(|m| (m.usage, cgroup_how))
        };
        ctx.phase_with_memory(
            "container_started",
            "Container started",
            format!(
                "the engine started the entrypoint; on the host it is the ordinary process {pid}"
            ),
            memory_now(),
        );
        let password = self.spec.password.clone().unwrap_or_default();
        // The probe polls, and is also woken the moment the log says the
        // real server listens, so readiness is seen with the least delay.
        let kick = tokio::sync::Notify::new();
        // No address means the container already exited (e.g. the entrypoint
        // refused to start): then only the exit branch below can fire.
        let probe = async {
            match ip {
                Some(ip) => (ip, probe_ready(ip, password.clone(), &kick).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(probe);

        let mut pending = String::new();
        let mut tail: Vec<String> = Vec::new();
        let mut first_byte = false;
        let mut ready_lines = 0;
        let mut output_open = true;
        let mut exit_code: Option<i64> = None;
        let (ip, attempts) = loop {
            tokio::select! {
                chunk = output.next(), if output_open => match chunk {
                    Some(Ok(chunk)) => {
                        if !first_byte {
                            first_byte = true;
                            ctx.phase_with_memory("first_log_byte", "First output", "the container wrote its first byte of output", memory_now());
                        }
                        pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                        while let Some(nl) = pending.find('\n') {
                            let line: String = pending.drain(..=nl).collect();
                            let line = line.trim_end();
                            ctx.log(line);
                            tail.push(line.to_owned());
                            if tail.len() > TAIL_LINES {
                                tail.remove(0);
                            }
                            if line.contains("listening on IPv4") || line.contains("ready to accept connections") {
                                kick.notify_one();
                            }
                            if line.contains("database system is ready to accept connections") {
                                ready_lines += 1;
                                let (phase, label, detail) = if ready_lines == 1 {
                                    ("temp_server_ready", "First \"ready\" (temporary server)", "PostgreSQL logged \"ready to accept connections\" for the first time: the entrypoint's temporary server, listening only on a Unix socket while it finishes the setup")
                                } else {
                                    ("server_ready", "Second \"ready\" (real server)", "PostgreSQL logged \"ready to accept connections\" again: the real server, now listening on the network")
                                };
                                ctx.phase_with_memory(phase, label, detail, memory_now());
                            } else if line.contains("PostgreSQL init process complete") {
                                ctx.phase_with_memory("init_complete", "Init complete", "initdb finished and the temporary server stopped", memory_now());
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!("attach stream error: {e}");
                        output_open = false;
                    }
                    None => output_open = false,
                },
                done = &mut probe => break done,
                status = exited.next(), if exit_code.is_none() => {
                    exit_code = Some(match status {
                        Some(Ok(r)) => r.status_code,
                        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                        _ => -1,
                    });
                    // Drain what is left of the output, briefly, for the error message.
                    let drain = async {
                        while let Some(Ok(chunk)) = output.next().await {
                            pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
                    for line in pending.lines() {
                        ctx.log(line);
                        tail.push(line.to_owned());
                    }
                    return Err(self.exit_error(id, exit_code.unwrap_or(-1), &tail).await);
                }
            }
        };
        let ready_us = created_at.elapsed().as_micros() as u64;
        ctx.phase_with_memory(
            "ready",
            "Ready: SELECT 1 answered",
            format!("the server's first successful `SELECT 1` over the PostgreSQL wire protocol to {ip}:5432 (after {attempts} connection attempts)"),
            memory_now(),
        );
        ctx.rendezvous().await;
        Ok(self
            .measure(id, image, ip, &password, cgroup.as_ref(), ready_us)
            .await)
    }

    async fn exit_error(&self, id: &str, code: i64, tail: &[String]) -> RunError {
        let oom = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if oom {
            return RunError {
                code: "oom_killed".into(),
                message: format!(
                    "the kernel's out-of-memory killer stopped the container: it needed more than its memory limit of {} MiB",
                    self.spec.memory_bytes >> 20
                ),
            };
        }
        let tail = tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        RunError {
            code: "exited".into(),
            message: format!("the container exited with code {code} before PostgreSQL was ready. Its last output:\n{tail}"),
        }
    }

    async fn measure(
        &self,
        id: &str,
        image: &PresentImage,
        ip: IpAddr,
        password: &str,
        cgroup: Option<&Cgroup>,
        ready_us: u64,
    ) -> Ready {
        let mut ready = Ready::default();
        ready.measure(
            "create_to_ready",
            "Container create → ready",
            ready_us as f64,
            Unit::Micros,
            "from the create request to the Docker engine until the first successful SELECT 1 over TCP, measured by the server's monotonic clock",
        );
        if let Some(cg) = cgroup {
            let pids = cg.pids().unwrap_or_default();
            let pss: u64 = pids
                .iter()
                .filter_map(|p| measure::pss_bytes(*p).ok())
                .sum();
            ready.measure("memory_pss", "Memory of the processes (PSS)", pss as f64, Unit::Bytes,
                "Pss from /proc/PID/smaps_rollup summed over the container's processes (PIDs from its cgroup): private pages plus a fair share of shared ones");
            if let Ok(m) = cg.memory() {
                ready.measure("memory_cgroup", "Memory charged to the container", m.usage as f64, Unit::Bytes,
                    "the container's memory cgroup usage: processes plus page cache plus tmpfs files, everything the kernel charges to it");
                ready.measure(
                    "memory_docker_stats",
                    "Memory as docker stats shows it",
                    m.docker_stats() as f64,
                    Unit::Bytes,
                    "cgroup usage minus inactive page cache, the figure `docker stats` prints",
                );
                ready.measure("memory_tmpfs", "Of which: database files in tmpfs", m.shmem as f64, Unit::Bytes,
                    "shmem in the cgroup's memory.stat: the data directory lives on a tmpfs, so initdb's files are memory, not disk. That is most of the gap between the cgroup figure and PSS");
            }
            ready.measure(
                "processes",
                "Processes",
                pids.len() as f64,
                Unit::Count,
                "entries in the container's cgroup.procs: the postmaster and its helper processes",
            );
            let listed: Vec<String> = pids
                .iter()
                .map(|p| match measure::pid_in_namespace(*p) {
                    Some(inner) => format!("{p} (inside: {inner})"),
                    None => p.to_string(),
                })
                .collect();
            ready.fact("host_pids", "Its processes, as the host sees them", listed.join(", "), "host PIDs from the cgroup; the PID inside the container's own PID namespace from NSpid in /proc/PID/status");
        }
        ready.measure(
            "image_size",
            "Image size",
            image.size_bytes as f64,
            Unit::Bytes,
            "the image's size as the Docker engine reports it (all layers, uncompressed)",
        );
        ready.fact("image", "Image", match image.kind {
                ImageKind::Official => format!("{} (the official image)", image.reference),
                ImageKind::OfflineBuilt => format!("{} (built offline by stacklab from Debian's postgresql-15: no registry is reachable here)", image.reference),
            }, "the image the container was created from");
        let inside = self.exec_output(id, &["uname", "-r"]).await;
        ready.fact(
            "kernel_inside",
            "Kernel release inside the container",
            inside.unwrap_or_else(|e| format!("unknown ({e})")),
            "`uname -r` executed inside the container",
        );
        ready.fact("kernel_host", "Kernel release on the host", measure::host_kernel_release(), "/proc/sys/kernel/osrelease read by the server: the same kernel, because a container shares it");
        if let Ok(version) = server_version(ip, password).await {
            ready.fact(
                "postgres_version",
                "PostgreSQL version",
                version,
                "SELECT version() over the wire protocol",
            );
        }
        ready
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
            code: "image_missing".into(),
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
                self.container_body(&image, &run_id),
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

/// Retries `SELECT 1` every [`PROBE_INTERVAL`], or at once when `kick` is
/// notified, until it succeeds; returns the number of attempts.
async fn probe_ready(ip: IpAddr, password: String, kick: &tokio::sync::Notify) -> u32 {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if select_one(ip, &password).await.is_ok() {
            return attempts;
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = kick.notified() => {}
        }
    }
}

async fn connect(
    ip: IpAddr,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(ip.to_string())
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn select_one(ip: IpAddr, password: &str) -> Result<(), tokio_postgres::Error> {
    connect(ip, password)
        .await?
        .simple_query("SELECT 1")
        .await
        .map(drop)
}

async fn server_version(ip: IpAddr, password: &str) -> Result<String, tokio_postgres::Error> {
    let row = connect(ip, password)
        .await?
        .query_one("SELECT version()", &[])
        .await?;
    row.try_get(0)
}

fn docker_error(e: bollard::errors::Error) -> RunError {
    RunError {
        code: "docker".into(),
        message: format!("the Docker engine refused a step: {e}"),
    }
}
