//! Renders the lessons in `content/lessons` to Rust data at build time, so
//! the browser never parses Markdown.

use std::path::PathBuf;

use stacklab_content::render;

fn main() {
    let content = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../content");
    let (lessons, glossary) = render::load_for_build(&content);
    render::write_for_build("lessons.rs", &render::to_rust_source(&lessons, &glossary));
}
