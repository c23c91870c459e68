//! The `mdbook-stacklab` preprocessor's work: in a chapter's Markdown,
//! every fenced block whose info string starts with `stacklab`
//!
//! ````text
//! ```stacklab demo=postgres-container theme=dark
//! Shown until the lab answers, and if it does not.
//! ```
//! ````
//!
//! becomes a `<stacklab-demo>` element (its body, escaped, is the
//! element's fallback), and a chapter with one loads the lab's `embed.js`
//! once. Fences inside other fences (a chapter showing the syntax) are
//! left alone. The book itself is handled as JSON without mdBook's crate,
//! so this works with mdBook 0.4 and 0.5 alike.

use serde_json::Value;
use stacklab_api::DemoId;

/// Why a book could not be preprocessed.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// `[preprocessor.stacklab] lab` is missing or not an origin.
    Lab(String),
    /// A block names no demo, or one stacklab does not have.
    Block {
        /// The chapter's source path.
        chapter: String,
        /// What is wrong.
        message: String,
    },
    /// The input is not the `[context, book]` pair mdBook sends.
    Input(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Lab(m) | Error::Input(m) => f.write_str(m),
            Error::Block { chapter, message } => write!(f, "{chapter}: {message}"),
        }
    }
}

/// Preprocesses mdBook's `[context, book]` input; returns the book.
pub fn run(input: &str) -> Result<String, Error> {
    let parsed: Value =
        serde_json::from_str(input).map_err(|e| Error::Input(format!("not JSON: {e}")))?;
    let Value::Array(mut pair) = parsed else {
        return Err(Error::Input("expected [context, book]".into()));
    };
    if pair.len() != 2 {
        return Err(Error::Input("expected [context, book]".into()));
    }
    let mut book = pair.pop().unwrap_or(Value::Null);
    let context = &pair[0];
    let lab = context
        .pointer("/config/preprocessor/stacklab/lab")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::Lab(
                "set the lab in book.toml: [preprocessor.stacklab] lab = \"https://lab.example.org\""
                    .into(),
            )
        })?;
    let lab = origin(lab)?;
    visit_chapters(&mut book, &lab)?;
    serde_json::to_string(&book).map_err(|e| Error::Input(e.to_string()))
}

/// `lab` without a trailing slash, if it is an http(s) origin.
fn origin(lab: &str) -> Result<String, Error> {
    let lab = lab.trim_end_matches('/');
    let ok = ["http://", "https://"].iter().any(|s| {
        lab.strip_prefix(s)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    });
    if ok {
        Ok(lab.to_owned())
    } else {
        Err(Error::Lab(format!(
            "[preprocessor.stacklab] lab must be an origin like https://lab.example.org, not {lab:?}"
        )))
    }
}

/// Every `{"Chapter": {…, "content": …}}` in the book, however deep.
fn visit_chapters(value: &mut Value, lab: &str) -> Result<(), Error> {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(chapter)) = map.get_mut("Chapter") {
                let name = chapter
                    .get("source_path")
                    .or_else(|| chapter.get("path"))
                    .and_then(Value::as_str)
                    .unwrap_or("a chapter")
                    .to_owned();
                if let Some(Value::String(content)) = chapter.get_mut("content") {
                    *content =
                        chapter_with_demos(content, lab).map_err(|message| Error::Block {
                            chapter: name.clone(),
                            message,
                        })?;
                }
            }
            map.values_mut().try_for_each(|v| visit_chapters(v, lab))
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| visit_chapters(v, lab)),
        _ => Ok(()),
    }
}

/// A chapter's Markdown with its `stacklab` blocks made elements.
pub fn chapter_with_demos(markdown: &str, lab: &str) -> Result<String, String> {
    let mut out = String::with_capacity(markdown.len());
    let mut lines = markdown.split_inclusive('\n');
    let mut found = false;
    while let Some(line) = lines.next() {
        let Some((fence, info)) = opening_fence(line) else {
            out.push_str(line);
            continue;
        };
        // The block's lines up to its closing fence.
        let mut body = Vec::new();
        let mut closing = None;
        for inner in lines.by_ref() {
            if is_closing(inner, &fence) {
                closing = Some(inner);
                break;
            }
            body.push(inner);
        }
        if let Some(args) = info
            .strip_prefix("stacklab")
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            out.push_str(&element(args, &body)?);
            out.push('\n');
            found = true;
        } else {
            // Some other block: kept exactly as it was.
            out.push_str(line);
            body.iter().for_each(|l| out.push_str(l));
            if let Some(c) = closing {
                out.push_str(c);
            }
        }
    }
    if found {
        out.push_str(&format!(
            "\n<script type=\"module\" src=\"{lab}/embed.js\"></script>\n"
        ));
    }
    Ok(out)
}

/// A fence line: its fence (```` ``` ```` or `~~~`, at least three) and
/// its info string.
fn opening_fence(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.chars().take_while(|x| *x == c).count();
    (n >= 3).then(|| (c.to_string().repeat(n), trimmed[n..].trim()))
}

fn is_closing(line: &str, fence: &str) -> bool {
    let trimmed = line.trim();
    let c = fence.chars().next().unwrap_or('`');
    trimmed.len() >= fence.len() && trimmed.chars().all(|x| x == c)
}

/// `demo=… theme=…` and the fallback text, as the element.
fn element(args: &str, body: &[&str]) -> Result<String, String> {
    let mut demo = None;
    let mut theme = None;
    for arg in args.split_whitespace() {
        match arg.split_once('=') {
            Some(("demo", v)) => demo = Some(v.trim_matches('"')),
            Some(("theme", v)) => theme = Some(v.trim_matches('"')),
            _ => {
                return Err(format!(
                    "unknown stacklab block argument {arg:?} (use demo=… and theme=light|dark)"
                ))
            }
        }
    }
    let demo: DemoId = demo
        .ok_or("a stacklab block needs demo=<id>")?
        .parse()
        .map_err(|e: stacklab_api::UnknownDemo| e.to_string())?;
    let theme = match theme {
        None => String::new(),
        Some(t @ ("light" | "dark")) => format!(" theme=\"{t}\""),
        Some(t) => return Err(format!("theme is light or dark, not {t:?}")),
    };
    let fallback: String = body
        .join("")
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>\n", escape(p)))
        .collect();
    // Its own HTML block for Markdown: the opening tag alone on its line,
    // no blank line inside, blank lines around (else the element lands in
    // a paragraph, and a <p> inside would end that paragraph and the
    // element with it).
    Ok(format!(
        "\n<stacklab-demo demo=\"{}\"{theme}>\n{fallback}</stacklab-demo>\n",
        demo.as_str()
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "http://127.0.0.1:8080";

    #[test]
    fn a_block_becomes_the_element_with_its_fallback_and_the_script_once() {
        let md = "# Try it\n\n```stacklab demo=postgres-container theme=dark\nThe lab is <off> now.\n```\n\ntext\n\n```stacklab demo=micro-vm\n```\n";
        let out = chapter_with_demos(md, LAB).unwrap();
        assert!(out.contains("\n\n<stacklab-demo demo=\"postgres-container\" theme=\"dark\">\n<p>The lab is &lt;off&gt; now.</p>\n</stacklab-demo>\n\n"), "{out}");
        assert!(
            out.contains("<stacklab-demo demo=\"micro-vm\">\n</stacklab-demo>"),
            "{out}"
        );
        assert_eq!(out.matches("embed.js").count(), 1, "{out}");
        assert!(out.ends_with(
            "<script type=\"module\" src=\"http://127.0.0.1:8080/embed.js\"></script>\n"
        ));
    }

    #[test]
    fn other_blocks_and_blocks_inside_blocks_are_left_alone() {
        let md =
            "````markdown\n```stacklab demo=micro-vm\n```\n````\n\n```rust\nfn main() {}\n```\n";
        assert_eq!(chapter_with_demos(md, LAB).unwrap(), md);
    }

    #[test]
    fn a_bad_block_or_lab_is_an_error_that_says_what_to_write() {
        assert!(chapter_with_demos("```stacklab\n```\n", LAB)
            .unwrap_err()
            .contains("demo=<id>"));
        assert!(chapter_with_demos("```stacklab demo=nope\n```\n", LAB)
            .unwrap_err()
            .contains("micro-vm"));
        let no_lab = r#"[{"config":{}},{"items":[]}]"#;
        assert!(matches!(run(no_lab), Err(Error::Lab(_))));
    }

    #[test]
    fn chapters_anywhere_in_the_book_are_processed() {
        let input = r#"[{"config":{"preprocessor":{"stacklab":{"lab":"http://127.0.0.1:8080/"}}}},
            {"items":[{"Chapter":{"name":"a","content":"```stacklab demo=micro-vm\n```\n","source_path":"a.md",
              "sub_items":[{"Chapter":{"name":"b","content":"plain","source_path":"b.md","sub_items":[]}}]}},"Separator"]}]"#;
        let book: Value = serde_json::from_str(&run(input).unwrap()).unwrap();
        let a = book
            .pointer("/items/0/Chapter/content")
            .unwrap()
            .as_str()
            .unwrap();
        assert!(a.contains("<stacklab-demo demo=\"micro-vm\">"));
        assert_eq!(
            book.pointer("/items/0/Chapter/sub_items/0/Chapter/content")
                .unwrap(),
            "plain"
        );
    }
}
