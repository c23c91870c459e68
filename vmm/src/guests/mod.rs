//! The guests this VMM boots: each loads its image, sets the vCPU up and
//! dispatches the VM exits its devices produce.

pub mod linux;
pub mod tiny;
