//! The same tiny guest under QEMU, the reference VMM it is compared with
//! (`stacklab bench vm` times it; a test checks it boots): one command
//! line, so the bench and the test run the same QEMU.

use std::path::Path;
use std::process::{Command, Stdio};

/// `qemu-system-x86_64 -M microvm -enable-kvm` booting `guest` (a PVH ELF
/// like ours) with 16 MiB and one vCPU. The guest ends the run through
/// `isa-debug-exit` (QEMU exits with status `(value << 1) | 1`). The serial
/// console goes to `serial` (`stdio` or `null`).
///
/// The CPU is the host's without `arch-capabilities`: on some hosts with
/// nested KVM (kvm-pvm on AMD EPYC), KVM refuses QEMU's write of that MSR
/// (0x10a) and QEMU aborts before the guest starts; the guest never reads
/// it.
pub fn microvm(guest: &Path, serial: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "microvm", "-enable-kvm"])
        .args(["-cpu", "host,arch-capabilities=off"])
        .args(["-m", "16M", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", serial])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(guest)
        .stdin(Stdio::null());
    cmd
}
