//! A run's end as another replica sees it: the run ends while its store
//! is busy (its one connection held by a slow statement), and a client who
//! sees the end on the run's event stream then asks a second store handle
//! on the same database, as a learner whose next request reaches another
//! replica does. Both store backends.

use std::sync::Arc;
use std::time::Duration;

use stacklab_api::{DemoId, EventKind, RunError, RunState};

use super::{Queue, Ready, Requester, RunContext, Runs, Runtime};
use crate::store::pool::tests::hold_a_connection;
use crate::store::testing::stores_with;
use crate::store::{History, Limits};

/// Longest a statement may run in this test's stores.
const STATEMENT: Duration = Duration::from_secs(1);

/// Ready at once, after putting a slow statement on the run's store.
struct EndsWhileStoreBusy {
    history: History,
    backend: &'static str,
}

impl Runtime for EndsWhileStoreBusy {
    async fn run(&self, _ctx: &RunContext) -> Result<Ready, RunError> {
        // Detached: it runs to its bound while the run ends.
        drop(hold_a_connection(&self.history, self.backend).await);
        Ok(Ready::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_stored_as_finished_before_anyone_sees_it_end() {
    let limits = Limits {
        size: 1,
        statement: STATEMENT,
        ..Limits::default()
    };
    for store in stores_with(limits).await {
        let b = store.backend;
        let elsewhere = store.reopen().await;
        let runs = Arc::new(Runs::new(store.history.clone()));
        let runtime = Arc::new(EndsWhileStoreBusy {
            history: store.history.clone(),
            backend: b,
        });
        let requester = Requester {
            who: "learner end-test".into(),
            learner: Some("end-test".into()),
            class: None,
            trace: false,
        };
        let run = runs
            .try_start(
                requester,
                DemoId::HelloContainer,
                runtime,
                Arc::new(Queue::new(1)),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let mut changed = run.subscribe();
        while !run.is_finished() {
            tokio::time::timeout(Duration::from_secs(10), changed.changed())
                .await
                .expect("the run ends")
                .unwrap();
        }
        let seen_us = run.elapsed_us();
        let stored = elsewhere.get(run.id()).await.unwrap().expect("stored");
        assert_eq!(
            stored.state,
            RunState::Succeeded,
            "{b}: seen ended here, but another replica reads it as {:?}",
            stored.state
        );
        // The premise: the end waited for the busy store, and its time is
        // the moment it was observed, not the moment it was shown.
        let end = run.record().events.pop().expect("events");
        assert!(
            matches!(end.kind, EventKind::Finished { .. }),
            "{:?}",
            end.kind
        );
        assert!(
            seen_us > end.at_us + 500_000,
            "{b}: the end ({} µs) was shown at {seen_us} µs; the store was not busy, so this test shows nothing",
            end.at_us
        );
        assert_eq!(
            stored.events.last().map(|e| e.at_us),
            Some(end.at_us),
            "{b}"
        );
        runs.shut_down().await;
    }
}
