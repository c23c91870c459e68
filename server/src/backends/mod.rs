//! The backends: what actually runs a demo. One [`Runtime`] trait over two
//! ways of running one (a Docker container, a KVM virtual machine), each
//! reporting the same timeline of phases and the same kind of result into a
//! [`RunContext`], so the browser needs one renderer for both.
//!
//! May import `stacklab_api` and `stacklab_vmm`; never `http`, `engine`,
//! `store` or `tools` (the engine reaches runtimes only through this trait,
//! and they reach the engine only through [`EventSink`]).

pub mod docker;
pub mod host;
pub mod kvm;
pub mod memory;
mod runtime;
pub mod tracefs;
pub mod xray;

pub use memory::{MemoryProbe, Snapshot};
pub use runtime::{phase_event, EventSink, Reading, Ready, RunContext, Runtime};
