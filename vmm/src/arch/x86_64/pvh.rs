//! The PVH entry state: how a guest with a PVH ELF note is entered.

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;

use crate::error::{kvm_err, VmError};

/// PVH boot state: flat 32-bit segments, protected mode, paging off.
pub fn set_pvh_entry_state(vcpu: &VcpuFd, entry: u64) -> Result<(), VmError> {
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
