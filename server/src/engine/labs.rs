//! The labs: which runtime serves which demo on this host, behind which
//! queue, and why a demo cannot run here when it cannot (checked before a
//! run is accepted, so a learner is told at once).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use stacklab_api::{Capacity, DemoId, ErrorCode, KvmBacking};
use stacklab_vmm::host::{KvmHost, ProbeError};

use super::density::Density;
use super::queue::{Full, Queue};
use super::registry::{Requester, Runs, TooMany, PER_LEARNER_PER_DEMO};
use super::run::Run;
use crate::backends::docker::hello::{self, HelloRuntime};
use crate::backends::docker::{image, ContainerSpec, DockerRuntime, Owner, Replica};
use crate::backends::kvm::{KvmRuntime, LinuxArtifacts, LinuxGuestKind, VmArtifacts};
use crate::backends::Runtime;

/// How long to wait for the Docker engine before calling it unreachable.
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A density sweep starts 1 + 2 + … + 5 = 15 instances, five at most at
/// once; its deadline is this many single-run deadlines.
const DENSITY_DEADLINE_FACTOR: u32 = 3;

/// Why a learner sees about a Linux guest on a kvm-pvm host.
fn linux_on_nested_pvm() -> String {
    format!(
        "{} So a Linux guest cannot boot here, and the Linux demos do not run. On a server with hardware virtualisation (Intel VT-x or AMD-V) they boot Debian's kernel, and the project's tests boot it under full software emulation (QEMU) to prove the path works.",
        stacklab_vmm::host::KVM_PVM_OBSERVED
    )
}

/// CPU cores per container slot. A PostgreSQL container start is capped
/// at one CPU and spends much of its time waiting (on dockerd, runc,
/// PostgreSQL's start-up I/O), so one slot per core keeps every learner's
/// measured time true: `stacklab bench room --learners 50` on the 2-core
/// reference host measured create → ready in the room at 1.06× the same
/// server's runs alone with 2 slots (the room done in 48 s) and 1.03× with
/// 1 slot (100 s); the first workshop trial's 4 slots gave about 2×.
pub const CORES_PER_CONTAINER_RUN: usize = 1;

/// Host memory set aside per container slot: the demo's 256 MiB cap, twice.
const MEMORY_PER_CONTAINER_SLOT: u64 = 512 << 20;

/// How many runs of each kind at once, and why that many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Container runs at once.
    pub container: usize,
    /// Micro-VM runs at once.
    pub vm: usize,
    /// Why the container count (shown in `/api/health`).
    pub container_sized_by: String,
    /// Why the micro-VM count.
    pub vm_sized_by: String,
}

impl Slots {
    /// From this host: a container slot per [`CORES_PER_CONTAINER_RUN`]
    /// core(s) (and per 512 MiB of available memory), a micro-VM slot per
    /// core (a micro-VM run keeps one core busy for a few ms).
    pub fn for_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib << 10);
        let by_cores = (cores / CORES_PER_CONTAINER_RUN).max(1);
        let by_memory = available.map(|b| (b / MEMORY_PER_CONTAINER_SLOT).max(1) as usize);
        let container = by_memory.map_or(by_cores, |m| by_cores.min(m));
        Slots {
            container,
            vm: cores,
            container_sized_by: format!(
                "one per CPU ({cores}): measured not to slow each other's times{}",
                match by_memory {
                    Some(m) if m < by_cores =>
                        format!(", capped by memory: {m} × 512 MiB available"),
                    _ => String::new(),
                }
            ),
            vm_sized_by: format!("one per CPU ({cores})"),
        }
    }
}

/// Limits that shape how runs are scheduled.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Runs at once of each kind.
    pub slots: Slots,
    /// Time budget of one run after it leaves the queue.
    pub run_deadline: Duration,
    /// How long a run may wait in a queue.
    pub queue_timeout: Duration,
    /// Where the Linux guests' archives are (`<data dir>/linux`).
    pub data_dir: PathBuf,
    /// This server as a replica of a shared store (its containers are
    /// labelled so; `None`: a lone server).
    pub replica: Option<Replica>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            slots: Slots::for_host(),
            run_deadline: Duration::from_secs(60),
            queue_timeout: super::DEFAULT_QUEUE_TIMEOUT,
            data_dir: PathBuf::from("data"),
            replica: None,
        }
    }
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The demo cannot run on this server now.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The learner already has enough runs of this demo in progress.
    #[error("You already have a run of this demo going and one waiting (at most {} at a time, so everyone in the room gets a turn). Try again when one has finished.", PER_LEARNER_PER_DEMO)]
    TooMany(TooMany),
    /// The demo's queue is as long as it gets.
    #[error("The server is busy: {} runs are already waiting for this demo, as many as can get a turn before they would time out. Try again in a little while.", .0.waiting)]
    QueueFull(Full),
}

/// A demo cannot run on this server now: a stable code and a sentence
/// saying what is missing and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unavailable {
    /// e.g. [`ErrorCode::DockerUnavailable`].
    pub code: ErrorCode,
    /// For a learner.
    pub message: String,
}

impl Unavailable {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Unavailable {
            code,
            message: message.into(),
        }
    }

    fn docker_down(why: &str) -> Self {
        Unavailable::new(
            ErrorCode::DockerUnavailable,
            format!("The Docker engine is not reachable ({why}), so the container demo cannot run. Start it as root with `dockerd &` (or `./dev serve`, which starts it), then try again."),
        )
    }

    fn no_kvm(e: &ProbeError) -> Self {
        Unavailable::new(
            ErrorCode::KvmUnavailable,
            format!("This server cannot run virtual machines: {e}."),
        )
    }
}

type Kvm = Result<Arc<KvmRuntime>, Unavailable>;

/// Every demo's runtime and queue on this server.
pub struct Labs {
    /// The container demos, PostgreSQL and the smallest program, on one
    /// engine (`None` when no Docker client could be configured).
    containers: Option<(Arc<DockerRuntime>, Arc<HelloRuntime>)>,
    micro_vm: Kvm,
    linux_vm: Kvm,
    postgres_vm: Kvm,
    container_queue: Arc<Queue>,
    vm_queue: Arc<Queue>,
    /// Density sweeps run one at a time (each starts up to five instances).
    density_container_queue: Arc<Queue>,
    density_vm_queue: Arc<Queue>,
    deadline: Duration,
    slots: Slots,
}

impl Labs {
    /// The labs of this host: containers on `docker`, VMs with the VMM and
    /// guests found next to this program and in `settings.data_dir`.
    pub fn new(docker: Option<Docker>, settings: &Settings) -> Self {
        let owner = Owner::current().as_replica(settings.replica.clone());
        let vm = VmArtifacts::locate().map_err(|why| {
            Unavailable::new(
                ErrorCode::VmmMissing,
                format!("The micro-VM demo is not installed on this server: {why}."),
            )
        });
        let linux = |kind: LinuxGuestKind| -> Kvm {
            let vm = vm.clone()?;
            let files = LinuxArtifacts::in_data_dir(&settings.data_dir);
            let guest = files.guest(kind).map_err(|why| {
                Unavailable::new(
                    ErrorCode::LinuxGuestMissing,
                    format!("The Linux guest is not installed on this server: {why}."),
                )
            })?;
            Ok(Arc::new(KvmRuntime::linux(vm, guest)))
        };
        let container_queue = Arc::new(Queue::with_timeout(
            settings.slots.container,
            settings.queue_timeout,
        ));
        let vm_queue = Arc::new(Queue::with_timeout(
            settings.slots.vm,
            settings.queue_timeout,
        ));
        Labs {
            containers: docker.map(|d| {
                (
                    Arc::new(DockerRuntime::new(
                        d.clone(),
                        ContainerSpec::postgres_demo(),
                        owner.clone(),
                    )),
                    Arc::new(HelloRuntime::new(d, owner)),
                )
            }),
            micro_vm: vm
                .clone()
                .map(|a| Arc::new(KvmRuntime::new(a, Default::default()))),
            linux_vm: linux(LinuxGuestKind::Plain),
            postgres_vm: linux(LinuxGuestKind::Postgres),
            container_queue: container_queue.clone(),
            vm_queue: vm_queue.clone(),
            // A sweep goes after the single runs waiting, then holds every
            // slot of its kind: one sweep at a time, alone on the host.
            density_container_queue: Arc::new(Queue::gating(
                1,
                settings.queue_timeout,
                container_queue,
            )),
            density_vm_queue: Arc::new(Queue::gating(1, settings.queue_timeout, vm_queue)),
            deadline: settings.run_deadline,
            slots: settings.slots.clone(),
        }
    }

    /// Each queue now: slots, in use, waiting, recent median.
    pub fn capacity(&self) -> Vec<Capacity> {
        let containers = [DemoId::PostgresContainer, DemoId::HelloContainer];
        let vms = [DemoId::MicroVm, DemoId::LinuxVm, DemoId::PostgresVm];
        let sweep = "one sweep at a time, after the single runs waiting, holding every slot of its kind (a sweep starts up to five instances at once)";
        [
            (
                &self.container_queue,
                &containers[..],
                self.slots.container_sized_by.clone(),
            ),
            (&self.vm_queue, &vms[..], self.slots.vm_sized_by.clone()),
            (
                &self.density_container_queue,
                &[DemoId::DensityContainer][..],
                sweep.to_owned(),
            ),
            (
                &self.density_vm_queue,
                &[DemoId::DensityMicroVm][..],
                sweep.to_owned(),
            ),
        ]
        .into_iter()
        .map(|(queue, demos, sized_by)| {
            let (slots, in_use, queued, median) = queue.snapshot();
            Capacity {
                demos: demos.to_vec(),
                slots: slots as u32,
                in_use: in_use as u32,
                queued: queued as u32,
                max_waiting: queue.max_waiting() as u32,
                recent_median_ms: median.map(|d| d.as_millis() as u64),
                sized_by,
            }
        })
        .collect()
    }

    /// The Docker engine client, if one could be configured.
    pub fn docker(&self) -> Option<&Docker> {
        self.containers
            .as_ref()
            .map(|(postgres, _)| postgres.docker())
    }

    /// The Linux guest runtime, or why it is not installed (for tests).
    pub fn linux_vm(&self) -> Result<&Arc<KvmRuntime>, &Unavailable> {
        self.linux_vm.as_ref()
    }

    /// Whether the Linux guests can run, given a KVM probe.
    pub fn linux_guests(&self, probe: &Result<KvmHost, ProbeError>) -> Result<(), Unavailable> {
        linux_guest_check(probe, &self.linux_vm).map(drop)
    }

    /// Starts `demo` for `requester` behind its queue, if the demo can run
    /// here and the requester is within its limits; or says at once why
    /// not.
    pub async fn start(
        &self,
        runs: &Arc<Runs>,
        requester: Requester,
        demo: DemoId,
    ) -> Result<Arc<Run>, Refused> {
        let start = |runtime| self.start_on(runs, requester.clone(), demo, runtime, &self.vm_queue);
        match demo.density_of().unwrap_or(demo) {
            DemoId::MicroVm => {
                let probe = tokio::task::spawn_blocking(stacklab_vmm::host::probe).await;
                if let Ok(Err(e)) = probe {
                    return Err(Unavailable::no_kvm(&e).into());
                }
                start(self.micro_vm.clone()?).await
            }
            DemoId::LinuxVm | DemoId::PostgresVm => {
                let runtime = if demo == DemoId::LinuxVm {
                    &self.linux_vm
                } else {
                    &self.postgres_vm
                };
                let probe = tokio::task::spawn_blocking(stacklab_vmm::host::probe)
                    .await
                    .map_err(|e| {
                        Unavailable::new(ErrorCode::Internal, format!("the KVM probe failed: {e}"))
                    })?;
                start(linux_guest_check(&probe, runtime)?).await
            }
            DemoId::HelloContainer => {
                let (_, hello) = self.containers_up().await?;
                hello::find(hello.docker()).await.map_err(image_missing)?;
                self.start_on(runs, requester, demo, hello, &self.container_queue)
                    .await
            }
            _ => {
                let (postgres, _) = self.containers_up().await?;
                image::find(postgres.docker())
                    .await
                    .map_err(image_missing)?;
                self.start_on(runs, requester, demo, postgres, &self.container_queue)
                    .await
            }
        }
    }

    /// The container runtimes, once their engine has answered.
    async fn containers_up(&self) -> Result<(Arc<DockerRuntime>, Arc<HelloRuntime>), Unavailable> {
        let containers = self
            .containers
            .clone()
            .ok_or_else(|| Unavailable::docker_down("no Docker client is configured"))?;
        match tokio::time::timeout(DOCKER_PING_TIMEOUT, containers.0.docker().ping()).await {
            Ok(Ok(_)) => Ok(containers),
            Ok(Err(e)) => Err(Unavailable::docker_down(&e.to_string())),
            Err(_) => Err(Unavailable::docker_down("no answer within 2 s")),
        }
    }

    /// Starts `request` on `runtime`: one instance behind `queue`, or a
    /// density sweep behind the one-at-a-time density queue; refused at
    /// once when that queue's line is full.
    pub(super) async fn start_on<R: Runtime>(
        &self,
        runs: &Arc<Runs>,
        requester: Requester,
        demo: DemoId,
        runtime: Arc<R>,
        queue: &Arc<Queue>,
    ) -> Result<Arc<Run>, Refused> {
        let queue = match demo.density_of() {
            Some(DemoId::MicroVm) => &self.density_vm_queue,
            Some(_) => &self.density_container_queue,
            None => queue,
        };
        queue.room().map_err(Refused::QueueFull)?;
        let started = match demo.density_of() {
            None => {
                runs.try_start(requester, demo, runtime, queue.clone(), self.deadline)
                    .await
            }
            Some(base) => {
                runs.try_start(
                    requester,
                    demo,
                    Arc::new(
                        Density::new(runtime, base, DemoId::DENSITY_MAX)
                            .with_samples(demo.samples_per_step()),
                    ),
                    queue.clone(),
                    self.deadline * DENSITY_DEADLINE_FACTOR,
                )
                .await
            }
        };
        started.map_err(Refused::TooMany)
    }
}

fn image_missing(e: image::ImageError) -> Unavailable {
    Unavailable::new(ErrorCode::ImageMissing, e.to_string())
}

/// Whether a Linux guest can run, given the KVM probe and its runtime: the
/// runtime, or why not, before anything is tried.
fn linux_guest_check(probe: &Result<KvmHost, ProbeError>, runtime: &Kvm) -> Kvm {
    let host = probe.as_ref().map_err(Unavailable::no_kvm)?;
    if host.backing == KvmBacking::NestedPvm {
        return Err(Unavailable::new(
            ErrorCode::LinuxGuestUnsupported,
            linux_on_nested_pvm(),
        ));
    }
    runtime.clone()
}
