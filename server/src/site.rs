//! The app's pages as HTML documents: Trunk's app shell (`index.html`) with
//! a page's static form inside (rendered from the lessons at build time,
//! see `build.rs` and `stacklab_content::page`), and the Content Security
//! Policy that goes with them.
//!
//! The static form sits in `<div id="prerendered">`; the app removes it
//! when it mounts and draws the same page itself (see the frontend's
//! `main.rs`). `http` serves these documents and `tools::export` writes
//! them to files. Imports nothing else of the server.

use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/pages.rs"));
}

/// The id of the element holding a page's static form.
pub const PRERENDERED_ID: &str = "prerendered";

/// A page with a static form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticPage {
    /// The app path (`/lessons/containers`).
    pub path: &'static str,
    /// The document title.
    pub title: &'static str,
    /// The markup inside `<body>`.
    pub body: &'static str,
}

/// Every page with a static form: the overview, the lessons, the glossary.
pub fn pages() -> impl Iterator<Item = StaticPage> {
    generated::PAGES
        .iter()
        .map(|&(path, title, body)| StaticPage { path, title, body })
}

/// The page at `path` (a trailing `/` is ignored), if it has a static form.
pub fn page(path: &str) -> Option<StaticPage> {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    pages().find(|p| p.path == path)
}

/// The static card of a demo, for the embed page's first paint.
pub fn demo_card(demo: stacklab_api::DemoId) -> String {
    stacklab_content::page::demo_card(demo, "Loading the live demo…")
}

/// Why the shell could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// `index.html` could not be read.
    #[error("cannot read the app shell {path}: {source}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It has no `<title>` or no `<body>` to put a page into.
    #[error("the app shell {0} has no <title>…</title> or no <body>: is it Trunk's index.html?")]
    Shape(String),
}

/// Trunk's `index.html`, ready to take pages.
#[derive(Debug, Clone)]
pub struct Shell {
    /// Up to and including `<title>`.
    head_start: String,
    /// From `</title>` up to and including `<body>`.
    head_rest: String,
    /// After `<body>`.
    body_rest: String,
    /// CSP sources of the shell's inline scripts (Trunk's boot script).
    script_hashes: Vec<String>,
}

impl Shell {
    /// Reads `dir/index.html`.
    pub fn load(dir: &Path) -> Result<Shell, ShellError> {
        let path = dir.join("index.html");
        let html = std::fs::read_to_string(&path).map_err(|source| ShellError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Shell::parse(&html).ok_or_else(|| ShellError::Shape(path.display().to_string()))
    }

    /// The shell from its text.
    pub fn parse(html: &str) -> Option<Shell> {
        let title_open = html.find("<title>")? + "<title>".len();
        let title_close = title_open + html[title_open..].find("</title>")?;
        let body_open = title_close + html[title_close..].find("<body>")? + "<body>".len();
        Some(Shell {
            head_start: html[..title_open].to_owned(),
            head_rest: html[title_close..body_open].to_owned(),
            body_rest: html[body_open..].to_owned(),
            script_hashes: inline_scripts(html)
                .map(|s| {
                    let digest = Sha256::digest(s.as_bytes());
                    format!(
                        "'sha256-{}'",
                        base64::engine::general_purpose::STANDARD.encode(digest)
                    )
                })
                .collect(),
        })
    }

    /// The shell as a document titled `title`, with `head` added to its
    /// `<head>` and `body` (a page's static form) first in its `<body>`.
    pub fn document(&self, title: &str, head: &str, body: &str) -> String {
        let (rest, body_tag) = self.head_rest.split_at(
            self.head_rest
                .rfind("</head>")
                .unwrap_or(self.head_rest.len()),
        );
        let body = if body.is_empty() {
            String::new()
        } else {
            format!(r#"<div id="{PRERENDERED_ID}">{body}</div>"#)
        };
        format!(
            "{}{}{rest}{head}{body_tag}{body}{}",
            self.head_start,
            stacklab_content::page::escape(title),
            self.body_rest
        )
    }

    /// The Content Security Policy of the app's documents: scripts only
    /// from this origin (and the shell's own inline boot script, by hash),
    /// WebAssembly allowed, connections only to this origin, framed only
    /// by `frame_ancestors` (`'none'`, or the embed origins).
    pub fn csp(&self, frame_ancestors: &str) -> String {
        format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}",
            self.script_hashes.join(" ")
        )
    }
}

/// The contents of every `<script>` without a `src`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.match_indices("<script").filter_map(move |(at, _)| {
        let open_end = at + html[at..].find('>')?;
        if html[at..open_end].contains("src=") {
            return None;
        }
        let content_start = open_end + 1;
        let close = content_start + html[content_start..].find("</script>")?;
        Some(&html[content_start..close])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL: &str = "<!DOCTYPE html><html><head><title>x</title>\n<script type=\"module\">boot()</script><script src=\"/a.js\"></script></head><body><noscript>n</noscript></body></html>";

    #[test]
    fn a_page_goes_into_the_shell_with_its_title_and_the_boot_script_is_hashed() {
        let shell = Shell::parse(SHELL).unwrap();
        let doc = shell.document("Containers & VMs", "<meta name=\"m\">", "<h1>Hi</h1>");
        assert!(doc.contains("<title>Containers &amp; VMs</title>"), "{doc}");
        assert!(
            doc.contains(
                "<meta name=\"m\"></head><body><div id=\"prerendered\"><h1>Hi</h1></div><noscript>"
            ),
            "{doc}"
        );
        // sha256("boot()"), base64: computed independently with
        // `printf 'boot()' | openssl dgst -sha256 -binary | base64`.
        assert_eq!(
            shell.script_hashes,
            ["'sha256-MeZS89WlF0u+o0hCvHTBt4q1WHU+U+sJKgbdRUc36mY='"]
        );
        assert!(shell.csp("'none'").ends_with("frame-ancestors 'none'"));
    }

    #[test]
    fn lessons_have_pages_and_a_trailing_slash_finds_the_same_one() {
        assert_eq!(page("/lessons/containers/"), page("/lessons/containers"));
        assert!(page("/lessons/containers").is_some());
        assert!(page("/").is_some());
        assert!(page("/runs").is_none());
    }
}
