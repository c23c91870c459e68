//! stacklab's lessons.
//!
//! The Markdown sources live in `content/lessons/*.md`, each with YAML front
//! matter (`title`, `summary`, `tags`, `order`). At build time the frontend's
//! build script calls [`render::load_for_build`] and [`render::to_rust_source`]
//! (feature `render`), so the browser receives ready-made HTML fragments and
//! typed directive blocks instead of a Markdown parser; the server's build
//! script renders the static pages ([`page::site`]) the same way.
//!
//! The types below are shared by both sides: the renderer fills them with
//! owned strings, the generated code with `'static` borrowed ones, which is why
//! every text field is a [`Cow`].

#![forbid(unsafe_code)]

use std::borrow::Cow;

pub use stacklab_api::DemoId;

pub mod page;

/// The home page's lead, for the pre-rendered page and the app alike (a
/// test holds it to the lessons: four of seven have a live demo).
pub const HOME_LEAD: &str = "A short course on how a Docker container differs from a virtual machine. Its live demos start real containers (PostgreSQL among them) and a tiny KVM virtual machine on this server, and show you what each one cost in time and memory.";
#[cfg(feature = "render")]
pub mod render;
pub mod stack;

/// One lesson page.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    /// URL segment: `/lessons/<slug>`. Taken from the file name without its
    /// numeric prefix (`03-containers.md` → `containers`).
    pub slug: Cow<'static, str>,
    /// Page title.
    pub title: Cow<'static, str>,
    /// One or two sentences shown on the home page, as inline HTML (so
    /// `code` in the front matter renders as code).
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
    /// ```` ```demo <demo-id> ````: a live demo run by the server; its
    /// optional YAML body (`predict:`, `why:`) asks the learner to guess
    /// the time scale before running it.
    Demo(DemoId, Option<Prediction>),
    /// ```` ```x-ray <demo-id> ````: the demo's live card, its run asking
    /// for the x-ray with the kernel's own events (what the workload sees
    /// beside what the host sees), after a guess (`predict:`, `why:`).
    XRay(DemoId, Prediction),
    /// ```` ```compare ````: container and VM measured side by side.
    Compare,
    /// ```` ```quiz ````: "check yourself" questions (a YAML list of
    /// `q`, `choices`, `answer`, `why`).
    Quiz(Cow<'static, [Question]>),
}

/// The guess a demo card asks for before its first run: how long until
/// ready, on a scale of milliseconds, seconds or minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The question, inline HTML.
    pub question: Cow<'static, str>,
    /// Why the answer is what it is, shown beside the measured result
    /// (inline HTML).
    pub why: Cow<'static, str>,
}

/// The time scales a [`Prediction`] offers, with their upper bounds in
/// microseconds (the last one has none).
pub const TIME_SCALES: [(&str, Option<u64>); 3] = [
    ("milliseconds (under a second)", Some(1_000_000)),
    ("seconds", Some(60_000_000)),
    ("minutes", None),
];

/// The [`TIME_SCALES`] index a measured duration falls in.
pub fn time_scale_of(micros: u64) -> usize {
    TIME_SCALES
        .iter()
        .position(|(_, below)| below.is_none_or(|b| micros < b))
        .unwrap_or(TIME_SCALES.len() - 1)
}

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// 1-based number within its lesson (the key of the learner's progress).
    pub number: u32,
    /// The question, inline HTML.
    pub prompt: Cow<'static, str>,
    /// The answers offered, inline HTML.
    pub choices: Cow<'static, [Cow<'static, str>]>,
    /// Index of the right one in `choices`.
    pub answer: u32,
    /// The explanation shown once answered, inline HTML.
    pub why: Cow<'static, str>,
}

/// A glossary entry (`content/glossary.yaml`). Lessons link a term's first
/// use as `[text](glossary:<id>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Anchor on the glossary page and the key lessons link with.
    pub id: Cow<'static, str>,
    /// The term as a heading.
    pub term: Cow<'static, str>,
    /// Its definition, HTML.
    pub html: Cow<'static, str>,
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
    /// The lesson's rendered prose: its HTML blocks joined, without the
    /// interactive ones.
    pub fn prose_html(&self) -> String {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Html(h) => Some(h.as_ref()),
                _ => None,
            })
            .collect()
    }

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
