//! The learner's progress, kept in this browser (`localStorage`): lessons
//! opened, the first answer to each quiz question (the one scored) and the
//! latest, demos run, and guesses (the current ones, and those locked when
//! a demo's last run started). In a class, `learn` also reports reads and
//! first answers to the room.

use leptos::prelude::*;

use stacklab_api::{Guess, Quantity};

use crate::lessons::{Block, DemoId, Lesson};

/// Where the browser keeps the progress.
const PROGRESS_KEY: &str = "stacklab.progress.v2";

/// Where guesses are asked: a demo's own card, or its x-ray block (`xray`),
/// which asks other questions of the same demo in another lesson. Each
/// keeps its own guesses, "no guess" and lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Card {
    pub demo: DemoId,
    pub xray: bool,
}

impl Card {
    /// Its key in the progress: the demo's id, plus `/x-ray` for the block.
    fn id(self) -> String {
        let mut id = self.demo.as_str().to_owned();
        if self.xray {
            id.push_str("/x-ray");
        }
        id
    }
}

/// Kept as lines of `key value`, one fact a line: `read <slug>`,
/// `answer <slug>#<n>` → the first choice, `retry <slug>#<n>` → the
/// latest, `demo <id>`, `guess <card> <quantity>` → value, `guess <card>
/// none` (declined), `lock <card>` → `quantity=value` pairs (`-`:
/// declined); `<card>` is the demo's id, plus `/x-ray` for its x-ray block. A
/// plain list: a learner has a few dozen facts, and a small format needs
/// no serialisation or map code in the bundle.
#[derive(Debug, Clone, Default, PartialEq)]
struct Data(Vec<(String, String)>);

impl Data {
    fn parse(text: &str) -> Data {
        Data(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            out.push_str(k);
            out.push('\t');
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }
}

/// The progress store, provided at the root.
#[derive(Debug, Clone, Copy)]
pub struct Progress(RwSignal<Data>);

/// One lesson's progress, for the lesson list.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonProgress {
    pub read: bool,
    /// Questions whose first answer was right.
    pub right: usize,
    pub questions: usize,
    pub demos_run: usize,
    pub demos: usize,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The key of a question's answer.
pub fn question_key(slug: &str, number: u32) -> String {
    format!("{slug}#{number}")
}

impl Progress {
    /// Loads what this browser kept and saves every change.
    pub fn provide() {
        let data = storage()
            .and_then(|s| s.get_item(PROGRESS_KEY).ok().flatten())
            .map(|text| Data::parse(&text))
            .unwrap_or_default();
        let signal = RwSignal::new(data);
        Effect::new(move |_| {
            let text = signal.with(Data::to_text);
            if let Some(s) = storage() {
                let _ = s.set_item(PROGRESS_KEY, &text);
            }
        });
        provide_context(Progress(signal));
    }

    /// The store. Call while rendering.
    pub fn get() -> Progress {
        use_context::<Progress>().expect("Progress::provide at the root")
    }

    /// Records `key` → `value` unless it is already so.
    fn set(&self, key: String, value: String) {
        if self
            .0
            .with_untracked(|d| d.get(&key) != Some(value.as_str()))
        {
            self.0.update(|d| d.set(key, value));
        }
    }

    pub fn mark_read(&self, slug: &str) {
        self.set(format!("read {slug}"), String::new());
        crate::learn::report(slug, None);
    }

    /// Records an answer: the first to a question is kept for good (it is
    /// the one scored); a later one is kept as the latest only. Whether it
    /// was the first.
    pub fn answer(&self, key: &str, choice: u32) -> bool {
        let first = self.answered(key).is_none();
        if first {
            self.set(format!("answer {key}"), choice.to_string());
        }
        self.set(format!("retry {key}"), choice.to_string());
        first
    }

    fn choice(&self, what: &str, key: &str) -> Option<u32> {
        self.0
            .with(|d| d.get(&format!("{what} {key}")).and_then(|v| v.parse().ok()))
    }

    /// The first choice recorded for a question, the one scored (tracked).
    pub fn answered(&self, key: &str) -> Option<u32> {
        self.choice("answer", key)
    }

    /// The latest choice checked for a question (tracked).
    pub fn latest(&self, key: &str) -> Option<u32> {
        self.choice("retry", key)
    }

    pub fn demo_run(&self, demo: DemoId) {
        self.set(format!("demo {}", demo.as_str()), String::new());
    }

    /// Sets the learner's current guess of `q` for `card` (no longer
    /// declined).
    pub fn set_guess(&self, card: Card, q: Quantity, value: f64) {
        let key = format!("guess {} {q}", card.id());
        self.0.update(|d| {
            d.remove(&format!("guess {} none", card.id()));
            d.set(key, crate::num::n(value));
        });
    }

    /// The learner's current guess of `q` for `card` (tracked).
    pub fn guess_of(&self, card: Card, q: Quantity) -> Option<f64> {
        if self.declined(card) {
            return None;
        }
        self.0.with(|d| {
            d.get(&format!("guess {} {q}", card.id()))
                .map(js_sys::Number::parse_float)
                .filter(|v| v.is_finite())
        })
    }

    /// "I'd rather not guess", for `card`'s next run.
    pub fn decline(&self, card: Card) {
        self.set(format!("guess {} none", card.id()), String::new());
    }

    /// Whether the learner chose not to guess `card` (tracked).
    pub fn declined(&self, card: Card) -> bool {
        self.0
            .with(|d| d.get(&format!("guess {} none", card.id())).is_some())
    }

    /// Locks `guesses` as those of `card`'s run starting now.
    pub fn lock(&self, card: Card, guesses: &[Guess]) {
        let text: Vec<String> = guesses
            .iter()
            .map(|g| match g.value {
                Some(v) => format!("{}={}", g.quantity, crate::num::n(v)),
                None => format!("{}=-", g.quantity),
            })
            .collect();
        self.set(format!("lock {}", card.id()), text.join(" "));
    }

    /// The guesses locked when `card`'s last run started (tracked); `None`
    /// before any.
    pub fn locked(&self, card: Card) -> Option<Vec<Guess>> {
        self.0.with(|d| {
            let text = d.get(&format!("lock {}", card.id()))?;
            Some(
                text.split_whitespace()
                    .filter_map(|pair| {
                        let (q, v) = pair.split_once('=')?;
                        Some(Guess {
                            quantity: q.parse().ok()?,
                            value: Some(js_sys::Number::parse_float(v)).filter(|v| v.is_finite()),
                        })
                    })
                    .collect(),
            )
        })
    }

    /// How far the learner is with `lesson` (tracked).
    pub fn of(&self, lesson: &Lesson) -> LessonProgress {
        self.0.with(|d| {
            let mut p = LessonProgress {
                read: d.get(&format!("read {}", lesson.slug)).is_some(),
                right: 0,
                questions: 0,
                demos_run: 0,
                demos: 0,
            };
            for block in lesson.blocks.iter() {
                match block {
                    Block::Quiz(questions) => {
                        for q in questions.iter() {
                            p.questions += 1;
                            let key = question_key(&lesson.slug, q.number);
                            if d.get(&format!("answer {key}"))
                                == Some(q.answer.to_string().as_str())
                            {
                                p.right += 1;
                            }
                        }
                    }
                    Block::Demo(demo, _) => {
                        p.demos += 1;
                        if d.get(&format!("demo {}", demo.as_str())).is_some() {
                            p.demos_run += 1;
                        }
                    }
                    _ => {}
                }
            }
            p
        })
    }
}

impl LessonProgress {
    /// A short line for the lesson list, e.g. "read · 2/3 right first try ·
    /// 1/2 demos" (first answers: what is scored).
    pub fn summary(&self) -> String {
        if !self.read {
            return String::new();
        }
        let mut parts = vec!["read".to_owned()];
        if self.questions > 0 {
            parts.push(format!("{}/{} right first try", self.right, self.questions));
        }
        if self.demos > 0 {
            parts.push(format!("{}/{} demos", self.demos_run, self.demos));
        }
        parts.join(" · ")
    }
}
