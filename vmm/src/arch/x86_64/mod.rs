//! x86-64: how a vCPU is entered for each kind of guest.

pub mod linux_boot;
pub mod long_mode;
