//! The site as plain HTML: every page the app has a static form of (the
//! course overview, each lesson, the glossary), with the same layout and
//! classes as the app draws, so a reader sees the lesson before (or
//! without) the WebAssembly app, and the app's own render replaces it
//! without a jump.
//!
//! What has no static form says so in place: a live demo needs the app
//! (and a lab) to run, a quiz shows its answers behind a disclosure.
//! `stacklab serve` sends these pages for the app's routes and `stacklab
//! export` writes them to files; both get them from the server's build
//! script, which calls [`site`].

use std::fmt::Write;

use crate::stack::{self, Stack, COL_W, HEIGHT, ROW_H};
use crate::{Block, DemoId, Lesson, Question, StackFocus, Term};

/// What a demo card without the app says.
const NEEDS_JS: &str = "Running it needs JavaScript: with it on, this card starts the real thing on the lab's server and shows each step as it happens.";

/// One page of the static site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its address in the app (`/`, `/lessons/containers`, `/glossary`).
    pub path: String,
    /// The document title.
    pub title: String,
    /// What goes inside `<body>`.
    pub body: String,
}

/// Every page with a static form.
pub fn site(lessons: &[Lesson], glossary: &[Term]) -> Vec<Page> {
    let mut pages = vec![Page {
        path: "/".into(),
        title: "stacklab: containers and virtual machines, measured".into(),
        body: frame(lessons, "/", &home(lessons)),
    }];
    for (i, lesson) in lessons.iter().enumerate() {
        let path = format!("/lessons/{}", lesson.slug);
        pages.push(Page {
            title: format!("{} · stacklab", lesson.title),
            body: frame(lessons, &path, &lesson_article(lessons, i)),
            path,
        });
    }
    pages.push(Page {
        path: "/glossary".into(),
        title: "Glossary · stacklab".into(),
        body: frame(lessons, "/glossary", &glossary_article(glossary)),
    });
    pages
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The header and the lesson list around a page's article.
fn frame(lessons: &[Lesson], path: &str, article: &str) -> String {
    let mut nav = String::new();
    for l in lessons {
        let href = format!("/lessons/{}", l.slug);
        let current = if href == path {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            nav,
            r#"<li><a href="{href}"{current}>{}</a></li>"#,
            escape(&l.title)
        );
    }
    format!(
        r##"<a class="skip-link" href="#main">Skip to content</a><header class="site-header"><a href="/" class="brand"><span class="brand-mark" aria-hidden="true">▤</span>stacklab</a><span class="tagline">containers and virtual machines, measured</span><a href="/glossary" class="glossary-link">Glossary</a><a href="/runs" class="my-runs">My runs</a></header><div class="layout"><nav class="course-nav open" aria-label="Lessons"><ol id="lesson-list">{nav}</ol></nav><main id="main" tabindex="-1">{article}</main></div>"##
    )
}

fn home(lessons: &[Lesson]) -> String {
    let minutes: u32 = lessons.iter().map(|l| l.reading_minutes).sum();
    let mut cards = String::new();
    for l in lessons {
        let tags: String = l
            .tags
            .iter()
            .map(|t| format!(r#"<span class="tag">{}</span>"#, escape(t)))
            .collect();
        let _ = write!(
            cards,
            r#"<li class="lesson-card"><h2><a href="/lessons/{}">{}</a></h2><p>{}</p><p class="meta">{} min read{tags}</p></li>"#,
            l.slug,
            escape(&l.title),
            l.summary,
            l.reading_minutes
        );
    }
    format!(
        r#"<article class="home"><h1>Containers and virtual machines, run for real</h1><p class="lead">{}</p><p class="meta">{} lessons · about {minutes} minutes of reading</p>{}<ol class="lesson-cards">{cards}</ol></article>"#,
        crate::HOME_LEAD,
        lessons.len(),
        stack_figure(StackFocus::Both)
    )
}

fn lesson_article(lessons: &[Lesson], i: usize) -> String {
    let lesson = &lessons[i];
    let mut out = format!(
        r#"<article class="lesson"><p class="meta">Lesson {} of {} · {} min read</p><h1 elementtiming="lesson-heading">{}</h1><p class="lead">{}</p>"#,
        i + 1,
        lessons.len(),
        lesson.reading_minutes,
        escape(&lesson.title),
        lesson.summary
    );
    for block in lesson.blocks.iter() {
        match block {
            Block::Html(html) => {
                let _ = write!(out, r#"<div class="prose">{html}</div>"#);
            }
            Block::StackDiagram(focus) => out.push_str(&stack_figure(*focus)),
            Block::Demo(demo, _) | Block::XRay(demo, _) => {
                out.push_str(&demo_card(*demo, NEEDS_JS))
            }
            Block::Compare => out.push_str(
                r#"<section class="compare static"><p>The side-by-side comparison of your own runs appears here when the app has loaded.</p></section>"#,
            ),
            Block::Quiz(questions) => out.push_str(&quiz(questions)),
        }
    }
    out.push_str(r#"<nav class="pager" aria-label="Previous and next lesson">"#);
    let (prev, next) = lesson.neighbours(lessons);
    if let Some(p) = prev {
        let _ = write!(
            out,
            r#"<a class="prev" rel="prev" href="/lessons/{}"><span class="dir">← Previous</span><span>{}</span></a>"#,
            p.slug,
            escape(&p.title)
        );
    }
    if let Some(n) = next {
        let _ = write!(
            out,
            r#"<a class="next" rel="next" href="/lessons/{}"><span class="dir">Next →</span><span>{}</span></a>"#,
            n.slug,
            escape(&n.title)
        );
    }
    out.push_str("</nav></article>");
    out
}

/// A live demo's card without the app: what it does, and `note` (that
/// running it needs JavaScript, or that it is loading).
pub fn demo_card(demo: DemoId, note: &str) -> String {
    format!(
        r#"<section class="demo-card static" data-demo="{}" aria-label="Live demo: {title}"><p class="badge">Live demo</p><h3>{title}</h3><p>{}</p><p class="host-note" role="note">{}</p></section>"#,
        demo.as_str(),
        escape(demo.description()),
        escape(note),
        title = escape(demo.title()),
    )
}

fn quiz(questions: &[Question]) -> String {
    let mut out = String::from(
        r#"<section class="quiz" aria-label="Check yourself"><h2>Check yourself</h2>"#,
    );
    for q in questions {
        let choices: String = q.choices.iter().map(|c| format!("<li>{c}</li>")).collect();
        let answer = q
            .choices
            .get(q.answer as usize)
            .map(|c| c.as_ref())
            .unwrap_or("");
        let _ = write!(
            out,
            r#"<div class="question static" data-question="{}"><p>{}</p><ol type="a">{choices}</ol><details><summary>Answer</summary><p><strong>{answer}</strong></p><p>{}</p></details></div>"#,
            q.number, q.prompt, q.why
        );
    }
    out.push_str("</section>");
    out
}

fn glossary_article(glossary: &[Term]) -> String {
    let entries: String = glossary
        .iter()
        .map(|t| {
            format!(
                r#"<dt id="{}">{}</dt><dd>{}</dd>"#,
                t.id,
                escape(&t.term),
                t.html
            )
        })
        .collect();
    format!(
        r#"<article class="glossary"><h1>Glossary</h1><p class="lead">The terms the lessons use, in one place. In a lesson, a term's first use opens its entry in a card.</p><dl>{entries}</dl></article>"#
    )
}

/// The stack diagram as a static figure: the same boxes, labels and notes
/// as the interactive one, and every layer's explanation written out below
/// (the app shows one at a time, on selection).
pub fn stack_figure(focus: StackFocus) -> String {
    let mut svgs = String::new();
    let mut explained = String::new();
    for &s in stack::stacks(focus) {
        let mut g = format!(
            r#"<text class="stack-title" x="{}" y="18" text-anchor="middle">{}</text>"#,
            COL_W / 2.0,
            s.title()
        );
        if s == Stack::Container {
            g.push_str(&container_extras());
        }
        for layer in s.layers() {
            let (x, y, w) = layer.rect(0.0);
            let mid = x + w / 2.0;
            let has_note = !layer.note.is_empty();
            let _ = write!(
                g,
                r#"<g class="layer {}" data-layer="{}"><rect x="{x}" y="{y}" width="{w}" height="{ROW_H}" rx="8"/><text x="{mid}" y="{}" text-anchor="middle">{}</text>"#,
                layer.class,
                escape(layer.label),
                y + ROW_H / 2.0 + if has_note { -4.0 } else { 5.0 },
                escape(layer.label)
            );
            if has_note {
                let _ = write!(
                    g,
                    r#"<text class="note" x="{mid}" y="{}" text-anchor="middle">{}</text>"#,
                    y + ROW_H / 2.0 + 13.0,
                    escape(layer.note)
                );
            }
            g.push_str("</g>");
            let _ = write!(
                explained,
                "<li><strong>{} · {}</strong> {}</li>",
                s.title(),
                escape(layer.label),
                escape(layer.explanation)
            );
        }
        let _ = write!(
            svgs,
            r#"<svg viewBox="0 0 {COL_W} {HEIGHT}" role="img" aria-label="{}"><g class="stack">{g}</g></svg>"#,
            s.title()
        );
    }
    format!(
        r#"<figure class="stack-diagram static" aria-label="{}"><div class="stacks">{svgs}</div><figcaption class="layer-explanation"><span class="hint">Each layer, read from the bottom up:</span><ul class="layers-explained">{explained}</ul></figcaption></figure>"#,
        stack::label(focus)
    )
}

/// The container stack's gap where a VM has its guest OS, and its system
/// calls' path past the engine.
fn container_extras() -> String {
    let y = stack::row_y(3);
    let (x, w) = (
        stack::ENGINE_FROM * COL_W,
        (1.0 - stack::ENGINE_FROM) * COL_W,
    );
    let mid = x + w / 2.0;
    let cx = stack::SYSCALL_AT * COL_W;
    let (top, bottom) = (stack::row_y(3), stack::row_y(1) - 2.0);
    let label = cx - 8.0;
    let r2 = stack::row_y(2);
    format!(
        r#"<g class="missing" aria-hidden="true"><rect x="{x}" y="{y}" width="{w}" height="{ROW_H}" rx="8"/><text x="{mid}" y="{}" text-anchor="middle">no guest OS:</text><text x="{mid}" y="{}" text-anchor="middle">kernel shared</text></g><g class="syscall-path" aria-hidden="true"><line x1="{cx}" y1="{top}" x2="{cx}" y2="{}"/><path d="M {} {} L {cx} {bottom} L {} {} Z"/><text x="{label}" y="{}" text-anchor="end">system</text><text x="{label}" y="{}" text-anchor="end">calls go</text><text x="{label}" y="{}" text-anchor="end">straight to</text><text x="{label}" y="{}" text-anchor="end">the kernel</text></g>"#,
        y + ROW_H / 2.0 - 3.0,
        y + ROW_H / 2.0 + 12.0,
        bottom - 6.0,
        cx - 6.0,
        bottom - 8.0,
        cx + 6.0,
        bottom - 8.0,
        top + 22.0,
        top + 36.0,
        r2 + 22.0,
        r2 + 36.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{load_dir, load_glossary};
    use std::path::Path;

    fn the_site() -> Vec<Page> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let glossary = load_glossary(&root.join("glossary.yaml")).unwrap();
        let lessons = load_dir(&root.join("lessons"), &glossary).unwrap();
        site(&lessons, &glossary)
    }

    #[test]
    fn every_lesson_has_a_page_with_its_heading_text_and_diagram() {
        let pages = the_site();
        let containers = pages
            .iter()
            .find(|p| p.path == "/lessons/containers")
            .expect("the containers lesson has a page");
        assert!(containers.body.contains("<h1 "), "{}", containers.body);
        assert!(containers
            .body
            .contains(r#"<figure class="stack-diagram static""#));
        assert!(containers.body.contains(r#"data-layer="Docker Engine""#));
        assert!(containers.body.contains(r#"aria-current="page""#));
        assert!(pages.iter().any(|p| p.path == "/"));
        assert!(pages.iter().any(|p| p.path == "/glossary"));
    }

    #[test]
    fn text_is_escaped_in_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
