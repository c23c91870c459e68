//! stacklab's virtual machine monitor, on the rust-vmm crates.
//!
//! [`vm::run`] takes a guest kernel image from nothing to "ready" on
//! `/dev/kvm` and reports every step: the VMM's own (open KVM, create the
//! VM, map memory, load the guest, create the vCPU) and the guest's (its
//! milestones, see `guest/src/abi.rs`). [`host::probe`] says what KVM this
//! host has.

#[path = "../../guest/src/abi.rs"]
pub mod abi;
pub mod cmos;
pub mod host;
pub mod i8042;
pub mod initramfs;
pub mod linux;
pub mod protocol;
pub mod vm;
