//! `stacklab export --out DIR [--lab URL]`: the lessons as a static site.
//!
//! Every page with a static form (the overview, each lesson, the
//! glossary) becomes `DIR/<path>/index.html`: the app shell with the
//! page's text, headings and diagrams inside, so it reads with JavaScript
//! off and any static host (or a search engine) sees the text. `My runs`
//! gets the bare shell. The app's files are copied beside them; when the
//! app loads it takes the page over, and with `--lab` it runs the demos on
//! that lab (`<meta name="stacklab-lab">`), which must then allow the
//! site's origin with `--embed-origin`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{resolve_static_dir, ExportArgs};
use crate::site::{self, Shell};

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    /// The HTML pages, as written.
    pub pages: Vec<PathBuf>,
    /// The app's files copied beside them.
    pub assets: usize,
}

/// Runs the subcommand and says what it wrote.
pub fn command(args: &ExportArgs) -> anyhow::Result<()> {
    let dist = resolve_static_dir(args.static_dir.as_deref()).context(
        "no built frontend found (frontend/dist/index.html); build it with `./dev build`, or name it with --static-dir",
    )?;
    let done = export(&dist, &args.out, args.lab.as_deref())?;
    eprintln!(
        "stacklab export: {} pages and {} app files in {}{}",
        done.pages.len(),
        done.assets,
        args.out.display(),
        match &args.lab {
            Some(lab) =>
                format!("; demos run on {lab} (start it with --embed-origin <this site's origin>)"),
            None => "; demos talk to the host that serves the pages".into(),
        }
    );
    Ok(())
}

/// Writes the site from the frontend in `dist` into `out`.
pub fn export(dist: &Path, out: &Path, lab: Option<&str>) -> anyhow::Result<Exported> {
    let shell = Shell::load(dist)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut assets = 0;
    for entry in
        std::fs::read_dir(dist).with_context(|| format!("cannot read {}", dist.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if name == "index.html" || !entry.file_type()?.is_file() {
            continue;
        }
        std::fs::copy(entry.path(), out.join(&name)).with_context(|| {
            format!(
                "cannot copy {} into {}",
                entry.path().display(),
                out.display()
            )
        })?;
        assets += 1;
    }
    let head = lab
        .map(|lab| {
            format!(
                r#"<meta name="stacklab-lab" content="{}">"#,
                stacklab_content::page::escape(lab)
            )
        })
        .unwrap_or_default();
    let pages = site::pages().map(|p| (p.path, p.title, p.body)).chain([(
        "/runs",
        "My runs · stacklab",
        "",
    )]);
    let mut written = Vec::new();
    for (path, title, body) in pages {
        let dir = out.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("index.html");
        std::fs::write(&file, shell.document(title, &head, body))
            .with_context(|| format!("cannot write {}", file.display()))?;
        written.push(file);
    }
    Ok(Exported {
        pages: written,
        assets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lesson_becomes_a_page_naming_the_lab_beside_the_apps_files() {
        let dist = tempfile::tempdir().unwrap();
        std::fs::write(
            dist.path().join("index.html"),
            "<html><head><title>t</title><script type=\"module\">go()</script></head><body></body></html>",
        )
        .unwrap();
        std::fs::write(dist.path().join("app-1234.wasm"), b"\0asm").unwrap();
        let out = tempfile::tempdir().unwrap();
        let done = export(dist.path(), out.path(), Some("https://lab.example.org")).unwrap();
        assert_eq!(done.assets, 1);
        assert!(out.path().join("app-1234.wasm").is_file());
        let lesson =
            std::fs::read_to_string(out.path().join("lessons/containers/index.html")).unwrap();
        assert!(lesson.contains(r#"<meta name="stacklab-lab" content="https://lab.example.org">"#));
        assert!(lesson.contains(r#"<div id="prerendered">"#));
        assert!(lesson.contains("<h1 "));
        assert!(out.path().join("index.html").is_file());
        assert!(out.path().join("glossary/index.html").is_file());
        let runs = std::fs::read_to_string(out.path().join("runs/index.html")).unwrap();
        assert!(!runs.contains("prerendered"), "{runs}");
        assert_eq!(done.pages.len(), site::pages().count() + 1);
    }
}
