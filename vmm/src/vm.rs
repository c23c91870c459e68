//! One micro-VM run: create, load, run to ready, tear down.

use std::io::Cursor;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::abi;

/// Default guest RAM.
pub const DEFAULT_MEM_BYTES: usize = 16 << 20;
/// The most guest RAM a run may ask for.
pub const MAX_MEM_BYTES: usize = 256 << 20;
/// The guest is identity-mapped up to 16 MiB by its own page tables.
pub const MIN_MEM_BYTES: usize = 4 << 20;

/// What to run and within which limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    /// Guest RAM in bytes (between [`MIN_MEM_BYTES`] and [`MAX_MEM_BYTES`]).
    pub mem_bytes: usize,
    /// The run must reach ready (and power off) within this.
    pub deadline: Duration,
    /// A [`abi::mode`] value for the guest.
    pub mode: u32,
    /// Console bytes kept; a guest writing more is stopped.
    pub console_limit: usize,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_bytes: DEFAULT_MEM_BYTES,
            deadline: Duration::from_secs(2),
            mode: abi::mode::NORMAL,
            console_limit: 16 << 10,
        }
    }
}

/// One step of a run, as observed by the VMM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Stable id, e.g. `vm_created` or `guest_long_mode`.
    pub phase: String,
    /// Human name.
    pub label: String,
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
    /// Guest RAM the host actually backs with pages (mincore at ready).
    pub touched_bytes: usize,
    /// VM exits handled.
    pub exits: u64,
    /// KVM's TSC frequency for the vCPU, used to convert guest TSC stamps.
    pub tsc_khz: u32,
    /// TSC cycles the ring-3 app measured for its own work (it runs at
    /// native speed even where ring-0 code is emulated).
    pub app_cycles: Option<u64>,
    /// The VMM process's resident set at the end of the run, before the
    /// VM was torn down (guest pages included), in bytes.
    #[serde(default)]
    pub vmm_rss_bytes: u64,
    /// Its proportional set size at the same moment, in bytes.
    #[serde(default)]
    pub vmm_pss_bytes: u64,
}

/// `Rss:` and `Pss:` of this process, in bytes (from
/// `/proc/self/smaps_rollup`).
pub fn own_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("Rss:"), field("Pss:"))
}

impl VmReport {
    /// Time between two steps (by phase id), on the VMM's clock.
    pub fn span(&self, from: &str, to: &str) -> Option<Duration> {
        let at = |p: &str| self.events.iter().find(|e| e.phase == p).map(|e| e.mono_ns);
        Some(Duration::from_nanos(at(to)?.checked_sub(at(from)?)?))
    }
}

/// Why a run failed. Each says what the guest (or host) did, for a learner.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` or an ioctl failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// More (or less) memory than allowed.
    #[error("guest memory of {} MiB asked; the limit is {} MiB (and at least {} MiB)", .asked >> 20, .max >> 20, .min >> 20)]
    MemorySize {
        /// Bytes asked for.
        asked: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// Guest memory could not be set up.
    #[error("cannot allocate guest memory: {0}")]
    Memory(String),
    /// The image is not a loadable guest.
    #[error("cannot load the guest image: {0}")]
    Load(String),
    /// The deadline passed.
    #[error("the guest did not become ready within {0:?}")]
    Deadline(Duration),
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    #[error("the guest triple-faulted: an exception it could not handle (KVM_EXIT_SHUTDOWN)")]
    TripleFault,
    /// KVM could not emulate an instruction.
    #[error("KVM could not emulate the guest's instruction at {rip:#x} (bytes {bytes})")]
    InternalError { rip: u64, bytes: String },
    /// The guest touched an I/O port no device owns.
    #[error("the guest {dir} I/O port {port:#x}, which no device owns", dir = if *.write { "wrote to" } else { "read from" })]
    UnknownIo { port: u16, write: bool },
    /// The guest touched MMIO no device owns.
    #[error("the guest {dir} MMIO address {addr:#x}, which no device owns", dir = if *.write { "wrote to" } else { "read from" })]
    UnknownMmio { addr: u64, write: bool },
    /// Too much console output.
    #[error("the guest wrote more than {0} bytes to its console; stopped")]
    ConsoleFlood(usize),
    /// The guest reported an exception it did not expect.
    #[error("the guest kernel hit exception {vector} ({name}) at {rip:#x}", name = exception_name(*.vector))]
    GuestException { vector: u8, rip: u64 },
    /// Powered off or halted before saying ready.
    #[error("the guest stopped before it was ready ({0})")]
    StoppedEarly(&'static str),
    /// A Linux guest stopped (reset, halted) before its userspace was
    /// ready; its console's last lines usually say why (a kernel panic).
    #[error("the guest stopped before its userspace was ready ({why}); its console ended with:\n{console_tail}")]
    GuestStopped {
        /// What it did.
        why: &'static str,
        /// The last lines of its console.
        console_tail: String,
    },
    /// Any other exit.
    #[error("unexpected VM exit: {0}")]
    UnexpectedExit(String),
}

impl VmError {
    /// `Ok` when `asked` bytes of guest RAM lie within `min..=max`.
    pub fn check_memory(asked: usize, min: usize, max: usize) -> Result<(), VmError> {
        if (min..=max).contains(&asked) {
            Ok(())
        } else {
            Err(VmError::MemorySize { asked, min, max })
        }
    }

    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            VmError::Kvm { .. } => "kvm",
            VmError::MemorySize { .. } => "memory_limit",
            VmError::Memory(_) => "memory",
            VmError::Load(_) => "load",
            VmError::Deadline(_) => "deadline",
            VmError::TripleFault => "triple_fault",
            VmError::InternalError { .. } => "internal_error",
            VmError::UnknownIo { .. } => "unknown_io",
            VmError::UnknownMmio { .. } => "unknown_mmio",
            VmError::ConsoleFlood(_) => "console_flood",
            VmError::GuestException { .. } => "guest_exception",
            VmError::StoppedEarly(_) | VmError::GuestStopped { .. } => "stopped_early",
            VmError::UnexpectedExit(_) => "unexpected_exit",
        }
    }
}

fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        6 => "invalid opcode",
        8 => "double fault",
        13 => "general protection",
        14 => "page fault",
        0xff => "kernel panic",
        _ => "exception",
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

pub(crate) struct Recorder<'a> {
    pub events: Vec<VmEvent>,
    sink: &'a mut dyn FnMut(&VmEvent),
}

impl Recorder<'_> {
    /// A recorder that passes each step to `sink` as it happens.
    pub fn new(sink: &mut dyn FnMut(&VmEvent)) -> Recorder<'_> {
        Recorder {
            events: Vec::new(),
            sink,
        }
    }

    /// Records a step now.
    pub fn step(&mut self, phase: &str, label: &str, detail: String, guest_us: Option<f64>) {
        let event = VmEvent {
            phase: phase.into(),
            label: label.into(),
            detail,
            mono_ns: monotonic_ns(),
            guest_us,
        };
        (self.sink)(&event);
        self.events.push(event);
    }
}

/// A VM with its interrupt controllers, timer and RAM, before any guest is
/// loaded: the part every kind of guest shares.
pub(crate) struct Machine {
    pub kvm: Kvm,
    pub vm: kvm_ioctls::VmFd,
    pub memory: GuestMemoryMmap,
    pub mem_bytes: usize,
    pub host_addr: *mut u8,
    /// Whether console bytes on the serial port go through KVM's coalesced
    /// I/O ring instead of one exit each.
    pub coalesced_console: bool,
}

impl Machine {
    /// Opens `/dev/kvm`, creates the VM, the in-kernel PIC/IOAPIC and PIT
    /// (with `pit_flags`), and `mem_bytes` of RAM at guest address 0,
    /// recording each step. With `coalesce_console`, writes to the serial
    /// data port are batched where KVM supports it.
    pub fn create(
        mem_bytes: usize,
        pit_flags: u32,
        coalesce_console: bool,
        rec: &mut Recorder,
    ) -> Result<Machine, VmError> {
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        rec.step(
            "kvm_opened",
            "/dev/kvm opened",
            format!("KVM API version {}", kvm.get_api_version()),
            None,
        );

        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // Intel needs a TSS region for real-mode emulation; elsewhere it is ignored or refused, both fine.
        let _ = vm.set_tss_address(0xfffb_d000);
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config {
            flags: pit_flags,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        let coalesced_console = coalesce_console
            && vm.check_extension(kvm_ioctls::Cap::CoalescedPio)
            && vm
                .register_coalesced_mmio(
                    kvm_ioctls::IoEventAddress::Pio(abi::SERIAL_PORT as u64),
                    1,
                )
                .is_ok();
        rec.step(
            "vm_created",
            "VM created",
            "KVM_CREATE_VM, plus the in-kernel interrupt controllers and timer (PIC, IOAPIC, PIT)"
                .into(),
            None,
        );

        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_bytes)])
            .map_err(|e| VmError::Memory(e.to_string()))?;
        let host_addr = memory
            .get_host_address(GuestAddress(0))
            .map_err(|e| VmError::Memory(e.to_string()))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_bytes as u64,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the region is backed by `memory`, which the Machine owns
        // and which callers drop after the VM (fields drop in order: `vm`
        // before `memory`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        rec.step(
            "memory_mapped",
            "Guest memory mapped",
            format!("{} MiB of anonymous host memory registered as guest RAM (pages are only backed when touched)", mem_bytes >> 20),
            None,
        );
        Ok(Machine {
            kvm,
            vm,
            memory,
            mem_bytes,
            host_addr,
            coalesced_console,
        })
    }
}

impl Machine {
    /// The run's report, with memory measured now, while the VM still
    /// exists: the guest pages the host backs (mincore) and the VMM
    /// process's own RSS and PSS, guest pages included.
    pub fn report(
        &self,
        events: Vec<VmEvent>,
        console: String,
        exits: u64,
        tsc_khz: u32,
        app_cycles: Option<u64>,
    ) -> VmReport {
        let (vmm_rss_bytes, vmm_pss_bytes) = own_memory();
        VmReport {
            events,
            console,
            mem_bytes: self.mem_bytes,
            touched_bytes: resident_bytes(self.host_addr, self.mem_bytes),
            exits,
            tsc_khz,
            app_cycles,
            vmm_rss_bytes,
            vmm_pss_bytes,
        }
    }
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Runs `image` (an ELF guest kernel) once. `on_event` sees each step as it
/// happens. All resources (fds, memory, the watchdog thread) are released
/// before this returns.
pub fn run(
    image: &[u8],
    config: &VmConfig,
    on_event: &mut dyn FnMut(&VmEvent),
) -> Result<VmReport, VmError> {
    VmError::check_memory(config.mem_bytes, MIN_MEM_BYTES, MAX_MEM_BYTES)?;
    let deadline = Instant::now() + config.deadline;
    let mut rec = Recorder::new(on_event);

    let machine = Machine::create(config.mem_bytes, 0, true, &mut rec)?;
    let Machine {
        kvm,
        vm,
        memory,
        coalesced_console,
        ..
    } = &machine;
    let coalesced_console = *coalesced_console;

    let loaded = Elf::load(memory, None, &mut Cursor::new(image), None)
        .map_err(|e| VmError::Load(e.to_string()))?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(VmError::Load("the image has no PVH entry note".into())),
    };
    memory
        .write_obj(config.mode, GuestAddress(abi::MODE_ADDR))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    rec.step(
        "guest_loaded",
        "Guest kernel loaded",
        format!(
            "the {} byte ELF image was loaded into guest RAM at {:#x}-{:#x}; PVH entry at {entry:#x}",
            image.len(),
            loaded.kernel_load.0,
            loaded.kernel_end
        ),
        None,
    );

    let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    if coalesced_console {
        vcpu.map_coalesced_mmio_ring()
            .map_err(kvm_err("mapping the coalesced I/O ring"))?;
    }
    set_pvh_entry_state(&vcpu, entry)?;
    let tsc_khz = vcpu.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
    rec.step(
        "vcpu_created",
        "vCPU created",
        format!(
            "one vCPU in 32-bit protected mode, paging off, at the entry point; TSC {:.3} GHz",
            tsc_khz as f64 / 1e6
        ),
        None,
    );

    let result = with_watchdog(deadline, || {
        exit_loop(
            &mut vcpu,
            memory,
            config,
            deadline,
            tsc_khz,
            coalesced_console,
            &mut rec,
        )
    });
    let (console, app_cycles, exits) = result?;
    Ok(machine.report(rec.events, console, exits, tsc_khz, app_cycles))
}

/// PVH boot state: flat 32-bit segments, protected mode, paging off.
fn set_pvh_entry_state(vcpu: &VcpuFd, entry: u64) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let flat = |type_: u8, selector: u16| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0xb, 0x08);
    for seg in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *seg = flat(0x3, 0x10);
    }
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    regs.rip = entry;
    regs.rflags = 0x2;
    regs.rbx = 0; // no hvm_start_info: our guest needs none
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

/// Runs `vcpu_loop` on this thread while a watchdog thread kicks it out of
/// KVM_RUN once `deadline` has passed.
pub(crate) fn with_watchdog<R>(deadline: Instant, vcpu_loop: impl FnOnce() -> R) -> R {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
    // SAFETY: pthread_self has no preconditions. Kept as an integer: on
    // musl pthread_t is a pointer, which may not cross threads as such.
    let this_thread = unsafe { libc::pthread_self() } as usize;
    let done = std::sync::atomic::AtomicBool::new(false);

    std::thread::scope(|scope| {
        // The watchdog: after the deadline, signal the vCPU thread every
        // 5 ms until it has left KVM_RUN for good.
        let watchdog = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let now = Instant::now();
                if now >= deadline {
                    // SAFETY: the target thread is alive until `done` is set
                    // (the scope joins us before it returns).
                    unsafe { libc::pthread_kill(this_thread as libc::pthread_t, kick_signal()) };
                    std::thread::sleep(Duration::from_millis(5));
                } else {
                    std::thread::park_timeout((deadline - now).min(Duration::from_millis(50)));
                }
            }
        });
        let result = vcpu_loop();
        done.store(true, std::sync::atomic::Ordering::Release);
        // Wake it now rather than at its next timeout, so the run ends here.
        watchdog.thread().unpark();
        result
    })
}

/// Runs the vCPU until its next exit, counting exits and recording the
/// first. `None` when KVM_RUN was interrupted (the watchdog's signal): the
/// caller loops, and the deadline check here ends the run.
pub(crate) fn next_exit<'a>(
    vcpu: &'a mut VcpuFd,
    deadline: Instant,
    limit: Duration,
    exits: &mut u64,
    rec: &mut Recorder,
) -> Result<Option<VcpuExit<'a>>, VmError> {
    if Instant::now() >= deadline {
        return Err(VmError::Deadline(limit));
    }
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Ok(None),
        Err(e) => {
            return Err(VmError::Kvm {
                what: "KVM_RUN",
                source: e,
            })
        }
    };
    *exits += 1;
    if *exits == 1 {
        rec.step(
            "first_exit",
            "First VM exit",
            "the guest ran its first instructions and handed control back to the VMM".into(),
            None,
        );
    }
    Ok(Some(exit))
}

fn exit_loop(
    vcpu: &mut VcpuFd,
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    deadline: Instant,
    tsc_khz: u32,
    coalesced_console: bool,
    rec: &mut Recorder,
) -> Result<(String, Option<u64>, u64), VmError> {
    let mut console: Vec<u8> = Vec::new();
    let append = |console: &mut Vec<u8>, data: &[u8]| {
        if console.len() + data.len() > config.console_limit {
            return Err(VmError::ConsoleFlood(config.console_limit));
        }
        console.extend_from_slice(data);
        Ok(())
    };
    let mut exits: u64 = 0;
    let mut entry_tsc: Option<u64> = None;
    let mut ready = false;
    let mut app_cycles = None;
    let tsc_to_us = |delta: u64| delta as f64 * 1000.0 / tsc_khz.max(1) as f64;
    let mut powered_off = false;
    loop {
        // Bytes the guest wrote to the console since the last exit.
        if coalesced_console {
            while let Some(entry) = vcpu
                .coalesced_mmio_read()
                .map_err(kvm_err("reading the coalesced I/O ring"))?
            {
                append(&mut console, &entry.data[..(entry.len as usize).min(8)])?;
            }
        }
        if powered_off {
            let console = String::from_utf8_lossy(&console).into_owned();
            return Ok((console, app_cycles, exits));
        }
        let Some(exit) = next_exit(vcpu, deadline, config.deadline, &mut exits, rec)? else {
            continue;
        };
        match exit {
            VcpuExit::IoOut(abi::MILESTONE_PORT, data) => {
                let id = data.first().copied().unwrap_or(0);
                let regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
                let tsc = ((regs.rdi & 0xffff_ffff) << 32) | (regs.rsi & 0xffff_ffff);
                if id == abi::milestone::USER_RETURN {
                    app_cycles = Some(regs.r8);
                }
                let since_entry = entry_tsc.map(|t| tsc.saturating_sub(t));
                if entry_tsc.is_none() {
                    entry_tsc = Some(tsc);
                }
                let (phase, label) = abi::MILESTONE_NAMES
                    .iter()
                    .find(|(m, _, _)| *m == id)
                    .map(|(_, p, l)| (*p, *l))
                    .unwrap_or(("guest_milestone", "Guest milestone"));
                let guest_us = since_entry.map(tsc_to_us).unwrap_or(0.0);
                rec.step(
                    phase,
                    label,
                    format!("reported by the guest through port {:#x}; guest TSC {tsc}, {guest_us:.1} µs after its first instruction", abi::MILESTONE_PORT),
                    Some(guest_us),
                );
            }
            VcpuExit::IoOut(abi::FAULT_PORT, data) => {
                let vector = data.first().copied().unwrap_or(0);
                let regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
                return Err(VmError::GuestException {
                    vector,
                    rip: regs.rsi,
                });
            }
            VcpuExit::IoOut(abi::SERIAL_PORT, data) => append(&mut console, data)?,
            // The other UART registers: configuration the guest may write; ignored.
            VcpuExit::IoOut(0x3f9..=0x3ff, _) => {}
            VcpuExit::IoIn(0x3fd, data) => data.fill(0x60), // line status: transmitter empty
            VcpuExit::IoIn(0x3f8..=0x3ff, data) => data.fill(0),
            VcpuExit::IoOut(abi::POWER_OFF_PORT, _) => {
                if !ready {
                    return Err(VmError::StoppedEarly("it powered off"));
                }
                powered_off = true;
            }
            VcpuExit::IoOut(port, _) => return Err(VmError::UnknownIo { port, write: true }),
            VcpuExit::IoIn(port, _) => return Err(VmError::UnknownIo { port, write: false }),
            VcpuExit::MmioWrite(abi::BOOT_COMPLETE_MMIO, data)
                if data.first() == Some(&abi::BOOT_COMPLETE_VALUE) =>
            {
                ready = true;
                rec.step(
                    "ready",
                    "Ready: boot complete",
                    format!("the guest wrote {} to the boot-complete register at {:#x} (Firecracker's signal)", abi::BOOT_COMPLETE_VALUE, abi::BOOT_COMPLETE_MMIO),
                    None,
                );
            }
            VcpuExit::MmioWrite(addr, _) => return Err(VmError::UnknownMmio { addr, write: true }),
            VcpuExit::MmioRead(addr, _) => return Err(VmError::UnknownMmio { addr, write: false }),
            VcpuExit::Shutdown => return Err(VmError::TripleFault),
            VcpuExit::Hlt => return Err(VmError::StoppedEarly("it halted with interrupts off")),
            VcpuExit::InternalError => {
                let regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
                let mut bytes = [0u8; 15];
                let _ = memory.read_slice(&mut bytes, GuestAddress(regs.rip));
                let bytes = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(VmError::InternalError {
                    rip: regs.rip,
                    bytes,
                });
            }
            VcpuExit::Intr => continue,
            other => return Err(VmError::UnexpectedExit(format!("{other:?}"))),
        }
    }
}

/// Bytes of `[addr, addr+len)` backed by host pages right now (mincore).
pub(crate) fn resident_bytes(addr: *mut u8, len: usize) -> usize {
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr..addr+len` is one mapping we own (guest memory, still
    // alive), and `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|b| **b & 1 == 1).count() * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_outside_the_limits_is_refused_before_kvm_is_touched() {
        let config = VmConfig {
            mem_bytes: MAX_MEM_BYTES + 1,
            ..VmConfig::default()
        };
        let err = run(&[], &config, &mut |_| {}).unwrap_err();
        assert!(matches!(err, VmError::MemorySize { .. }), "{err}");
        assert!(err.to_string().contains("limit is 256 MiB"), "{err}");
    }
}
