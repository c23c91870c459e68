//! The SQLite backend: one file in the data dir (`history.sqlite3`, WAL
//! journal), one replica. Its migrations are numbered by `PRAGMA
//! user_version`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::pool::DEFAULT_STATEMENT;
use super::sql::{DbError, Row, Sql, Value};

/// The database file's name inside the data dir.
pub const FILE_NAME: &str = "history.sqlite3";

/// The schema, one step per version. Step 1 is the schema before
/// versions were kept, written so that it also completes a database made
/// by any earlier build (`IF NOT EXISTS`, and the columns added since
/// then, see [`STEP_1_COLUMNS`]).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS runs (
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
    );",
    // 2: which replica ran each run (one, with SQLite; kept alike on both
    // backends).
    "ALTER TABLE runs ADD COLUMN host TEXT;",
    // 3: what replicas share (events of runs in progress, who is alive)
    // and whom a run counts for (the learner limits across replicas).
    "ALTER TABLE runs ADD COLUMN owner TEXT;
    CREATE INDEX runs_by_owner ON runs (owner, demo, state);
    CREATE TABLE run_events (
        run_id          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        event_json      TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE hosts (
        name            TEXT PRIMARY KEY,
        can_json        TEXT NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        heartbeat_at_ms INTEGER NOT NULL
    );",
    // 4: where the other replicas reach a replica (hand-offs).
    "ALTER TABLE hosts ADD COLUMN url TEXT;",
    // 5: a class's size (classes made before it take the default), and
    // the members its instructor removed (kept, so they cannot join again).
    "ALTER TABLE classes ADD COLUMN max_members INTEGER NOT NULL DEFAULT 100;
    ALTER TABLE members ADD COLUMN removed_at_ms INTEGER;",
    // 6: how long a run waited in line (its own figure since the queue
    // was split from the platform's share; older runs have none). Older
    // runs' headline time and platform share began at the request, the
    // wait included: they are cleared from the summary (missing, not mixed
    // with figures that begin where the work does); each run's full record
    // keeps what it measured, under its own labels.
    "ALTER TABLE runs ADD COLUMN queue_wait_us REAL;
    UPDATE runs SET time_to_ready_us = NULL, platform_us = NULL WHERE finished_at_ms IS NOT NULL;",
    // 7: what a class's members learn (see `learning`): lessons opened,
    // the first answer to each quiz question, guesses sent with runs, and
    // the lesson the instructor sent the room to.
    "CREATE TABLE learning_reads (
        class           TEXT NOT NULL,
        learner         TEXT NOT NULL,
        lesson          TEXT NOT NULL,
        at_ms           INTEGER NOT NULL,
        PRIMARY KEY (class, learner, lesson)
    );
    CREATE TABLE learning_answers (
        class           TEXT NOT NULL,
        learner         TEXT NOT NULL,
        lesson          TEXT NOT NULL,
        question        INTEGER NOT NULL,
        choice          INTEGER NOT NULL,
        first_right     INTEGER NOT NULL,
        at_ms           INTEGER NOT NULL,
        PRIMARY KEY (class, learner, lesson, question)
    );
    CREATE TABLE learning_guesses (
        class           TEXT NOT NULL,
        learner         TEXT NOT NULL,
        run             TEXT NOT NULL,
        demo            TEXT NOT NULL,
        quantity        TEXT NOT NULL,
        value           REAL,
        at_ms           INTEGER NOT NULL,
        PRIMARY KEY (class, run, quantity)
    );
    CREATE TABLE room_lessons (
        class           TEXT PRIMARY KEY,
        lesson          TEXT NOT NULL,
        at_ms           INTEGER NOT NULL
    );",
];

/// Columns an early build added one by one; step 1 adds those missing.
const STEP_1_COLUMNS: &[(&str, &str)] = &[
    ("platform_us", "REAL"),
    ("class", "TEXT"),
    ("others_at_start", "INTEGER"),
];

/// A SQLite connection. Each statement is bounded by `statement`: lock
/// waits by the busy timeout, the work itself by a progress handler that
/// interrupts it past its deadline.
pub struct Sqlite {
    conn: Connection,
    path: String,
    statement: Duration,
    /// When the statement in progress must end, as nanoseconds since
    /// `epoch`; 0: none in progress.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

/// SQLite virtual-machine steps between two looks at the clock.
const PROGRESS_STEPS: i32 = 1000;

impl Sqlite {
    /// Opens (creating if needed) `<data_dir>/history.sqlite3` and brings
    /// its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Sqlite, DbError> {
        Self::open_bounded(data_dir, DEFAULT_STATEMENT)?.migrated()
    }

    /// Opens `<data_dir>/history.sqlite3` (its schema already made) with
    /// every statement bounded by `statement`.
    pub(super) fn open_bounded(data_dir: &Path, statement: Duration) -> Result<Sqlite, DbError> {
        let path = data_dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let conn = Connection::open(&path).map_err(|e| DbError::new(format!("{shown}: {e}")))?;
        // WAL: readers never block the writer and a commit is one append.
        // NORMAL: no fsync per commit; safe against a crash of this process.
        // cache_size: each of the pool's connections keeps its own page
        // cache; 1 MiB each (half SQLite's default, made for a lone
        // connection), the kernel caching the file for all of them.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-1024;",
        )
        .map_err(|e| DbError::new(format!("{shown}: {e}")))?;
        Self::bounded(conn, shown, statement)
    }

    /// A database in memory only (tests), its statements bounded by
    /// `statement`.
    pub fn in_memory_bounded(statement: Duration) -> Sqlite {
        let conn = Connection::open_in_memory().expect("SQLite can always open :memory:");
        Self::bounded(conn, ":memory:".into(), statement)
            .and_then(Sqlite::migrated)
            .expect("the schema applies to an empty database")
    }

    fn bounded(mut conn: Connection, path: String, statement: Duration) -> Result<Sqlite, DbError> {
        conn.busy_timeout(statement)
            .map_err(|e| DbError::new(e.to_string()))?;
        let deadline = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let watched = deadline.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || {
                let at = watched.load(Ordering::Relaxed);
                at != 0 && epoch.elapsed().as_nanos() as u64 > at
            }),
        )
        .map_err(|e| DbError::new(e.to_string()))?;
        Ok(Sqlite {
            conn,
            path,
            statement,
            deadline,
            epoch,
        })
    }

    /// Runs `f` with the statement deadline armed; a statement that
    /// overran it (interrupted, or a lock not granted in time) is a
    /// timeout.
    fn bounded_call<T>(
        &mut self,
        f: impl FnOnce(&Sqlite) -> Result<T, rusqlite::Error>,
    ) -> Result<T, DbError> {
        let at = self.epoch.elapsed() + self.statement;
        self.deadline
            .store((at.as_nanos() as u64).max(1), Ordering::Relaxed);
        let out = f(self);
        self.deadline.store(0, Ordering::Relaxed);
        out.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::OperationInterrupted) => DbError::timed_out(format!(
                "{}: a statement ran past its {:?} bound and was interrupted",
                self.path, self.statement
            )),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DbError::timed_out(format!(
                    "{}: the database stayed locked for {:?}: {e}",
                    self.path, self.statement
                ))
            }
            _ => DbError::new(format!("{}: {e}", self.path)),
        })
    }

    fn migrated(self) -> Result<Sqlite, DbError> {
        let err = |e: rusqlite::Error| DbError::new(format!("{}: migrating: {e}", self.path));
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.unchecked_transaction().map_err(err)?;
            tx.execute_batch(step).map_err(err)?;
            if i == 0 {
                for (name, kind) in STEP_1_COLUMNS {
                    let present: bool = tx
                        .query_row(
                            "SELECT COUNT(*) > 0 FROM pragma_table_info('runs') WHERE name = ?1",
                            [name],
                            |r| r.get(0),
                        )
                        .map_err(err)?;
                    if !present {
                        tx.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {name} {kind}"))
                            .map_err(err)?;
                    }
                }
                tx.execute_batch("CREATE INDEX IF NOT EXISTS runs_by_class ON runs (class, seq);")
                    .map_err(err)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(self)
    }

    /// The journal mode in use (`wal`).
    #[cfg(test)]
    pub fn journal_mode(&self) -> Result<String, DbError> {
        self.conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| DbError::new(e.to_string()))
    }

    fn prepare<'a>(
        &'a self,
        sql: &str,
        params: &[Value],
    ) -> Result<rusqlite::CachedStatement<'a>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        for (i, value) in params.iter().enumerate() {
            // `$n` by name: SQLite numbers parameters in order of first
            // appearance, the store's SQL by their number. Most statements
            // use them in order (a look-up by name is a scan of them all:
            // quadratic for a multi-row insert).
            let name = format!("${}", i + 1);
            let index = if stmt.parameter_name(i + 1) == Some(name.as_str()) {
                i + 1
            } else {
                match stmt.parameter_index(&name)? {
                    Some(index) => index,
                    None => continue,
                }
            };
            match value {
                Value::Null => stmt.raw_bind_parameter(index, rusqlite::types::Null),
                Value::Int(v) => stmt.raw_bind_parameter(index, v),
                Value::Real(v) => stmt.raw_bind_parameter(index, v),
                Value::Text(v) => stmt.raw_bind_parameter(index, v),
            }?;
        }
        Ok(stmt)
    }
}

impl Sql for Sqlite {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.bounded_call(|db| {
            let mut stmt = db.prepare(sql, params)?;
            stmt.raw_execute().map(|n| n as u64)
        })
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        self.bounded_call(|db| {
            let mut stmt = db.prepare(sql, params)?;
            let columns = stmt.column_count();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Real(v) => Value::Real(v),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Value::Text(String::from_utf8_lossy(t).into_owned())
                        }
                    });
                }
                out.push(Row(values));
            }
            Ok(out)
        })
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path)
    }
}

/// Holds the data dir for this server: SQLite keeps the history of one
/// replica, so a second `stacklab serve` on the same data dir is refused
/// (an advisory lock on `<data dir>/serve.lock`, released by the kernel
/// when the process ends, however it ends). Keep the file open while
/// serving.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, DbError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DbError::new(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor this function owns (the file stays
    // open in the returned value); no memory is passed.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(DbError::new(format!(
            "another `stacklab serve` already uses the data dir {} (its SQLite history serves one replica); stop it, give this one another --data-dir, or run replicas on a shared PostgreSQL with --database-url postgres://…",
            data_dir.display()
        )));
    }
    Ok(file)
}
