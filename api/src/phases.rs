//! Phases: the typed steps of a run's timeline. Every backend reports its
//! steps as these, the engine derives every timed figure from them (see
//! [`crate::figures`]), and clients find them by value, never by a string.
//!
//! On the wire each travels as the string in [`Phase::NAMED`] (a density
//! step as `n3_start` / `n3_ready`), exactly as stored in older histories.

use std::fmt;
use std::str::FromStr;

/// A step of a run's start-up, as observed by the server, a backend or
/// the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The server accepted the request (the run's clock starts here).
    Accepted,
    /// The run left the queue with a slot: the platform's work starts here.
    SlotGranted,
    /// Container: the engine has the image; the create request follows.
    ImageReady,
    /// Container: the engine created it (file system, nothing running).
    ContainerCreated,
    /// Container: its first process runs (the start call returned).
    ContainerStarted,
    /// Container: its first byte of output.
    FirstLogByte,
    /// PostgreSQL's entrypoint's temporary server is ready.
    TempServerReady,
    /// PostgreSQL's initdb finished.
    InitComplete,
    /// PostgreSQL's real server is ready (its log says so).
    ServerReady,
    /// The demo's workload is ready (for `postgres-vm`, the guest's
    /// userspace; see [`crate::DemoId::ready_phase`]).
    Ready,
    /// The hello container's program exited when told to.
    Exited,
    /// VM: the server started the VMM process.
    VmmStarted,
    /// VM: the VMM is inside its jail.
    Jailed,
    /// VM: `/dev/kvm` opened.
    KvmOpened,
    /// VM: `KVM_CREATE_VM` returned.
    VmCreated,
    /// VM: guest memory registered with KVM.
    MemoryMapped,
    /// VM: a Linux kernel and initramfs loaded.
    KernelLoaded,
    /// VM: the tiny guest's image loaded.
    GuestLoaded,
    /// VM: the vCPU is about to run the guest's first instruction.
    VcpuCreated,
    /// VM: the first exit to the VMM.
    FirstExit,
    /// VM: the guest's first console byte.
    FirstConsole,
    /// Tiny guest: its first instruction (a milestone it reports).
    GuestEntry,
    /// Tiny guest: its own GDT loaded.
    GuestGdt,
    /// Tiny guest: its page tables and paging on.
    GuestPaging,
    /// Tiny guest: long mode.
    GuestLongMode,
    /// Tiny guest: interrupt table and TSS.
    GuestIdt,
    /// Tiny guest: its first timer tick.
    GuestTimer,
    /// Tiny guest: entering ring 3.
    GuestUserEnter,
    /// Tiny guest: the ring-3 app returned.
    GuestUserReturn,
    /// A guest milestone the VMM does not know.
    GuestMilestone,
    /// Linux guest: a line its `/init` reported.
    GuestInit,
    /// Linux guest: its `/proc/meminfo` as `/init` read it.
    GuestMeminfo,
    /// Linux guest: PostgreSQL answered inside it.
    PostgresReady,
    /// Linux guest: the guest reset.
    Reset,
    /// Density: step `n` starts `n` instances at once.
    StepStart(u32),
    /// Density: all `n` instances of the step are ready.
    StepReady(u32),
}

impl Phase {
    /// Every phase without a step number, with the string it travels as and
    /// its short human name (shown as the timeline's label).
    pub const NAMED: &'static [(Phase, &'static str, &'static str)] = &[
        (Phase::Accepted, "accepted", "Request accepted"),
        (Phase::SlotGranted, "slot_granted", "Left the queue"),
        (Phase::ImageReady, "image_ready", "Image ready"),
        (
            Phase::ContainerCreated,
            "container_created",
            "Container created",
        ),
        (
            Phase::ContainerStarted,
            "container_started",
            "Container started",
        ),
        (Phase::FirstLogByte, "first_log_byte", "First output"),
        (
            Phase::TempServerReady,
            "temp_server_ready",
            "First \"ready\" (temporary server)",
        ),
        (Phase::InitComplete, "init_complete", "Init complete"),
        (
            Phase::ServerReady,
            "server_ready",
            "Second \"ready\" (real server)",
        ),
        (Phase::Ready, "ready", "Ready"),
        (Phase::Exited, "exited", "Program exited"),
        (Phase::VmmStarted, "vmm_started", "VMM process started"),
        (Phase::Jailed, "jailed", "VMM jailed"),
        (Phase::KvmOpened, "kvm_opened", "/dev/kvm opened"),
        (Phase::VmCreated, "vm_created", "VM created"),
        (Phase::MemoryMapped, "memory_mapped", "Guest memory mapped"),
        (Phase::KernelLoaded, "kernel_loaded", "Linux kernel loaded"),
        (Phase::GuestLoaded, "guest_loaded", "Guest kernel loaded"),
        (Phase::VcpuCreated, "vcpu_created", "vCPU created"),
        (Phase::FirstExit, "first_exit", "First exit to the VMM"),
        (Phase::FirstConsole, "first_console", "First console output"),
        (Phase::GuestEntry, "guest_entry", "Guest entry"),
        (Phase::GuestGdt, "guest_gdt", "Own GDT loaded"),
        (
            Phase::GuestPaging,
            "guest_paging",
            "Page tables + paging on",
        ),
        (
            Phase::GuestLongMode,
            "guest_long_mode",
            "Long mode (64-bit)",
        ),
        (Phase::GuestIdt, "guest_idt", "Interrupt table + TSS"),
        (Phase::GuestTimer, "guest_timer", "First timer tick"),
        (Phase::GuestUserEnter, "guest_user_enter", "Entering ring 3"),
        (
            Phase::GuestUserReturn,
            "guest_user_return",
            "App (ring 3) returned",
        ),
        (Phase::GuestMilestone, "guest_milestone", "Guest milestone"),
        (Phase::GuestInit, "guest_init", "Guest /init"),
        (
            Phase::GuestMeminfo,
            "guest_meminfo",
            "Guest's own memory view",
        ),
        (
            Phase::PostgresReady,
            "postgres_ready",
            "PostgreSQL ready in the guest",
        ),
        (Phase::Reset, "reset", "Guest reset"),
    ];

    /// The string it travels as.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Phase::StepStart(n) => format!("n{n}_start").into(),
            Phase::StepReady(n) => format!("n{n}_ready").into(),
            named => Self::NAMED
                .iter()
                .find(|(p, _, _)| *p == named)
                .map(|(_, s, _)| *s)
                .expect("every named phase is in NAMED")
                .into(),
        }
    }

    /// Its short human name.
    pub fn label(self) -> std::borrow::Cow<'static, str> {
        match self {
            Phase::StepStart(n) => format!("Starting {n} at once").into(),
            Phase::StepReady(n) => format!("{n} ready").into(),
            named => Self::NAMED
                .iter()
                .find(|(p, _, _)| *p == named)
                .map(|(_, _, l)| *l)
                .expect("every named phase is in NAMED")
                .into(),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        if let Some((p, _, _)) = Self::NAMED.iter().find(|(_, name, _)| *name == s) {
            return Ok(*p);
        }
        let step = |suffix: &str| {
            s.strip_prefix('n')?
                .strip_suffix(suffix)?
                .parse::<u32>()
                .ok()
        };
        if let Some(n) = step("_start") {
            return Ok(Phase::StepStart(n));
        }
        if let Some(n) = step("_ready") {
            return Ok(Phase::StepReady(n));
        }
        Err(format!("unknown phase {s:?}"))
    }
}

impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A phase is a string: a named step, or a density step (`n3_ready`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Phase {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let named = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Phase::NAMED.iter().map(|(_, s, _)| *s)));
        let step = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^n[0-9]+_(start|ready)$"));
        OneOfBuilder::new().item(named).item(step).into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Phase {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_travel_as_the_strings_older_histories_hold() {
        for (p, name, _) in Phase::NAMED {
            assert_eq!(serde_json::to_string(p).unwrap(), format!("\"{name}\""));
            assert_eq!(name.parse::<Phase>(), Ok(*p));
        }
        assert_eq!("n3_ready".parse::<Phase>(), Ok(Phase::StepReady(3)));
        assert_eq!(Phase::StepStart(12).name(), "n12_start");
        assert!("n_ready".parse::<Phase>().is_err());
        assert!("bogus".parse::<Phase>().is_err());
        let names: std::collections::HashSet<_> = Phase::NAMED.iter().map(|x| x.1).collect();
        assert_eq!(names.len(), Phase::NAMED.len(), "no name twice");
    }
}
