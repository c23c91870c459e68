//! What a class's members learn, in the same database as their runs: the
//! lessons they opened, the first answer to each quiz question (a later
//! answer never replaces it: the first is the one scored), the guesses
//! their browsers sent with their runs (locked as the run started), and
//! the lesson the instructor sent the room to.
//!
//! Written against [`super::sql::Sql`] like the rest of the store; imports
//! `stacklab_api` only.

use std::collections::HashMap;

use stacklab_api::{DemoId, Guess, MemberLearning, Quantity, RoomGuess, RunRecord, RunState};

use super::history::{now_ms, parse_state, History, HistoryError};
use super::sql::{params, Value};

/// A class's learning: each member's (by learner id) and every guess.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learning {
    /// Per learner id.
    pub members: HashMap<String, MemberLearning>,
    /// Every guess of the class, oldest first, with what its run measured.
    pub guesses: Vec<RoomGuess>,
}

impl Learning {
    /// `learner`'s learning (empty when they reported nothing).
    pub fn of(&self, learner: &str) -> MemberLearning {
        self.members.get(learner).cloned().unwrap_or_default()
    }

    /// `learner`'s guesses sent with `run`.
    pub fn guesses_of_run<'a>(&'a self, run: &'a str) -> impl Iterator<Item = &'a RoomGuess> {
        self.guesses.iter().filter(move |g| g.run == run)
    }
}

impl History {
    /// Records that `learner` opened `lesson` in the class; whether it is
    /// new.
    pub async fn lesson_read(
        &self,
        class: &str,
        learner: &str,
        lesson: &str,
    ) -> Result<bool, HistoryError> {
        let values = params![class, learner, lesson, now_ms()].to_vec();
        let n = self
            .run(move |db| {
                db.execute(
                    "INSERT INTO learning_reads (class, learner, lesson, at_ms)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &values,
                )
            })
            .await?;
        Ok(n == 1)
    }

    /// Records `learner`'s answer to question `question` of `lesson`, if it
    /// is their first to it: whether it was (and so counts). The lesson
    /// counts as read too.
    pub async fn quiz_answer(
        &self,
        class: &str,
        learner: &str,
        lesson: &str,
        question: u32,
        choice: u32,
        right: bool,
    ) -> Result<bool, HistoryError> {
        self.lesson_read(class, learner, lesson).await?;
        let values = params![
            class,
            learner,
            lesson,
            i64::from(question),
            i64::from(choice),
            i64::from(right),
            now_ms()
        ]
        .to_vec();
        let n = self
            .run(move |db| {
                db.execute(
                    "INSERT INTO learning_answers
                        (class, learner, lesson, question, choice, first_right, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &values,
                )
            })
            .await?;
        Ok(n == 1)
    }

    /// Records the guesses `learner` sent with `run` (of `demo`): the first
    /// guess of a quantity for a run is kept, a later one is not.
    pub async fn guesses_sent(
        &self,
        class: &str,
        learner: &str,
        run: &str,
        demo: DemoId,
        guesses: &[Guess],
    ) -> Result<(), HistoryError> {
        let rows: Vec<Vec<Value>> = guesses
            .iter()
            .map(|g| {
                params![
                    class,
                    learner,
                    run,
                    demo.as_str(),
                    g.quantity.as_str(),
                    g.value,
                    now_ms()
                ]
                .to_vec()
            })
            .collect();
        self.run(move |db| {
            for values in &rows {
                db.execute(
                    "INSERT INTO learning_guesses (class, learner, run, demo, quantity, value, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    values,
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Sends the room to `lesson` (the latest wins).
    pub async fn send_room_to(&self, class: &str, lesson: &str) -> Result<(), HistoryError> {
        let values = params![class, lesson, now_ms()].to_vec();
        self.run(move |db| {
            db.execute(
                "INSERT INTO room_lessons (class, lesson, at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (class) DO UPDATE SET lesson = excluded.lesson, at_ms = excluded.at_ms",
                &values,
            )
        })
        .await?;
        Ok(())
    }

    /// The lesson the instructor last sent the room to.
    pub async fn room_lesson(&self, class: &str) -> Result<Option<String>, HistoryError> {
        let values = params![class].to_vec();
        let row = self
            .run(move |db| {
                db.query_one("SELECT lesson FROM room_lessons WHERE class = $1", &values)
            })
            .await?;
        Ok(row.and_then(|r| r.text(0)))
    }

    /// The class's learning: every member's, and every guess beside what
    /// its run measured (its headline figures, once it succeeded).
    pub async fn learning(&self, class: &str) -> Result<Learning, HistoryError> {
        let values = params![class].to_vec();
        let (reads, answers, guesses) = self.run(move |db| {
            let reads = db.query(
                "SELECT learner, lesson FROM learning_reads WHERE class = $1 ORDER BY at_ms, lesson",
                &values,
            )?;
            let answers = db.query(
                "SELECT learner, COUNT(*), CAST(SUM(first_right) AS BIGINT) FROM learning_answers
                 WHERE class = $1 GROUP BY learner",
                &values,
            )?;
            let guesses = db.query(
                "SELECT g.learner, g.run, g.demo, g.quantity, g.value,
                        r.state, r.time_to_ready_us, r.memory_bytes,
                        CASE WHEN g.quantity = 'time' AND r.time_to_ready_us IS NOT NULL THEN NULL
                             WHEN g.quantity = 'memory' AND r.memory_bytes IS NOT NULL THEN NULL
                             ELSE r.record_json END
                 FROM learning_guesses g LEFT JOIN runs r ON r.id = g.run
                 WHERE g.class = $1 ORDER BY g.at_ms, g.run, g.quantity",
                &values,
            )?;
            Ok((reads, answers, guesses))
        })
        .await?;
        let mut learning = Learning::default();
        for r in &reads {
            let (Some(learner), Some(lesson)) = (r.text(0), r.text(1)) else {
                continue;
            };
            learning
                .members
                .entry(learner)
                .or_default()
                .lessons_read
                .push(lesson);
        }
        for r in &answers {
            let Some(learner) = r.text(0) else { continue };
            let m = learning.members.entry(learner).or_default();
            m.answered = r.int(1).unwrap_or_default() as u32;
            m.first_try_right = r.int(2).unwrap_or_default() as u32;
        }
        // A run's record is read once, however many of its guesses need it.
        let mut records: HashMap<String, Option<RunRecord>> = HashMap::new();
        for r in &guesses {
            let (Some(learner), Some(run)) = (r.text(0), r.text(1)) else {
                continue;
            };
            let (Some(demo), Some(quantity)) = (
                r.text(2).and_then(|d| d.parse::<DemoId>().ok()),
                r.text(3).and_then(|q| q.parse::<Quantity>().ok()),
            ) else {
                continue;
            };
            let value = r.real(4);
            // Absent: the run is not in the history (a left join).
            let state = r.text(5).as_deref().map(parse_state);
            let succeeded = state == Some(RunState::Succeeded);
            // Time and memory are the run's headline columns; the other
            // quantities, and why a value is absent, are read from its
            // record as the learner's card reads them (`Quantity::measured`).
            let headline = match quantity {
                Quantity::Time => r.real(6),
                Quantity::Memory => r.real(7),
                _ => None,
            };
            let measured = match headline.filter(|_| succeeded) {
                Some(v) => Ok(v),
                None => match state {
                    None => Err("the run is not in the history".to_owned()),
                    Some(RunState::Queued | RunState::Running) => {
                        Err("the run has not finished".to_owned())
                    }
                    Some(_) => records
                        .entry(run.clone())
                        .or_insert_with(|| {
                            r.text(8)
                                .and_then(|json| serde_json::from_str::<RunRecord>(&json).ok())
                        })
                        .as_ref()
                        .ok_or_else(|| "the run's record could not be read".to_owned())
                        .and_then(|record| quantity.measured(demo, &record.events)),
                },
            };
            let m = learning.members.entry(learner.clone()).or_default();
            m.guesses += 1;
            if value.is_none() {
                m.declined += 1;
            }
            learning.guesses.push(RoomGuess {
                demo,
                quantity,
                run,
                learner,
                value,
                missing: measured.as_ref().err().cloned(),
                measured: measured.ok(),
            });
        }
        Ok(learning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::tests::record;
    use stacklab_api::{EventKind, Measurement, Metric, Outcome, Unit};

    /// On both backends: the first answer is kept and a later one is not;
    /// reads count once; a guess locks with its run and sits beside what
    /// the run measured; the room's lesson is the latest sent.
    #[tokio::test]
    async fn first_answers_count_guesses_lock_and_the_room_follows() {
        for store in crate::store::testing::stores().await {
            let h = &store.history;
            let class = h.create_class("Learning room", 60_000).await.unwrap();
            let code = class.code.as_str();
            h.join(code, "learner-aaaa", Some("Ada")).await.unwrap();
            assert!(h
                .lesson_read(code, "learner-aaaa", "containers")
                .await
                .unwrap());
            assert!(!h
                .lesson_read(code, "learner-aaaa", "containers")
                .await
                .unwrap());
            assert!(h
                .quiz_answer(code, "learner-aaaa", "containers", 1, 2, false)
                .await
                .unwrap());
            assert!(
                !h.quiz_answer(code, "learner-aaaa", "containers", 1, 0, true)
                    .await
                    .unwrap(),
                "{}: a second answer does not count",
                store.backend
            );
            assert!(h
                .quiz_answer(code, "learner-aaaa", "virtual-machines", 2, 1, true)
                .await
                .unwrap());

            h.accepted("g1", DemoId::MicroVm, Some("learner-aaaa"), Some(code))
                .await
                .unwrap();
            let guess = |quantity, value| Guess { quantity, value };
            h.guesses_sent(
                code,
                "learner-aaaa",
                "g1",
                DemoId::MicroVm,
                &[
                    guess(Quantity::Time, Some(2000.0)),
                    guess(Quantity::Memory, None),
                    guess(Quantity::Exits, Some(100.0)),
                    guess(Quantity::PageFaults, Some(10.0)),
                ],
            )
            .await
            .unwrap();
            // Sent again, changed: the locked one stays.
            h.guesses_sent(
                code,
                "learner-aaaa",
                "g1",
                DemoId::MicroVm,
                &[guess(Quantity::Time, Some(9e6))],
            )
            .await
            .unwrap();
            let before = h.learning(code).await.unwrap();
            assert_eq!(before.guesses.len(), 4, "{}", store.backend);
            assert_eq!(before.guesses[0].measured, None, "not finished yet");
            assert_eq!(
                before.guesses[0].missing.as_deref(),
                Some("the run has not finished"),
                "{}",
                store.backend
            );
            // The run counted its exits; it has no x-ray.
            let mut finished = record("g1", DemoId::MicroVm, true);
            if let EventKind::Finished {
                outcome: Outcome::Ready { measurements, .. },
            } = &mut finished.events[0].kind
            {
                measurements.push(Measurement {
                    key: Metric::Exits.into(),
                    label: "e".into(),
                    value: 42.0,
                    unit: Unit::Count,
                    how: "h".into(),
                });
            }
            h.finished(&finished).await.unwrap();

            let learning = h.learning(code).await.unwrap();
            let ada = learning.of("learner-aaaa");
            assert_eq!(
                ada.lessons_read,
                ["containers", "virtual-machines"],
                "{}",
                store.backend
            );
            assert_eq!((ada.answered, ada.first_try_right), (2, 1));
            assert_eq!((ada.guesses, ada.declined), (4, 1));
            let time = learning
                .guesses_of_run("g1")
                .find(|g| g.quantity == Quantity::Time)
                .unwrap();
            assert_eq!(time.value, Some(2000.0), "{}", store.backend);
            let summary = h.class_runs(code).await.unwrap().remove(0).summary;
            assert!(summary.time_to_ready_us.is_some());
            assert_eq!(time.measured, summary.time_to_ready_us);
            let memory = learning
                .guesses_of_run("g1")
                .find(|g| g.quantity == Quantity::Memory)
                .unwrap();
            assert_eq!(memory.value, None);
            assert_eq!(memory.measured, summary.memory_bytes);
            let of = |q| {
                learning
                    .guesses_of_run("g1")
                    .find(|g| g.quantity == q)
                    .unwrap()
            };
            assert_eq!(
                of(Quantity::Exits).measured,
                Some(42.0),
                "{}",
                store.backend
            );
            assert_eq!(of(Quantity::Exits).missing, None);
            assert_eq!(
                of(Quantity::PageFaults).measured,
                None,
                "no x-ray, no true value (never 0)"
            );
            assert_eq!(
                of(Quantity::PageFaults).missing.as_deref(),
                Some("this run has no x-ray"),
                "the reason travels with the missing value ({})",
                store.backend
            );
            assert_eq!(learning.of("learner-zzzz"), MemberLearning::default());

            assert_eq!(h.room_lesson(code).await.unwrap(), None);
            h.send_room_to(code, "containers").await.unwrap();
            h.send_room_to(code, "postgres-both-ways").await.unwrap();
            let again = store.reopen().await;
            assert_eq!(
                again.room_lesson(code).await.unwrap().as_deref(),
                Some("postgres-both-ways")
            );
        }
    }
}
