//! stacklab's lessons.
//!
//! The Markdown sources live in `content/lessons/*.md`, each with YAML front
//! matter (`title`, `summary`, `tags`, `order`). At build time the frontend's
//! build script calls [`render::load_dir`] and [`render::to_rust_source`]
//! (feature `render`), so the browser receives ready-made HTML fragments and
//! typed directive blocks instead of a Markdown parser.
//!
//! The types below are shared by both sides: the renderer fills them with
//! owned strings, the generated code with `'static` borrowed ones, which is why
//! every text field is a [`Cow`].

#![forbid(unsafe_code)]

use std::borrow::Cow;

pub use stacklab_api::DemoId;

#[cfg(feature = "render")]
pub mod render;

/// One lesson page.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    /// URL segment: `/lessons/<slug>`. Taken from the file name without its
    /// numeric prefix (`03-containers.md` → `containers`).
    pub slug: Cow<'static, str>,
    /// Page title.
    pub title: Cow<'static, str>,
    /// One or two sentences shown on the home page.
    pub summary: Cow<'static, str>,
    /// Free-form topic tags.
    pub tags: Cow<'static, [Cow<'static, str>]>,
    /// Position in the course (lessons are sorted by it).
    pub order: u32,
    /// Estimated reading time at 200 words per minute, rounded up.
    pub reading_minutes: u32,
    /// The page's `##` headings, in order.
    pub sections: Cow<'static, [Section]>,
    /// The body: HTML fragments interleaved with interactive blocks.
    pub blocks: Cow<'static, [Block]>,
}

/// A `##` heading of a lesson and its anchor id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading's text.
    pub title: Cow<'static, str>,
    /// The `id` attribute of the rendered `<h2>`.
    pub id: Cow<'static, str>,
}

/// A piece of a lesson's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Rendered Markdown (trusted: it comes from this repository at build time).
    Html(Cow<'static, str>),
    /// ```` ```stack-diagram [both|vm|container] ````: the interactive stacks.
    StackDiagram(StackFocus),
    /// ```` ```demo <demo-id> ````: a live demo run by the server.
    Demo(DemoId),
    /// ```` ```compare ````: container and VM measured side by side.
    Compare,
}

/// Which stacks a diagram shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackFocus {
    /// The VM stack beside the container stack.
    Both,
    /// Only Hardware → Host OS → Hypervisor → Guest OS → App.
    Vm,
    /// Only Hardware → Host OS → Docker Engine → Container.
    Container,
}

impl Lesson {
    /// The lesson before and after this one in `lessons` (sorted by order).
    pub fn neighbours<'a>(
        &self,
        lessons: &'a [Lesson],
    ) -> (Option<&'a Lesson>, Option<&'a Lesson>) {
        let Some(i) = lessons.iter().position(|l| l.slug == self.slug) else {
            return (None, None);
        };
        (
            i.checked_sub(1).and_then(|p| lessons.get(p)),
            lessons.get(i + 1),
        )
    }
}
