//! stacklab's guest kernel in miniature.
//!
//! It does, in order, what every x86 operating system does before it can run
//! an application, and reports each step to the VMM (see the `stacklab-abi` crate).
//! It has two doors, like Linux:
//!
//! - **64-bit entry** (the ELF entry point, which stacklab's VMM uses): the
//!   VMM has already written a GDT and identity page tables and put the vCPU
//!   in long mode, as Firecracker does for Linux's 64-bit boot protocol
//!   (QEMU usually boots Linux through firmware, Cloud Hypervisor via PVH). The guest
//!   loads its own GDT and goes on.
//! - **32-bit entry** (the PVH note, which Firecracker and QEMU use): paging
//!   off; the guest builds its page tables and enters long mode itself.
//!
//! Then, on both paths: its own interrupt table and TSS, a timer interrupt,
//! a ring-3 app that traps back with `int3`, a boot log, then "ready".
//!
//! Ring-0 code may run far slower than ring 3 (observed under nested kvm-pvm),
//! so the kernel does as little as it can at run time: its GDT, TSS and
//! interrupt table are laid out by the linker (static data, no boot-time
//! loop), no SSE/x87 (the target has none), no `int n` in ring 0, no
//! `syscall`; the app's work runs in ring 3.

#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use stacklab_abi as abi;

use abi::{milestone, mode};

// ---------------------------------------------------------------------------
// 32-bit entry, GDT, page tables, long mode: assembly, because Rust code
// needs the 64-bit world these instructions build.
// ---------------------------------------------------------------------------
global_asm!(
    r#"
.section .note.pvh, "a"
.p2align 2
    .long 4              /* name size: "Xen\0" */
    .long 4              /* descriptor size */
    .long 18             /* XEN_ELFNOTE_PHYS32_ENTRY: QEMU boots us the same way */
    .asciz "Xen"
    .p2align 2
    .long _start32

.section .text.boot, "ax"
.code32
.global _start32
_start32:
    cli
    rdtsc
    mov esi, eax
    mov edi, edx
    mov al, {entry}
    out {mport}, al

    mov esp, offset BOOT_STACK_TOP
    lgdt [GDT_PTR]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    rdtsc
    mov esi, eax
    mov edi, edx
    mov al, {gdt}
    out {mport}, al

    /* PML4[0] -> PDPT; PDPT[0] -> PD_LOW (0-1 GiB); PDPT[3] -> PD_HIGH (3-4 GiB).
       The user bit is set on the upper levels; the leaves decide. */
    mov eax, offset PDPT
    or eax, 7
    mov [PML4], eax
    mov eax, offset PD_LOW
    or eax, 7
    mov [PDPT], eax
    mov eax, offset PD_HIGH
    or eax, 3
    mov [PDPT + 24], eax
    /* 8 x 2 MiB = 16 MiB identity-mapped; only 2-4 MiB is user-accessible. */
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    cmp ecx, 1
    jne 3f
    or eax, 4
3:
    mov [PD_LOW + ecx * 8], eax
    inc ecx
    cmp ecx, 8
    jb 2b
    /* The boot-complete MMIO page and the local APIC page, uncached. */
    mov dword ptr [PD_HIGH + 0 * 8], 0xC000009B
    mov dword ptr [PD_HIGH + 503 * 8], 0xFEE0009B

    mov eax, cr4
    or eax, 0x20          /* PAE */
    mov cr4, eax
    mov eax, offset PML4
    mov cr3, eax
    mov ecx, 0xC0000080   /* EFER */
    rdmsr
    or eax, 0x100         /* LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80000001    /* PG | PE */
    mov cr0, eax
    rdtsc
    mov esi, eax
    mov edi, edx
    mov al, {paging}
    out {mport}, al
    /* Far jump to the 64-bit code segment: ptr16:32. */
    .byte 0xEA
    .long long_mode32
    .word 0x08

.code64
/* The 64-bit door: the VMM's GDT, page tables and long mode are in place.
   Load our own GDT (same code and data selectors) and join the common path. */
.global start64
start64:
    cli
    rdtsc
    mov esi, eax
    mov edi, edx
    mov al, {entry64}
    out {mport}, al
    lgdt [rip + GDT_PTR]
    mov rsp, offset BOOT_STACK_TOP
    call kmain
6:
    hlt
    jmp 6b

/* The 32-bit door continues here once it has reached long mode. */
long_mode32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, offset BOOT_STACK_TOP
    rdtsc
    mov esi, eax
    mov edi, edx
    mov al, {long}
    out {mport}, al
    call kmain
4:
    hlt
    jmp 4b

/* ---- interrupts ---- */
.section .text
.irp n, 0,1,2,4,5,6,7,9,15,16,18,19,20,21,22,23,24,25,26,27,28,29,30,31
isr\n:
    push 0
    push \n
    jmp fault_common
.endr
.irp n, 8,10,11,12,13,14,17
isr\n:
    push \n
    jmp fault_common
.endr

/* An exception nobody expected: tell the VMM which and where, then stop. */
fault_common:
    mov rsi, [rsp + 16]
    mov al, [rsp]
    out {fport}, al
5:
    cli
    hlt
    jmp 5b

timer_isr:
    push rax
    inc qword ptr [rip + TICKS]
    mov eax, 0xFEE000B0   /* end of interrupt to the local APIC */
    mov dword ptr [rax], 0
    pop rax
    iretq

/* enter_user(entry, user_stack) -> the app's RAX. The app comes back with
   int3 (a DPL-3 gate): its handler restores the kernel stack saved here. */
.global enter_user
enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + SAVED_KSP], rsp
    push 0x1b             /* user SS */
    push rsi              /* user RSP */
    push 0x2              /* RFLAGS: interrupts off */
    push 0x23             /* user CS */
    push rdi              /* user RIP */
    iretq

int3_isr:
    mov rsp, [rip + SAVED_KSP]
    mov [rip + USER_CYCLES], rdx
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

/* ---- descriptor tables, laid out by the linker ----
   A gate or TSS descriptor splits an address into pieces, which a linker
   cannot shift; but every handler and the TSS sit in the kernel's first
   64 KiB, so the low 16 bits are `addr - KERNEL_BASE` (the link fails with
   a relocation overflow if that ever stops being true) and bits 16-31 are
   KERNEL_BASE's. */
.macro gate handler, dpl
    .word \handler - {kbase}
    .word 0x08            /* kernel code selector */
    .byte 0               /* no IST */
    .byte 0x8e | (\dpl << 5) /* present, 64-bit interrupt gate */
    .word {kbase} >> 16
    .long 0
    .long 0
.endm

.section .data
.p2align 4
.global IDT
IDT:
    gate isr0, 0
    gate isr1, 0
    gate isr2, 0
    gate int3_isr, 3      /* the app's way back: callable from ring 3 */
    .irp n, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    gate isr\n, 0
    .endr
    gate timer_isr, 0
IDT_END:

/* The 64-bit task state segment: only RSP0 (the stack the CPU switches to
   on a trap from ring 3: its own, so the trap frame cannot overwrite the
   kernel's frames below `enter_user`) and the I/O map base (past the
   limit: no ports for ring 3). */
.p2align 4
TSS:
    .long 0
    .quad TRAP_STACK_TOP  /* RSP0 */
    .fill 88, 1, 0
    .word 0
    .word 104             /* I/O map base */

/* null, kernel code (64-bit), kernel data, user data, user code (64-bit),
   TSS (two slots). */
.p2align 3
.global GDT
GDT:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CFF2000000FFFF
    .quad 0x00AFFA000000FFFF
    .word 103             /* TSS limit */
    .word TSS - {kbase}
    .byte {kbase} >> 16
    .byte 0x89            /* present, available 64-bit TSS */
    .byte 0
    .byte 0
    .quad 0
GDT_END:

/* Descriptor-table registers: the 32-bit `lgdt` reads the limit and the
   low 32 bits of the base, the 64-bit one all 8 bytes. */
.p2align 3
.global GDT_PTR
GDT_PTR:
    .word GDT_END - GDT - 1
    .quad GDT
.global IDT_PTR
IDT_PTR:
    .word IDT_END - IDT - 1
    .quad IDT
"#,
    entry = const milestone::ENTRY,
    entry64 = const milestone::ENTRY_64,
    kbase = const KERNEL_BASE,
    gdt = const milestone::GDT,
    paging = const milestone::PAGING,
    long = const milestone::LONG_MODE,
    mport = const abi::MILESTONE_PORT,
    fport = const abi::FAULT_PORT,
);

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

#[no_mangle]
static mut PML4: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut PDPT: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut PD_LOW: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut PD_HIGH: PageTable = PageTable([0; 512]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
#[no_mangle]
static mut BOOT_STACK: Stack = Stack([0; 16384]);
extern "C" {
    fn enter_user(entry: u64, stack: u64) -> u64;
}
global_asm!(".set BOOT_STACK_TOP, BOOT_STACK + 16384");

/// The stack for traps from ring 3 (see the TSS).
#[repr(C, align(16))]
struct TrapStack([u8; 1024]);
#[no_mangle]
static mut TRAP_STACK: TrapStack = TrapStack([0; 1024]);
global_asm!(".set TRAP_STACK_TOP, TRAP_STACK + 1024");

/// Where the linker puts the kernel (see link.ld); its handlers and TSS
/// sit in the first 64 KiB above it.
const KERNEL_BASE: u32 = 0x10_0000;

#[repr(C, packed)]
struct DescriptorPtr {
    limit: u16,
    base: u64,
}

#[no_mangle]
static mut TICKS: u64 = 0;
#[no_mangle]
static mut SAVED_KSP: u64 = 0;
#[no_mangle]
static mut USER_CYCLES: u64 = 0;

#[repr(C, align(16))]
struct UserStack([u8; 4096]);
#[link_section = ".user.bss"]
static mut USER_STACK: UserStack = UserStack([0; 4096]);

/// Writes `value` to I/O port `port`.
///
/// # Safety
/// A port write can reset, power off or reprogram the machine: the caller
/// names a port whose effect it intends (one the VMM or the in-kernel
/// irqchip emulates).
unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller chose the port and its effect (see above).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

fn milestone(id: u8) {
    milestone_with(id, 0);
}

/// A milestone carrying one value for the VMM (in R8).
fn milestone_with(id: u8, value: u64) {
    // SAFETY: the milestone port is ours; rdtsc and out have no memory effects.
    unsafe {
        asm!(
            "rdtsc",
            "mov esi, eax",
            "mov edi, edx",
            "mov al, cl",
            "out {port}, al",
            port = const abi::MILESTONE_PORT,
            in("cl") id,
            in("r8") value,
            out("eax") _, out("edx") _, out("esi") _, out("edi") _,
            options(nomem, nostack, preserves_flags)
        )
    }
}

/// Whether the VMM asked for the console in memory (read once from the
/// mode word).
static mut CONSOLE_IN_MEMORY: bool = false;

/// Writes to the console: into the in-memory log with one `rep movsb` when
/// the VMM asked for it and it has room, else to the serial port with one
/// `rep outsb` (which many VMMs turn into one exit per byte).
fn puts(s: &[u8]) {
    // SAFETY: single-threaded kernel; the log page is identity-mapped RAM
    // the VMM reserved for it, and the copy stays within its capacity.
    unsafe {
        if core::ptr::read_volatile(&raw const CONSOLE_IN_MEMORY) {
            let len = abi::CONSOLE_ADDR as *mut u32;
            let used = core::ptr::read_volatile(len) as usize;
            if used + s.len() <= abi::CONSOLE_CAPACITY {
                asm!(
                    "rep movsb",
                    inout("rsi") s.as_ptr() => _,
                    inout("rdi") abi::CONSOLE_ADDR as usize + 4 + used => _,
                    inout("rcx") s.len() => _,
                    options(nostack, preserves_flags)
                );
                core::ptr::write_volatile(len, (used + s.len()) as u32);
                return;
            }
        }
    }
    // SAFETY: reads `s` and writes it to the console port.
    unsafe {
        asm!(
            "rep outsb",
            in("dx") abi::SERIAL_PORT,
            inout("rsi") s.as_ptr() => _,
            inout("rcx") s.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    }
}

/// Loads the TSS (the kernel stack for traps from ring 3) and the
/// interrupt table, both laid out by the linker (see the assembly above).
fn install_tss_and_idt() {
    // SAFETY: the GDT (with the TSS descriptor at 0x28) and the IDT are
    // static, identity-mapped and complete; this only loads them.
    unsafe {
        asm!(
            "ltr ax",
            "lidt [rip + IDT_PTR]",
            in("ax") 0x28u16,
            options(nostack, preserves_flags)
        )
    }
}

/// The local APIC timer's first count (divide by 1): a few microseconds
/// at any bus clock, so waiting for the first tick costs little.
const LAPIC_TIMER_COUNT: u32 = 1000;

/// Arms the local APIC's timer (in the host kernel under KVM: no PIC, no
/// PIT, no VM exit), waits for its first interrupt, then masks it again.
fn first_timer_tick() {
    let reg = |offset: u64| (abi::LAPIC_BASE + offset) as *mut u32;
    // SAFETY: the local APIC registers at their architectural address,
    // mapped uncached by the boot code; the IDT has a gate for vector 32.
    unsafe {
        core::ptr::write_volatile(reg(0xf0), 0x1ff); // spurious vector: APIC on
        core::ptr::write_volatile(reg(0x3e0), 0xb); // divide by 1
        core::ptr::write_volatile(reg(0x320), 32); // LVT timer: one-shot, vector 32
        core::ptr::write_volatile(reg(0x380), LAPIC_TIMER_COUNT); // start
        while core::ptr::read_volatile(&raw const TICKS) == 0 {
            asm!("sti", "hlt", "cli", options(nostack));
        }
        core::ptr::write_volatile(reg(0x320), 1 << 16); // masked
    }
}

/// Where the app writes its answer as text ("0x" and 16 hex digits) for
/// the kernel to print: in the app's own (user) pages.
#[link_section = ".user.bss"]
#[no_mangle]
static mut APP_OUTPUT: [u8; 18] = [0; 18];

/// The application: a little arithmetic in ring 3 (native speed even when
/// ring 0 is emulated), its answer formatted as hex text into
/// [`APP_OUTPUT`] (also ring 3: formatting in the kernel would cost some
/// 200 emulated instructions), then `int3` back to the kernel with the
/// result in RAX and its own cycle count in RDX.
#[link_section = ".user.text"]
#[no_mangle]
extern "C" fn user_main() -> ! {
    // SAFETY: ring-3 code touching registers and its own output buffer;
    // int3 traps to the kernel.
    unsafe {
        asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r8, rax",
            "xor eax, eax",
            "mov ecx, 50000",
            "2:",
            "imul rax, rax, 1103515245",
            "add rax, rcx",
            "dec ecx",
            "jnz 2b",
            "mov r9, rax",
            // "0x", then the digits from the last one back.
            "mov rdx, rax",
            "lea rdi, [rip + {out}]",
            "mov word ptr [rdi], 0x7830",
            "mov ecx, 17",
            "3:",
            "mov eax, edx",
            "and eax, 0xf",
            "add al, 0x30",
            "cmp al, 0x39",
            "jbe 4f",
            "add al, 0x27",
            "4:",
            "mov [rdi + rcx], al",
            "shr rdx, 4",
            "dec ecx",
            "cmp ecx, 2",
            "jae 3b",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, r8",
            "mov rdx, rax",
            "mov rax, r9",
            "int3",
            out = sym APP_OUTPUT,
            options(noreturn)
        )
    }
}

#[no_mangle]
extern "C" fn kmain() -> ! {
    // SAFETY: the VMM wrote the mode word before boot (0 if not).
    let word = unsafe { core::ptr::read_volatile(abi::MODE_ADDR as *const u32) };
    // SAFETY: single-threaded kernel, before any console write.
    unsafe { CONSOLE_IN_MEMORY = word & mode::CONSOLE_IN_MEMORY != 0 };
    puts(b"stacklab-guest: long mode\n");
    match word & mode::MASK {
        mode::SPIN => loop {
            core::hint::spin_loop();
        },
        mode::TRIPLE_FAULT => {
            // An IDT of limit 0 cannot deliver #UD, nor the #DF that
            // follows: the CPU shuts down (triple fault).
            let ptr = DescriptorPtr { limit: 0, base: 0 };
            // SAFETY: deliberately fatal to the guest, as this mode asks.
            unsafe { asm!("lidt [{}]", "ud2", in(reg) &ptr, options(noreturn)) }
        }
        mode::CONSOLE_FLOOD => loop {
            puts(b"flood flood flood flood flood flood flood flood flood flood\n");
        },
        // SAFETY: a port nothing emulates: the VMM's answer is what this
        // mode tests.
        mode::UNKNOWN_PORT => unsafe { outb(0x1234, 1) },
        _ => {}
    }

    install_tss_and_idt();
    milestone(milestone::IDT);
    first_timer_tick();
    milestone(milestone::TIMER_TICK);
    puts(b"stacklab-guest: idt, timer tick\n");

    milestone(milestone::USER_ENTER);
    let user_stack_top = &raw const USER_STACK as u64 + 4096;
    // SAFETY: user_main lives in the user-accessible 2-4 MiB region and
    // comes back through the int3 gate.
    let _result = unsafe { enter_user(user_main as *const () as u64, user_stack_top) };
    // SAFETY: written by the int3 handler.
    let cycles = unsafe { core::ptr::read_volatile(&raw const USER_CYCLES) };
    milestone_with(milestone::USER_RETURN, cycles);
    puts(b"stacklab-guest: app (ring 3) returned ");
    // SAFETY: the app wrote its answer there before it trapped back (the
    // call above is opaque to the compiler, so the bytes are re-read).
    puts(unsafe { core::slice::from_raw_parts((&raw const APP_OUTPUT).cast::<u8>(), 18) });
    puts(b"\nstacklab-guest: ready\n");

    // SAFETY: the boot-complete register, mapped uncached by the boot code.
    unsafe {
        core::ptr::write_volatile(abi::BOOT_COMPLETE_MMIO as *mut u8, abi::BOOT_COMPLETE_VALUE)
    };
    // After ready, so it costs the boot nothing, and only when asked (it
    // costs the run's end about 2 ms where ring 0 is emulated): what this
    // kernel sees of its machine, for the VMM's x-ray.
    if word & mode::XRAY_LINE != 0 {
        xray_line();
    }
    // Reset through the i8042 (Firecracker, QEMU's PCs, stacklab's VMM);
    // where there is no i8042, QEMU microvm's isa-debug-exit.
    // SAFETY: ending the machine is the intent; both ports mean "off".
    unsafe {
        outb(abi::I8042_COMMAND_PORT, abi::I8042_RESET);
        outb(abi::POWER_OFF_PORT, 0);
    }
    loop {
        // SAFETY: nothing left to do.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// A line being written, without an allocator.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for b in bytes {
            if self.len < self.buf.len() {
                self.buf[self.len] = *b;
                self.len += 1;
            }
        }
    }

    fn push_dec(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// Printable bytes of a register as text (NULs and others dropped).
    fn push_reg(&mut self, reg: u32) {
        for b in reg.to_le_bytes() {
            if b.is_ascii_graphic() {
                self.push(&[b]);
            }
        }
    }
}

/// Writes `XRAY_LINE_PREFIX name=… version=… vendor=… hypervisor=… cpl=…
/// ram=… tables=… mapped=…`: CPUID leaf 0's vendor, leaf 0x40000000's hypervisor
/// signature (when leaf 1 says a hypervisor is present), the privilege
/// level of the code segment this kernel runs in, the RAM size the VMM
/// wrote at `RAM_BYTES_ADDR`, whose page tables CR3 points to (its own or
/// the VMM's), and the span both boot paths identity-map (a constant of
/// the boot protocol, not a walk of the tables).
fn xray_line() {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(abi::XRAY_LINE_PREFIX.as_bytes());
    line.push(b" name=stacklab-guest version=");
    line.push(env!("CARGO_PKG_VERSION").as_bytes());
    let leaf0 = core::arch::x86_64::__cpuid(0);
    line.push(b" vendor=");
    line.push_reg(leaf0.ebx);
    line.push_reg(leaf0.edx);
    line.push_reg(leaf0.ecx);
    let leaf1 = core::arch::x86_64::__cpuid(1);
    line.push(b" hypervisor=");
    if leaf1.ecx & (1 << 31) != 0 {
        // A hypervisor answers its leaves.
        let hv = core::arch::x86_64::__cpuid(0x4000_0000);
        line.push_reg(hv.ebx);
        line.push_reg(hv.ecx);
        line.push_reg(hv.edx);
    } else {
        line.push(b"none");
    }
    let cs: u16;
    // SAFETY: reading the code segment selector has no side effect.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    line.push(b" cpl=");
    line.push_dec(u64::from(cs & 3));
    // SAFETY: the VMM wrote the RAM size there before boot (0 if not).
    let ram = unsafe { core::ptr::read_volatile(abi::RAM_BYTES_ADDR as *const u64) };
    line.push(b" ram=");
    line.push_dec(ram);
    // Whose page tables are in use: the guest's own (the 32-bit door built
    // them) or those the VMM wrote for the 64-bit door.
    let cr3: u64;
    // SAFETY: reading CR3 has no side effect (ring 0).
    // (Flags are undefined after it: no preserves_flags.)
    unsafe { asm!("mov {0}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let own = &raw const PML4 as u64;
    line.push(if cr3 & !0xfff == own {
        b" tables=own".as_slice()
    } else {
        b" tables=vmm".as_slice()
    });
    line.push(b" mapped=");
    line.push_dec(abi::IDENTITY_MAP_END);
    line.push(b"\n");
    puts(&line.buf[..line.len]);
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    // SAFETY: report vector 0xff ("kernel panic") and stop.
    unsafe {
        asm!("out {port}, al", port = const abi::FAULT_PORT, in("al") 0xffu8, in("rsi") 0u64, options(nomem, nostack));
    }
    loop {
        // SAFETY: halting forever.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
