//! The Linux guest's console: a 16550 UART (vm-superio) on COM1, its
//! interrupt delivered through an eventfd KVM turns into IRQ 4.

use vmm_sys_util::eventfd::EventFd;

/// COM1's first port.
pub const SERIAL_BASE: u16 = 0x3f8;
/// COM1's interrupt line.
pub const SERIAL_IRQ: u32 = 4;

/// The UART's interrupt line: an eventfd KVM turns into IRQ 4.
pub struct IrqLine(pub EventFd);

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The UART as the Linux guest sees it, its output kept in memory.
pub type Serial = vm_superio::Serial<IrqLine, vm_superio::serial::NoEvents, Vec<u8>>;
