//! The lessons, rendered from `content/lessons/*.md` by `build.rs`.

use std::borrow::Cow;

pub use stacklab_content::{
    Block, DemoId, Lesson, Prediction, Question, Section, StackFocus, Term,
};

include!(concat!(env!("OUT_DIR"), "/lessons.rs"));

/// The lesson with this slug.
pub fn find(slug: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|l| l.slug == slug)
}

/// The glossary entry with this id.
pub fn term(id: &str) -> Option<&'static Term> {
    GLOSSARY.iter().find(|t| t.id == id)
}

/// The `href` of a lesson page.
pub fn href(lesson: &Lesson) -> String {
    format!("/lessons/{}", lesson.slug)
}
