//! stacklab's virtual machine monitor.
//!
//! For now this crate answers one question for the server's health check:
//! can this host run KVM guests, and how does it run them? The VMM proper
//! (guest memory, vCPUs, exits) builds on the same `/dev/kvm` handle.

pub mod host;
