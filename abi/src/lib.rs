//! The contract between the stacklab guest and the stacklab VMM: ports,
//! addresses and milestone numbers. A `no_std` crate both depend on, so the
//! two sides cannot disagree.

#![no_std]
#![forbid(unsafe_code)]

/// `out` of the milestone id (in AL) here reports a boot step; ESI/EDI hold
/// the low/high 32 bits of the guest TSC read just before.
pub const MILESTONE_PORT: u16 = 0xf0;
/// `out` of an exception vector (in AL) here reports an unexpected guest
/// exception; RSI holds the faulting RIP.
pub const FAULT_PORT: u16 = 0xf2;
/// COM1: the guest's console (transmit register).
pub const SERIAL_PORT: u16 = 0x3f8;
/// Writing [`BOOT_COMPLETE_VALUE`] to this MMIO address says "ready", the way
/// Firecracker's boot-timer device is told (its address since Firecracker
/// 1.13; up to 1.12 it was 0xd000_0000).
pub const BOOT_COMPLETE_MMIO: u64 = 0xc000_0000;
/// See [`BOOT_COMPLETE_MMIO`].
pub const BOOT_COMPLETE_VALUE: u8 = 123;
/// The VMM writes a [`mode`] value here before boot (0 = behave). Outside
/// every page a PVH loader writes (Firecracker puts its start info at
/// 0x6000 and its memory map at 0x7000), so under another VMM the word is
/// fresh RAM: 0, "behave".
pub const MODE_ADDR: u64 = 0x5000;

/// The VMM writes the guest's RAM size here (a little-endian `u64`, bytes)
/// before boot, beside the mode word: the tiny guest has no firmware
/// memory map to read it from. 0 under another VMM: "not told".
pub const RAM_BYTES_ADDR: u64 = 0x5008;

/// The line the tiny guest writes to its console after ready when the VMM
/// asks ([`mode::XRAY_LINE`]), describing what it sees: `key=value` pairs
/// after this prefix (name, version, vendor, hypervisor, cpl, ram, tables,
/// mapped).
pub const XRAY_LINE_PREFIX: &str = "stacklab-guest x-ray:";

/// Where the guest keeps its console log when [`mode::CONSOLE_IN_MEMORY`]
/// is set: a little-endian `u32` length, then the bytes (at most
/// [`CONSOLE_CAPACITY`]). The VMM reads it at the end; no byte costs a VM
/// exit. Free under other VMMs, which never set the flag.
pub const CONSOLE_ADDR: u64 = 0x4000;
/// Bytes the in-memory console holds; past it the guest writes to the
/// serial port as usual.
pub const CONSOLE_CAPACITY: usize = 4092;

/// What a guest is asked to do. Anything but `NORMAL` is for the tests
/// that prove a misbehaving guest cannot hang or crash the host.
pub mod mode {
    /// The low 16 bits: what to do.
    pub const MASK: u32 = 0xffff;
    /// A flag beside the mode: keep the console log in memory at
    /// [`super::CONSOLE_ADDR`] instead of the serial port (each serial byte
    /// is a VM exit; where ring 0 is emulated, exits are dear).
    pub const CONSOLE_IN_MEMORY: u32 = 1 << 16;
    /// A flag beside the mode: after ready, write the x-ray line
    /// ([`super::XRAY_LINE_PREFIX`]). Only on request: building it is a few
    /// thousand instructions of ring-0 code, which a host that emulates
    /// ring 0 runs at about 2 million a second (measured: child spawn →
    /// exit about 2 ms longer with it), and only a run that is x-rayed
    /// reads it.
    pub const XRAY_LINE: u32 = 1 << 17;
    /// Boot, run the app, report ready.
    pub const NORMAL: u32 = 0;
    /// Spin forever in ring 0 after reaching long mode.
    pub const SPIN: u32 = 1;
    /// Break the IDT and fault: a triple fault.
    pub const TRIPLE_FAULT: u32 = 2;
    /// Write to the console without end.
    pub const CONSOLE_FLOOD: u32 = 3;
    /// Write to an I/O port no device owns.
    pub const UNKNOWN_PORT: u32 = 4;

    /// Whether the guest knows every part of `word`: one of the modes
    /// above and only the flags above (the guest would boot normally on
    /// an unknown mode and ignore an unknown flag, so a caller who mistyped
    /// one would not be told).
    pub const fn is_known(word: u32) -> bool {
        word & !(MASK | CONSOLE_IN_MEMORY | XRAY_LINE) == 0 && word & MASK <= UNKNOWN_PORT
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_mode_and_flag_is_known_and_nothing_else() {
            for m in [NORMAL, SPIN, TRIPLE_FAULT, CONSOLE_FLOOD, UNKNOWN_PORT] {
                assert!(is_known(m), "{m}");
                assert!(is_known(m | CONSOLE_IN_MEMORY | XRAY_LINE), "{m}");
            }
            assert!(!is_known(UNKNOWN_PORT + 1));
            assert!(!is_known(1 << 18));
            assert!(!is_known(1 << 31 | XRAY_LINE));
        }
    }
}

/// Boot steps, in the order the guest reaches them.
pub mod milestone {
    /// First instruction through the 32-bit door (PVH): protected mode,
    /// paging off.
    pub const ENTRY: u8 = 1;
    /// The guest's own GDT is loaded.
    pub const GDT: u8 = 2;
    /// Page tables built, paging and long mode enabled.
    pub const PAGING: u8 = 3;
    /// Running 64-bit code.
    pub const LONG_MODE: u8 = 4;
    /// Task state segment and interrupt table installed.
    pub const IDT: u8 = 5;
    /// The first timer interrupt arrived.
    pub const TIMER_TICK: u8 = 6;
    /// About to drop to ring 3.
    pub const USER_ENTER: u8 = 7;
    /// The ring-3 app finished and trapped back into the kernel; R8 holds
    /// the TSC cycles the app measured for its own work.
    pub const USER_RETURN: u8 = 8;
    /// First instruction through the 64-bit door (the ELF entry point):
    /// the VMM has set up the GDT, page tables and long mode.
    pub const ENTRY_64: u8 = 9;
}

/// What the guest needs mapped when a VMM enters it in long mode (the
/// 64-bit door): identity-mapped 2 MiB pages from 0 to [`IDENTITY_MAP_END`],
/// of which only [`USER_BASE`]..[`USER_END`] is open to ring 3, plus the
/// boot-complete page and the local APIC page, uncached. The guest's own
/// 32-bit door builds the same map.
pub const IDENTITY_MAP_END: u64 = 16 << 20;
/// See [`IDENTITY_MAP_END`]: where the ring-3 app's pages start (link.ld
/// puts the app here).
pub const USER_BASE: u64 = 2 << 20;
/// See [`IDENTITY_MAP_END`].
pub const USER_END: u64 = 4 << 20;

/// The i8042 controller's command port: [`I8042_RESET`] written here resets
/// the machine, which ends the run under Firecracker, QEMU's PC machines
/// and stacklab's VMM alike.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The i8042 command "pulse the reset line".
pub const I8042_RESET: u8 = 0xfe;

/// QEMU's `isa-debug-exit` device, for machines without an i8042 (QEMU's
/// microvm): the guest writes here if the reset did not end it.
pub const POWER_OFF_PORT: u16 = 0xf4;

/// The local APIC's registers (xAPIC, memory-mapped), which the guest uses
/// for its timer: in the host kernel with KVM, so no VM exits.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
