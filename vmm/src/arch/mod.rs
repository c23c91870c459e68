//! Architecture-specific boot layouts.

pub mod x86_64;
