//! The learner's progress, kept in this browser only (`localStorage`):
//! lessons opened, quiz answers, demos run and time-scale guesses.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;

use crate::lessons::{Block, DemoId, Lesson};

/// Where the browser keeps the progress.
const PROGRESS_KEY: &str = "stacklab.progress.v1";

/// Kept as lines of `kind key[=value]` (`read <slug>`, `answer <slug#n>=<choice>`,
/// `demo <id>`, `guess <id>=<scale>`): a format small enough to need no
/// serialisation library in the bundle.
#[derive(Debug, Clone, Default, PartialEq)]
struct Data {
    /// Slugs of the lessons opened.
    read: BTreeSet<String>,
    /// The choice made for each question, by `<slug>#<number>`.
    answers: BTreeMap<String, u32>,
    /// Demos that reached a result.
    demos: BTreeSet<String>,
    /// The time-scale index guessed for a demo, by demo id.
    guesses: BTreeMap<String, usize>,
}

impl Data {
    fn parse(text: &str) -> Data {
        let mut d = Data::default();
        for line in text.lines() {
            let Some((kind, rest)) = line.split_once(' ') else {
                continue;
            };
            let pair = rest.split_once('=');
            match (kind, pair) {
                ("read", None) => {
                    d.read.insert(rest.to_owned());
                }
                ("demo", None) => {
                    d.demos.insert(rest.to_owned());
                }
                ("answer", Some((k, v))) => {
                    if let Ok(v) = v.parse() {
                        d.answers.insert(k.to_owned(), v);
                    }
                }
                ("guess", Some((k, v))) => {
                    if let Ok(v) = v.parse() {
                        d.guesses.insert(k.to_owned(), v);
                    }
                }
                _ => {}
            }
        }
        d
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        for slug in &self.read {
            out.push_str(&format!("read {slug}\n"));
        }
        for demo in &self.demos {
            out.push_str(&format!("demo {demo}\n"));
        }
        for (k, v) in &self.answers {
            out.push_str(&format!("answer {k}={v}\n"));
        }
        for (k, v) in &self.guesses {
            out.push_str(&format!("guess {k}={v}\n"));
        }
        out
    }
}

/// The progress store, provided at the root.
#[derive(Debug, Clone, Copy)]
pub struct Progress(RwSignal<Data>);

/// One lesson's progress, for the lesson list.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonProgress {
    pub read: bool,
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

    pub fn mark_read(&self, slug: &str) {
        if !self.0.with_untracked(|d| d.read.contains(slug)) {
            self.0.update(|d| {
                d.read.insert(slug.to_owned());
            });
        }
    }

    pub fn answer(&self, key: String, choice: u32) {
        self.0.update(|d| {
            d.answers.insert(key, choice);
        });
    }

    /// The choice recorded for a question (tracked).
    pub fn answered(&self, key: &str) -> Option<u32> {
        self.0.with(|d| d.answers.get(key).copied())
    }

    pub fn demo_run(&self, demo: DemoId) {
        if !self.0.with_untracked(|d| d.demos.contains(demo.as_str())) {
            self.0.update(|d| {
                d.demos.insert(demo.as_str().to_owned());
            });
        }
    }

    pub fn guess(&self, demo: DemoId, scale: usize) {
        self.0.update(|d| {
            d.guesses.insert(demo.as_str().to_owned(), scale);
        });
    }

    /// The guess recorded for a demo (tracked).
    pub fn guessed(&self, demo: DemoId) -> Option<usize> {
        self.0.with(|d| d.guesses.get(demo.as_str()).copied())
    }

    /// How far the learner is with `lesson` (tracked).
    pub fn of(&self, lesson: &Lesson) -> LessonProgress {
        self.0.with(|d| {
            let mut p = LessonProgress {
                read: d.read.contains(lesson.slug.as_ref()),
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
                            if d.answers.get(&key) == Some(&q.answer) {
                                p.right += 1;
                            }
                        }
                    }
                    Block::Demo(demo, _) => {
                        p.demos += 1;
                        if d.demos.contains(demo.as_str()) {
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
    /// A short line for the lesson list, e.g. "read · 2/3 right · 1/2 demos".
    pub fn summary(&self) -> String {
        if !self.read {
            return String::new();
        }
        let mut parts = vec!["read".to_owned()];
        if self.questions > 0 {
            parts.push(format!("{}/{} right", self.right, self.questions));
        }
        if self.demos > 0 {
            parts.push(format!("{}/{} demos", self.demos_run, self.demos));
        }
        parts.join(" · ")
    }
}
