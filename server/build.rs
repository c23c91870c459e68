//! Renders the static form of the app's pages (`content::page::site`) into
//! Rust data, so `stacklab serve` can send a lesson's text in its first
//! response and `stacklab export` can write it to files.

use std::path::PathBuf;

fn main() {
    let content = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../content");
    let lessons_dir = content.join("lessons");
    let glossary_file = content.join("glossary.yaml");
    println!("cargo:rerun-if-changed={}", lessons_dir.display());
    println!("cargo:rerun-if-changed={}", glossary_file.display());
    for entry in std::fs::read_dir(&lessons_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let rendered = stacklab_content::render::load_glossary(&glossary_file).and_then(|glossary| {
        stacklab_content::render::load_dir(&lessons_dir, &glossary).map(|l| (l, glossary))
    });
    let (lessons, glossary) = match rendered {
        Ok(r) => r,
        Err(e) => {
            println!("cargo:warning=lesson error: {e}");
            std::process::exit(1);
        }
    };
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
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("pages.rs");
    if let Err(e) = std::fs::write(dest, out) {
        println!("cargo:warning=cannot write pages.rs: {e}");
        std::process::exit(1);
    }
}
