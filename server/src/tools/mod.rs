//! The command-line tools beside `serve`: building the PostgreSQL image and
//! the Linux guests' archives, the nested-emulation harness, and the
//! benchmarks.
//!
//! May import `backends`, `engine`, `store` and `cli` (the subcommands'
//! flags); nothing imports `tools` but `main` (and the tests).

pub mod bench;
pub mod image;
pub mod linux_build;
pub mod nested;
