//! The run history: every run the server accepted, in the store's
//! database (SQLite by default, PostgreSQL for more than one replica; see
//! [`super::sql`]).
//!
//! A run is written twice: a row when it is accepted, then its outcome and
//! full event log when it finishes. A committed row survives a `kill -9` of
//! the server (SQLite in WAL with `synchronous=NORMAL` loses nothing on a
//! process crash, only on a power cut; PostgreSQL commits durably). Rows
//! still open when a server starts belong to a server that died mid-run;
//! they are closed as failed with the code `server_stopped`, so a learner's
//! history never shows a run as running forever. With PostgreSQL, a
//! replica closes only its own such rows (by its host name).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use stacklab_api::{
    DemoId, ErrorCode, RunError, RunEvent, RunPage, RunRecord, RunState, RunSummary,
};

use super::pool::{Limits, Pool, Source};
use super::sql::{params, DbError, Row, Sql, Value};

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
    /// The database reported an error.
    #[error("run history ({store}): {source}")]
    Database {
        /// Which database (`SQLite <path>`, `PostgreSQL <host>/<db>`).
        store: String,
        /// What it said.
        #[source]
        source: DbError,
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

impl HistoryError {
    /// Whether a time bound ended the call (the database is busy or slow
    /// now; asking again later may work).
    pub fn timed_out(&self) -> bool {
        matches!(self, HistoryError::Database { source, .. } if source.timed_out)
    }
}

/// The history store. Cheap to clone; all clones share one pool of
/// connections (see [`super::pool`]) and, for heartbeats, one connection
/// of their own.
#[derive(Clone)]
pub struct History {
    pool: Pool,
    /// Heartbeats' own connection: a busy pool cannot make this replica
    /// look lost to the others.
    beat: Pool,
    store: String,
    /// This replica's name, written on every run it accepts.
    host: Arc<str>,
    /// Whether other replicas share the store (PostgreSQL).
    shared: bool,
}

/// A replica as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    /// Its name (`--replica`).
    pub name: String,
    /// What it can run, as it last reported (JSON of the health's lab part).
    pub can_json: String,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    /// Its last heartbeat (Unix ms).
    pub heartbeat_at_ms: i64,
    /// Where other replicas reach it (`http://host:port`).
    pub url: Option<String>,
}

/// PostgreSQL channels replicas talk on (payload: a run id).
pub const EVENTS_CHANNEL: &str = "stacklab_events";
/// See [`EVENTS_CHANNEL`]: someone watches this run on another replica.
pub const WATCH_CHANNEL: &str = "stacklab_watch";

/// How much finished history to keep: runs finished within `ms`, and at
/// most the newest `max_runs` of them (`None`: no bound of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ms: Option<i64>,
    pub max_runs: Option<u64>,
}

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

pub(super) fn parse_state(s: &str) -> RunState {
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

/// The host name of a lone (SQLite) server's runs.
const LOCAL_HOST: &str = "local";

impl History {
    /// Opens (creating if needed) `<data_dir>/history.sqlite3` and closes
    /// runs a previous server left open.
    pub async fn open(data_dir: &Path) -> Result<History, HistoryError> {
        Self::open_with(data_dir, Limits::default()).await
    }

    /// As [`History::open`], with these bounds.
    pub async fn open_with(data_dir: &Path, limits: Limits) -> Result<History, HistoryError> {
        let shown = format!("SQLite in {}", data_dir.display());
        let error = |source| HistoryError::Database {
            store: shown.clone(),
            source,
        };
        // The schema, once, before any pooled connection opens.
        let dir: PathBuf = data_dir.to_owned();
        let db = tokio::task::spawn_blocking(move || super::sqlite::Sqlite::open(&dir))
            .await
            .map_err(|e| error(DbError::new(format!("opening failed: {e}"))))?
            .map_err(error)?;
        let store = db.describe();
        drop(db);
        let source = || Source::SqliteFile(data_dir.to_owned());
        let pool = Pool::new(source(), limits, store.clone()).map_err(error)?;
        let beat =
            Pool::new(source(), Limits { size: 1, ..limits }, store.clone()).map_err(error)?;
        Self::init(pool, beat, store, LOCAL_HOST, true).await
    }

    /// Connects to the PostgreSQL database at `url`, as the replica named
    /// `host`, and closes the runs this replica left open when it last
    /// stopped (other replicas' runs are theirs).
    pub async fn connect(url: &str, host: &str) -> Result<History, HistoryError> {
        Self::connect_with(url, host, Limits::default()).await
    }

    /// As [`History::connect`], with these bounds.
    pub async fn connect_with(
        url: &str,
        host: &str,
        limits: Limits,
    ) -> Result<History, HistoryError> {
        let error = |source| HistoryError::Database {
            store: "PostgreSQL".into(),
            source,
        };
        let (config, label) = super::postgres::config(url).map_err(error)?;
        tokio::time::timeout(limits.call(), super::postgres::migrate(&config, &label))
            .await
            .map_err(|_| {
                error(DbError::timed_out(format!(
                    "PostgreSQL {label}: no answer within {:?}",
                    limits.call()
                )))
            })?
            .map_err(error)?;
        let store = format!("PostgreSQL {label}");
        let source = || Source::Postgres(Box::new(config.clone()), label.clone());
        let pool = Pool::new(source(), limits, store.clone()).map_err(error)?;
        let beat =
            Pool::new(source(), Limits { size: 1, ..limits }, store.clone()).map_err(error)?;
        Self::init(pool, beat, store, host, false).await
    }

    /// A store that lives in memory only (tests).
    pub fn in_memory() -> History {
        Self::in_memory_with(Limits::default())
    }

    /// As [`History::in_memory`], with these bounds (its one connection
    /// serves heartbeats too).
    pub fn in_memory_with(limits: Limits) -> History {
        let store = "SQLite :memory:".to_owned();
        let pool = Pool::new(Source::SqliteMemory, limits, store.clone())
            .expect("a pool in memory always builds");
        History {
            beat: pool.clone(),
            pool,
            store,
            host: LOCAL_HOST.into(),
            shared: false,
        }
    }

    async fn init(
        pool: Pool,
        beat: Pool,
        store: String,
        host: &str,
        alone: bool,
    ) -> Result<History, HistoryError> {
        // Every connection opens now, not on a first busy minute: the
        // server's threads and descriptors are fixed from its start (the
        // soak's leak check compares them over its runs), and a burst of
        // requests waits for no connect.
        for p in [&pool, &beat] {
            p.open_all()
                .await
                .map_err(|source| HistoryError::Database {
                    store: store.clone(),
                    source,
                })?;
        }
        let history = History {
            pool,
            beat,
            store,
            host: host.into(),
            shared: !alone,
        };
        // Two statements rather than `$2 = 1 OR host = $3`: each a plain
        // condition the planner can use.
        let (now, host) = (now_ms(), host.to_owned());
        let closed = history
            .run(move |db| {
                let (all, one) = (
                    "UPDATE runs SET state = 'failed', finished_at_ms = $1,
                        error_code = 'server_stopped',
                        error_message = 'the server stopped before this run finished'
                     WHERE state IN ('queued', 'running')",
                    "UPDATE runs SET state = 'failed', finished_at_ms = $1,
                        error_code = 'server_stopped',
                        error_message = 'the server stopped before this run finished'
                     WHERE state IN ('queued', 'running') AND host = $2",
                );
                if alone {
                    db.execute(all, params![now])
                } else {
                    db.execute(one, params![now, host])
                }
            })
            .await?;
        if closed > 0 {
            tracing::warn!("{closed} run(s) were cut short by a server stop; marked failed");
        }
        Ok(history)
    }

    /// Which database, for the log (`SQLite <path>`, `PostgreSQL <host>/<db>`).
    pub fn path(&self) -> &str {
        &self.store
    }

    /// This replica's name in the store.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether other replicas may share this store (PostgreSQL): then
    /// events, limits and liveness go through it.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// The bounds the store keeps.
    pub fn limits(&self) -> Limits {
        self.pool.limits()
    }

    /// The pool's connections: idle now, and open (idle or in use).
    pub fn connections(&self) -> (usize, usize) {
        self.pool.idle_and_open()
    }

    fn error(&self, source: DbError) -> HistoryError {
        HistoryError::Database {
            store: self.store.clone(),
            source,
        }
    }

    /// Runs `f` on a connection of the pool, off the async workers, bounded
    /// in time (see [`super::pool`]).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        self.pool.run(f).await.map_err(|e| self.error(e))
    }

    /// [`History::run`], for tests outside the store (a deliberately slow
    /// statement).
    #[cfg(test)]
    pub(crate) async fn run_for_tests<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        self.run(f).await
    }

    /// Records an accepted run, of `learner` in `class` when given.
    pub async fn accepted(
        &self,
        id: &str,
        demo: DemoId,
        learner: Option<&str>,
        class: Option<&str>,
    ) -> Result<(), HistoryError> {
        self.accepted_for(id, demo, None, learner, class).await
    }

    /// As [`History::accepted`], counted for `owner` (whom the learner
    /// limits count by; see [`History::unfinished_of`]).
    pub async fn accepted_for(
        &self,
        id: &str,
        demo: DemoId,
        owner: Option<&str>,
        learner: Option<&str>,
        class: Option<&str>,
    ) -> Result<(), HistoryError> {
        let values = params![
            id,
            demo.as_str(),
            learner,
            class,
            now_ms(),
            &*self.host,
            owner
        ]
        .to_vec();
        self.run(move |db| {
            db.execute(
                "INSERT INTO runs (id, demo, learner, class, state, accepted_at_ms, host, owner)
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7)",
                &values,
            )
            .map(drop)
        })
        .await
    }

    /// Unfinished runs counted for `owner` of `demo`, on every replica.
    pub async fn unfinished_of(&self, owner: &str, demo: DemoId) -> Result<usize, HistoryError> {
        let values = params![owner, demo.as_str()].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    "SELECT COUNT(*) FROM runs WHERE owner = $1 AND demo = $2
                        AND state IN ('queued', 'running')",
                    &values,
                )
            })
            .await?;
        Ok(row.and_then(|r| r.int(0)).unwrap_or(0) as usize)
    }

    /// Appends events of a run in progress (each once, by its `seq`) and,
    /// with PostgreSQL, tells the other replicas (`NOTIFY`, with only the
    /// run's id as payload: readers fetch the events from the table).
    pub async fn append_events(&self, id: &str, events: &[RunEvent]) -> Result<(), HistoryError> {
        let rows: Vec<Vec<Value>> = events
            .iter()
            .map(|event| {
                let json = serde_json::to_string(event).expect("an event always serialises");
                params![id, i64::from(event.seq), json].to_vec()
            })
            .collect();
        let (shared, id) = (self.shared, id.to_owned());
        self.run(move |db| {
            for values in rows {
                db.execute(
                    "INSERT INTO run_events (run_id, seq, event_json) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, seq) DO NOTHING",
                    &values,
                )?;
            }
            if shared {
                db.execute("SELECT pg_notify($1, $2)", params![EVENTS_CHANNEL, id])?;
            }
            Ok(())
        })
        .await
    }

    /// A run's appended events from `seq` `from` on, in order.
    pub async fn events(&self, id: &str, from: u32) -> Result<Vec<RunEvent>, HistoryError> {
        let values = params![id, i64::from(from)].to_vec();
        let rows = self
            .run(move |db| {
                db.query(
                    "SELECT event_json FROM run_events WHERE run_id = $1 AND seq >= $2 ORDER BY seq",
                    &values,
                )
            })
            .await?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(&r.text(0).unwrap_or_default()).map_err(|source| {
                    HistoryError::Corrupt {
                        id: id.to_owned(),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Tells the replica running `id` that a client follows it here (so it
    /// does not cancel the run as unwatched). PostgreSQL only.
    pub async fn notify_watching(&self, id: &str) -> Result<(), HistoryError> {
        if !self.shared {
            return Ok(());
        }
        let values = params![WATCH_CHANNEL, id].to_vec();
        self.run(move |db| db.execute("SELECT pg_notify($1, $2)", &values).map(drop))
            .await
    }

    /// Records this replica as alive now, able to run what `can_json`
    /// says, reachable at `url`. On the heartbeat's own connection: a pool
    /// busy with slow statements does not delay it.
    pub async fn heartbeat(
        &self,
        can_json: &str,
        started_at_ms: i64,
        url: Option<&str>,
    ) -> Result<(), HistoryError> {
        let values = params![&*self.host, can_json, started_at_ms, now_ms(), url].to_vec();
        self.beat
            .run(move |db| {
                db.execute(
                    "INSERT INTO hosts (name, can_json, started_at_ms, heartbeat_at_ms, url) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO UPDATE SET can_json = excluded.can_json,
                        started_at_ms = excluded.started_at_ms, heartbeat_at_ms = excluded.heartbeat_at_ms,
                        url = excluded.url",
                    &values,
                )
                .map(drop)
            })
            .await
            .map_err(|e| self.error(e))
    }

    /// Which shared store this is: the PostgreSQL cluster's system
    /// identifier, the database and the schema (replicas label their
    /// containers with it, so two deployments on one Docker engine never
    /// judge each other's). A lone store: its description.
    pub async fn store_id(&self) -> Result<String, HistoryError> {
        if !self.shared {
            return Ok(self.store.clone());
        }
        let row = self
            .run(move |db| {
                db.query_one(
                    "SELECT (SELECT system_identifier::text FROM pg_control_system())
                        || '/' || current_database() || '/' || current_schema()",
                    params![],
                )
            })
            .await?;
        Ok(row.and_then(|r| r.text(0)).unwrap_or_default())
    }

    /// Every replica that has heart-beaten, most recent first.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, HistoryError> {
        let rows = self
            .run(move |db| {
                db.query(
                    "SELECT name, can_json, started_at_ms, heartbeat_at_ms, url FROM hosts
                     ORDER BY heartbeat_at_ms DESC, name",
                    params![],
                )
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| HostRow {
                name: r.text(0).unwrap_or_default(),
                can_json: r.text(1).unwrap_or_default(),
                started_at_ms: r.int(2).unwrap_or_default(),
                heartbeat_at_ms: r.int(3).unwrap_or_default(),
                url: r.text(4),
            })
            .collect())
    }

    /// Closes as failed `host_lost` the unfinished runs of other replicas
    /// whose last heartbeat is older than `timeout_ms`; returns their ids.
    /// On the heartbeat's connection: the liveness loop waits for no other
    /// store call.
    pub async fn close_lost(&self, timeout_ms: i64) -> Result<Vec<String>, HistoryError> {
        let cutoff = now_ms() - timeout_ms;
        let values = params![now_ms(), &*self.host, cutoff].to_vec();
        let rows = self
            .beat
            .run(move |db| {
                db.query(
                    "UPDATE runs SET state = 'failed', finished_at_ms = $1, error_code = 'host_lost',
                        error_message = 'the replica running it (' || host || ') stopped answering'
                     WHERE state IN ('queued', 'running') AND host <> $2
                        AND host IN (SELECT name FROM hosts WHERE heartbeat_at_ms < $3)
                     RETURNING id",
                    &values,
                )
            })
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows.iter().filter_map(|r| r.text(0)).collect())
    }

    /// Records that a run left the queue, with `others` runs in progress on
    /// the host at that moment. Only a queued run starts: a start written
    /// late (it is written beside the run) never turns a finished or lost
    /// run back into a running one.
    pub async fn started(&self, id: &str, others: usize) -> Result<(), HistoryError> {
        let values = params![id, others as i64].to_vec();
        self.run(move |db| {
            db.execute(
                "UPDATE runs SET state = 'running', others_at_start = $2 WHERE id = $1 AND state = 'queued'",
                &values,
            )
            .map(drop)
        })
        .await
    }

    /// Records a finished run: its outcome, headline numbers and events.
    pub async fn finished(&self, record: &RunRecord) -> Result<(), HistoryError> {
        let outcome = record.outcome();
        let (time_key, memory_key) = record.demo.headline_keys();
        let time = outcome.and_then(|o| o.value(time_key));
        let memory = outcome.and_then(|o| o.value(memory_key));
        let platform = outcome.and_then(|o| o.value(stacklab_api::Metric::PlatformShare));
        let queue_wait = outcome.and_then(|o| o.value(stacklab_api::Metric::QueueWait));
        let error = match outcome {
            Some(stacklab_api::Outcome::Failed { error }) => Some(error),
            _ => None,
        };
        let json = serde_json::to_string(record).expect("a RunRecord always serialises");
        let values = params![
            &record.id,
            state_str(record.state),
            now_ms(),
            time,
            memory,
            error.map(|e| e.code.as_str()),
            error.map(|e| &e.message),
            json,
            platform,
            queue_wait
        ]
        .to_vec();
        self.run(move |db| {
            db.execute(
                "UPDATE runs SET state = $2, finished_at_ms = $3, time_to_ready_us = $4,
                    memory_bytes = $5, error_code = $6, error_message = $7, record_json = $8,
                    platform_us = $9, queue_wait_us = $10
                 WHERE id = $1",
                &values,
            )
            .map(drop)
        })
        .await
    }

    /// Writes finished runs, each accepted and finished as `record` says,
    /// of `learner`, in one transaction of multi-row inserts (an import; a
    /// long history for a test in seconds, not minutes).
    pub async fn insert_finished(
        &self,
        records: &[RunRecord],
        learner: Option<&str>,
    ) -> Result<(), HistoryError> {
        /// Rows per statement (8 parameters each). SQLite looks each named
        /// parameter up among those before it while it parses a
        /// statement: more rows per statement cost more than they save.
        const ROWS: usize = 50;
        let now = now_ms();
        let batches: Vec<(String, Vec<Value>)> = records
            .chunks(ROWS)
            .map(|chunk| {
                let mut values = Vec::with_capacity(chunk.len() * 8);
                let mut rows = Vec::with_capacity(chunk.len());
                for record in chunk {
                    let n = values.len();
                    rows.push(format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6,
                        n + 7,
                        n + 8
                    ));
                    values.extend(
                        params![
                            &record.id,
                            record.demo.as_str(),
                            learner,
                            state_str(record.state),
                            record.accepted_at_ms.unwrap_or(now),
                            now,
                            serde_json::to_string(record).expect("a RunRecord always serialises"),
                            &*self.host
                        ]
                        .iter()
                        .cloned(),
                    );
                }
                (
                    format!(
                        "INSERT INTO runs (id, demo, learner, state, accepted_at_ms, finished_at_ms, record_json, host)
                         VALUES {}",
                        rows.join(", ")
                    ),
                    values,
                )
            })
            .collect();
        self.run(move |db| {
            db.execute("BEGIN", params![])?;
            for (sql, values) in &batches {
                if let Err(e) = db.execute(sql, values) {
                    let _ = db.execute("ROLLBACK", params![]);
                    return Err(e);
                }
            }
            db.execute("COMMIT", params![]).map(drop)
        })
        .await
    }

    /// A finished run's full record, if stored.
    pub async fn get(&self, id: &str) -> Result<Option<RunRecord>, HistoryError> {
        let values = params![id].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    "SELECT record_json, demo, state, accepted_at_ms, finished_at_ms, error_code, error_message
                     FROM runs WHERE id = $1",
                    &values,
                )
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if let Some(json) = row.text(0) {
            return serde_json::from_str(&json)
                .map(Some)
                .map_err(|source| HistoryError::Corrupt {
                    id: id.to_owned(),
                    source,
                });
        }
        let demo = row.text(1).and_then(|d| d.parse::<DemoId>().ok());
        let accepted_at_ms = row.int(3).unwrap_or_default();
        // In progress on another replica: its events so far.
        if let (Some(demo), Some(state @ ("queued" | "running"))) = (demo, row.text(2).as_deref()) {
            return Ok(Some(RunRecord {
                id: id.to_owned(),
                demo,
                state: parse_state(state),
                accepted_at_ms: Some(accepted_at_ms),
                events: self.events(id, 0).await?,
            }));
        }
        // No record: a run a server was killed under, closed when the next
        // one started (or by another replica, as `host_lost`). What is
        // known is the row: one `finished` event, at the moment that was
        // noticed (not when the run stopped).
        let (Some(demo), Some(finished)) = (demo, row.int(4)) else {
            return Ok(None);
        };
        if row.text(2).as_deref() != Some("failed") {
            return Ok(None);
        }
        let error = RunError {
            code: row
                .text(5)
                .and_then(|c| c.parse().ok())
                .unwrap_or(ErrorCode::ServerStopped),
            message: row
                .text(6)
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
    pub async fn latest_ready(&self, demo: DemoId) -> Result<Option<RunRecord>, HistoryError> {
        let values = params![demo.as_str()].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    "SELECT id, record_json FROM runs
                     WHERE demo = $1 AND state = 'succeeded' AND record_json IS NOT NULL
                     ORDER BY seq DESC LIMIT 1",
                    &values,
                )
            })
            .await?;
        row.map(|r| {
            let id = r.text(0).unwrap_or_default();
            serde_json::from_str(&r.text(1).unwrap_or_default())
                .map_err(|source| HistoryError::Corrupt { id, source })
        })
        .transpose()
    }

    /// One page of summaries, newest first.
    pub async fn list(&self, filter: &Filter) -> Result<RunPage, HistoryError> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let (sql, values) = list_query(filter, limit);
        let rows = self.run(move |db| db.query(&sql, &values)).await?;
        // A demo this version no longer knows is skipped, not an error.
        let mut runs: Vec<RunSummary> = rows.iter().filter_map(summary).collect();
        let more = rows.len() > limit as usize;
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
    pub async fn prune(&self, keep: Retention) -> Result<usize, HistoryError> {
        let cutoff = keep.ms.map_or(i64::MIN, |ms| now_ms() - ms);
        self.run(move |db| {
            let mut runs = db.execute(
                "DELETE FROM runs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1",
                params![cutoff],
            )?;
            if let Some(max) = keep.max_runs {
                // The newest `max` finished runs stay (by seq, the order
                // they were accepted in); runs still open always do.
                runs += db.execute(
                    "DELETE FROM runs WHERE finished_at_ms IS NOT NULL AND seq <
                        (SELECT COALESCE(MIN(seq), 0) FROM (SELECT seq FROM runs
                         WHERE finished_at_ms IS NOT NULL ORDER BY seq DESC LIMIT $1) AS newest)",
                    params![max as i64],
                )?;
            }
            db.execute(
                "DELETE FROM members WHERE class IN (SELECT code FROM classes
                    WHERE expires_at_ms < $1 AND code NOT IN (SELECT class FROM runs WHERE class IS NOT NULL))",
                params![cutoff],
            )?;
            db.execute(
                "DELETE FROM classes WHERE expires_at_ms < $1
                    AND code NOT IN (SELECT class FROM runs WHERE class IS NOT NULL)",
                params![cutoff],
            )?;
            // A finished run's events are in its record.
            db.execute(
                "DELETE FROM run_events WHERE run_id NOT IN
                    (SELECT id FROM runs WHERE state IN ('queued', 'running'))",
                params![],
            )?;
            Ok(runs as usize)
        })
        .await
    }

    /// Every summary matching `filter` (ignoring its limit), newest first:
    /// page by page, each page its own call (no connection is held
    /// between pages).
    pub async fn all(&self, filter: &Filter) -> Result<Vec<RunSummary>, HistoryError> {
        let mut out = Vec::new();
        let mut page_filter = Filter {
            limit: MAX_PAGE,
            ..filter.clone()
        };
        loop {
            let page = self.list(&page_filter).await?;
            out.extend(page.runs);
            match page.next_before {
                Some(b) => page_filter.before = Some(b),
                None => return Ok(out),
            }
        }
    }
}

/// `list`'s statement for `filter`: only the filters given, each a plain
/// comparison, so the store walks its (learner, seq) or (class, seq)
/// index instead of the whole table (`$1 IS NULL OR learner = $1` defeats
/// the index).
fn list_query(filter: &Filter, limit: u32) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut add = |clause: &str, value: Value| {
        values.push(value);
        clauses.push(clause.replace('?', &format!("${}", values.len())));
    };
    if let Some(learner) = &filter.learner {
        add("learner = ?", Value::from(learner.as_str()));
    }
    if let Some(class) = &filter.class {
        add("class = ?", Value::from(class.as_str()));
    }
    if let Some(before) = filter.before {
        add("seq < ?", Value::from(before));
    }
    values.push(Value::from(i64::from(limit) + 1));
    let sql = format!(
        "SELECT seq, id, demo, state, accepted_at_ms, finished_at_ms, time_to_ready_us,
            memory_bytes, error_code, error_message, platform_us, queue_wait_us
         FROM runs {} ORDER BY seq DESC LIMIT ${}",
        if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        },
        values.len()
    );
    (sql, values)
}

/// A summary from a row of `list`'s query; `None` for a demo this version
/// does not know.
fn summary(r: &Row) -> Option<RunSummary> {
    Some(RunSummary {
        seq: r.int(0)?,
        id: r.text(1)?,
        demo: r.text(2)?.parse().ok()?,
        state: parse_state(&r.text(3).unwrap_or_default()),
        accepted_at_ms: r.int(4)?,
        finished_at_ms: r.int(5),
        time_to_ready_us: r.real(6),
        memory_bytes: r.real(7),
        platform_us: r.real(10),
        queue_wait_us: r.real(11),
        error: r.text(8).map(|code| stored_error(&code, r.text(9))),
    })
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
                        key: demo.headline_keys().0,
                        label: "t".into(),
                        value: 812_345.0,
                        unit: Unit::Micros,
                        how: "h".into(),
                    },
                    Measurement {
                        key: Metric::QueueWait.into(),
                        label: "w".into(),
                        value: 1_500.0,
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

    use crate::store::testing::stores;

    #[tokio::test]
    async fn a_run_is_stored_listed_paged_and_read_back() {
        for store in stores().await {
            a_run_is_stored_listed_paged_and_read_back_in(&store.history).await;
        }
    }

    async fn a_run_is_stored_listed_paged_and_read_back_in(h: &History) {
        for i in 0..7 {
            let id = format!("run{i}");
            let learner = if i % 2 == 0 {
                "learner-aaaa"
            } else {
                "learner-bbbb"
            };
            h.accepted(&id, DemoId::MicroVm, Some(learner), None)
                .await
                .unwrap();
            h.finished(&record(&id, DemoId::MicroVm, i != 3))
                .await
                .unwrap();
        }
        let page = h
            .list(&Filter {
                limit: 3,
                ..Filter::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = page.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run6", "run5", "run4"]);
        let page2 = h
            .list(&Filter {
                limit: 3,
                before: page.next_before,
                ..Filter::default()
            })
            .await
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
        assert_eq!(
            page2.runs[1].queue_wait_us,
            Some(1_500.0),
            "the wait in line, its own column"
        );
        assert_eq!(
            page2.runs[0].queue_wait_us, None,
            "a failed run has no wait figure: absent, not 0"
        );

        let mine = h
            .all(&Filter {
                learner: Some("learner-bbbb".into()),
                ..Filter::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = mine.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run5", "run3", "run1"]);

        assert_eq!(
            h.get("run2").await.unwrap(),
            Some(record("run2", DemoId::MicroVm, true))
        );
        assert_eq!(h.get("nope").await.unwrap(), None);
    }

    /// A run's start is written beside the run; one that lands after the
    /// run's end leaves the end as it is.
    #[tokio::test]
    async fn a_late_start_does_not_reopen_a_finished_run() {
        for store in stores().await {
            let h = &store.history;
            h.accepted("late", DemoId::MicroVm, None, None)
                .await
                .unwrap();
            h.started("late", 0).await.unwrap();
            let state =
                |runs: Vec<RunSummary>| runs.into_iter().find(|r| r.id == "late").unwrap().state;
            assert_eq!(
                state(h.all(&Filter::default()).await.unwrap()),
                RunState::Running
            );
            h.finished(&record("late", DemoId::MicroVm, true))
                .await
                .unwrap();
            h.started("late", 1).await.unwrap();
            assert_eq!(
                state(h.all(&Filter::default()).await.unwrap()),
                RunState::Succeeded,
                "{}",
                store.backend
            );
        }
    }

    #[tokio::test]
    async fn pruning_removes_runs_finished_before_the_cutoff_and_keeps_the_rest() {
        for store in stores().await {
            pruning_by_age_in(&store.history).await;
        }
    }

    async fn pruning_by_age_in(h: &History) {
        for id in ["old", "new", "open"] {
            h.accepted(id, DemoId::MicroVm, None, None).await.unwrap();
        }
        h.finished(&record("old", DemoId::MicroVm, true))
            .await
            .unwrap();
        h.finished(&record("new", DemoId::MicroVm, true))
            .await
            .unwrap();
        h.run(|db| {
            db.execute(
                "UPDATE runs SET finished_at_ms = finished_at_ms - 10000000 WHERE id = 'old'",
                params![],
            )
        })
        .await
        .unwrap();
        let gone = h.create_class("Long ago", -20_000_000).await.unwrap();
        let keep = Retention {
            ms: Some(5_000_000),
            max_runs: None,
        };
        assert_eq!(h.prune(keep).await.unwrap(), 1);
        let left: Vec<_> = h
            .all(&Filter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["open", "new"], "a run still open is never pruned");
        assert!(h.class(&gone.code).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn pruning_keeps_the_newest_finished_runs_up_to_the_maximum() {
        for store in stores().await {
            pruning_by_count_in(&store.history).await;
        }
    }

    async fn pruning_by_count_in(h: &History) {
        for id in ["a", "b", "c", "d", "open"] {
            h.accepted(id, DemoId::MicroVm, None, None).await.unwrap();
        }
        for id in ["a", "b", "c", "d"] {
            h.finished(&record(id, DemoId::MicroVm, true))
                .await
                .unwrap();
        }
        let keep = Retention {
            ms: None,
            max_runs: Some(2),
        };
        assert_eq!(h.prune(keep).await.unwrap(), 2);
        let left: Vec<_> = h
            .all(&Filter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["open", "d", "c"]);
        assert_eq!(h.prune(keep).await.unwrap(), 0, "nothing more to remove");
    }

    #[tokio::test]
    async fn runs_left_open_by_a_dead_server_are_closed_on_open() {
        for store in stores().await {
            store
                .history
                .accepted("cut", DemoId::PostgresContainer, None, None)
                .await
                .unwrap();
            let h = store.reopen().await;
            let page = h
                .list(&Filter {
                    limit: 10,
                    ..Filter::default()
                })
                .await
                .unwrap();
            assert_eq!(page.runs.len(), 1, "{}", store.backend);
            assert_eq!(page.runs[0].state, RunState::Failed);
            assert_eq!(
                page.runs[0].error.as_ref().unwrap().code,
                ErrorCode::ServerStopped
            );
            assert!(page.runs[0].finished_at_ms.is_some());
            // The soak found it: listed, yet `get` (GET /api/runs/{id}) said 404.
            let record = h
                .get("cut")
                .await
                .unwrap()
                .expect("a closed run can be opened");
            assert_eq!(record.state, RunState::Failed);
            match record.outcome() {
                Some(stacklab_api::Outcome::Failed { error }) => {
                    assert_eq!(error.code, ErrorCode::ServerStopped)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// What replicas share through the store, on both backends: a run's
    /// events while it runs, the learner limits, heartbeats, and the
    /// closing of a silent replica's runs.
    #[tokio::test]
    async fn replicas_share_events_limits_and_liveness() {
        for store in stores().await {
            let h = &store.history;
            let b = store.backend;
            h.accepted_for("r1", DemoId::MicroVm, Some("who-1"), None, None)
                .await
                .unwrap();
            assert_eq!(
                h.unfinished_of("who-1", DemoId::MicroVm).await.unwrap(),
                1,
                "{b}"
            );
            assert_eq!(
                h.unfinished_of("who-1", DemoId::HelloContainer)
                    .await
                    .unwrap(),
                0
            );
            let events: Vec<RunEvent> = (0..3)
                .map(|seq| RunEvent {
                    seq,
                    at_us: u64::from(seq) * 10,
                    kind: stacklab_api::EventKind::Log {
                        line: format!("line {seq}"),
                    },
                })
                .collect();
            h.append_events("r1", &events[..2]).await.unwrap();
            // Appending again (a relay that retries) adds nothing twice.
            h.append_events("r1", &events).await.unwrap();
            assert_eq!(h.events("r1", 0).await.unwrap(), events, "{b}");
            assert_eq!(h.events("r1", 2).await.unwrap(), events[2..], "{b}");
            let live = h
                .get("r1")
                .await
                .unwrap()
                .expect("a run in progress is readable");
            assert_eq!(live.state, RunState::Queued);
            assert_eq!(live.events, events);

            h.heartbeat(r#"{"docker":"up"}"#, 1, Some("http://127.0.0.1:1"))
                .await
                .unwrap();
            let hosts = h.hosts().await.unwrap();
            assert_eq!(hosts[0].name, h.host(), "{b}");
            assert_eq!(hosts[0].can_json, r#"{"docker":"up"}"#);
            assert_eq!(hosts[0].url.as_deref(), Some("http://127.0.0.1:1"));
            // A replica that stopped heart-beating long ago, mid-run.
            h.run(|db| {
                db.execute(
                    "INSERT INTO hosts (name, can_json, started_at_ms, heartbeat_at_ms)
                     VALUES ('gone', '{}', 0, 0)",
                    params![],
                )?;
                db.execute(
                    "INSERT INTO runs (id, demo, state, accepted_at_ms, host)
                     VALUES ('r2', 'micro-vm', 'running', 0, 'gone')",
                    params![],
                )
            })
            .await
            .unwrap();
            assert_eq!(h.close_lost(10_000).await.unwrap(), ["r2"], "{b}");
            assert_eq!(h.close_lost(10_000).await.unwrap(), Vec::<String>::new());
            let lost = h.get("r2").await.unwrap().unwrap();
            match lost.outcome() {
                Some(stacklab_api::Outcome::Failed { error }) => {
                    assert_eq!(error.code, ErrorCode::HostLost, "{b}");
                    assert!(error.message.contains("(gone)"), "{}", error.message);
                }
                other => panic!("{b}: {other:?}"),
            }
            assert_eq!(
                h.get("r1").await.unwrap().unwrap().state,
                RunState::Queued,
                "its own run stays"
            );
        }
    }

    #[tokio::test]
    async fn sqlite_keeps_a_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::sqlite::Sqlite::open(dir.path()).unwrap();
        assert_eq!(db.journal_mode().unwrap(), "wal");
    }

    /// With PostgreSQL, replicas share the store: a replica restarting
    /// closes only the runs it left open, never another's.
    #[tokio::test]
    async fn a_restarting_replica_closes_only_its_own_open_runs() {
        let Ok(url) = crate::store::testing::fresh_schema() else {
            assert!(std::env::var_os("CI").is_none(), "PostgreSQL is needed");
            return;
        };
        let a = History::connect(&url, "replica-a").await.unwrap();
        let b = History::connect(&url, "replica-b").await.unwrap();
        a.accepted("a-run", DemoId::MicroVm, None, None)
            .await
            .unwrap();
        b.accepted("b-run", DemoId::MicroVm, None, None)
            .await
            .unwrap();
        let _a_again = History::connect(&url, "replica-a").await.unwrap();
        let runs = b.all(&Filter::default()).await.unwrap();
        let state = |id: &str| runs.iter().find(|r| r.id == id).unwrap().state;
        assert_eq!(state("a-run"), RunState::Failed);
        assert_eq!(state("b-run"), RunState::Queued);
    }
}
