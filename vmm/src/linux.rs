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

use std::io::Cursor;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_segment, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuExit, VcpuFd};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::{load_cmdline, KernelLoader};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::abi;
use crate::cmos::{self, Cmos};
use crate::i8042::{self, I8042};
use crate::vm::{kvm_err, next_exit, with_watchdog, Machine, Recorder, VmError, VmReport};

/// Values `/init` writes to the boot-complete register.
pub mod milestone {
    /// Userspace is running (Firecracker's boot-complete value).
    pub const BOOT_COMPLETE: u8 = crate::abi::BOOT_COMPLETE_VALUE;
    /// PostgreSQL inside the guest answered `SELECT 1` over its Unix socket.
    pub const POSTGRES_READY: u8 = 2;
}

/// The kernel command line: serial console, reset through the i8042 on
/// reboot, reboot at once on panic, no PCI/ACPI probing (this machine has
/// neither), one UART, and a quiet boot (each console byte is a VM exit).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off acpi=off nomodules \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd quiet";

/// Smallest guest RAM for a Linux guest.
pub const MIN_MEM_BYTES: usize = 32 << 20;
/// Largest guest RAM for a Linux guest.
pub const MAX_MEM_BYTES: usize = 2 << 30;

// Guest physical layout (below 1 MiB, as Firecracker lays it out).
const GDT_ADDR: u64 = 0x500;
const IDT_ADDR: u64 = 0x520;
const ZERO_PAGE: u64 = 0x7000;
const BOOT_STACK: u64 = 0x8ff0;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
const CMDLINE_ADDR: u64 = 0x20000;
const CMDLINE_MAX: usize = 4096;
const EBDA_START: u64 = 0x9fc00;
const HIGH_MEMORY: u64 = 0x10_0000;
const SERIAL_BASE: u16 = 0x3f8;
const SERIAL_IRQ: u32 = 4;

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

/// What the guest's `/init` reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestView {
    /// `MemTotal` from the guest's `/proc/meminfo`, bytes.
    pub mem_total_bytes: Option<u64>,
    /// `MemAvailable` from the same file, bytes.
    pub mem_available_bytes: Option<u64>,
    /// `uname -r` inside the guest.
    pub kernel_release: Option<String>,
    /// Port and MMIO accesses to devices this machine does not have (the
    /// kernel probing for hardware), answered as "nothing there".
    pub ignored_accesses: u64,
}

/// One `stacklab: …` line from `/init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLine {
    /// `stacklab: meminfo <MemTotal kB> <MemAvailable kB>`.
    Meminfo { total_kb: u64, available_kb: u64 },
    /// `stacklab: kernel <release>`.
    Kernel(String),
    /// `stacklab: say <text>`: a step worth showing, in `/init`'s words.
    Say(String),
}

/// Reads one console line from `/init`; `None` for any other line.
pub fn parse_report_line(line: &str) -> Option<ReportLine> {
    let rest = line.trim_end_matches('\r').strip_prefix("stacklab: ")?;
    let (what, args) = rest.split_once(' ').unwrap_or((rest, ""));
    match what {
        "meminfo" => {
            let mut n = args.split_whitespace().map(|v| v.parse::<u64>());
            Some(ReportLine::Meminfo {
                total_kb: n.next()?.ok()?,
                available_kb: n.next()?.ok()?,
            })
        }
        "kernel" if !args.is_empty() => Some(ReportLine::Kernel(args.trim().to_owned())),
        "say" if !args.is_empty() => Some(ReportLine::Say(args.trim().to_owned())),
        _ => None,
    }
}

/// The UART's interrupt line: an eventfd KVM turns into IRQ 4.
struct IrqLine(EventFd);

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Writes the boot protocol's structures: the zero page (setup header,
/// command line pointer, initrd, e820 map), a GDT, and identity-mapped
/// page tables for the first 1 GiB (2 MiB pages).
fn write_boot_structures(
    memory: &GuestMemoryMmap,
    mem_bytes: usize,
    setup: linux_loader::loader::bootparam::setup_header,
    cmdline_len: usize,
    initrd: (u64, usize),
) -> Result<(), VmError> {
    let mem_err = |e: &dyn std::fmt::Display| VmError::Memory(e.to_string());
    let mut params = boot_params {
        hdr: setup,
        ..Default::default()
    };
    params.hdr.type_of_loader = 0xff; // "undefined" boot loader
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.ramdisk_image = initrd.0 as u32;
    params.hdr.ramdisk_size = initrd.1 as u32;
    let e820 = [
        (0, EBDA_START),
        (HIGH_MEMORY, mem_bytes as u64 - HIGH_MEMORY),
    ];
    for (i, (addr, size)) in e820.into_iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: 1, // usable RAM
        };
    }
    params.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        memory,
    )
    .map_err(|e| mem_err(&e))?;

    // GDT: null, 64-bit code, data, TSS (Firecracker's layout).
    let gdt: [u64; 4] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x008f_8b00_0000_ffff,
    ];
    for (i, entry) in gdt.iter().enumerate() {
        memory
            .write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|e| mem_err(&e))?;
    }
    memory
        .write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| mem_err(&e))?;
    // Page tables: PML4[0] → PDPT, PDPT[0] → PD, PD: 512 × 2 MiB = 1 GiB.
    memory
        .write_obj(PDPT | 0x3, GuestAddress(PML4))
        .map_err(|e| mem_err(&e))?;
    memory
        .write_obj(PD | 0x3, GuestAddress(PDPT))
        .map_err(|e| mem_err(&e))?;
    for i in 0..512u64 {
        memory
            .write_obj((i << 21) | 0x83, GuestAddress(PD + i * 8))
            .map_err(|e| mem_err(&e))?;
    }
    Ok(())
}

/// A flat segment for GDT entry `index` (`db` 32-bit default size, `l`
/// 64-bit code).
fn segment(index: u16, type_: u8, db: bool, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: index * 8,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(db),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The vCPU as the 64-bit boot protocol wants it: long mode, paging on with
/// the identity map, flat segments, RSI = zero page, at `entry`.
fn set_long_mode_entry(vcpu: &VcpuFd, entry: u64) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let code = segment(1, 0xb, false, true);
    let data = segment(2, 0x3, true, false);
    let mut tss = segment(3, 0xb, false, false);
    tss.s = 0; // a system segment
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4;
    sregs.cr4 = 0x20; // PAE
    sregs.cr0 = 0x8000_0011; // PG | ET | PE
    sregs.efer = 0x500; // LME | LMA
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let mut fpu = vcpu.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?;
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;

    let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    regs.rip = entry;
    regs.rsp = BOOT_STACK;
    regs.rbp = BOOT_STACK;
    regs.rsi = ZERO_PAGE;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;

    // Local APIC: LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs,
    // as a PC's firmware leaves them.
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    let set = |lapic: &mut kvm_bindings::kvm_lapic_state, offset: usize, mode: u32| {
        let mut reg = [0u8; 4];
        for (i, b) in reg.iter_mut().enumerate() {
            *b = lapic.regs[offset + i] as u8;
        }
        let value = (u32::from_le_bytes(reg) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as _;
        }
    };
    set(&mut lapic, 0x350, 0x7); // LVT LINT0: ExtINT
    set(&mut lapic, 0x360, 0x4); // LVT LINT1: NMI
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

/// Boots `kernel` (a bzImage) with `initrd` (a cpio archive), runs until
/// the guest resets itself after reaching userspace, and reports every
/// step. All resources are released before this returns.
pub fn run_linux(
    kernel: &[u8],
    initrd: &[u8],
    config: &LinuxConfig,
    on_event: &mut dyn FnMut(&crate::vm::VmEvent),
) -> Result<(VmReport, GuestView), VmError> {
    VmError::check_memory(config.mem_bytes, MIN_MEM_BYTES, MAX_MEM_BYTES)?;
    let deadline = Instant::now() + config.deadline;
    let mut rec = Recorder::new(on_event);
    let machine = Machine::create(config.mem_bytes, KVM_PIT_SPEAKER_DUMMY, false, &mut rec)?;
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
        "kernel_loaded",
        "Linux kernel loaded",
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
        "vcpu_created",
        "vCPU created",
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
    Ok((
        machine.report(rec.events, console, exits, tsc_khz, None),
        guest,
    ))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn linux_exit_loop(
    vcpu: &mut VcpuFd,
    serial: &mut vm_superio::Serial<IrqLine, vm_superio::serial::NoEvents, Vec<u8>>,
    config: &LinuxConfig,
    deadline: Instant,
    guest: &mut GuestView,
    rec: &mut Recorder,
) -> Result<u64, VmError> {
    let mut i8042 = I8042::default();
    let mut cmos = Cmos::default();
    let mut exits = 0u64;
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
                        "first_console",
                        "First console output",
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
                        "reset",
                        "Guest reset",
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
                            "ready",
                            "Ready: userspace running",
                            format!("the guest's /init wrote {} to the boot-complete register at {:#x} (Firecracker's signal)", milestone::BOOT_COMPLETE, abi::BOOT_COMPLETE_MMIO),
                            None,
                        );
                    }
                    Some(milestone::POSTGRES_READY) => rec.step(
                        "postgres_ready",
                        "PostgreSQL ready",
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
                        "reset",
                        "Guest reset",
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

fn report_line(line: &str, guest: &mut GuestView, rec: &mut Recorder) {
    match parse_report_line(line) {
        Some(ReportLine::Meminfo {
            total_kb,
            available_kb,
        }) => {
            guest.mem_total_bytes = Some(total_kb * 1024);
            guest.mem_available_bytes = Some(available_kb * 1024);
            rec.step(
                "guest_meminfo",
                "Guest reports its memory",
                format!("/proc/meminfo inside the guest: MemTotal {total_kb} kB, MemAvailable {available_kb} kB"),
                None,
            );
        }
        Some(ReportLine::Kernel(release)) => guest.kernel_release = Some(release),
        Some(ReportLine::Say(text)) => rec.step("guest_init", "Guest /init", text, None),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_parsed_and_others_ignored() {
        assert_eq!(
            parse_report_line("stacklab: meminfo 123456 100000\r"),
            Some(ReportLine::Meminfo {
                total_kb: 123_456,
                available_kb: 100_000
            })
        );
        assert_eq!(
            parse_report_line("stacklab: kernel 6.1.0-56-cloud-amd64"),
            Some(ReportLine::Kernel("6.1.0-56-cloud-amd64".into()))
        );
        assert_eq!(
            parse_report_line("stacklab: say initdb done"),
            Some(ReportLine::Say("initdb done".into()))
        );
        assert_eq!(parse_report_line("stacklab: meminfo lots"), None);
        assert_eq!(parse_report_line("[    0.1] stacklab: meminfo 1 2"), None);
        assert_eq!(parse_report_line("stacklab: unknown thing"), None);
    }

    #[test]
    fn boot_structures_follow_the_boot_protocol() {
        let mem = 64usize << 20;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem)]).unwrap();
        let setup = linux_loader::loader::bootparam::setup_header {
            version: 0x020f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        write_boot_structures(&memory, mem, setup, 42, (0x300_0000, 4096)).unwrap();
        let params: boot_params = memory.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ hdr.ramdisk_size }, 4096);
        assert_eq!({ params.e820_entries }, 2);
        let e = params.e820_table;
        assert_eq!(({ e[0].addr }, { e[0].size }), (0, EBDA_START));
        assert_eq!(
            ({ e[1].addr }, { e[1].size }),
            (HIGH_MEMORY, mem as u64 - HIGH_MEMORY)
        );
        // The identity map: PML4 → PDPT → PD, 2 MiB pages.
        assert_eq!(
            memory.read_obj::<u64>(GuestAddress(PML4)).unwrap(),
            PDPT | 3
        );
        assert_eq!(memory.read_obj::<u64>(GuestAddress(PDPT)).unwrap(), PD | 3);
        assert_eq!(
            memory.read_obj::<u64>(GuestAddress(PD + 8 * 5)).unwrap(),
            (5 << 21) | 0x83
        );
        // 64-bit code segment: L set, D clear.
        let code: u64 = memory.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        assert_eq!((code >> 53) & 1, 1);
        assert_eq!((code >> 54) & 1, 0);
    }

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
