//! Build-time rendering: Markdown + front matter → [`Lesson`] → Rust source.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::Deserialize;

use crate::{Block, DemoId, Lesson, Prediction, Question, Section, StackFocus, Term};

/// Words a learner reads per minute, for the reading-time estimate.
const WORDS_PER_MINUTE: usize = 200;

/// Everything that can be wrong with a lesson file. Each variant names the
/// file, so a broken lesson fails the build with a message that says where.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The lessons folder or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with a `---` front-matter block.
    #[error(
        "{path}: missing front matter (the file must start with a line `---`, YAML, then `---`)"
    )]
    MissingFrontMatter { path: PathBuf },
    /// The front matter is not valid YAML or lacks a field.
    #[error("{path}: bad front matter: {source}")]
    FrontMatter {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// A fenced directive block could not be understood.
    #[error("{path}: {message}")]
    Directive { path: PathBuf, message: String },
    /// Two lessons share a slug or an order.
    #[error("lessons {first} and {second} both use {what}")]
    Duplicate {
        first: String,
        second: String,
        what: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermSource {
    id: String,
    term: String,
    definition: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictionSource {
    predict: String,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionSource {
    q: String,
    choices: Vec<String>,
    answer: u32,
    why: String,
}

/// Reads the glossary (a YAML list of `id`, `term`, `definition` in
/// Markdown), sorted by term.
pub fn load_glossary(path: &Path) -> Result<Vec<Term>, ContentError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContentError::Io {
        path: path.into(),
        source,
    })?;
    let entries: Vec<TermSource> =
        serde_yaml::from_str(&text).map_err(|source| ContentError::FrontMatter {
            path: path.into(),
            source,
        })?;
    let mut terms: Vec<Term> = entries
        .into_iter()
        .map(|e| Term {
            id: e.id.into(),
            term: e.term.into(),
            html: block_html(&e.definition).into(),
        })
        .collect();
    terms.sort_by_key(|t| t.term.to_lowercase());
    for pair in terms.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(ContentError::Duplicate {
                first: pair[0].term.to_string(),
                second: pair[1].term.to_string(),
                what: format!("the glossary id {:?}", pair[0].id),
            });
        }
    }
    Ok(terms)
}

/// Markdown → HTML (paragraphs and all).
fn block_html(markdown: &str) -> String {
    let mut html = String::new();
    pulldown_cmark::html::push_html(
        &mut html,
        Parser::new_ext(markdown, Options::ENABLE_SMART_PUNCTUATION),
    );
    html
}

/// One line of Markdown → inline HTML (no surrounding `<p>`).
pub fn inline_html(markdown: &str) -> String {
    let html = block_html(markdown);
    let trimmed = html.trim();
    trimmed
        .strip_prefix("<p>")
        .and_then(|h| h.strip_suffix("</p>"))
        .unwrap_or(trimmed)
        .to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    title: String,
    summary: String,
    #[serde(default)]
    tags: Vec<String>,
    order: u32,
}

/// Reads every `*.md` file in `dir` and returns the lessons sorted by order.
/// Glossary links must name a term of `glossary`.
pub fn load_dir(dir: &Path, glossary: &[Term]) -> Result<Vec<Lesson>, ContentError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContentError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let mut lessons = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        lessons.push(parse_lesson(
            &path,
            &slug_from_file_stem(&stem),
            &text,
            glossary,
        )?);
    }
    lessons.sort_by_key(|l| l.order);
    for pair in lessons.windows(2) {
        if pair[0].order == pair[1].order {
            return Err(ContentError::Duplicate {
                first: pair[0].slug.to_string(),
                second: pair[1].slug.to_string(),
                what: format!("order {}", pair[0].order),
            });
        }
    }
    for (i, a) in lessons.iter().enumerate() {
        if let Some(b) = lessons[i + 1..].iter().find(|b| b.slug == a.slug) {
            return Err(ContentError::Duplicate {
                first: a.slug.to_string(),
                second: b.slug.to_string(),
                what: "the same slug".into(),
            });
        }
    }
    Ok(lessons)
}

/// `03-containers` → `containers`.
fn slug_from_file_stem(stem: &str) -> String {
    stem.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches('-')
        .to_owned()
}

/// Parses one lesson file. `path` is only used in error messages.
pub fn parse_lesson(
    path: &Path,
    slug: &str,
    text: &str,
    glossary: &[Term],
) -> Result<Lesson, ContentError> {
    let (front, body) = split_front_matter(text)
        .ok_or_else(|| ContentError::MissingFrontMatter { path: path.into() })?;
    let meta: FrontMatter =
        serde_yaml::from_str(front).map_err(|source| ContentError::FrontMatter {
            path: path.into(),
            source,
        })?;
    let rendered = render_body(body, glossary).map_err(|message| ContentError::Directive {
        path: path.into(),
        message,
    })?;
    let words = body.split_whitespace().count();
    // Number the questions through the lesson: the keys of its progress.
    let mut number = 0;
    let blocks: Vec<Block> = rendered
        .blocks
        .into_iter()
        .map(|block| match block {
            Block::Quiz(questions) => Block::Quiz(
                questions
                    .iter()
                    .cloned()
                    .map(|mut q| {
                        number += 1;
                        q.number = number;
                        q
                    })
                    .collect(),
            ),
            other => other,
        })
        .collect();
    Ok(Lesson {
        slug: slug.to_owned().into(),
        title: meta.title.into(),
        summary: inline_html(&meta.summary).into(),
        tags: meta.tags.into_iter().map(Cow::Owned).collect(),
        order: meta.order,
        reading_minutes: words.div_ceil(WORDS_PER_MINUTE).max(1) as u32,
        sections: rendered.sections.into(),
        blocks: blocks.into(),
    })
}

fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let end = rest.find("\n---")?;
    let front = &rest[..end];
    let after = &rest[end + 4..];
    let body = after.split_once('\n').map_or("", |(_, b)| b);
    Some((front, body))
}

struct Rendered {
    sections: Vec<Section>,
    blocks: Vec<Block>,
}

/// Which directive a fence opens, or `None` for an ordinary code block.
fn is_directive(info: &str) -> bool {
    matches!(
        info.split_whitespace().next(),
        Some("stack-diagram" | "demo" | "x-ray" | "compare" | "quiz")
    )
}

/// Parses a directive from its fence info string and its body.
fn parse_directive(info: &str, body: &str) -> Result<Block, String> {
    let mut words = info.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let arg = words.next();
    let extra = words.next();
    let no_body = |block: Block| {
        if body.trim().is_empty() {
            Ok(block)
        } else {
            Err(format!("```{info} takes no body, found {:?}", body.trim()))
        }
    };
    match (kind, arg, extra) {
        ("stack-diagram", None | Some("both"), None) => {
            no_body(Block::StackDiagram(StackFocus::Both))
        }
        ("stack-diagram", Some("vm"), None) => no_body(Block::StackDiagram(StackFocus::Vm)),
        ("stack-diagram", Some("container"), None) => {
            no_body(Block::StackDiagram(StackFocus::Container))
        }
        ("stack-diagram", _, _) => Err(format!(
            "```{info}: a stack diagram takes at most one of: both, vm, container"
        )),
        ("demo", Some(id), None) => {
            let demo = id.parse::<DemoId>().map_err(|e| e.to_string())?;
            if body.trim().is_empty() {
                return Ok(Block::Demo(demo, None));
            }
            let p: PredictionSource = serde_yaml::from_str(body)
                .map_err(|e| format!("```{info}: the body must be `predict:` and `why:` ({e})"))?;
            Ok(Block::Demo(
                demo,
                Some(Prediction {
                    question: inline_html(&p.predict).into(),
                    why: inline_html(&p.why).into(),
                }),
            ))
        }
        ("demo", _, _) => Err(format!("```{info}: write ```demo <demo-id>")),
        ("x-ray", Some(id), None) => {
            let demo = id.parse::<DemoId>().map_err(|e| e.to_string())?;
            if demo.density_of().is_some() {
                return Err(format!(
                    "```{info}: only a single-instance demo has an x-ray"
                ));
            }
            let p: PredictionSource = serde_yaml::from_str(body)
                .map_err(|e| format!("```{info}: the body must be `predict:` and `why:` ({e})"))?;
            Ok(Block::XRay(
                demo,
                Prediction {
                    question: inline_html(&p.predict).into(),
                    why: inline_html(&p.why).into(),
                },
            ))
        }
        ("x-ray", _, _) => Err(format!("```{info}: write ```x-ray <demo-id>")),
        ("compare", None, None) => no_body(Block::Compare),
        ("compare", _, _) => Err(format!("```{info}: compare takes no arguments")),
        ("quiz", None, None) => {
            let questions: Vec<QuestionSource> = serde_yaml::from_str(body)
                .map_err(|e| format!("```quiz: a YAML list of q, choices, answer, why ({e})"))?;
            if questions.is_empty() {
                return Err("```quiz: no questions".into());
            }
            let mut out = Vec::new();
            for q in questions {
                if q.choices.len() < 2 || q.answer as usize >= q.choices.len() {
                    return Err(format!(
                        "```quiz: {:?} needs two or more choices and an answer index among them",
                        q.q
                    ));
                }
                out.push(Question {
                    number: 0, // numbered per lesson by parse_lesson
                    prompt: inline_html(&q.q).into(),
                    choices: q
                        .choices
                        .iter()
                        .map(|c| Cow::Owned(inline_html(c)))
                        .collect(),
                    answer: q.answer,
                    why: inline_html(&q.why).into(),
                });
            }
            Ok(Block::Quiz(out.into()))
        }
        ("quiz", _, _) => Err(format!("```{info}: quiz takes no arguments")),
        _ => Err(format!("```{info}: not a directive")),
    }
}

/// Lower-case, ASCII letters and digits joined by `-`: `When to use which?` → `when-to-use-which`.
pub fn anchor_id(text: &str) -> String {
    let mut id = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !id.is_empty() {
            id.push('-');
        }
        id.push_str(&word.to_ascii_lowercase());
    }
    id
}

fn render_body(body: &str, glossary: &[Term]) -> Result<Rendered, String> {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_SMART_PUNCTUATION);

    let mut sections = Vec::new();
    let mut blocks = Vec::new();
    // Events of the HTML fragment being collected.
    let mut pending: Vec<Event> = Vec::new();
    // Inside a directive fence: its info string and the body so far.
    let mut directive: Option<(String, String)> = None;
    // Inside a `[text](glossary:id)` link (rendered as a term button).
    let mut in_term = false;
    // Inside a heading: its events are buffered to compute its anchor id.
    let mut heading: Option<(HeadingLevel, Vec<Event>)> = None;

    let flush = |pending: &mut Vec<Event>, blocks: &mut Vec<Block>| {
        if pending.is_empty() {
            return;
        }
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, pending.drain(..));
        if !html.trim().is_empty() {
            blocks.push(Block::Html(html.into()));
        }
    };

    for event in Parser::new_ext(body, options) {
        if let Some((info, text)) = directive.as_mut() {
            match event {
                Event::End(TagEnd::CodeBlock) => {
                    let block = parse_directive(info, text)?;
                    flush(&mut pending, &mut blocks);
                    blocks.push(block);
                    directive = None;
                }
                Event::Text(t) => text.push_str(&t),
                _ => {}
            }
            continue;
        }
        let event = match event {
            Event::Start(Tag::Link { ref dest_url, .. }) if dest_url.starts_with("glossary:") => {
                let id = &dest_url["glossary:".len()..];
                if !glossary.iter().any(|t| t.id == id) {
                    return Err(format!(
                        "a glossary link names {id:?}, which content/glossary.yaml does not define"
                    ));
                }
                in_term = true;
                Event::Html(format!("<button type=\"button\" class=\"term\" data-term=\"{id}\" aria-haspopup=\"dialog\">").into())
            }
            Event::End(TagEnd::Link) if in_term => {
                in_term = false;
                Event::Html("</button>".into())
            }
            other => other,
        };
        if let Some((level, events)) = heading.as_mut() {
            if let Event::End(TagEnd::Heading(_)) = event {
                let level = *level;
                let events = std::mem::take(events);
                heading = None;
                let text: String = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
                        _ => None,
                    })
                    .collect();
                let id = anchor_id(&text);
                if level == HeadingLevel::H2 {
                    sections.push(Section {
                        title: text.clone().into(),
                        id: id.clone().into(),
                    });
                }
                let mut inner = String::new();
                pulldown_cmark::html::push_html(&mut inner, events.into_iter());
                pending.push(Event::Html(
                    format!("<{level} id=\"{id}\">{inner}</{level}>\n").into(),
                ));
            } else {
                events.push(event);
            }
            continue;
        }
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, Vec::new())),
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(ref info))) if is_directive(info) => {
                directive = Some((info.to_string(), String::new()));
            }
            other => pending.push(other),
        }
    }
    flush(&mut pending, &mut blocks);
    Ok(Rendered { sections, blocks })
}

/// Emits Rust source defining `pub static LESSONS: &[Lesson]` and
/// `pub static GLOSSARY: &[Term]`, for the frontend's build script to
/// `include!`. The including module must have `Lesson`, `Section`, `Block`,
/// `StackFocus`, `DemoId`, `Prediction`, `Question`, `Term` and `Cow` in scope.
pub fn to_rust_source(lessons: &[Lesson], glossary: &[Term]) -> String {
    let s = |text: &str| format!("Cow::Borrowed({text:?})");
    let list = |items: Vec<String>| format!("Cow::Borrowed(&[{}])", items.join(", "));
    let mut out = String::from("pub static LESSONS: &[Lesson] = &[\n");
    for l in lessons {
        let tags: Vec<String> = l.tags.iter().map(|t| s(t)).collect();
        let sections: Vec<String> = l
            .sections
            .iter()
            .map(|x| format!("Section {{ title: {}, id: {} }}", s(&x.title), s(&x.id)))
            .collect();
        let blocks: Vec<String> = l
            .blocks
            .iter()
            .map(|b| match b {
                Block::Html(h) => format!("Block::Html({})", s(h)),
                Block::StackDiagram(f) => format!("Block::StackDiagram(StackFocus::{f:?})"),
                Block::Demo(d, None) => format!("Block::Demo(DemoId::{d:?}, None)"),
                Block::Demo(d, Some(p)) => format!(
                    "Block::Demo(DemoId::{d:?}, Some(Prediction {{ question: {}, why: {} }}))",
                    s(&p.question),
                    s(&p.why)
                ),
                Block::XRay(d, p) => format!(
                    "Block::XRay(DemoId::{d:?}, Prediction {{ question: {}, why: {} }})",
                    s(&p.question),
                    s(&p.why)
                ),
                Block::Compare => "Block::Compare".to_owned(),
                Block::Quiz(questions) => format!(
                    "Block::Quiz({})",
                    list(
                        questions
                            .iter()
                            .map(|q| format!(
                                "Question {{ number: {}, prompt: {}, choices: {}, answer: {}, why: {} }}",
                                q.number,
                                s(&q.prompt),
                                list(q.choices.iter().map(|c| s(c)).collect()),
                                q.answer,
                                s(&q.why)
                            ))
                            .collect()
                    )
                ),
            })
            .collect();
        let _ = writeln!(
            out,
            "    Lesson {{ slug: {}, title: {}, summary: {}, tags: {}, order: {}, reading_minutes: {}, sections: {}, blocks: {} }},",
            s(&l.slug),
            s(&l.title),
            s(&l.summary),
            list(tags),
            l.order,
            l.reading_minutes,
            list(sections),
            list(blocks),
        );
    }
    out.push_str("];\n\npub static GLOSSARY: &[Term] = &[\n");
    for t in glossary {
        let _ = writeln!(
            out,
            "    Term {{ id: {}, term: {}, html: {} }},",
            s(&t.id),
            s(&t.term),
            s(&t.html)
        );
    }
    out.push_str("];\n");
    out
}

/// For the build scripts that embed the content (`frontend`, `server`):
/// tells cargo to rebuild when a lesson or the glossary changes, and reads
/// both from `content_dir`. A content error ends the build with a warning
/// that names the file, not a panic's backtrace.
pub fn load_for_build(content_dir: &Path) -> (Vec<Lesson>, Vec<Term>) {
    let lessons_dir = content_dir.join("lessons");
    let glossary_file = content_dir.join("glossary.yaml");
    println!("cargo:rerun-if-changed={}", lessons_dir.display());
    println!("cargo:rerun-if-changed={}", glossary_file.display());
    for entry in std::fs::read_dir(&lessons_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let loaded = load_glossary(&glossary_file)
        .and_then(|glossary| load_dir(&lessons_dir, &glossary).map(|l| (l, glossary)));
    loaded.unwrap_or_else(|e| {
        println!("cargo:warning=content error: {e}");
        std::process::exit(1)
    })
}

/// Writes generated Rust to `OUT_DIR/file` for a build script, or ends the
/// build with a warning saying why it could not.
pub fn write_for_build(file: &str, source: &str) {
    let out = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from);
    let written = match out {
        Some(dir) => std::fs::write(dir.join(file), source).map_err(|e| e.to_string()),
        None => Err("OUT_DIR is not set (not run by cargo?)".to_owned()),
    };
    if let Err(e) = written {
        println!("cargo:warning=cannot write {file}: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LESSON: &str = "---\ntitle: Test\nsummary: A test.\ntags: [a, b]\norder: 3\n---\n\n## First *part*\n\nSome words.\n\n```stack-diagram vm\n```\n\n```bash\necho hi\n```\n\n```demo micro-vm\n```\n\n## Second: `code`\n";

    fn glossary() -> Vec<Term> {
        vec![Term {
            id: "vm-exit".into(),
            term: "VM exit".into(),
            html: "<p>A trip into the hypervisor.</p>".into(),
        }]
    }

    fn parse(text: &str) -> Result<Lesson, ContentError> {
        parse_lesson(Path::new("t.md"), "t", text, &glossary())
    }

    #[test]
    fn splits_markdown_into_html_and_directive_blocks() {
        let l = parse(LESSON).unwrap();
        assert_eq!(l.title, "Test");
        assert_eq!(l.order, 3);
        assert_eq!(l.tags.len(), 2);
        let titles: Vec<&str> = l.sections.iter().map(|s| s.title.as_ref()).collect();
        assert_eq!(titles, ["First part", "Second: code"]);
        assert_eq!(l.sections[1].id, "second-code");
        assert_eq!(l.blocks.len(), 5, "{:#?}", l.blocks);
        let Block::Html(first) = &l.blocks[0] else {
            panic!()
        };
        assert!(
            first.contains("<h2 id=\"first-part\">First <em>part</em></h2>"),
            "{first}"
        );
        assert_eq!(l.blocks[1], Block::StackDiagram(StackFocus::Vm));
        let Block::Html(code) = &l.blocks[2] else {
            panic!()
        };
        assert!(
            code.contains("language-bash") && code.contains("echo hi"),
            "{code}"
        );
        assert_eq!(l.blocks[3], Block::Demo(DemoId::MicroVm, None));
        let Block::Html(last) = &l.blocks[4] else {
            panic!()
        };
        assert!(
            last.contains("<h2 id=\"second-code\">Second: <code>code</code></h2>"),
            "{last}"
        );
    }

    #[test]
    fn rejects_unknown_demos_and_bad_front_matter() {
        let bad_demo = LESSON.replace("demo micro-vm", "demo rm-rf");
        let err = parse(&bad_demo).unwrap_err().to_string();
        assert!(err.contains("t.md") && err.contains("rm-rf"), "{err}");
        let err = parse("## no front matter").unwrap_err();
        assert!(matches!(err, ContentError::MissingFrontMatter { .. }));
        let err = parse(&LESSON.replace("order: 3", "order: three")).unwrap_err();
        assert!(matches!(err, ContentError::FrontMatter { .. }), "{err}");
        let err = parse(&LESSON.replace("tags: [a, b]", "tagz: [a]")).unwrap_err();
        assert!(matches!(err, ContentError::FrontMatter { .. }), "{err}");
        let body = LESSON.replace("```stack-diagram vm\n```", "```compare\nx\n```");
        assert!(matches!(
            parse(&body).unwrap_err(),
            ContentError::Directive { .. }
        ));
        let unknown_term = LESSON.replace("Some words.", "Some [words](glossary:nope).");
        let err = parse(&unknown_term).unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
        let bad_answer = LESSON.replace(
            "```compare\n```",
            "```quiz\n- q: Which?\n  choices: [a, b]\n  answer: 2\n  why: Because.\n```",
        );
        let bad_answer = format!("{bad_answer}\n```quiz\n- q: Which?\n  choices: [a, b]\n  answer: 2\n  why: Because.\n```\n");
        assert!(parse(&bad_answer)
            .unwrap_err()
            .to_string()
            .contains("answer index"));
    }

    #[test]
    fn predictions_quizzes_and_glossary_terms() {
        let text = format!(
            "{LESSON}\nA [VM exit](glossary:vm-exit) is rare.\n\n```demo hello-container\npredict: How long, with `docker`?\nwhy: The engine does work.\n```\n\n```quiz\n- q: Is `ps` a VM?\n  choices: [yes, no]\n  answer: 1\n  why: It is a *program*.\n- q: Two?\n  choices: [a, b, c]\n  answer: 0\n  why: A.\n```\n"
        );
        let l = parse(&text).unwrap();
        let html = l.prose_html();
        assert!(
            html.contains("<button type=\"button\" class=\"term\" data-term=\"vm-exit\" aria-haspopup=\"dialog\">VM exit</button>"),
            "{html}"
        );
        let Some(Block::Demo(DemoId::HelloContainer, Some(p))) = l
            .blocks
            .iter()
            .find(|b| matches!(b, Block::Demo(DemoId::HelloContainer, _)))
        else {
            panic!("{:#?}", l.blocks)
        };
        assert_eq!(p.question, "How long, with <code>docker</code>?");
        let Some(Block::Quiz(qs)) = l.blocks.iter().find(|b| matches!(b, Block::Quiz(_))) else {
            panic!()
        };
        assert_eq!(qs.iter().map(|q| q.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(qs[0].why, "It is a <em>program</em>.");
        let src = to_rust_source(std::slice::from_ref(&l), &glossary());
        assert!(
            src.contains("Block::Quiz(Cow::Borrowed(&[Question { number: 1"),
            "{src}"
        );
        assert!(src.contains("pub static GLOSSARY: &[Term]"));
    }

    #[test]
    fn time_scales_bucket_a_duration() {
        use crate::time_scale_of;
        assert_eq!(time_scale_of(3_000), 0);
        assert_eq!(time_scale_of(1_500_000), 1);
        assert_eq!(time_scale_of(90_000_000), 2);
    }

    #[test]
    fn reading_time_rounds_up_at_200_words_per_minute() {
        let words = "word ".repeat(201);
        let l = parse(&format!(
            "---\ntitle: T\nsummary: S\norder: 1\n---\n{words}"
        ))
        .unwrap();
        assert_eq!(l.reading_minutes, 2);
    }

    #[test]
    fn slugs_drop_numeric_prefixes() {
        assert_eq!(slug_from_file_stem("03-containers"), "containers");
        assert_eq!(slug_from_file_stem("intro"), "intro");
    }

    #[test]
    fn generated_rust_borrows_every_string() {
        let src = to_rust_source(&[parse(LESSON).unwrap()], &glossary());
        assert!(src.starts_with("pub static LESSONS: &[Lesson] = &["));
        assert!(src.contains("Block::Demo(DemoId::MicroVm, None)"));
        assert!(src.contains("Block::StackDiagram(StackFocus::Vm)"));
        assert!(!src.contains("Cow::Owned"));
    }
}
