//! Booting a real Linux kernel (a bzImage, with an initramfs) the way
//! Firecracker does: the 64-bit boot protocol, a zero page with an e820 map
//! and the command line, a 16550 UART (vm-superio) as `ttyS0` with its
//! interrupt through an irqfd, the in-kernel PIC/IOAPIC/PIT, a minimal
//! i8042 whose reset command ends the run, a CMOS clock, and the boot-complete register:
//! the guest's `/init` writes 123 to [`abi::BOOT_COMPLETE_MMIO`] once
//! userspace runs, so "kernel start → userspace" is measured exactly.
//!
//! `/init` reports what it sees by console lines starting with `stacklab: `
//! (see [`parse_report_line`]); further milestones are other values written
//! to the boot-complete register ([`milestone`]).

use stacklab_api::Phase;
use std::io::Cursor;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuExit, VcpuFd};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::{load_cmdline, KernelLoader};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use stacklab_abi as abi;

use crate::arch::x86_64::linux_boot::{
    set_long_mode_entry, write_boot_structures, CMDLINE_ADDR, CMDLINE_MAX, HIGH_MEMORY,
};
use crate::devices::cmos::{self, Cmos};
use crate::devices::i8042::{self, I8042};
use crate::devices::serial::{IrqLine, Serial, SERIAL_BASE, SERIAL_IRQ};
use crate::error::{kvm_err, VmError};
use crate::machine::{IrqChip, Machine};
use crate::report::{ExitCounts, Recorder, VmEvent, VmReport};
use crate::vcpu::{next_exit, with_watchdog};

mod report;

use report::report_line;
pub use report::{milestone, parse_report_line, GuestView, ReportLine};

/// The kernel command line: serial console, reset through the i8042 on
/// reboot, reboot at once on panic, no PCI/ACPI probing (this machine has
/// neither), one UART, and a quiet boot (each console byte is a VM exit).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off acpi=off nomodules \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd quiet";

/// Smallest guest RAM for a Linux guest.
pub const MIN_MEM_BYTES: usize = 32 << 20;
/// Largest guest RAM for a Linux guest.
pub const MAX_MEM_BYTES: usize = 2 << 30;

/// What to boot and within which limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinuxConfig {
    /// Guest RAM in bytes.
    pub mem_bytes: usize,
    /// The whole run (boot, `/init`'s work, reset) must end within this.
    pub deadline: Duration,
    /// Console bytes kept; a guest writing more is stopped.
    pub console_limit: usize,
    /// The kernel command line.
    pub cmdline: String,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        LinuxConfig {
            mem_bytes: 128 << 20,
            deadline: Duration::from_secs(60),
            console_limit: 1 << 20,
            cmdline: DEFAULT_CMDLINE.into(),
        }
    }
}

/// Boots `kernel` (a bzImage) with `initrd` (a cpio archive), runs until
/// the guest resets itself after reaching userspace, and reports every
/// step. All resources are released before this returns.
pub fn run_linux(
    kernel: &[u8],
    initrd: &[u8],
    config: &LinuxConfig,
    on_event: &mut dyn FnMut(&VmEvent),
) -> Result<(VmReport, GuestView), VmError> {
    VmError::check_memory(config.mem_bytes, MIN_MEM_BYTES, MAX_MEM_BYTES)?;
    let deadline = Instant::now() + config.deadline;
    let mut rec = Recorder::new(on_event);
    let machine = Machine::create(
        config.mem_bytes,
        IrqChip::Full {
            pit_flags: KVM_PIT_SPEAKER_DUMMY,
        },
        &mut rec,
    )?;
    let memory = &machine.memory;

    let loaded = BzImage::load(
        memory,
        None,
        &mut Cursor::new(kernel),
        Some(GuestAddress(HIGH_MEMORY)),
    )
    .map_err(|e| VmError::Load(format!("not a bzImage kernel: {e}")))?;
    let setup = loaded
        .setup_header
        .ok_or_else(|| VmError::Load("the bzImage has no setup header".into()))?;
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX).map_err(|e| VmError::Load(format!("command line: {e}")))?;
    cmdline
        .insert_str(&config.cmdline)
        .map_err(|e| VmError::Load(format!("command line: {e}")))?;
    load_cmdline(memory, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| VmError::Load(format!("command line: {e}")))?;
    // The initrd goes at the top of RAM, page-aligned, where the kernel
    // will not decompress over it.
    let initrd_addr = (config.mem_bytes as u64)
        .checked_sub(initrd.len() as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a > loaded.kernel_end && *a <= u64::from(setup.initrd_addr_max))
        .ok_or_else(|| {
            VmError::Load(format!(
                "the {} MiB initramfs does not fit in {} MiB of guest RAM beside the kernel",
                initrd.len() >> 20,
                config.mem_bytes >> 20
            ))
        })?;
    memory
        .write_slice(initrd, GuestAddress(initrd_addr))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let cmdline_len = config.cmdline.len() + 1;
    write_boot_structures(
        memory,
        config.mem_bytes,
        setup,
        cmdline_len,
        (initrd_addr, initrd.len()),
    )?;
    rec.step(
        Phase::KernelLoaded,
        format!(
            "bzImage of {} bytes (boot protocol {}.{:02}) at {:#x}, initramfs of {} bytes at {initrd_addr:#x}, command line \"{}\"",
            kernel.len(),
            setup.version >> 8,
            setup.version & 0xff,
            loaded.kernel_load.0,
            initrd.len(),
            config.cmdline
        ),
        None,
    );

    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Memory(e.to_string()))?;
    machine
        .vm
        .register_irqfd(&irq, SERIAL_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let mut serial = vm_superio::Serial::new(IrqLine(irq), Vec::<u8>::new());

    let mut vcpu = machine
        .vm
        .create_vcpu(0)
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let mut cpuid = machine
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= 1 << 31; // "running under a hypervisor"
            entry.ebx &= 0x00ff_ffff; // initial APIC id 0
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    // The 64-bit entry point is 0x200 past the start of the loaded kernel.
    let entry = loaded.kernel_load.0 + 0x200;
    set_long_mode_entry(&vcpu, entry)?;
    let tsc_khz = vcpu.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
    rec.step(
        Phase::VcpuCreated,
        format!("one vCPU in 64-bit long mode with paging on, at the kernel's 64-bit entry {entry:#x}; RSI points to the boot parameters"),
        None,
    );

    let mut guest = GuestView::default();
    let result = with_watchdog(deadline, || {
        linux_exit_loop(
            &mut vcpu,
            &mut serial,
            config,
            deadline,
            &mut guest,
            &mut rec,
        )
    });
    let console = String::from_utf8_lossy(serial.writer()).into_owned();
    let exits = match result {
        Ok(exits) => exits,
        Err(VmError::StoppedEarly(why)) => {
            return Err(VmError::GuestStopped {
                why,
                console_tail: tail(&console, 12),
            })
        }
        Err(e) => return Err(e),
    };
    Ok((machine.report(console, exits, tsc_khz, None, rec), guest))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn linux_exit_loop(
    vcpu: &mut VcpuFd,
    serial: &mut Serial,
    config: &LinuxConfig,
    deadline: Instant,
    guest: &mut GuestView,
    rec: &mut Recorder,
) -> Result<ExitCounts, VmError> {
    let mut i8042 = I8042::default();
    let mut cmos = Cmos::default();
    let mut exits = ExitCounts::default();
    let mut ready = false;
    let mut line_start = 0usize;
    loop {
        let Some(exit) = next_exit(vcpu, deadline, config.deadline, &mut exits, rec)? else {
            continue;
        };
        match exit {
            VcpuExit::IoOut(port @ SERIAL_BASE..=0x3ff, data) => {
                let offset = (port - SERIAL_BASE) as u8;
                let before = serial.writer().len();
                serial
                    .write(offset, data.first().copied().unwrap_or(0))
                    .map_err(|e| VmError::UnexpectedExit(format!("serial: {e:?}")))?;
                let console = serial.writer();
                if before == 0 && !console.is_empty() {
                    rec.step(
                        Phase::FirstConsole,
                        "the guest wrote its first byte to the serial console (ttyS0)".into(),
                        None,
                    );
                }
                if console.len() > config.console_limit {
                    return Err(VmError::ConsoleFlood(config.console_limit));
                }
                if console.last() == Some(&b'\n') && console.len() > before {
                    let line = String::from_utf8_lossy(&console[line_start..]).into_owned();
                    line_start = console.len();
                    report_line(line.trim_end(), guest, rec);
                }
            }
            VcpuExit::IoIn(port @ SERIAL_BASE..=0x3ff, data) => {
                let value = serial.read((port - SERIAL_BASE) as u8);
                data.fill(value);
            }
            VcpuExit::IoOut(port @ (i8042::DATA_PORT | i8042::COMMAND_PORT), data) => {
                let effect = i8042.write(port, data.first().copied().unwrap_or(0));
                if effect == i8042::Effect::Reset {
                    if !ready {
                        return Err(VmError::StoppedEarly("it reset itself"));
                    }
                    rec.step(
                        Phase::Reset,
                        "the guest asked for a reset through the i8042 controller (its reboot); the VM ends here".into(),
                        None,
                    );
                    return Ok(exits);
                }
            }
            VcpuExit::IoIn(port @ (i8042::DATA_PORT | i8042::COMMAND_PORT), data) => {
                let value = i8042.read(port);
                data.fill(value);
            }
            // Hardware this machine does not have: reads float high, writes
            // go nowhere (what an empty ISA bus does).
            VcpuExit::IoOut(port @ (cmos::INDEX_PORT | cmos::DATA_PORT), data) => {
                cmos.write(port, data.first().copied().unwrap_or(0));
            }
            VcpuExit::IoIn(port @ (cmos::INDEX_PORT | cmos::DATA_PORT), data) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                data.fill(cmos.read(port, now));
            }
            VcpuExit::IoOut(..) => guest.ignored_accesses += 1,
            VcpuExit::IoIn(_, data) => {
                guest.ignored_accesses += 1;
                data.fill(0xff);
            }
            VcpuExit::MmioWrite(abi::BOOT_COMPLETE_MMIO, data) => {
                match data.first().copied() {
                    Some(milestone::BOOT_COMPLETE) if !ready => {
                        ready = true;
                        rec.step(
                            Phase::Ready,
                            format!("the guest's /init wrote {} to the boot-complete register at {:#x} (Firecracker's signal)", milestone::BOOT_COMPLETE, abi::BOOT_COMPLETE_MMIO),
                            None,
                        );
                    }
                    Some(milestone::POSTGRES_READY) => rec.step(
                        Phase::PostgresReady,
                        "the guest's /init saw `SELECT 1` answered over PostgreSQL's Unix socket inside the guest, then wrote 2 to the boot-complete register".into(),
                        None,
                    ),
                    _ => guest.ignored_accesses += 1,
                }
            }
            VcpuExit::MmioWrite(..) => guest.ignored_accesses += 1,
            VcpuExit::MmioRead(_, data) => {
                guest.ignored_accesses += 1;
                data.fill(0xff);
            }
            VcpuExit::Shutdown => {
                if ready {
                    rec.step(
                        Phase::Reset,
                        "the guest reset itself (triple fault, the last resort of its reboot); the VM ends here".into(),
                        None,
                    );
                    return Ok(exits);
                }
                return Err(VmError::StoppedEarly("it triple-faulted (reset)"));
            }
            VcpuExit::Hlt => return Err(VmError::StoppedEarly("it halted")),
            VcpuExit::InternalError => {
                let regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
                return Err(VmError::InternalError {
                    rip: regs.rip,
                    bytes: String::new(),
                });
            }
            VcpuExit::Intr => {}
            other => return Err(VmError::UnexpectedExit(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Debian's kernel (written by `stacklab linux build`) loads as a
    /// bzImage: a relocatable 64-bit kernel whose protected-mode part lands
    /// at 1 MiB, byte for byte.
    #[test]
    fn the_debian_kernel_loads_as_a_bzimage() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/linux/vmlinuz");
        let Ok(kernel) = std::fs::read(path) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{path} is missing; ./dev test builds it"
            );
            eprintln!("skipped: {path} is missing (run `stacklab linux build`)");
            return;
        };
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let loaded = BzImage::load(
            &memory,
            None,
            &mut Cursor::new(&kernel),
            Some(GuestAddress(HIGH_MEMORY)),
        )
        .unwrap();
        let hdr = loaded.setup_header.unwrap();
        assert!({ hdr.version } >= 0x020c, "boot protocol {:#x}", {
            hdr.version
        });
        assert_eq!(loaded.kernel_load, GuestAddress(HIGH_MEMORY));
        assert_ne!(
            { hdr.xloadflags } & 1,
            0,
            "XLF_KERNEL_64: has the 64-bit entry"
        );
        assert_ne!({ hdr.relocatable_kernel }, 0);
        // The protected-mode code follows (setup_sects + 1) sectors of setup.
        let setup = (usize::from(hdr.setup_sects) + 1) * 512;
        let mut head = [0u8; 64];
        memory
            .read_slice(&mut head, GuestAddress(HIGH_MEMORY))
            .unwrap();
        assert_eq!(head, kernel[setup..setup + 64]);
        assert_eq!(
            loaded.kernel_end,
            HIGH_MEMORY + (kernel.len() - setup) as u64
        );
    }

    #[test]
    fn a_non_bzimage_kernel_is_refused_with_a_clear_error() {
        if !std::path::Path::new("/dev/kvm").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "/dev/kvm is missing on a CI machine"
            );
            eprintln!("skipped: /dev/kvm is absent");
            return;
        }
        let err = run_linux(
            b"not a kernel at all",
            b"",
            &LinuxConfig::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a bzImage"), "{err}");
    }

    #[test]
    fn memory_outside_the_limits_is_refused_before_kvm_is_touched() {
        let config = LinuxConfig {
            mem_bytes: MAX_MEM_BYTES + 1,
            ..LinuxConfig::default()
        };
        assert!(matches!(
            run_linux(b"", b"", &config, &mut |_| {}),
            Err(VmError::MemorySize { .. })
        ));
    }
}
