//! The store's connections: a pool ([`deadpool`]) of connections to one
//! database, and [`Pool::run`], which runs a piece of the store's
//! (synchronous) SQL on a connection from it without ever blocking an
//! async worker. Each connection lives on a thread of its own and is
//! handed calls over a channel: its statements block that thread only,
//! and the store never takes the runtime's blocking threads (which other
//! work, such as the KVM probe, needs).
//!
//! Every bound in one place ([`Limits`]):
//! - waiting for a free connection: at most [`Limits::wait`], then a
//!   timeout error (the pool is busy), never an endless wait;
//! - each statement: at most [`Limits::statement`] (SQLite: the busy
//!   timeout and a progress handler that interrupts it; PostgreSQL:
//!   `statement_timeout` and the client's own bound, see
//!   [`super::postgres`]);
//! - one call as a whole, seen from the async side: at most
//!   [`Limits::call`]; past it the caller gets a timeout error while the
//!   connection's thread finishes its statement (which its own bound ends).
//!
//! A connection is held only while a call runs: never across an await
//! of the caller, never while an HTTP client reads.
//!
//! May import `stacklab_api` only (like the rest of the store).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, QueueMode, RecycleError, RecycleResult, Timeouts};

use super::sql::{DbError, Sql};

/// Each statement's bound unless told otherwise.
pub const DEFAULT_STATEMENT: Duration = Duration::from_secs(5);

/// The store's time and size bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at most (SQLite: readers run side by side in WAL,
    /// writers one at a time; PostgreSQL: sessions on the server).
    pub size: usize,
    /// Longest wait for a free connection.
    pub wait: Duration,
    /// Longest time one statement may run.
    pub statement: Duration,
    /// Longest time a whole export (`GET /api/runs/export`) may take,
    /// from its first page to its last, however slowly its client reads.
    pub export: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            size: 4,
            wait: Duration::from_secs(5),
            statement: DEFAULT_STATEMENT,
            export: Duration::from_secs(300),
        }
    }
}

impl Limits {
    /// The bound of one call seen from the async side: the wait for its
    /// statement's lock or work, with room for a few statements.
    pub fn call(&self) -> Duration {
        self.statement * 3 + Duration::from_secs(1)
    }
}

/// Where new connections come from.
pub(super) enum Source {
    /// `<data dir>/history.sqlite3` (its schema made beforehand).
    SqliteFile(PathBuf),
    /// A database in memory: one connection (a second would be another,
    /// empty, database), made and migrated on first use.
    SqliteMemory,
    /// A PostgreSQL server (its schema made beforehand).
    Postgres(Box<tokio_postgres::Config>, String),
}

/// A call for a connection's thread.
type Job = Box<dyn FnOnce(&mut dyn Sql) + Send>;

/// A pooled connection: the sending end of its thread's calls.
pub(super) struct Conn {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Cleared when the connection may not be used again (see
    /// [`Sql::usable`]), or its thread is gone.
    usable: Arc<AtomicBool>,
}

impl Conn {
    /// Moves `db` to a thread of its own, which runs the calls sent to it
    /// until the pool drops this connection.
    fn start(db: Box<dyn Sql>) -> Result<Conn, DbError> {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("stacklab-store".into())
            .spawn(move || {
                let mut db = db;
                for job in inbox {
                    job(db.as_mut());
                }
            })
            .map_err(|e| DbError::new(format!("cannot start a connection's thread: {e}")))?;
        Ok(Conn {
            jobs,
            usable: Arc::new(AtomicBool::new(true)),
        })
    }
}

/// Makes and checks the pool's connections.
pub(super) struct Manager {
    source: Source,
    statement: Duration,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = DbError;

    async fn create(&self) -> Result<Conn, DbError> {
        Conn::start(self.open().await?)
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<DbError> {
        if conn.usable.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(RecycleError::message(
                "the connection is closed or was cut short",
            ))
        }
    }
}

impl Manager {
    /// A new connection from the source.
    async fn open(&self) -> Result<Box<dyn Sql>, DbError> {
        let statement = self.statement;
        match &self.source {
            Source::SqliteFile(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    super::sqlite::Sqlite::open_bounded(&dir, statement)
                        .map(|db| Box::new(db) as Box<dyn Sql>)
                })
                .await
                .map_err(|e| DbError::new(format!("opening a connection failed: {e}")))?
            }
            Source::SqliteMemory => Ok(Box::new(super::sqlite::Sqlite::in_memory_bounded(
                statement,
            ))),
            Source::Postgres(config, label) => {
                super::postgres::Postgres::connect(config, label, statement)
                    .await
                    .map(|db| Box::new(db) as Box<dyn Sql>)
            }
        }
    }
}

/// A pool of connections to one database.
#[derive(Clone)]
pub struct Pool {
    pool: managed::Pool<Manager>,
    limits: Limits,
    label: String,
}

impl Pool {
    /// A pool of up to `limits.size` connections from `source` (opened
    /// by [`Pool::open_all`] when the store opens).
    pub(super) fn new(source: Source, limits: Limits, label: String) -> Result<Pool, DbError> {
        let size = match source {
            Source::SqliteMemory => 1,
            _ => limits.size.max(1),
        };
        let pool = managed::Pool::builder(Manager {
            source,
            statement: limits.statement,
        })
        .max_size(size)
        // The connection used last is used next: its page cache is warm,
        // and the others stay idle (a sequential export reads through one
        // connection's cache, not through every one's).
        .queue_mode(QueueMode::Lifo)
        .timeouts(Timeouts {
            wait: Some(limits.wait),
            create: Some(limits.wait),
            recycle: Some(limits.wait),
        })
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::new(format!("{label}: cannot build the connection pool: {e}")))?;
        Ok(Pool {
            pool,
            limits,
            label,
        })
    }

    /// Opens every connection the pool may hold (each a thread and its
    /// descriptors), so the pool does not grow later.
    pub(super) async fn open_all(&self) -> Result<(), DbError> {
        let mut held = Vec::new();
        for _ in 0..self.pool.status().max_size {
            held.push(self.pool.get().await.map_err(|e| match e {
                managed::PoolError::Backend(e) => e,
                other => DbError::new(format!("{}: {other}", self.label)),
            })?);
        }
        Ok(())
    }

    /// The bounds this pool keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections idle now, and connections there are (idle or in use).
    pub fn idle_and_open(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.available, status.size)
    }

    /// Runs `f` on a connection of the pool, on that connection's thread;
    /// the wait for a connection and the call are bounded (see the module
    /// documentation).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Timeout(_) => DbError::timed_out(format!(
                "{}: no connection came free within {:?} ({} in use)",
                self.label, self.limits.wait, self.limits.size
            )),
            managed::PoolError::Backend(e) => e,
            other => DbError::new(format!("{}: {other}", self.label)),
        })?;
        // The connection goes back to the pool when the call ends (dropped
        // on its thread), whether or not anyone still waits for the answer.
        let (answer, call) = tokio::sync::oneshot::channel();
        let (jobs, usable) = (conn.jobs.clone(), conn.usable.clone());
        let job: Job = Box::new(move |db| {
            let out = f(db);
            conn.usable.store(db.usable(), Ordering::Release);
            drop(conn);
            let _ = answer.send(out);
        });
        if let Err(unsent) = jobs.send(job) {
            usable.store(false, Ordering::Release);
            drop(unsent);
            return Err(DbError::new(format!(
                "{}: the connection's thread is gone",
                self.label
            )));
        }
        match tokio::time::timeout(self.limits.call(), call).await {
            Ok(Ok(out)) => out,
            Ok(Err(_)) => Err(DbError::new(format!(
                "{}: the call ended without an answer",
                self.label
            ))),
            Err(_) => Err(DbError::timed_out(format!(
                "{}: no answer within {:?}",
                self.label,
                self.limits.call()
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use super::Limits;
    use crate::store::sql::params;
    use crate::store::testing::stores_with;
    use crate::store::Filter;
    use crate::store::{History, HistoryError};

    /// A statement that would run for minutes on `backend`.
    pub(crate) fn slow_statement(backend: &str) -> &'static str {
        match backend {
            "sqlite" => {
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000000)
                 SELECT COUNT(*) FROM c"
            }
            _ => "SELECT pg_sleep(600)",
        }
    }

    /// A statement's task and what it came to: its answer and how long
    /// the call took.
    pub(crate) type Held = tokio::task::JoinHandle<(Result<u64, HistoryError>, Duration)>;

    /// Starts [`slow_statement`] on a connection of `h`'s pool and returns
    /// once it holds that connection (its call has begun on the
    /// connection's thread), not after a guessed delay; the task ends when
    /// the statement does, at its bound.
    pub(crate) async fn hold_a_connection(h: &History, backend: &str) -> Held {
        let sql = slow_statement(backend);
        let (began, begun) = tokio::sync::oneshot::channel();
        let h = h.clone();
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let out = h
                .run_for_tests(move |db| {
                    let _ = began.send(());
                    db.execute(sql, params![])
                })
                .await;
            (out, t.elapsed())
        });
        tokio::time::timeout(Duration::from_secs(10), begun)
            .await
            .expect("the slow statement got a connection within 10 s")
            .expect("the slow statement's call began");
        task
    }

    fn limits(size: usize, statement_ms: u64, wait_ms: u64) -> Limits {
        Limits {
            size,
            wait: Duration::from_millis(wait_ms),
            statement: Duration::from_millis(statement_ms),
            export: Duration::from_secs(5),
        }
    }

    /// A statement past its bound ends with an error that says so (the
    /// HTTP layer makes it a 503 `request_timeout`), at its bound, not minutes
    /// later; the store answers again at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_past_its_timeout_is_a_clear_error_not_a_hang() {
        for store in stores_with(limits(2, 300, 1000)).await {
            let (h, b) = (&store.history, store.backend);
            let sql = slow_statement(b);
            let t = Instant::now();
            let err = h
                .run(move |db| db.execute(sql, params![]))
                .await
                .expect_err(b);
            let took = t.elapsed();
            eprintln!("{b}: a statement bounded at 300 ms ended after {took:?}: {err}");
            assert!(err.timed_out(), "{b}: {err}");
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_secs(2),
                "{b}: {took:?}"
            );
            let page = h
                .list(&Filter {
                    limit: 1,
                    ..Filter::default()
                })
                .await;
            assert!(page.is_ok(), "{b}: the store answers again: {page:?}");
        }
    }

    /// PostgreSQL: a server that does not answer (here: the session's
    /// own timeout switched off) is cut by the client's bound, the query
    /// cancelled on the server and the connection retired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_does_not_answer_is_cut_by_the_clients_bound() {
        let stores = stores_with(limits(2, 300, 1000)).await;
        let Some(store) = stores.iter().find(|s| s.backend == "postgres") else {
            eprintln!("skipped: no PostgreSQL (see the skip note above)");
            return;
        };
        let h = &store.history;
        let marker = format!("SELECT pg_sleep(600) -- {}", uuid::Uuid::new_v4().simple());
        let sql = marker.clone();
        let t = Instant::now();
        let err = h
            .run(move |db| {
                db.execute("SET statement_timeout = 0", params![])?;
                db.execute(&sql, params![])
            })
            .await
            .expect_err("the client's bound ends it");
        let took = t.elapsed();
        eprintln!(
            "postgres: without statement_timeout, the client cut the call after {took:?}: {err}"
        );
        assert!(err.timed_out(), "{err}");
        let bound = Duration::from_millis(300) + super::super::postgres::CLIENT_GRACE;
        assert!(
            took >= bound - Duration::from_millis(50) && took < bound + Duration::from_secs(1),
            "{took:?}"
        );
        // The cancel request reaches the server: the sleep is not left
        // running there.
        let mut left = i64::MAX;
        for _ in 0..20 {
            let needle = marker.clone();
            left = h
                .run(move |db| {
                    db.query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                        params![needle],
                    )
                })
                .await
                .unwrap()
                .and_then(|r| r.int(0))
                .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "the abandoned query was cancelled on the server");
    }

    /// Every connection busy: a call waits at most the pool's wait and
    /// says the store is busy; the heartbeat, on its own connection,
    /// goes through meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_pool_says_so_in_time_and_heartbeats_still_go_through() {
        // The statements' bound (4 s) outlasts the call's and the
        // heartbeat's own bounds below, so the hogs are still running.
        for store in stores_with(limits(2, 4000, 300)).await {
            let (h, b) = (store.history.clone(), store.backend);
            let hogs = [
                hold_a_connection(&h, b).await,
                hold_a_connection(&h, b).await,
            ];
            let t = Instant::now();
            let err = h
                .list(&Filter {
                    limit: 1,
                    ..Filter::default()
                })
                .await
                .expect_err("no connection is free");
            let waited = t.elapsed();
            assert!(err.timed_out(), "{b}: {err}");
            assert!(waited < Duration::from_millis(1000), "{b}: {waited:?}");
            let t = Instant::now();
            h.heartbeat("{}", 1, None).await.unwrap();
            let beat = t.elapsed();
            eprintln!("{b}: pool busy: a call gave up after {waited:?}; a heartbeat took {beat:?}");
            // A hang guard: behind the busy pool it would have failed
            // after the pool's 300 ms wait, not been slow.
            assert!(beat < Duration::from_millis(1500), "{b}: {beat:?}");
            assert!(
                hogs.iter().all(|t| !t.is_finished()),
                "{b}: both slow statements were still running"
            );
            for hog in hogs {
                assert!(hog.await.unwrap().0.unwrap_err().timed_out());
            }
        }
    }
}
