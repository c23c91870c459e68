//! Linux's 64-bit boot protocol, as Firecracker lays it out: the zero page
//! (setup header, command line, initrd, e820 map) below 1 MiB, a GDT, an
//! identity map of the first 1 GiB, and a vCPU already in long mode (the
//! last two from [`super::long_mode`]).

use kvm_ioctls::VcpuFd;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::long_mode;
use crate::error::{kvm_err, VmError};

// Guest physical layout (below 1 MiB, as Firecracker lays it out).
pub const ZERO_PAGE: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
pub const EBDA_START: u64 = 0x9fc00;
pub const HIGH_MEMORY: u64 = 0x10_0000;

/// Writes the boot protocol's structures: the zero page (setup header,
/// command line pointer, initrd, e820 map), a GDT, and identity-mapped
/// page tables for the first 1 GiB (2 MiB pages).
pub fn write_boot_structures(
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

    // Page tables: 512 × 2 MiB = the first 1 GiB, kernel-only.
    long_mode::write_tables(memory, (0..512u64).map(|i| (i << 21, 0)))?;
    Ok(())
}

/// The vCPU as the 64-bit boot protocol wants it: long mode, paging on with
/// the identity map, flat segments, RSI = zero page, at `entry`; x87/SSE
/// control words at their reset values; the local APIC's LINT pins wired
/// as a PC's firmware leaves them.
pub fn set_long_mode_entry(vcpu: &VcpuFd, entry: u64) -> Result<(), VmError> {
    long_mode::set_long_mode_entry(vcpu, entry, BOOT_STACK, ZERO_PAGE)?;
    let mut fpu = vcpu.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?;
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

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
        // The identity map: 2 MiB kernel-only pages up to 1 GiB.
        let pd = long_mode::FIRST_PD;
        assert_eq!(
            memory.read_obj::<u64>(GuestAddress(pd + 8 * 5)).unwrap(),
            (5 << 21) | 0x83
        );
        assert_eq!(
            memory.read_obj::<u64>(GuestAddress(pd + 8 * 511)).unwrap(),
            (511 << 21) | 0x83
        );
    }
}
