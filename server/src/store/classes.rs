//! Classes of workshop mode, in the same database as the run history: a
//! class, who joined it, and its runs (the `class` column of `runs`).

use stacklab_api::{Class, DemoId, Member, RoomPoint, RunSummary};

use super::history::{now_ms, History, HistoryError};
use super::sql::{params, Row, Value};
use super::Filter;

/// Why a learner could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No class has this code.
    #[error("no class has the code {0}")]
    NotFound(String),
    /// The class's time is over.
    #[error("the class {name:?} ended at {ended}; ask your instructor for a new code")]
    Expired {
        /// The class's name.
        name: String,
        /// When (RFC 3339, UTC).
        ended: String,
    },
    /// The class has as many members as it takes.
    #[error("the class {name:?} is full: it takes {max} learners, and {max} have joined; ask your instructor")]
    Full {
        /// The class's name.
        name: String,
        /// Its `max_members`.
        max: u32,
    },
    /// The instructor removed this learner from the class.
    #[error("the instructor removed you from the class {name:?}")]
    Removed {
        /// The class's name.
        name: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] HistoryError),
}

/// Columns a [`Class`] is read from, in [`class_from`]'s order.
const CLASS_COLUMNS: &str = "c.code, c.name, c.created_at_ms, c.expires_at_ms, c.max_members";

/// One run of a class, with whose it was, for the instructor.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRun {
    /// The run as the history lists it.
    pub summary: RunSummary,
    /// Its learner.
    pub learner: String,
    /// Their display name, if given.
    pub display_name: Option<String>,
    /// Other runs in progress on the host when it left the queue.
    pub others_at_start: Option<u32>,
}

impl ClassRun {
    /// The run as a point of the room's chart; `learner` is kept only for
    /// the instructor.
    pub fn point(&self, with_learner: bool, mine: bool) -> RoomPoint {
        RoomPoint {
            demo: self.summary.demo,
            run: self.summary.id.clone(),
            learner: with_learner.then(|| self.learner.clone()),
            state: self.summary.state,
            time_to_ready_us: self.summary.time_to_ready_us,
            queue_wait_us: self.summary.queue_wait_us,
            memory_bytes: self.summary.memory_bytes,
            others_at_start: self.others_at_start,
            mine,
        }
    }
}

fn class_of(code: String, name: String, created: i64, expires: i64, max_members: u32) -> Class {
    Class {
        join_path: format!("/join/{code}"),
        code,
        name,
        created_at_ms: created,
        expires_at_ms: expires,
        max_members,
    }
}

/// A class from a row of [`CLASS_COLUMNS`].
fn class_from(r: &Row) -> Class {
    class_of(
        r.text(0).unwrap_or_default(),
        r.text(1).unwrap_or_default(),
        r.int(2).unwrap_or_default(),
        r.int(3).unwrap_or_default(),
        r.int(4)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(stacklab_api::DEFAULT_MAX_MEMBERS),
    )
}

impl History {
    /// Creates a class open for `lifetime_ms`, under a new random code,
    /// taking [`stacklab_api::DEFAULT_MAX_MEMBERS`] learners.
    pub async fn create_class(&self, name: &str, lifetime_ms: i64) -> Result<Class, HistoryError> {
        self.create_class_of(name, lifetime_ms, stacklab_api::DEFAULT_MAX_MEMBERS)
            .await
    }

    /// Creates a class open for `lifetime_ms` that takes `max_members`
    /// learners, under a new random code.
    pub async fn create_class_of(
        &self,
        name: &str,
        lifetime_ms: i64,
        max_members: u32,
    ) -> Result<Class, HistoryError> {
        let now = now_ms();
        loop {
            let code = new_code();
            let values =
                params![&code, name, now, now + lifetime_ms, i64::from(max_members)].to_vec();
            let inserted = self
                .run(move |db| {
                    db.execute(
                        "INSERT INTO classes (code, name, created_at_ms, expires_at_ms, max_members)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (code) DO NOTHING",
                        &values,
                    )
                })
                .await?;
            if inserted == 1 {
                return Ok(class_of(
                    code,
                    name.to_owned(),
                    now,
                    now + lifetime_ms,
                    max_members,
                ));
            }
        }
    }

    /// The class with this code (upper case).
    pub async fn class(&self, code: &str) -> Result<Option<Class>, HistoryError> {
        let values = params![code].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    &format!("SELECT {CLASS_COLUMNS} FROM classes c WHERE c.code = $1"),
                    &values,
                )
            })
            .await?;
        Ok(row.as_ref().map(class_from))
    }

    /// Adds `learner` to the class (again: their display name is updated),
    /// if it has room: a member joining again is not a new member, a
    /// removed member may not come back, and the members removed no longer
    /// count (their seats are free).
    ///
    /// The room is counted and the member added in one statement, so one
    /// server never lets more in than the class takes; two replicas
    /// sharing PostgreSQL adding the last seat's learners in the same
    /// instant could each see it free.
    pub async fn join(
        &self,
        code: &str,
        learner: &str,
        display_name: Option<&str>,
    ) -> Result<Class, JoinError> {
        let class = self
            .class(code)
            .await?
            .ok_or_else(|| JoinError::NotFound(code.to_owned()))?;
        if class.expires_at_ms <= now_ms() {
            return Err(JoinError::Expired {
                name: class.name,
                ended: super::rfc3339(class.expires_at_ms),
            });
        }
        let values: Vec<Value> = params![code, learner, display_name, now_ms()].to_vec();
        let (added, removed) = self.run(move |db| {
            let added = db.execute(
                "INSERT INTO members (class, learner, display_name, joined_at_ms)
                 SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS BIGINT)
                 WHERE EXISTS (SELECT 1 FROM members
                               WHERE class = $1 AND learner = $2 AND removed_at_ms IS NULL)
                    OR (SELECT COUNT(*) FROM members WHERE class = $1 AND removed_at_ms IS NULL)
                       < (SELECT max_members FROM classes WHERE code = $1)
                 ON CONFLICT (class, learner) DO UPDATE SET display_name = excluded.display_name
                 WHERE members.removed_at_ms IS NULL",
                &values,
            )?;
            if added == 1 {
                return Ok((true, false));
            }
            let removed = db.query_one(
                "SELECT 1 FROM members WHERE class = $1 AND learner = $2 AND removed_at_ms IS NOT NULL",
                &values[..2],
            )?;
            Ok((false, removed.is_some()))
        }).await?;
        match (added, removed) {
            (true, _) => Ok(class),
            (false, true) => Err(JoinError::Removed { name: class.name }),
            (false, false) => Err(JoinError::Full {
                name: class.name,
                max: class.max_members,
            }),
        }
    }

    /// Removes `learner` from the class: they no longer count for it, may
    /// not start runs in it nor join it again. Whether they were a member
    /// (and not removed already).
    pub async fn remove_member(&self, code: &str, learner: &str) -> Result<bool, HistoryError> {
        let values = params![code, learner, now_ms()].to_vec();
        let changed = self
            .run(move |db| {
                db.execute(
                    "UPDATE members SET removed_at_ms = $3
                     WHERE class = $1 AND learner = $2 AND removed_at_ms IS NULL",
                    &values,
                )
            })
            .await?;
        Ok(changed == 1)
    }

    /// Whether the instructor removed `learner` from the class.
    pub async fn was_removed(&self, code: &str, learner: &str) -> Result<bool, HistoryError> {
        let values = params![code, learner].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    "SELECT 1 FROM members WHERE class = $1 AND learner = $2 AND removed_at_ms IS NOT NULL",
                    &values,
                )
            })
            .await?;
        Ok(row.is_some())
    }

    /// The class, if `learner` has joined it (and was not removed) and it
    /// has not expired.
    pub async fn open_class_of(
        &self,
        code: &str,
        learner: &str,
    ) -> Result<Option<Class>, HistoryError> {
        let values = params![code, learner].to_vec();
        let row = self
            .run(move |db| {
                db.query_one(
                    &format!(
                        "SELECT {CLASS_COLUMNS} FROM classes c
                         JOIN members m ON m.class = c.code
                         WHERE c.code = $1 AND m.learner = $2 AND m.removed_at_ms IS NULL"
                    ),
                    &values,
                )
            })
            .await?;
        Ok(row
            .as_ref()
            .map(class_from)
            .filter(|c| c.expires_at_ms > now_ms()))
    }

    /// Who joined (and was not removed), in joining order, with their run counts and what they
    /// have waiting or running now.
    pub async fn members(&self, code: &str) -> Result<Vec<Member>, HistoryError> {
        let values = params![code].to_vec();
        let (members, active) = self
            .run(move |db| {
                let members = db.query(
                    "SELECT m.learner, m.display_name, m.joined_at_ms,
                    (SELECT COUNT(*) FROM runs r WHERE r.class = m.class AND r.learner = m.learner)
                 FROM members m WHERE m.class = $1 AND m.removed_at_ms IS NULL
                 ORDER BY m.joined_at_ms, m.learner",
                    &values,
                )?;
                let active = db.query(
                    "SELECT learner, demo FROM runs
                 WHERE class = $1 AND state IN ('queued', 'running') ORDER BY seq",
                    &values,
                )?;
                Ok((members, active))
            })
            .await?;
        Ok(members
            .iter()
            .map(|r| {
                let learner = r.text(0).unwrap_or_default();
                Member {
                    active: active
                        .iter()
                        .filter(|a| a.text(0).as_deref() == Some(learner.as_str()))
                        .filter_map(|a| a.text(1)?.parse::<DemoId>().ok())
                        .collect(),
                    learner,
                    display_name: r.text(1),
                    joined_at_ms: r.int(2).unwrap_or_default(),
                    runs: r.int(3).unwrap_or_default() as u32,
                    // Filled by the caller from `History::learning`.
                    learning: Default::default(),
                }
            })
            .collect())
    }

    /// Every run of the class, oldest first, finished or not.
    pub async fn class_runs(&self, code: &str) -> Result<Vec<ClassRun>, HistoryError> {
        let filter = Filter {
            class: Some(code.to_owned()),
            ..Filter::default()
        };
        let mut summaries = self.all(&filter).await?;
        summaries.reverse();
        let values = params![code].to_vec();
        let rows = self
            .run(move |db| {
                db.query(
                    "SELECT r.id, r.learner, m.display_name, r.others_at_start FROM runs r
                     LEFT JOIN members m ON m.class = r.class AND m.learner = r.learner
                     WHERE r.class = $1",
                    &values,
                )
            })
            .await?;
        let extra: std::collections::HashMap<String, (String, Option<String>, Option<u32>)> = rows
            .iter()
            .map(|r| {
                (
                    r.text(0).unwrap_or_default(),
                    (
                        r.text(1).unwrap_or_default(),
                        r.text(2),
                        r.int(3).map(|n| n as u32),
                    ),
                )
            })
            .collect();
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                let (learner, display_name, others_at_start) = extra.get(&summary.id)?.clone();
                Some(ClassRun {
                    summary,
                    learner,
                    display_name,
                    others_at_start,
                })
            })
            .collect())
    }
}

/// A random class code from [`stacklab_api::CLASS_CODE_ALPHABET`].
fn new_code() -> String {
    let alphabet = stacklab_api::CLASS_CODE_ALPHABET;
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(stacklab_api::CLASS_CODE_LEN)
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::tests::record;

    #[tokio::test]
    async fn a_class_is_joined_its_runs_are_its_own_and_it_expires() {
        for store in crate::store::testing::stores().await {
            a_class_in(&store.history).await;
        }
    }

    async fn a_class_in(h: &History) {
        let class = h.create_class("Tuesday workshop", 60_000).await.unwrap();
        assert!(stacklab_api::valid_class_code(&class.code));
        assert_eq!(class.join_path, format!("/join/{}", class.code));
        h.join(&class.code, "learner-aaaa", Some("Ada"))
            .await
            .unwrap();
        h.join(&class.code, "learner-bbbb", None).await.unwrap();
        assert!(h
            .open_class_of(&class.code, "learner-aaaa")
            .await
            .unwrap()
            .is_some());
        assert!(h
            .open_class_of(&class.code, "learner-zzzz")
            .await
            .unwrap()
            .is_none());
        h.accepted(
            "r1",
            DemoId::MicroVm,
            Some("learner-aaaa"),
            Some(&class.code),
        )
        .await
        .unwrap();
        h.started("r1", 3).await.unwrap();
        h.accepted(
            "r2",
            DemoId::PostgresContainer,
            Some("learner-bbbb"),
            Some(&class.code),
        )
        .await
        .unwrap();
        h.accepted("elsewhere", DemoId::MicroVm, Some("learner-aaaa"), None)
            .await
            .unwrap();
        let members = h.members(&class.code).await.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].display_name.as_deref(), Some("Ada"));
        assert_eq!(
            members[0].runs, 1,
            "the run outside the class is not counted"
        );
        assert_eq!(members[0].active, [DemoId::MicroVm]);
        h.finished(&record("r1", DemoId::MicroVm, true))
            .await
            .unwrap();
        let runs = h.class_runs(&class.code).await.unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.summary.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(runs[0].others_at_start, Some(3));
        assert_eq!(runs[0].display_name.as_deref(), Some("Ada"));
        assert!(h.members(&class.code).await.unwrap()[0].active.is_empty());

        let over = h.create_class("Yesterday", -1).await.unwrap();
        match h.join(&over.code, "learner-aaaa", None).await {
            Err(JoinError::Expired { name, .. }) => assert_eq!(name, "Yesterday"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.join("ZZZZZZ", "learner-aaaa", None).await,
            Err(JoinError::NotFound(_))
        ));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The cap counts members, not joins: a member joining again is not a
    /// new one; a removed member's seat is free but they cannot come back.
    /// On both backends, and after a restart (the size is stored).
    #[tokio::test]
    async fn a_class_takes_its_size_and_keeps_removed_members_out() {
        for store in crate::store::testing::stores().await {
            let h = &store.history;
            let class = h.create_class_of("Small room", 60_000, 2).await.unwrap();
            assert_eq!(class.max_members, 2);
            h.join(&class.code, "learner-aaaa", Some("Ada"))
                .await
                .unwrap();
            h.join(&class.code, "learner-bbbb", None).await.unwrap();
            match h.join(&class.code, "learner-cccc", None).await {
                Err(JoinError::Full { max: 2, name }) => assert_eq!(name, "Small room"),
                other => panic!("{}: {other:?}", store.backend),
            }
            // Again, with a new name: still two members.
            h.join(&class.code, "learner-aaaa", Some("Ada L."))
                .await
                .unwrap();
            let members = h.members(&class.code).await.unwrap();
            assert_eq!(members.len(), 2, "{}", store.backend);
            assert_eq!(members[0].display_name.as_deref(), Some("Ada L."));

            assert!(h.remove_member(&class.code, "learner-bbbb").await.unwrap());
            assert!(
                !h.remove_member(&class.code, "learner-bbbb").await.unwrap(),
                "removed once"
            );
            assert!(!h.remove_member(&class.code, "learner-zzzz").await.unwrap());
            assert!(h.was_removed(&class.code, "learner-bbbb").await.unwrap());
            assert!(!h.was_removed(&class.code, "learner-aaaa").await.unwrap());
            assert!(h
                .open_class_of(&class.code, "learner-bbbb")
                .await
                .unwrap()
                .is_none());
            assert!(matches!(
                h.join(&class.code, "learner-bbbb", None).await,
                Err(JoinError::Removed { .. })
            ));
            // The seat is free for someone else.
            h.join(&class.code, "learner-cccc", None).await.unwrap();
            let again = store.reopen().await;
            assert_eq!(
                again.class(&class.code).await.unwrap().unwrap().max_members,
                2
            );
            let learners: Vec<_> = again
                .members(&class.code)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.learner)
                .collect();
            assert_eq!(learners, ["learner-aaaa", "learner-cccc"]);
            assert!(matches!(
                again.join(&class.code, "learner-dddd", None).await,
                Err(JoinError::Full { .. })
            ));
        }
    }
}
