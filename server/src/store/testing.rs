//! The store test suite's backends: every store test runs once per
//! backend, SQLite in a temporary directory and PostgreSQL in a schema of
//! its own on the test server (`./dev` starts Debian's PostgreSQL 15 on
//! loopback; `STACKLAB_TEST_DATABASE_URL` names another). Under CI a
//! PostgreSQL that does not answer is a failure, not a skip.

use super::History;

/// Where the test PostgreSQL listens unless told otherwise (see `./dev`).
pub const DEFAULT_URL: &str = "postgres://stacklab@127.0.0.1:54329/stacklab";

/// The test server's URL.
pub fn database_url() -> String {
    std::env::var("STACKLAB_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// A store under test, and how to open it again (a restart).
pub struct TestStore {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The store.
    pub history: History,
    reopen: Box<dyn Fn() -> History>,
    _dir: tempfile::TempDir,
}

impl TestStore {
    /// The same database opened again, as a restarted server would.
    pub fn reopen(&self) -> History {
        (self.reopen)()
    }
}

/// One store per backend, each empty.
pub fn stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut stores = vec![TestStore {
        backend: "sqlite",
        history: History::open(&path).unwrap(),
        reopen: Box::new(move || History::open(&path).unwrap()),
        _dir: dir,
    }];
    match fresh_schema() {
        Ok(url) => {
            let reopen_url = url.clone();
            stores.push(TestStore {
                backend: "postgres",
                history: History::connect(&url, "test-host").unwrap(),
                reopen: Box::new(move || History::connect(&reopen_url, "test-host").unwrap()),
                _dir: tempfile::tempdir().unwrap(),
            });
        }
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the store tests need PostgreSQL at {}: {why}",
                database_url()
            );
            eprintln!(
                "skipped the PostgreSQL backend: {why} (./dev test starts it at {DEFAULT_URL})"
            );
        }
    }
    stores
}

/// A new, empty schema on the test server; the URL that uses it.
pub fn fresh_schema() -> Result<String, String> {
    super::postgres::new_schema(&database_url()).map_err(|e| e.to_string())
}
