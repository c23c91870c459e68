//! The lessons, rendered from `content/lessons/*.md` by `build.rs`.

use std::borrow::Cow;

pub use stacklab_content::{Block, DemoId, Lesson, Section, StackFocus};

include!(concat!(env!("OUT_DIR"), "/lessons.rs"));

/// The lesson with this slug.
pub fn find(slug: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|l| l.slug == slug)
}

/// The `href` of a lesson page.
pub fn href(lesson: &Lesson) -> String {
    format!("/lessons/{}", lesson.slug)
}
