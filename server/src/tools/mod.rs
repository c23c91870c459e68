//! The command-line tools beside `serve`: building the PostgreSQL image and
//! the Linux guests' archives, the nested-emulation harness, the
//! benchmarks, and the static export of the lessons.
//!
//! May import `backends`, `engine`, `store`, `site` and `cli` (the subcommands'
//! flags); nothing imports `tools` but `main` (and the tests).

pub mod bench;
pub mod export;
pub mod image;
pub mod linux_build;
pub mod nested;
