//! Renders the static form of the app's pages (`content::page::site`) into
//! Rust data, so `stacklab serve` can send a lesson's text in its first
//! response and `stacklab export` can write it to files.

use std::path::PathBuf;

use stacklab_content::render;

fn main() {
    let content = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../content");
    let (lessons, glossary) = render::load_for_build(&content);
    let mut out = String::from(
        "/// The static pages: (path, title, body).\npub static PAGES: &[(&str, &str, &str)] = &[\n",
    );
    for page in stacklab_content::page::site(&lessons, &glossary) {
        out.push_str(&format!(
            "    ({:?}, {:?}, {:?}),\n",
            page.path, page.title, page.body
        ));
    }
    out.push_str("];\n");
    render::write_for_build("pages.rs", &out);
}
