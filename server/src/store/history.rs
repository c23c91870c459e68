//! The run history: every run the server accepted, kept in an embedded
//! SQLite database (`<data dir>/history.sqlite3`, WAL journal).
//!
//! A run is written twice: a row when it is accepted, then its outcome and
//! full event log when it finishes. A committed row survives a `kill -9` of
//! the server (WAL with `synchronous=NORMAL` loses nothing on a process
//! crash, only on a power cut). Rows still open when a server starts belong
//! to a server that died mid-run; they are closed as failed with the code
//! `server_stopped`, so a learner's history never shows a run as running
//! forever.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use stacklab_api::{DemoId, ErrorCode, RunError, RunPage, RunRecord, RunState, RunSummary};

/// The database file's name inside the data dir.
pub const FILE_NAME: &str = "history.sqlite3";

/// Largest page `GET /api/runs` returns.
pub const MAX_PAGE: u32 = 500;

/// A stored failure; a code this version no longer knows is kept in the
/// message rather than lost.
fn stored_error(code: &str, message: Option<String>) -> RunError {
    let message = message.unwrap_or_default();
    match code.parse() {
        Ok(code) => RunError { code, message },
        Err(_) => RunError {
            code: ErrorCode::Internal,
            message: format!("{code}: {message}"),
        },
    }
}

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite reported an error.
    #[error("run history database {path}: {source}")]
    Sqlite {
        /// The database file (`:memory:` for a test store).
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored record no longer parses (written by another version).
    #[error("run history: stored record of run {id} is unreadable: {source}")]
    Corrupt {
        /// The run.
        id: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// The history store. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct History {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

/// How much finished history to keep: runs finished within `ms`, and at
/// most the newest `max_runs` of them (`None`: no bound of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ms: Option<i64>,
    pub max_runs: Option<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    demo            TEXT NOT NULL,
    learner         TEXT,
    state           TEXT NOT NULL,
    accepted_at_ms  INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    time_to_ready_us REAL,
    memory_bytes    REAL,
    platform_us     REAL,
    error_code      TEXT,
    error_message   TEXT,
    record_json     TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_learner ON runs (learner, seq);
CREATE TABLE IF NOT EXISTS classes (
    code            TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    class           TEXT NOT NULL REFERENCES classes (code),
    learner         TEXT NOT NULL,
    display_name    TEXT,
    joined_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (class, learner)
);
";

/// Indexes on added columns (made once the columns exist).
const ADDED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS runs_by_class ON runs (class, seq);
";

/// Columns added after the first schema, added to a database that lacks
/// them (each `ALTER TABLE … ADD COLUMN`, nullable).
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("platform_us", "REAL"),
    ("class", "TEXT"),
    ("others_at_start", "INTEGER"),
];

/// Now, as Unix milliseconds (the server's wall clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn state_str(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
    }
}

fn parse_state(s: &str) -> RunState {
    match s {
        "queued" => RunState::Queued,
        "running" => RunState::Running,
        "succeeded" => RunState::Succeeded,
        _ => RunState::Failed,
    }
}

/// What `list` and `export` select.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this learner's runs (all runs when `None`).
    pub learner: Option<String>,
    /// Only this class's runs.
    pub class: Option<String>,
    /// Only runs older than this `seq`.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

impl History {
    /// Opens (creating if needed) `<data_dir>/history.sqlite3` and closes
    /// runs a previous server left open.
    pub fn open(data_dir: &Path) -> Result<History, HistoryError> {
        let path: PathBuf = data_dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let err = |source| HistoryError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // WAL: readers never block the writer and a commit is one append.
        // NORMAL: no fsync per commit; safe against a crash of this process.
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(err)?;
        Self::init(conn, shown)
    }

    /// A store that lives in memory only (tests, and a server whose data dir
    /// cannot be written; it says so in its log).
    pub fn in_memory() -> History {
        let conn = Connection::open_in_memory().expect("SQLite can always open :memory:");
        Self::init(conn, ":memory:".into()).expect("the schema applies to an empty database")
    }

    fn init(conn: Connection, path: String) -> Result<History, HistoryError> {
        let history = History {
            conn: Arc::new(Mutex::new(conn)),
            path,
        };
        history.with(|c| {
            c.execute_batch(SCHEMA)?;
            for (name, kind) in ADDED_COLUMNS {
                let present: bool = c.query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('runs') WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )?;
                if !present {
                    c.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {name} {kind}"))?;
                }
            }
            c.execute_batch(ADDED_INDEXES)?;
            let closed = c.execute(
                "UPDATE runs SET state = 'failed', finished_at_ms = ?1,
                    error_code = 'server_stopped',
                    error_message = 'the server stopped before this run finished'
                 WHERE state IN ('queued', 'running')",
                params![now_ms()],
            )?;
            if closed > 0 {
                tracing::warn!("{closed} run(s) were cut short by a server stop; marked failed");
            }
            Ok(())
        })?;
        Ok(history)
    }

    /// The database file (or `:memory:`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| HistoryError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Records an accepted run, of `learner` in `class` when given.
    pub fn accepted(
        &self,
        id: &str,
        demo: DemoId,
        learner: Option<&str>,
        class: Option<&str>,
    ) -> Result<(), HistoryError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, demo, learner, class, state, accepted_at_ms) VALUES (?1, ?2, ?3, ?4, 'queued', ?5)",
                params![id, demo.as_str(), learner, class, now_ms()],
            )
            .map(drop)
        })
    }

    /// Records that a run left the queue, with `others` runs in progress on
    /// the host at that moment.
    pub fn started(&self, id: &str, others: usize) -> Result<(), HistoryError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET state = 'running', others_at_start = ?2 WHERE id = ?1",
                params![id, others as i64],
            )
            .map(drop)
        })
    }

    /// Records a finished run: its outcome, headline numbers and events.
    pub fn finished(&self, record: &RunRecord) -> Result<(), HistoryError> {
        let outcome = record.outcome();
        let (time_key, memory_key) = record.demo.headline_keys();
        let time = outcome.and_then(|o| o.value(time_key));
        let memory = outcome.and_then(|o| o.value(memory_key));
        let platform = outcome.and_then(|o| o.value(stacklab_api::Metric::PlatformShare));
        let error = match outcome {
            Some(stacklab_api::Outcome::Failed { error }) => Some(error),
            _ => None,
        };
        let json = serde_json::to_string(record).expect("a RunRecord always serialises");
        self.with(|c| {
            c.execute(
                "UPDATE runs SET state = ?2, finished_at_ms = ?3, time_to_ready_us = ?4,
                    memory_bytes = ?5, error_code = ?6, error_message = ?7, record_json = ?8,
                    platform_us = ?9
                 WHERE id = ?1",
                params![
                    record.id,
                    state_str(record.state),
                    now_ms(),
                    time,
                    memory,
                    error.map(|e| e.code.as_str()),
                    error.map(|e| &e.message),
                    json,
                    platform
                ],
            )
            .map(drop)
        })
    }

    /// A finished run's full record, if stored.
    pub fn get(&self, id: &str) -> Result<Option<RunRecord>, HistoryError> {
        type Row = (
            String,
            String,
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let row: Option<(Option<String>, Row)> = self.with(|c| {
            c.query_row(
                "SELECT record_json, demo, state, accepted_at_ms, finished_at_ms, error_code, error_message
                 FROM runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))),
            )
            .optional()
        })?;
        let Some((json, (demo, state, accepted_at_ms, finished_at_ms, code, message))) = row else {
            return Ok(None);
        };
        if let Some(json) = json {
            return serde_json::from_str(&json)
                .map(Some)
                .map_err(|source| HistoryError::Corrupt {
                    id: id.to_owned(),
                    source,
                });
        }
        // No record: a run a server was killed under, closed when the next
        // one started. What is known is the row: one `finished` event, at
        // the moment that server noticed (not when the run stopped).
        let (Ok(demo), Some(finished)) = (demo.parse::<DemoId>(), finished_at_ms) else {
            return Ok(None);
        };
        if state != "failed" {
            return Ok(None);
        }
        let error = RunError {
            code: code
                .and_then(|c| c.parse().ok())
                .unwrap_or(ErrorCode::ServerStopped),
            message: message
                .unwrap_or_else(|| "the server stopped before this run finished".into()),
        };
        Ok(Some(RunRecord {
            id: id.to_owned(),
            demo,
            state: RunState::Failed,
            accepted_at_ms: Some(accepted_at_ms),
            events: vec![stacklab_api::RunEvent {
                seq: 0,
                at_us: (finished.saturating_sub(accepted_at_ms).max(0) as u64) * 1000,
                kind: stacklab_api::EventKind::Finished {
                    outcome: stacklab_api::Outcome::Failed { error },
                },
            }],
        }))
    }

    /// The newest run of `demo` that reached ready, whole.
    pub fn latest_ready(&self, demo: DemoId) -> Result<Option<RunRecord>, HistoryError> {
        let row: Option<(String, String)> = self.with(|c| {
            c.query_row(
                "SELECT id, record_json FROM runs
                 WHERE demo = ?1 AND state = 'succeeded' AND record_json IS NOT NULL
                 ORDER BY seq DESC LIMIT 1",
                params![demo.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        row.map(|(id, json)| {
            serde_json::from_str(&json).map_err(|source| HistoryError::Corrupt { id, source })
        })
        .transpose()
    }

    /// One page of summaries, newest first.
    pub fn list(&self, filter: &Filter) -> Result<RunPage, HistoryError> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let mut runs = self
            .with(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, id, demo, state, accepted_at_ms, finished_at_ms, time_to_ready_us,
                        memory_bytes, error_code, error_message, platform_us
                 FROM runs
                 WHERE (?1 IS NULL OR learner = ?1) AND (?2 IS NULL OR seq < ?2)
                    AND (?4 IS NULL OR class = ?4)
                 ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![filter.learner, filter.before, limit + 1, filter.class],
                    |r| {
                        let demo: String = r.get(2)?;
                        let state: String = r.get(3)?;
                        let code: Option<String> = r.get(8)?;
                        let message: Option<String> = r.get(9)?;
                        Ok((
                            demo,
                            RunSummary {
                                seq: r.get(0)?,
                                id: r.get(1)?,
                                demo: DemoId::PostgresContainer,
                                state: parse_state(&state),
                                accepted_at_ms: r.get(4)?,
                                finished_at_ms: r.get(5)?,
                                time_to_ready_us: r.get(6)?,
                                memory_bytes: r.get(7)?,
                                platform_us: r.get(10)?,
                                error: code.map(|code| stored_error(&code, message)),
                            },
                        ))
                    },
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })?
            .into_iter()
            // A demo this version no longer knows is skipped, not an error.
            .filter_map(|(demo, mut s)| {
                s.demo = demo.parse().ok()?;
                Some(s)
            })
            .collect::<Vec<_>>();
        let more = runs.len() > limit as usize;
        runs.truncate(limit as usize);
        let next_before = if more {
            runs.last().map(|s| s.seq)
        } else {
            None
        };
        Ok(RunPage { runs, next_before })
    }

    /// Deletes finished runs `keep` does not keep (too old by when they
    /// finished, or past the newest `max_runs`), and classes that expired
    /// that long ago with no run left; returns how many runs went. Runs
    /// still open are never deleted.
    pub fn prune(&self, keep: Retention) -> Result<usize, HistoryError> {
        let cutoff = keep.ms.map_or(i64::MIN, |ms| now_ms() - ms);
        self.with(|c| {
            let mut runs = c.execute(
                "DELETE FROM runs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1",
                params![cutoff],
            )?;
            if let Some(max) = keep.max_runs {
                // The newest `max` finished runs stay (by seq, the order
                // they were accepted in); runs still open always do.
                runs += c.execute(
                    "DELETE FROM runs WHERE finished_at_ms IS NOT NULL AND seq <
                        (SELECT COALESCE(MIN(seq), 0) FROM (SELECT seq FROM runs
                         WHERE finished_at_ms IS NOT NULL ORDER BY seq DESC LIMIT ?1))",
                    params![max as i64],
                )?;
            }
            c.execute(
                "DELETE FROM members WHERE class IN (SELECT code FROM classes
                    WHERE expires_at_ms < ?1 AND code NOT IN (SELECT class FROM runs WHERE class IS NOT NULL))",
                params![cutoff],
            )?;
            c.execute(
                "DELETE FROM classes WHERE expires_at_ms < ?1
                    AND code NOT IN (SELECT class FROM runs WHERE class IS NOT NULL)",
                params![cutoff],
            )?;
            Ok(runs)
        })
    }

    /// Every summary matching `filter` (ignoring its limit), newest first.
    pub fn all(&self, filter: &Filter) -> Result<Vec<RunSummary>, HistoryError> {
        let mut out = Vec::new();
        let mut page_filter = Filter {
            limit: MAX_PAGE,
            ..filter.clone()
        };
        loop {
            let page = self.list(&page_filter)?;
            out.extend(page.runs);
            match page.next_before {
                Some(b) => page_filter.before = Some(b),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use stacklab_api::{EventKind, Measurement, Metric, Outcome, RunEvent, Unit};

    pub(crate) fn record(id: &str, demo: DemoId, ok: bool) -> RunRecord {
        let outcome = if ok {
            Outcome::Ready {
                measurements: vec![
                    Measurement {
                        key: Metric::RequestToReady.into(),
                        label: "t".into(),
                        value: 812_345.0,
                        unit: Unit::Micros,
                        how: "h".into(),
                    },
                    Measurement {
                        key: demo.memory_key().into(),
                        label: "m".into(),
                        value: 33_554_432.0,
                        unit: Unit::Bytes,
                        how: "h".into(),
                    },
                ],
                facts: vec![],
                missing: vec![],
            }
        } else {
            Outcome::Failed {
                error: RunError {
                    code: ErrorCode::Deadline,
                    message: "too slow, \"really\", sorry".into(),
                },
            }
        };
        RunRecord {
            id: id.into(),
            demo,
            accepted_at_ms: Some(1_795_737_600_000),
            state: if ok {
                RunState::Succeeded
            } else {
                RunState::Failed
            },
            events: vec![RunEvent {
                seq: 0,
                at_us: 5,
                kind: EventKind::Finished { outcome },
            }],
        }
    }

    #[test]
    fn a_run_is_stored_listed_paged_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        for i in 0..7 {
            let id = format!("run{i}");
            let learner = if i % 2 == 0 {
                "learner-aaaa"
            } else {
                "learner-bbbb"
            };
            h.accepted(&id, DemoId::MicroVm, Some(learner), None)
                .unwrap();
            h.finished(&record(&id, DemoId::MicroVm, i != 3)).unwrap();
        }
        let page = h
            .list(&Filter {
                limit: 3,
                ..Filter::default()
            })
            .unwrap();
        let ids: Vec<_> = page.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run6", "run5", "run4"]);
        let page2 = h
            .list(&Filter {
                limit: 3,
                before: page.next_before,
                ..Filter::default()
            })
            .unwrap();
        let ids: Vec<_> = page2.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run3", "run2", "run1"]);
        assert_eq!(page2.runs[0].state, RunState::Failed);
        assert_eq!(
            page2.runs[0].error.as_ref().unwrap().code,
            ErrorCode::Deadline
        );
        assert_eq!(page2.runs[1].time_to_ready_us, Some(812_345.0));
        assert_eq!(page2.runs[1].memory_bytes, Some(33_554_432.0));

        let mine = h
            .all(&Filter {
                learner: Some("learner-bbbb".into()),
                ..Filter::default()
            })
            .unwrap();
        let ids: Vec<_> = mine.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run5", "run3", "run1"]);

        assert_eq!(
            h.get("run2").unwrap(),
            Some(record("run2", DemoId::MicroVm, true))
        );
        assert_eq!(h.get("nope").unwrap(), None);
    }

    #[test]
    fn pruning_removes_runs_finished_before_the_cutoff_and_keeps_the_rest() {
        let h = History::in_memory();
        for id in ["old", "new", "open"] {
            h.accepted(id, DemoId::MicroVm, None, None).unwrap();
        }
        h.finished(&record("old", DemoId::MicroVm, true)).unwrap();
        h.finished(&record("new", DemoId::MicroVm, true)).unwrap();
        h.with(|c| {
            c.execute(
                "UPDATE runs SET finished_at_ms = finished_at_ms - 10000000 WHERE id = 'old'",
                [],
            )
        })
        .unwrap();
        let gone = h.create_class("Long ago", -20_000_000).unwrap();
        let keep = Retention {
            ms: Some(5_000_000),
            max_runs: None,
        };
        assert_eq!(h.prune(keep).unwrap(), 1);
        let left: Vec<_> = h
            .all(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["open", "new"], "a run still open is never pruned");
        assert!(h.class(&gone.code).unwrap().is_none());
    }

    #[test]
    fn pruning_keeps_the_newest_finished_runs_up_to_the_maximum() {
        let h = History::in_memory();
        for id in ["a", "b", "c", "d", "open"] {
            h.accepted(id, DemoId::MicroVm, None, None).unwrap();
        }
        for id in ["a", "b", "c", "d"] {
            h.finished(&record(id, DemoId::MicroVm, true)).unwrap();
        }
        let keep = Retention {
            ms: None,
            max_runs: Some(2),
        };
        assert_eq!(h.prune(keep).unwrap(), 2);
        let left: Vec<_> = h
            .all(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["open", "d", "c"]);
        assert_eq!(h.prune(keep).unwrap(), 0, "nothing more to remove");
    }

    #[test]
    fn runs_left_open_by_a_dead_server_are_closed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = History::open(dir.path()).unwrap();
            h.accepted("cut", DemoId::PostgresContainer, None, None)
                .unwrap();
        }
        let h = History::open(dir.path()).unwrap();
        let page = h
            .list(&Filter {
                limit: 10,
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(page.runs.len(), 1);
        assert_eq!(page.runs[0].state, RunState::Failed);
        assert_eq!(
            page.runs[0].error.as_ref().unwrap().code,
            ErrorCode::ServerStopped
        );
        assert!(page.runs[0].finished_at_ms.is_some());
        // The soak found it: listed, yet `get` (GET /api/runs/{id}) said 404.
        let record = h.get("cut").unwrap().expect("a closed run can be opened");
        assert_eq!(record.state, RunState::Failed);
        match record.outcome() {
            Some(stacklab_api::Outcome::Failed { error }) => {
                assert_eq!(error.code, ErrorCode::ServerStopped)
            }
            other => panic!("{other:?}"),
        }
        let mode: String = h
            .with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
