//! The store: what outlives a run and a server process. The run
//! history and workshop classes in SQLite, and their exports.
//!
//! May import `stacklab_api` only; never `http`, `engine`, `backends` or
//! `tools`.

mod classes;
mod export;
mod history;

pub use classes::{ClassRun, JoinError};
pub use export::{class_csv, csv_header, csv_rows, rfc3339, to_csv};
pub use history::{now_ms, Filter, History, HistoryError, Retention, FILE_NAME, MAX_PAGE};
