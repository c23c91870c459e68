//! Keys of measurements and facts: what each figure of a result is. Clients
//! find a figure by its key; each travels as the string beside it (density
//! figures as `metric@N`).

use std::fmt;
use std::str::FromStr;

use crate::wire_enum::wire_enum;

wire_enum! {
    /// A measured figure of one demo instance.
    pub enum Metric {
        /// Request accepted → ready, on the server's clock: what the person
        /// waited, time in the queue included.
        RequestToReady => "request_to_ready",
        /// The run left the queue → ready: the headline time.
        StartToReady => "start_to_ready",
        /// Request accepted → the run left the queue.
        QueueWait => "queue_wait",
        /// A density sweep from leaving the queue to its last step's end.
        SweepTotal => "sweep_total",
        /// The platform's share: start → process running / first guest
        /// instruction.
        PlatformShare => "platform_share",
        /// The workload's share: from there → ready.
        WorkloadShare => "workload_share",
        /// The memory the instance held at ready, counted the same way for
        /// containers (PSS of its processes + files on its tmpfs mounts) and
        /// VMs (PSS of its host processes, guest pages included).
        MemoryHeld => "memory_held",
        /// Create → ready (the demo's own start point; see its `how`).
        CreateToReady => "create_to_ready",
        /// The hypervisor's share: `/dev/kvm` open → vCPU ready.
        HypervisorSetup => "hypervisor_setup",
        /// The guest kernel's share: its first instruction → ready.
        GuestBoot => "guest_boot",
        /// PostgreSQL's init and start inside a Linux guest.
        PostgresStart => "postgres_start",
        /// VM create → PostgreSQL ready inside the guest.
        CreateToPostgres => "create_to_postgres",
        /// Guest RAM configured.
        GuestRam => "guest_ram",
        /// Guest RAM the host backs with pages.
        GuestTouched => "guest_touched",
        /// The guest's own MemTotal.
        GuestMemTotal => "guest_mem_total",
        /// The guest's own MemAvailable.
        GuestMemAvailable => "guest_mem_available",
        /// The VMM process's RSS.
        VmmRss => "vmm_rss",
        /// The VMM process's PSS.
        VmmPss => "vmm_pss",
        /// Exits to the VMM (returns from `KVM_RUN`), all reasons.
        Exits => "exits",
        /// Of those, I/O port exits.
        ExitsIo => "exits_io",
        /// Of those, MMIO exits.
        ExitsMmio => "exits_mmio",
        /// Of those, every other reason.
        ExitsOther => "exits_other",
        /// The ring-3 app's own work.
        AppRing3 => "app_ring3",
        /// PSS of a container's processes.
        MemoryPss => "memory_pss",
        /// A container's memory cgroup usage.
        MemoryCgroup => "memory_cgroup",
        /// The figure `docker stats` shows.
        MemoryDockerStats => "memory_docker_stats",
        /// No longer measured: a cgroup's `shmem`, which also holds shared
        /// anonymous memory that PSS already counts (kept so that runs
        /// recorded before still read).
        MemoryTmpfs => "memory_tmpfs",
        /// Bytes of files on an instance's tmpfs mounts.
        MemoryTmpfsFiles => "memory_tmpfs_files",
        /// Private memory (USS) of an instance's host processes.
        MemoryUss => "memory_uss",
        /// Anonymous memory of an instance's host processes (Pss_Anon +
        /// Pss_Shmem: heap, stacks, shared memory, guest RAM).
        MemoryAnon => "memory_anon",
        /// A density sweep: memory added per extra instance (median).
        MemoryPerExtraInstance => "memory_per_extra_instance",
        /// Processes in a container.
        Processes => "processes",
        /// The image's size.
        ImageSize => "image_size",
    }
}

wire_enum! {
    /// A figure of one step of a density sweep.
    pub enum DensityMetric {
        /// From starting N at once until the last was ready (of a sweep
        /// that repeats its steps, the median of the step's samples).
        AllReady => "all_ready",
        /// The memory the N instances held together (of a sweep that
        /// repeats its steps, the median of the step's samples).
        MemoryTotal => "memory_total",
        /// Of a sweep that repeats its steps: the least of the step's
        /// [`DensityMetric::AllReady`] samples.
        AllReadyMin => "all_ready_min",
        /// Likewise the most.
        AllReadyMax => "all_ready_max",
        /// Of a sweep that repeats its steps: the least of the step's
        /// [`DensityMetric::MemoryTotal`] samples (those read).
        MemoryTotalMin => "memory_total_min",
        /// Likewise the most.
        MemoryTotalMax => "memory_total_max",
        /// Of a sweep that repeats its steps: how many samples the step's
        /// times are from.
        Samples => "samples",
        /// Of those, how many had their memory read (the step's memory
        /// figures are from these).
        MemorySamples => "memory_samples",
        /// The median of the N instances' anonymous memory (Pss_Anon +
        /// Pss_Shmem of their processes), read in the same pass: memory no
        /// other instance can share.
        AnonMedian => "anon_median",
    }
}

wire_enum! {
    /// A non-numeric observation.
    pub enum FactKey {
        /// The instance's processes as the host sees them.
        HostPids => "host_pids",
        /// The kernel release inside the container or VM.
        KernelInside => "kernel_inside",
        /// The host's kernel release.
        KernelHost => "kernel_host",
        /// What backs KVM on this host. Results now carry it inside
        /// [`FactKey::Host`]; kept so runs recorded before that still read.
        KvmHost => "kvm_host",
        /// The image a container was created from.
        Image => "image",
        /// PostgreSQL's version string.
        PostgresVersion => "postgres_version",
        /// The host: CPUs, model, whether it is itself a VM, KVM backing.
        Host => "host",
        /// The container engine's storage driver and cgroup version.
        Engine => "engine",
        /// The demo's limits (memory, processes, CPU; where data lives).
        Limits => "limits",
        /// Other runs in progress on the host while this one ran.
        Load => "load",
        /// What the program printed.
        Output => "output",
    }
}

/// The key of a measurement: a figure of one instance, or of step `n` of a
/// density sweep. Travels as `create_to_ready` or `all_ready@3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A figure of one instance.
    Metric(Metric),
    /// A figure of a density step with `n` instances at once.
    Density(DensityMetric, u32),
}

impl From<Metric> for Key {
    fn from(m: Metric) -> Key {
        Key::Metric(m)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Metric(m) => f.write_str(m.as_str()),
            Key::Density(m, n) => write!(f, "{m}@{n}"),
        }
    }
}

impl FromStr for Key {
    type Err = String;
    fn from_str(s: &str) -> Result<Key, String> {
        match s.split_once('@') {
            None => s.parse().map(Key::Metric),
            Some((metric, n)) => Ok(Key::Density(
                metric.parse()?,
                n.parse().map_err(|_| format!("bad N in key {s:?}"))?,
            )),
        }
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key is a string: a metric (`create_to_ready`), or a density metric
/// at a step (`all_ready@3`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Key {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let names: Vec<&str> = DensityMetric::ALL.iter().map(|m| m.as_str()).collect();
        let density = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^({})@[0-9]+$", names.join("|"))));
        OneOfBuilder::new()
            .item(<Metric as utoipa::PartialSchema>::schema())
            .item(density)
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Key {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_todays_strings() {
        let k = Key::Density(DensityMetric::AllReady, 3);
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"all_ready@3\"");
        assert_eq!(serde_json::from_str::<Key>("\"all_ready@3\"").unwrap(), k);
        let m: Key = Metric::VmmPss.into();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"vmm_pss\"");
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Key>(), Ok(Key::Metric(*m)));
        }
        assert!("nonsense".parse::<Key>().is_err());
        assert!("all_ready@x".parse::<Key>().is_err());
    }
}
