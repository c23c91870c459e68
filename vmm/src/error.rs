//! Why a run failed, in words for a learner, with a stable code.

use std::time::Duration;

use stacklab_api::ErrorCode;

/// Why a run failed. Each says what the guest (or host) did, for a learner.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` or an ioctl failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The run's deadline timer could not be set up.
    #[error("cannot arm the run's deadline timer ({what}): {source}")]
    Timer {
        what: &'static str,
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// More (or less) memory than allowed.
    #[error("guest memory of {} MiB asked; the limit is {} MiB (and at least {} MiB)", .asked >> 20, .max >> 20, .min >> 20)]
    MemorySize {
        /// Bytes asked for.
        asked: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// Guest memory could not be set up.
    #[error("cannot allocate guest memory: {0}")]
    Memory(String),
    /// The image is not a loadable guest.
    #[error("cannot load the guest image: {0}")]
    Load(String),
    /// The deadline passed.
    #[error("the guest did not become ready within {0:?}")]
    Deadline(Duration),
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    #[error("the guest triple-faulted: an exception it could not handle (KVM_EXIT_SHUTDOWN)")]
    TripleFault,
    /// KVM could not emulate an instruction.
    #[error("KVM could not emulate the guest's instruction at {rip:#x} (bytes {bytes})")]
    InternalError { rip: u64, bytes: String },
    /// The guest touched an I/O port no device owns.
    #[error("the guest {dir} I/O port {port:#x}, which no device owns", dir = if *.write { "wrote to" } else { "read from" })]
    UnknownIo { port: u16, write: bool },
    /// The guest touched MMIO no device owns.
    #[error("the guest {dir} MMIO address {addr:#x}, which no device owns", dir = if *.write { "wrote to" } else { "read from" })]
    UnknownMmio { addr: u64, write: bool },
    /// Too much console output.
    #[error("the guest wrote more than {0} bytes to its console; stopped")]
    ConsoleFlood(usize),
    /// The guest reported an exception it did not expect.
    #[error("the guest kernel hit exception {vector} ({name}) at {rip:#x}", name = exception_name(*.vector))]
    GuestException { vector: u8, rip: u64 },
    /// Powered off or halted before saying ready.
    #[error("the guest stopped before it was ready ({0})")]
    StoppedEarly(&'static str),
    /// A Linux guest stopped (reset, halted) before its userspace was
    /// ready; its console's last lines usually say why (a kernel panic).
    #[error("the guest stopped before its userspace was ready ({why}); its console ended with:\n{console_tail}")]
    GuestStopped {
        /// What it did.
        why: &'static str,
        /// The last lines of its console.
        console_tail: String,
    },
    /// Any other exit.
    #[error("unexpected VM exit: {0}")]
    UnexpectedExit(String),
}

impl VmError {
    /// `Ok` when `asked` bytes of guest RAM lie within `min..=max`.
    pub fn check_memory(asked: usize, min: usize, max: usize) -> Result<(), VmError> {
        if (min..=max).contains(&asked) {
            Ok(())
        } else {
            Err(VmError::MemorySize { asked, min, max })
        }
    }

    /// A stable code for the API.
    pub fn code(&self) -> ErrorCode {
        match self {
            VmError::Kvm { .. } => ErrorCode::Kvm,
            VmError::Timer { .. } => ErrorCode::Internal,
            VmError::MemorySize { .. } => ErrorCode::MemoryLimit,
            VmError::Memory(_) => ErrorCode::Memory,
            VmError::Load(_) => ErrorCode::Load,
            VmError::Deadline(_) => ErrorCode::Deadline,
            VmError::TripleFault => ErrorCode::TripleFault,
            VmError::InternalError { .. } => ErrorCode::InternalError,
            VmError::UnknownIo { .. } => ErrorCode::UnknownIo,
            VmError::UnknownMmio { .. } => ErrorCode::UnknownMmio,
            VmError::ConsoleFlood(_) => ErrorCode::ConsoleFlood,
            VmError::GuestException { .. } => ErrorCode::GuestException,
            VmError::StoppedEarly(_) | VmError::GuestStopped { .. } => ErrorCode::StoppedEarly,
            VmError::UnexpectedExit(_) => ErrorCode::UnexpectedExit,
        }
    }
}

fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        6 => "invalid opcode",
        8 => "double fault",
        13 => "general protection",
        14 => "page fault",
        0xff => "kernel panic",
        _ => "exception",
    }
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}
