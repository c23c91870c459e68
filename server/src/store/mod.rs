//! The store: what outlives a run and a server process. Today the run
//! history in SQLite and its exports.
//!
//! May import `stacklab_api` only; never `http`, `engine`, `backends` or
//! `tools`.

mod export;
mod history;

pub use export::{rfc3339, to_csv};
pub use history::{Filter, History, HistoryError, FILE_NAME, MAX_PAGE};
