//! The store test suite's backends: every store test runs once per
//! backend, SQLite in a temporary directory and PostgreSQL in a schema of
//! its own on the test server (`./dev` starts Debian's PostgreSQL 15 on
//! loopback; `STACKLAB_TEST_DATABASE_URL` names another). Under CI a
//! PostgreSQL that does not answer is a failure, not a skip.

use super::{History, Limits};

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
    /// Where it is: the SQLite data dir, or the PostgreSQL URL.
    at: String,
    _dir: tempfile::TempDir,
}

impl TestStore {
    /// The same database opened again, as a restarted server would.
    pub async fn reopen(&self) -> History {
        self.reopen_with(Limits::default()).await
    }

    /// As [`TestStore::reopen`], with these bounds.
    pub async fn reopen_with(&self, limits: Limits) -> History {
        match self.backend {
            "sqlite" => History::open_with(std::path::Path::new(&self.at), limits)
                .await
                .unwrap(),
            _ => History::connect_with(&self.at, "test-host", limits)
                .await
                .unwrap(),
        }
    }
}

impl Drop for TestStore {
    /// A PostgreSQL store's schema goes with it (the SQLite one goes with
    /// its temporary directory).
    fn drop(&mut self) {
        if self.backend == "postgres" {
            if let Err(e) = super::postgres::drop_schema(&self.at) {
                eprintln!("the test schema stays on the test server: {e}");
            }
        }
    }
}

/// One store per backend, each empty.
pub async fn stores() -> Vec<TestStore> {
    stores_with(Limits::default()).await
}

/// As [`stores`], with these bounds.
pub async fn stores_with(limits: Limits) -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut stores = vec![TestStore {
        backend: "sqlite",
        history: History::open_with(&path, limits).await.unwrap(),
        at: path.display().to_string(),
        _dir: dir,
    }];
    match fresh_schema() {
        Ok(url) => {
            stores.push(TestStore {
                backend: "postgres",
                history: History::connect_with(&url, "test-host", limits)
                    .await
                    .unwrap(),
                at: url,
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
