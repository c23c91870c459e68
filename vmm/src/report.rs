//! What a run reports: each step as the VMM observed it ([`VmEvent`], on
//! CLOCK_MONOTONIC so the server can place it on its own clock), and the
//! whole run's figures ([`VmReport`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stacklab_api::Phase;

/// One step of a run, as observed by the VMM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Which step (its human name is [`Phase::label`]).
    pub phase: Phase,
    /// What exactly happened.
    pub detail: String,
    /// When the VMM observed it: CLOCK_MONOTONIC in ns (comparable across
    /// processes on this host).
    pub mono_ns: u64,
    /// For guest milestones: guest time since its first instruction, from
    /// the guest's own TSC, in µs.
    pub guest_us: Option<f64>,
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
    /// Every step, in order.
    pub events: Vec<VmEvent>,
    /// The guest's serial console output.
    pub console: String,
    /// Guest RAM configured.
    pub mem_bytes: usize,
    /// Guest RAM the host actually backs with pages (mincore at the end);
    /// `None` if mincore failed.
    pub touched_bytes: Option<usize>,
    /// Exits to the VMM (returns from `KVM_RUN`), all reasons.
    pub exits: u64,
    /// The same exits by reason.
    #[serde(default)]
    pub exit_reasons: ExitCounts,
    /// KVM's TSC frequency for the vCPU, used to convert guest TSC stamps.
    pub tsc_khz: u32,
    /// TSC cycles the ring-3 app measured for its own work (it runs at
    /// native speed even where ring-0 code is emulated).
    pub app_cycles: Option<u64>,
    /// The VMM process's resident set at the end of the run, before the
    /// VM was torn down (guest pages included), in bytes; `None` if its
    /// smaps_rollup could not be read.
    #[serde(default)]
    pub vmm_rss_bytes: Option<u64>,
    /// Its proportional set size at the same moment, in bytes.
    #[serde(default)]
    pub vmm_pss_bytes: Option<u64>,
    /// The KVM calls that set the VM up, in order, each timed.
    #[serde(default)]
    pub ioctls: Vec<IoctlCall>,
    /// `KVM_RUN` calls made in all (each returns at an exit or a signal).
    #[serde(default)]
    pub kvm_runs: u64,
}

/// One call the VMM made to KVM, timed on CLOCK_MONOTONIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoctlCall {
    /// The ioctl's name, e.g. `KVM_CREATE_VM` (or `open` of `/dev/kvm`).
    pub name: String,
    /// When it was issued (CLOCK_MONOTONIC, ns).
    pub mono_ns: u64,
    /// How long until it returned (ns).
    pub took_ns: u64,
}

/// Exits to the VMM by reason: what `KVM_RUN` returned for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCounts {
    /// `KVM_EXIT_IO`: an I/O port read or write.
    pub io: u64,
    /// `KVM_EXIT_MMIO`: a read or write of an address with no memory.
    pub mmio: u64,
    /// Every other reason (halt, shutdown, signal, internal error…).
    pub other: u64,
}

impl ExitCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.io + self.mmio + self.other
    }

    /// Counts one exit of `exit`'s kind.
    pub fn count(&mut self, exit: &kvm_ioctls::VcpuExit<'_>) {
        use kvm_ioctls::VcpuExit as E;
        match exit {
            E::IoIn(..) | E::IoOut(..) => self.io += 1,
            E::MmioRead(..) | E::MmioWrite(..) => self.mmio += 1,
            _ => self.other += 1,
        }
    }
}

/// `/proc/self/smaps_rollup`, opened before the jail's empty root hid
/// `/proc` (the kernel writes it anew on each read from offset 0).
static OWN_SMAPS: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Opens `/proc/self/smaps_rollup` now, for [`own_memory`] to read after
/// `/proc` is gone from view.
pub fn keep_own_memory_readable() {
    if let Ok(file) = std::fs::File::open("/proc/self/smaps_rollup") {
        let _ = OWN_SMAPS.set(file);
    }
}

/// The text of this process's `smaps_rollup`, or "" if unreadable.
fn own_smaps_rollup() -> String {
    use std::os::unix::fs::FileExt;
    let Some(file) = OWN_SMAPS.get() else {
        return std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    };
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while let Ok(n) = file.read_at(&mut buf[len..], len as u64) {
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// `Rss:` and `Pss:` of this process, in bytes (from
/// `/proc/self/smaps_rollup`); `None` for a field that could not be read.
pub fn own_memory() -> (Option<u64>, Option<u64>) {
    let text = own_smaps_rollup();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("Rss:"), field("Pss:"))
}

impl VmReport {
    /// Time between two steps, on the VMM's clock.
    pub fn span(&self, from: Phase, to: Phase) -> Option<Duration> {
        let at = |p: Phase| self.events.iter().find(|e| e.phase == p).map(|e| e.mono_ns);
        Some(Duration::from_nanos(at(to)?.checked_sub(at(from)?)?))
    }
}

/// CLOCK_MONOTONIC now, in ns (the clock `Instant` uses, readable as a number).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records each step as it happens and passes it on.
pub(crate) struct Recorder<'a> {
    pub events: Vec<VmEvent>,
    /// The KVM calls timed through [`Recorder::call`].
    pub ioctls: Vec<IoctlCall>,
    /// `KVM_RUN` calls so far.
    pub kvm_runs: u64,
    sink: &'a mut dyn FnMut(&VmEvent),
}

impl Recorder<'_> {
    /// A recorder that passes each step to `sink` as it happens.
    pub fn new(sink: &mut dyn FnMut(&VmEvent)) -> Recorder<'_> {
        Recorder {
            events: Vec::new(),
            ioctls: Vec::new(),
            kvm_runs: 0,
            sink,
        }
    }

    /// Makes the KVM call `name` through `f`, timing it (two reads of
    /// the vDSO clock: some 50 ns).
    pub fn call<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let mono_ns = monotonic_ns();
        let out = f();
        let took_ns = monotonic_ns().saturating_sub(mono_ns);
        self.ioctls.push(IoctlCall {
            name: name.to_owned(),
            mono_ns,
            took_ns,
        });
        out
    }

    /// Records a step now.
    pub fn step(&mut self, phase: Phase, detail: String, guest_us: Option<f64>) {
        let event = VmEvent {
            phase,
            detail,
            mono_ns: monotonic_ns(),
            guest_us,
        };
        (self.sink)(&event);
        self.events.push(event);
    }
}

/// Bytes of `[addr, addr+len)` backed by host pages right now (mincore);
/// `None` if mincore failed.
pub(crate) fn resident_bytes(addr: *mut u8, len: usize) -> Option<usize> {
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr..addr+len` is one mapping we own (guest memory, still
    // alive), and `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    Some(vec.iter().filter(|b| **b & 1 == 1).count() * page)
}
