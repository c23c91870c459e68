//! The floor: the least KVM work any VM needs (open `/dev/kvm`, create a
//! VM, register its RAM, create one vCPU, run it to its first exit, tear it
//! all down), with no devices, no interrupt controllers and no guest image.
//! `stacklab bench vm` measures it in the same run as the real VMs, so
//! "this is what the host costs" is a measurement, not a claim.

use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use crate::error::{kvm_err, VmError};
use crate::machine::register_ram;

/// The port the floor's one instruction writes to.
const FLOOR_PORT: u16 = 0x10;

/// One run of the bare sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// Opening `/dev/kvm` → the vCPU's first exit.
    pub open_to_first_exit: Duration,
    /// `/dev/kvm` open (returned) → the vCPU's first exit: the same start
    /// as the VMM's `kvm_opened` step, for spans that start there.
    pub opened_to_first_exit: Duration,
    /// Of which: registering the RAM (its mmap and
    /// `KVM_SET_USER_MEMORY_REGION`).
    pub set_memory: Duration,
    /// Dropping the vCPU, the VM, `/dev/kvm` and the RAM.
    pub teardown: Duration,
}

/// Runs the bare sequence once with `mem_bytes` of RAM; the guest is one
/// `out` instruction at address 0, in real mode.
pub fn run_floor(mem_bytes: usize) -> Result<Floor, VmError> {
    let start = Instant::now();
    let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
    let opened = Instant::now();
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let before_memory = Instant::now();
    // Dropped below after `vm`, as register_ram requires.
    let (memory, _) = register_ram(&vm, mem_bytes)?;
    let set_memory = before_memory.elapsed();
    // out 0x10, al; the only page the guest touches.
    memory
        .write_slice(&[0xe6, FLOOR_PORT as u8], GuestAddress(0))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    regs.rip = 0;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    match vcpu.run().map_err(kvm_err("KVM_RUN"))? {
        VcpuExit::IoOut(FLOOR_PORT, _) => {}
        other => return Err(VmError::UnexpectedExit(format!("{other:?}"))),
    }
    let open_to_first_exit = start.elapsed();
    let opened_to_first_exit = opened.elapsed();
    let before_teardown = Instant::now();
    drop(vcpu);
    drop(vm);
    drop(kvm);
    drop(memory);
    Ok(Floor {
        open_to_first_exit,
        opened_to_first_exit,
        set_memory,
        teardown: before_teardown.elapsed(),
    })
}
