//! The tiny guest (`guest/`): create the VM, load the ELF, enter it in long
//! mode at its ELF entry point (the VMM writes the GDT and page tables, as
//! for Linux's 64-bit boot protocol), run it to ready and power-off, tear
//! down. Its devices are ports the guest and the VMM agree on in
//! `stacklab_abi`. (The same file boots under Firecracker or QEMU through
//! its PVH note, in 32-bit mode.)

use stacklab_api::Phase;
use std::io::Cursor;
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{VcpuExit, VcpuFd};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use serde::{Deserialize, Serialize};
use stacklab_abi as abi;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::long_mode::{self, page};
use crate::error::{kvm_err, VmError};
use crate::machine::{IrqChip, Machine};
use crate::report::{ExitCounts, Recorder, VmEvent, VmReport};
use crate::vcpu::{next_exit, with_watchdog};

/// Default guest RAM.
pub const DEFAULT_MEM_BYTES: usize = 16 << 20;
/// The most guest RAM a run may ask for.
pub const MAX_MEM_BYTES: usize = 256 << 20;
/// The least guest RAM: the kernel (from 1 MiB) and its app (2-4 MiB)
/// must fit (the boot page tables map the first 16 MiB, RAM or not).
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
    /// At ready, wait for a line on standard input before letting the
    /// guest go on: the server measures the VM while it is held (and the
    /// instances of a density step all at once).
    #[serde(default)]
    pub hold: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_bytes: DEFAULT_MEM_BYTES,
            deadline: Duration::from_secs(2),
            mode: abi::mode::NORMAL,
            console_limit: 16 << 10,
            hold: false,
        }
    }
}

/// A finished run: its report, and the VM itself, torn down when this is
/// dropped, so that the caller can send the report first and take the
/// teardown off the learner's wait.
pub struct Finished {
    /// What happened, measured before the teardown.
    pub report: VmReport,
    machine: Machine,
}

impl Finished {
    /// Tears the VM down now (closing its fds unmaps guest memory).
    pub fn tear_down(self) {
        drop(self.machine);
    }
}

/// Runs `image` (an ELF guest kernel) once. `on_event` sees each step as it
/// happens. On error every resource (fds, memory, the timer) is released
/// before this returns; on success, when the [`Finished`] is dropped.
pub fn run(
    image: &[u8],
    config: &VmConfig,
    on_event: &mut dyn FnMut(&VmEvent),
) -> Result<Finished, VmError> {
    VmError::check_memory(config.mem_bytes, MIN_MEM_BYTES, MAX_MEM_BYTES)?;
    let deadline = Instant::now() + config.deadline;
    let mut rec = Recorder::new(on_event);

    let machine = Machine::create(config.mem_bytes, IrqChip::LapicOnly, &mut rec)?;
    let Machine {
        kvm, vm, memory, ..
    } = &machine;

    let loaded = Elf::load(memory, None, &mut Cursor::new(image), None)
        .map_err(|e| VmError::Load(e.to_string()))?;
    let entry = loaded.kernel_load.0;
    let pvh = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => format!("{:#x}", addr.0),
        _ => "none".to_string(),
    };
    long_mode::write_tables(memory, guest_page_map())?;
    memory
        .write_obj(
            config.mode | abi::mode::CONSOLE_IN_MEMORY,
            GuestAddress(abi::MODE_ADDR),
        )
        .map_err(|e| VmError::Memory(e.to_string()))?;
    memory
        .write_obj(config.mem_bytes as u64, GuestAddress(abi::RAM_BYTES_ADDR))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    rec.step(
        Phase::GuestLoaded,
        format!(
            "the {} byte ELF image was loaded into guest RAM up to {:#x}; the VMM wrote a GDT and page tables (identity map of the first {} MiB, ring 3 allowed only at {:#x}-{:#x}) so the guest can start in 64-bit mode at its ELF entry {entry:#x} (its 32-bit PVH entry, for other VMMs, is at {pvh})",
            image.len(),
            loaded.kernel_end,
            abi::IDENTITY_MAP_END >> 20,
            abi::USER_BASE,
            abi::USER_END
        ),
        None,
    );

    let mut vcpu = rec
        .call("KVM_CREATE_VCPU", || vm.create_vcpu(0))
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let cpuid = rec
        .call("KVM_GET_SUPPORTED_CPUID", || {
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        })
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    rec.call("KVM_SET_CPUID2", || vcpu.set_cpuid2(&cpuid))
        .map_err(kvm_err("KVM_SET_CPUID2"))?;
    rec.call("KVM_SET_SREGS + KVM_SET_REGS (each after its GET)", || {
        long_mode::set_long_mode_entry(&vcpu, entry, 0, 0)
    })?;
    let tsc_khz = rec
        .call("KVM_GET_TSC_KHZ", || vcpu.get_tsc_khz())
        .map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
    rec.step(
        Phase::VcpuCreated,
        format!(
            "one vCPU already in 64-bit long mode with paging on, at the entry point; TSC {:.3} GHz",
            tsc_khz as f64 / 1e6
        ),
        None,
    );

    let result = with_watchdog(deadline, || {
        exit_loop(&mut vcpu, memory, config, deadline, tsc_khz, &mut rec)
    });
    let (console, app_cycles, exits) = result?;
    drop(vcpu);
    let report = machine.report(console, exits, tsc_khz, app_cycles, rec);
    Ok(Finished { report, machine })
}

/// The steps a run of the tiny guest reports, in order, when it enters
/// through its 64-bit door (the VMM did the GDT, paging and long mode, so
/// the guest reports from its 64-bit entry on).
pub const STEPS: [Phase; 12] = [
    Phase::KvmOpened,
    Phase::VmCreated,
    Phase::MemoryMapped,
    Phase::GuestLoaded,
    Phase::VcpuCreated,
    Phase::FirstExit,
    Phase::GuestEntry,
    Phase::GuestIdt,
    Phase::GuestTimer,
    Phase::GuestUserEnter,
    Phase::GuestUserReturn,
    Phase::Ready,
];

/// The phase a guest milestone reports, and for the entry milestones
/// which door the guest came in by.
pub fn milestone_phase(id: u8) -> (Phase, &'static str) {
    use abi::milestone as m;
    match id {
        m::ENTRY => (Phase::GuestEntry, " (32-bit entry, paging off)"),
        m::ENTRY_64 => (Phase::GuestEntry, " (64-bit entry, paging on)"),
        m::GDT => (Phase::GuestGdt, ""),
        m::PAGING => (Phase::GuestPaging, ""),
        m::LONG_MODE => (Phase::GuestLongMode, ""),
        m::IDT => (Phase::GuestIdt, ""),
        m::TIMER_TICK => (Phase::GuestTimer, ""),
        m::USER_ENTER => (Phase::GuestUserEnter, ""),
        m::USER_RETURN => (Phase::GuestUserReturn, ""),
        _ => (Phase::GuestMilestone, ""),
    }
}

fn exit_loop(
    vcpu: &mut VcpuFd,
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    mut deadline: Instant,
    tsc_khz: u32,
    rec: &mut Recorder,
) -> Result<(String, Option<u64>, ExitCounts), VmError> {
    let mut console: Vec<u8> = Vec::new();
    let append = |console: &mut Vec<u8>, data: &[u8]| {
        if console.len() + data.len() > config.console_limit {
            return Err(VmError::ConsoleFlood(config.console_limit));
        }
        console.extend_from_slice(data);
        Ok(())
    };
    let mut exits = ExitCounts::default();
    let mut entry_tsc: Option<u64> = None;
    let mut ready = false;
    let mut app_cycles = None;
    let tsc_to_us = |delta: u64| delta as f64 * 1000.0 / tsc_khz.max(1) as f64;
    let mut powered_off = false;
    loop {
        if powered_off {
            let mut log = memory_console(memory);
            log.extend_from_slice(&console);
            let console = String::from_utf8_lossy(&log).into_owned();
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
                let (phase, door) = milestone_phase(id);
                let guest_us = since_entry.map(tsc_to_us).unwrap_or(0.0);
                rec.step(
                    phase,
                    format!("reported by the guest through port {:#x}{door}; guest TSC {tsc}, {guest_us:.1} µs after its first instruction by that TSC", abi::MILESTONE_PORT),
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
            VcpuExit::IoOut(abi::I8042_COMMAND_PORT, [abi::I8042_RESET])
            | VcpuExit::IoOut(abi::POWER_OFF_PORT, _) => {
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
                    Phase::Ready,
                    format!("the guest wrote {} to the boot-complete register at {:#x} (Firecracker's signal)", abi::BOOT_COMPLETE_VALUE, abi::BOOT_COMPLETE_MMIO),
                    None,
                );
                if config.hold {
                    // Time held at ready is the server's (it measures, and
                    // a density step waits for its siblings), not the
                    // guest's: it does not count against the boot deadline.
                    let held = Instant::now();
                    hold_at_ready();
                    deadline += held.elapsed();
                }
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

/// The map the guest expects at its 64-bit entry (`stacklab_abi`):
/// identity 2 MiB pages, ring 3 only on the app's, and the two device pages
/// uncached.
fn guest_page_map() -> impl Iterator<Item = (u64, u64)> {
    let ram = (0..abi::IDENTITY_MAP_END).step_by(2 << 20).map(|addr| {
        let user = (abi::USER_BASE..abi::USER_END).contains(&addr);
        (addr, if user { page::USER } else { 0 })
    });
    let devices = [abi::BOOT_COMPLETE_MMIO, abi::LAPIC_BASE & !((2 << 20) - 1)]
        .map(|addr| (addr, page::UNCACHED));
    ram.chain(devices)
}

/// The console log the guest kept in memory (see `abi::CONSOLE_ADDR`).
fn memory_console(memory: &GuestMemoryMmap) -> Vec<u8> {
    let len = memory
        .read_obj::<u32>(GuestAddress(abi::CONSOLE_ADDR))
        .map_or(0, |n| (n as usize).min(abi::CONSOLE_CAPACITY));
    let mut bytes = vec![0; len];
    if memory
        .read_slice(&mut bytes, GuestAddress(abi::CONSOLE_ADDR + 4))
        .is_err()
    {
        bytes.clear();
    }
    bytes
}

/// Blocks until a line (or end of file) arrives on standard input.
fn hold_at_ready() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
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
        let Err(err) = run(&[], &config, &mut |_| {}) else {
            panic!("ran with too much memory")
        };
        assert!(matches!(err, VmError::MemorySize { .. }), "{err}");
        assert!(err.to_string().contains("limit is 256 MiB"), "{err}");
    }
}
