//! Renders the lessons in `content/lessons` to Rust data at build time, so
//! the browser never parses Markdown.

use std::path::PathBuf;

fn main() {
    let content = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../content");
    let lessons_dir = content.join("lessons");
    let glossary_file = content.join("glossary.yaml");
    println!("cargo:rerun-if-changed={}", lessons_dir.display());
    println!("cargo:rerun-if-changed={}", glossary_file.display());
    let glossary = match stacklab_content::render::load_glossary(&glossary_file) {
        Ok(g) => g,
        Err(e) => {
            println!("cargo:warning=glossary error: {e}");
            std::process::exit(1);
        }
    };
    let lessons = match stacklab_content::render::load_dir(&lessons_dir, &glossary) {
        Ok(l) => l,
        Err(e) => {
            // A clear build error that names the file beats a panic backtrace.
            println!("cargo:warning=lesson error: {e}");
            std::process::exit(1);
        }
    };
    for entry in std::fs::read_dir(&lessons_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = stacklab_content::render::to_rust_source(&lessons, &glossary);
    if let Err(e) = std::fs::write(out.join("lessons.rs"), source) {
        println!("cargo:warning=cannot write lessons.rs: {e}");
        std::process::exit(1);
    }
}
