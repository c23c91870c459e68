//! The store: what outlives a run and a server process. The run
//! history and workshop classes, and their exports, in SQLite (the
//! default) or PostgreSQL (for more than one replica), behind one
//! interface ([`sql::Sql`]), on a pool of connections that keeps every
//! call off the async workers and bounded in time ([`pool`]).
//!
//! May import `stacklab_api` only; never `http`, `engine`, `backends` or
//! `tools`.

mod classes;
mod export;
mod history;
mod learning;
pub(crate) mod pool;
mod postgres;
pub mod sql;
mod sqlite;
#[cfg(test)]
pub(crate) mod testing;

pub use classes::{ClassRun, JoinError};
pub use export::{class_csv, csv_header, csv_rows, rfc3339, to_csv};
pub use history::{
    now_ms, Filter, History, HistoryError, HostRow, Retention, EVENTS_CHANNEL, MAX_PAGE,
    WATCH_CHANNEL,
};
pub use learning::Learning;
pub use pool::Limits;
pub use postgres::{listen, new_schema, Notice};
pub use sqlite::{lock_data_dir, FILE_NAME};
