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

    // The course as workshop mode needs it: each lesson's slug, title and
    // quiz (question number → index of the right choice, number of
    // choices), so the server scores a member's first answer itself.
    let mut course = String::from(
        "/// A lesson's quiz: (question number, right choice, choices).\npub type Quiz = &'static [(u32, u32, u32)];\n/// (slug, title, quiz).\npub static COURSE: &[(&str, &str, Quiz)] = &[\n",
    );
    for lesson in &lessons {
        let quiz: Vec<String> = lesson
            .blocks
            .iter()
            .filter_map(|b| match b {
                stacklab_content::Block::Quiz(questions) => Some(questions.iter()),
                _ => None,
            })
            .flatten()
            .map(|q| format!("({}, {}, {})", q.number, q.answer, q.choices.len()))
            .collect();
        course.push_str(&format!(
            "    ({:?}, {:?}, &[{}]),\n",
            lesson.slug,
            lesson.title,
            quiz.join(", ")
        ));
    }
    course.push_str("];\n");
    render::write_for_build("course.rs", &course);
}
