//! Renders the lessons in `content/lessons` to Rust data at build time, so
//! the browser never parses Markdown.

use std::path::PathBuf;

fn main() {
    let lessons_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../content/lessons");
    println!("cargo:rerun-if-changed={}", lessons_dir.display());
    let lessons = match stacklab_content::render::load_dir(&lessons_dir) {
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
    let source = stacklab_content::render::to_rust_source(&lessons);
    if let Err(e) = std::fs::write(out.join("lessons.rs"), source) {
        println!("cargo:warning=cannot write lessons.rs: {e}");
        std::process::exit(1);
    }
}
