//! Linux's 64-bit boot protocol, as Firecracker lays it out: the zero page
//! (setup header, command line, initrd, e820 map) below 1 MiB, a GDT, an
//! identity map of the first 1 GiB, and a vCPU already in long mode.

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{kvm_err, VmError};

// Guest physical layout (below 1 MiB, as Firecracker lays it out).
pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
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
pub fn set_long_mode_entry(vcpu: &VcpuFd, entry: u64) -> Result<(), VmError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
