//! stacklab's virtual machine monitor, on the rust-vmm crates.
//!
//! [`run`] takes the tiny guest kernel from nothing to "ready" on
//! `/dev/kvm` and [`run_linux`] boots a Linux kernel; both report every
//! step: the VMM's own (open KVM, create the VM, map memory, load the
//! guest, create the vCPU) and the guest's. [`host::probe`] says what KVM
//! this host has.
//!
//! | module | what lives there |
//! | --- | --- |
//! | `machine` | the VM every guest shares: KVM, irqchip, timer, RAM |
//! | `vcpu` | the exit loop's step and the deadline watchdog |
//! | `error`, `report` | why a run failed; what it measured |
//! | `arch::x86_64` | boot layouts: PVH entry, Linux's 64-bit protocol |
//! | `devices` | serial, CMOS clock, i8042 |
//! | `guests` | the tiny guest and Linux guests: loading and exit dispatch |
//! | `protocol` | the JSON lines `stacklab-vmm` prints |
//! | `host`, `initramfs` | the KVM probe; the cpio writer |
//! | `floor` | the bare KVM sequence the bench measures every VM against |
//! | `qemu` | the same guest under QEMU's microvm, for comparison |
//! | `jail` | namespaces, an empty root, an unprivileged user, seccomp |
//!
//! Guest-facing constants come from `stacklab_abi`; wire codes from
//! `stacklab_api`. Nothing here knows about the server.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod devices;
pub mod error;
pub mod floor;
pub mod guests;
pub mod host;
pub mod initramfs;
pub mod jail;
mod machine;
pub mod protocol;
pub mod qemu;
pub mod report;
mod vcpu;

pub use error::VmError;
pub use guests::linux::{run_linux, GuestView, LinuxConfig};
pub use guests::tiny::{run, VmConfig};
