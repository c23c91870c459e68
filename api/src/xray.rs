//! The x-ray of a single-instance run: what the workload sees beside what
//! the host sees, and what the platform did to build it, read by the
//! server from the host side while the instance is held at ready (no
//! learner ever names a command or a path).
//!
//! It travels as one [`crate::EventKind::XRay`] event in the run's
//! timeline, so it streams like the phases and is kept in the history
//! with the run's other events. The card renders it generically: rows,
//! calls and counts carry their labels and explanations from the server.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

wire_enum! {
    /// What one row, count or missing reading of an x-ray is.
    pub enum XRayKey {
        /// The kernel release (`uname -r`).
        KernelRelease => "kernel_release",
        /// The kernel's build version (`uname -v`).
        KernelVersion => "kernel_version",
        /// Where the server itself runs: the host's initial namespaces or
        /// a container's.
        ServerNamespaces => "server_namespaces",
        /// The cgroup namespace (`/proc/PID/ns/cgroup`).
        NsCgroup => "ns_cgroup",
        /// The IPC namespace.
        NsIpc => "ns_ipc",
        /// The mount namespace.
        NsMnt => "ns_mnt",
        /// The network namespace.
        NsNet => "ns_net",
        /// The PID namespace.
        NsPid => "ns_pid",
        /// The time namespace.
        NsTime => "ns_time",
        /// The user namespace.
        NsUser => "ns_user",
        /// The UTS (host name) namespace.
        NsUts => "ns_uts",
        /// How many namespaces the workload shares with the server.
        NsShared => "ns_shared",
        /// The process id (NSpid: inside, on the host).
        Pid => "pid",
        /// The user id, and the user namespace's map.
        Uid => "uid",
        /// The group id.
        Gid => "gid",
        /// The host name.
        Hostname => "hostname",
        /// The memory limit (cgroup).
        MemoryLimit => "memory_limit",
        /// The process-count limit (cgroup).
        PidsLimit => "pids_limit",
        /// The CPU quota (cgroup).
        CpuQuota => "cpu_quota",
        /// `Seccomp:` of `/proc/PID/status`.
        Seccomp => "seccomp",
        /// `Seccomp_filters:`.
        SeccompFilters => "seccomp_filters",
        /// `NoNewPrivs:`.
        NoNewPrivs => "no_new_privs",
        /// `CapEff:`, decoded into capability names.
        CapEff => "cap_eff",
        /// The Linux security module's label (AppArmor, SELinux).
        Lsm => "lsm",
        /// The root file system as the kernel mounts it.
        RootMount => "root_mount",
        /// The tmpfs mounts.
        TmpfsMounts => "tmpfs_mounts",
        /// The network interfaces.
        Interfaces => "interfaces",
        /// The system calls that built the container (tracefs).
        PlatformCalls => "platform_calls",
        /// Calls of the same kinds made by the workload after the
        /// platform's share.
        WorkloadCalls => "workload_calls",
        /// Threads the runtime's processes started meanwhile.
        ThreadClones => "thread_clones",
        /// The guest's kernel (its own name and version).
        GuestKernel => "guest_kernel",
        /// The CPU vendor string the guest's CPUID returns.
        CpuVendor => "cpu_vendor",
        /// The hypervisor signature at CPUID leaf 0x40000000.
        Hypervisor => "hypervisor",
        /// The guest's memory: size and map.
        GuestMemory => "guest_memory",
        /// The privilege level the guest kernel runs at.
        Privilege => "privilege",
        /// Host processes visible to the workload.
        HostProcesses => "host_processes",
        /// The VMM process: PIDs, user.
        VmmProcess => "vmm_process",
        /// The VMM's jail: its namespaces.
        VmmNamespaces => "vmm_namespaces",
        /// The VMM's seccomp filter and privileges.
        VmmSeccomp => "vmm_seccomp",
        /// The VMM's memory.
        VmmMemory => "vmm_memory",
        /// The KVM ioctls the VMM made.
        Ioctls => "ioctls",
        /// Exits to the VMM: port I/O.
        ExitsIo => "exits_io",
        /// Exits to the VMM: MMIO.
        ExitsMmio => "exits_mmio",
        /// Exits to the VMM: every other reason.
        ExitsOther => "exits_other",
        /// `kvm:kvm_exit`: exits from the guest to KVM, in the kernel.
        KvmExit => "kvm_exit",
        /// `kvm:kvm_emulate_insn`: instructions KVM emulated.
        KvmEmulateInsn => "kvm_emulate_insn",
        /// `kvm:kvm_pio`: port I/O KVM saw.
        KvmPio => "kvm_pio",
        /// `kvm:kvm_mmio`: MMIO KVM saw.
        KvmMmio => "kvm_mmio",
        /// `kvm:kvm_userspace_exit`: returns to the VMM.
        KvmUserspaceExit => "kvm_userspace_exit",
        /// `kvm:kvm_page_fault` and `kvmmmu:*page_fault`: guest memory
        /// first touched or fixed up.
        KvmPageFault => "kvm_page_fault",
        /// `kvmmmu:kvm_mmu_set_spte`: guest memory mapped to host pages
        /// (first touch, lazily).
        KvmSpte => "kvm_spte",
        /// `kvmmmu:kvm_mmu_pagetable_walk`: the guest's page tables walked
        /// by KVM (for instructions it emulates or faults it resolves).
        KvmPagetableWalk => "kvm_pagetable_walk",
        /// The capture of kernel events itself (tracefs).
        Tracefs => "tracefs",
    }
}

/// Which kind of instance an x-ray looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum XRayOf {
    /// A container: host processes in namespaces and cgroups.
    Container,
    /// A virtual machine: a guest kernel inside one VMM process.
    Vm,
}

/// The x-ray of one run, read while it was held at ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XRay {
    /// Container or VM (absent in an empty x-ray).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<XRayOf>,
    /// One thing each: as the workload sees it, as the host sees it.
    pub rows: Vec<XRayRow>,
    /// What the calls below are, in a phrase ("System calls that built
    /// the container").
    #[serde(default)]
    pub calls_title: String,
    /// How the calls were captured.
    #[serde(default)]
    pub calls_how: String,
    /// What the platform did, in order, each on the run's clock.
    #[serde(default)]
    pub calls: Vec<XRayCall>,
    /// Counted events (exits by reason, KVM's in-kernel events).
    #[serde(default)]
    pub counts: Vec<XRayCount>,
    /// Readings tried and failed: absent, with why (never 0).
    #[serde(default)]
    pub missing: Vec<XRayMissing>,
}

/// One thing, seen from both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XRayRow {
    /// What it is.
    pub key: XRayKey,
    /// Its human name.
    pub label: String,
    /// As the workload sees it (absent: it cannot see it at all).
    pub inside: Option<String>,
    /// As the host sees it.
    pub host: Option<String>,
    /// Whether the two sides are the same object (a shared kernel or
    /// namespace); absent where the question does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same: Option<bool>,
    /// How each side was read.
    pub how: String,
}

/// One call the platform made, on the run's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XRayCall {
    /// When it was made: µs since the run was accepted.
    pub at_us: u64,
    /// How long it took (µs), where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
    /// The call, e.g. `unshare` or `KVM_CREATE_VM`.
    pub name: String,
    /// Its arguments or result, decoded.
    pub detail: String,
    /// Which host process (thread) made it, with its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A count of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XRayCount {
    /// What it counts.
    pub key: XRayKey,
    /// Its human name.
    pub label: String,
    /// How many.
    pub value: u64,
    /// How they were counted.
    pub how: String,
}

/// A reading that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XRayMissing {
    /// What it would have been.
    pub key: XRayKey,
    /// Its human name.
    pub label: String,
    /// Why it is absent.
    pub reason: String,
}

impl XRay {
    /// The x-ray among a run's `events`, if it has one.
    pub fn of_run(events: &[crate::RunEvent]) -> Option<&XRay> {
        events.iter().find_map(|e| match &e.kind {
            crate::EventKind::XRay { xray } => Some(xray),
            _ => None,
        })
    }

    /// The row with this key.
    pub fn row(&self, key: XRayKey) -> Option<&XRayRow> {
        self.rows.iter().find(|r| r.key == key)
    }

    /// The count with this key.
    pub fn count(&self, key: XRayKey) -> Option<u64> {
        self.counts.iter().find(|c| c.key == key).map(|c| c.value)
    }

    /// Why the reading with this key is missing, if it is.
    pub fn missing(&self, key: XRayKey) -> Option<&str> {
        self.missing
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.reason.as_str())
    }

    /// Adds a row.
    pub fn push_row(
        &mut self,
        key: XRayKey,
        label: &str,
        inside: Option<String>,
        host: Option<String>,
        same: Option<bool>,
        how: &str,
    ) {
        self.rows.push(XRayRow {
            key,
            label: label.into(),
            inside,
            host,
            same,
            how: how.into(),
        });
    }

    /// Adds a count.
    pub fn push_count(&mut self, key: XRayKey, label: &str, value: u64, how: &str) {
        self.counts.push(XRayCount {
            key,
            label: label.into(),
            value,
            how: how.into(),
        });
    }

    /// Notes a reading that failed, with why.
    pub fn push_missing(&mut self, key: XRayKey, label: &str, reason: impl Into<String>) {
        self.missing.push(XRayMissing {
            key,
            label: label.into(),
            reason: reason.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_their_strings() {
        for key in XRayKey::ALL {
            let json = serde_json::to_string(key).unwrap();
            assert_eq!(json, format!("\"{}\"", key.as_str()));
            assert_eq!(serde_json::from_str::<XRayKey>(&json).unwrap(), *key);
        }
    }

    #[test]
    fn an_xray_round_trips_and_finds_its_parts() {
        let mut x = XRay {
            of: Some(XRayOf::Container),
            ..Default::default()
        };
        x.push_row(
            XRayKey::KernelRelease,
            "Kernel",
            Some("6.1".into()),
            Some("6.1".into()),
            Some(true),
            "osrelease",
        );
        x.push_count(XRayKey::KvmPio, "pio", 3, "tracefs");
        x.push_missing(XRayKey::KvmExit, "exits", "never fires here");
        let back: XRay = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        assert_eq!(back, x);
        assert_eq!(back.row(XRayKey::KernelRelease).unwrap().same, Some(true));
        assert_eq!(back.count(XRayKey::KvmPio), Some(3));
        assert_eq!(back.missing(XRayKey::KvmExit), Some("never fires here"));
        assert_eq!(back.count(XRayKey::KvmMmio), None);
    }
}
