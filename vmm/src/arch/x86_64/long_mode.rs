//! Long mode prepared by the VMM, as VMMs enter Linux through its 64-bit
//! boot protocol: a GDT, identity page tables (2 MiB pages) and a vCPU
//! already in 64-bit mode with paging on, so the guest's first instruction
//! is 64-bit code. Firecracker's layout, below 1 MiB.

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{kvm_err, VmError};

/// The GDT: null, 64-bit code (0x08), data (0x10), TSS (0x18).
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT (the guest installs its own before it enables interrupts).
pub const IDT_ADDR: u64 = 0x520;
/// The top-level page table.
pub const PML4: u64 = 0x9000;
/// The one page-directory-pointer table (the first 512 GiB).
pub const PDPT: u64 = 0xa000;
/// The first page directory; one more page follows for each further GiB
/// that has a mapping.
pub const FIRST_PD: u64 = 0xb000;

/// Page-table entry bits.
pub mod page {
    /// Present and writable.
    pub const PRESENT_RW: u64 = 0x3;
    /// Ring 3 may use it.
    pub const USER: u64 = 0x4;
    /// Write-through and cache-disable: for device pages.
    pub const UNCACHED: u64 = 0x18;
    /// A 2 MiB leaf in a page directory.
    pub const HUGE: u64 = 0x80;
}

const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;

fn mem_err(e: impl std::fmt::Display) -> VmError {
    VmError::Memory(e.to_string())
}

/// Writes the GDT and an identity map made of `leaves`: each a 2 MiB-aligned
/// address and its leaf bits ([`page::HUGE`] and present are added). Upper
/// levels allow everything; the leaves decide. Only the pages written here
/// are touched.
pub fn write_tables(
    memory: &GuestMemoryMmap,
    leaves: impl IntoIterator<Item = (u64, u64)>,
) -> Result<(), VmError> {
    let gdt: [u64; 4] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x008f_8b00_0000_ffff,
    ];
    for (i, entry) in gdt.iter().enumerate() {
        memory
            .write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(mem_err)?;
    }
    memory
        .write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(mem_err)?;
    let upper = page::PRESENT_RW | page::USER;
    memory
        .write_obj(PDPT | upper, GuestAddress(PML4))
        .map_err(mem_err)?;
    // One page directory per GiB that has a leaf, in the order first seen.
    let mut directories: Vec<u64> = Vec::new();
    for (addr, bits) in leaves {
        debug_assert_eq!(addr % TWO_MIB, 0, "2 MiB pages");
        debug_assert!(addr < 512 * GIB, "one PDPT covers 512 GiB");
        let gib = addr / GIB;
        let pd = match directories.iter().position(|g| *g == gib) {
            Some(i) => FIRST_PD + i as u64 * 0x1000,
            None => {
                let pd = FIRST_PD + directories.len() as u64 * 0x1000;
                directories.push(gib);
                memory
                    .write_obj(pd | upper, GuestAddress(PDPT + gib * 8))
                    .map_err(mem_err)?;
                pd
            }
        };
        let index = (addr % GIB) / TWO_MIB;
        memory
            .write_obj(
                addr | bits | page::PRESENT_RW | page::HUGE,
                GuestAddress(pd + index * 8),
            )
            .map_err(mem_err)?;
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

/// Puts the vCPU in long mode on the tables [`write_tables`] wrote: flat
/// segments from that GDT, paging on, at `entry` with the given stack and
/// RSI (Linux's zero page; unused by other guests).
pub fn set_long_mode_entry(vcpu: &VcpuFd, entry: u64, rsp: u64, rsi: u64) -> Result<(), VmError> {
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

    let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    regs.rip = entry;
    regs.rsp = rsp;
    regs.rbp = rsp;
    regs.rsi = rsi;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_in_two_gibs_get_two_page_directories() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_tables(
            &memory,
            [(0, 0), (TWO_MIB, page::USER), (3 * GIB, page::UNCACHED)],
        )
        .unwrap();
        let read = |addr: u64| memory.read_obj::<u64>(GuestAddress(addr)).unwrap();
        assert_eq!(read(PML4), PDPT | 7);
        assert_eq!(read(PDPT), FIRST_PD | 7);
        assert_eq!(read(PDPT + 3 * 8), (FIRST_PD + 0x1000) | 7);
        assert_eq!(read(FIRST_PD), 0x83);
        assert_eq!(read(FIRST_PD + 8), TWO_MIB | 0x87);
        assert_eq!(read(FIRST_PD + 0x1000), (3 * GIB) | 0x9b);
        // 64-bit code segment: L set, D clear.
        let code = read(GDT_ADDR + 8);
        assert_eq!((code >> 53) & 1, 1);
        assert_eq!((code >> 54) & 1, 0);
    }
}
