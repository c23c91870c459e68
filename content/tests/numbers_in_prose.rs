//! No number written into the lessons gives a demo's answer away.
//!
//! A learner predicts before a demo runs; a sentence such as "the kernel
//! line is usually a second or two" or "creating a VM takes a few
//! milliseconds" answers the question before it is asked, and states this
//! host's figure as if it were everyone's. Numbers come from runs.
//!
//! The scan reads every text a learner is shown: each lesson's title,
//! summary and prose, the questions and explanations of its quizzes, the
//! question and explanation of every demo's prediction, and the glossary.
//! Code (fenced blocks and inline `code`) and link targets are left out: a
//! command's flags and a port number are not claims about time or size.
//! It flags a number with a unit of time, memory or share (`125 ms`,
//! `12KiB`, `40 %`, `1.9×`) and the spelled forms that do the same ("a few
//! milliseconds", "a second or two", "within seconds", "well under a
//! second", "tens of megabytes"). A figure from the literature may stand in
//! prose when the sentence names its source; each one is listed in
//! [`CITED`] with that source.

use std::path::Path;

use stacklab_content::render::{load_dir, load_glossary};
use stacklab_content::{Block, Lesson, Term};

/// Phrases the scan may find, each where it stands (the lesson's slug or
/// `glossary`) and why it may: the sentence cites where the figure comes
/// from. Matched against the flagged phrase as the scan reports it,
/// lower-cased.
const CITED: &[(&str, &str, &str)] = &[
    (
        "virtual-machines",
        "125 ms",
        "Firecracker's SPECIFICATION.md: `<= 125 ms` from the InstanceStart API call to the \
         guest's user-space /sbin/init, on an i3.metal host with Firecracker's tuned guest kernel; \
         cited as a published figure for that setup, not a measurement",
    ),
    (
        "key-differences",
        "125 ms",
        "as above (the reference figure beside the measured block, marked not measured here)",
    ),
    (
        "key-differences",
        "take minutes",
        "the source guide's table (Startup time: \"Minutes\" for a VM), quoted as the \
         misconception the lesson answers",
    ),
    (
        "closing",
        "in seconds",
        "the guide's table (Startup time: \"Seconds or less\" for a container), quoted in the \
         quiz as the claim to examine",
    ),
    (
        "closing",
        "take minutes",
        "the guide's table again, in the same quoted claim",
    ),
];

/// Units written after a number (or glued to it: `125ms`, `40%`).
const NUMBER_UNITS: &[&str] = &[
    "ns",
    "µs",
    "us",
    "ms",
    "s",
    "sec",
    "secs",
    "second",
    "seconds",
    "min",
    "mins",
    "minute",
    "minutes",
    "h",
    "hour",
    "hours",
    "b",
    "kb",
    "kib",
    "mb",
    "mib",
    "gb",
    "gib",
    "tb",
    "tib",
    "byte",
    "bytes",
    "kilobyte",
    "kilobytes",
    "megabyte",
    "megabytes",
    "gigabyte",
    "gigabytes",
    "%",
    "percent",
    "×",
    "x",
];

/// Units spelled out, singular and plural.
const TIME_WORDS: &[&str] = &[
    "nanosecond",
    "nanoseconds",
    "microsecond",
    "microseconds",
    "millisecond",
    "milliseconds",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
];
const MEMORY_WORDS: &[&str] = &[
    "byte",
    "bytes",
    "kilobyte",
    "kilobytes",
    "megabyte",
    "megabytes",
    "gigabyte",
    "gigabytes",
    "kib",
    "mib",
    "gib",
];

/// Words that make a plural unit a quantity: "a few milliseconds", "tens of
/// megabytes", "two seconds".
const QUANTIFIERS: &[&str] = &[
    "few",
    "couple",
    "several",
    "handful",
    "dozen",
    "dozens",
    "tens",
    "hundreds",
    "thousands",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "twenty",
    "fifty",
    "hundred",
    "thousand",
    "many",
];

/// Words after which a bare time unit states how long something takes:
/// "within seconds", "ready in seconds", "well under a second", "VMs take
/// minutes".
const DURATION_LEADS: &[&str] = &[
    "in", "within", "under", "take", "takes", "took", "taking", "only", "just",
];

fn is_number(word: &str) -> bool {
    let w = word.trim_start_matches(['~', '≈', '(', '≤', '<', '>', '≥', '+', '-', '−']);
    !w.is_empty()
        && w.chars().next().is_some_and(|c| c.is_ascii_digit())
        && w.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
}

/// Splits a word like `125ms`, `40%` or `1.9×` into its number and unit.
fn glued(word: &str) -> Option<(&str, &str)> {
    let w = word.trim_start_matches(['~', '≈', '(', '≤', '<', '>', '≥', '+']);
    let split = w.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))?;
    let (number, unit) = w.split_at(split);
    (!number.is_empty() && number.chars().next().unwrap().is_ascii_digit())
        .then_some((number, unit))
}

fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| {
        matches!(
            c,
            '.' | ',' | ';' | ':' | '!' | '?' | '(' | ')' | '"' | '\'' | '*' | '_' | '[' | ']'
        )
    })
}

/// Every phrase of `text` that states a quantity of time, memory or share.
fn quantities(text: &str) -> Vec<String> {
    let raw: Vec<&str> = text.split_whitespace().collect();
    let words: Vec<String> = raw
        .iter()
        .map(|w| bare(&w.to_lowercase()).to_string())
        .collect();
    // "second" ends a quantity ("under a second;", "a second or two") but
    // is an ordinal before a noun ("a second container").
    let ordinal = |i: usize| {
        words[i] == "second"
            && raw[i].chars().last().is_some_and(|c| c.is_alphanumeric())
            && words.get(i + 1).is_some_and(|n| {
                n.chars().all(|c| c.is_alphabetic() || c == '-')
                    && !matches!(
                        n.as_str(),
                        "or" | "and" | "to" | "per" | "after" | "before" | "of"
                    )
            })
    };
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let is_time = |w: &str| TIME_WORDS.contains(&w);
    let is_plural_unit =
        |w: &str| (TIME_WORDS.contains(&w) || MEMORY_WORDS.contains(&w)) && w.ends_with('s');
    let mut found = Vec::new();
    for i in 0..words.len() {
        let w = word(i);
        // A number and its unit: "125 ms", "12 KiB", "40 %".
        if is_number(w) && NUMBER_UNITS.contains(&word(i + 1)) {
            found.push(format!("{w} {}", word(i + 1)));
            continue;
        }
        if let Some((number, unit)) = glued(w) {
            if NUMBER_UNITS.contains(&unit) {
                found.push(format!("{number} {unit}"));
                continue;
            }
        }
        // "a second or two", "a minute or two".
        if is_time(w) && word(i + 1) == "or" && QUANTIFIERS.contains(&word(i + 2)) {
            found.push(format!(
                "{} {w} or {}",
                word(i.wrapping_sub(1)),
                word(i + 2)
            ));
            continue;
        }
        // "a few milliseconds", "tens of megabytes", "two seconds".
        if is_plural_unit(w) {
            let before = if word(i.wrapping_sub(1)) == "of" {
                word(i.wrapping_sub(2))
            } else {
                word(i.wrapping_sub(1))
            };
            if i > 0 && QUANTIFIERS.contains(&before) {
                found.push(format!("{before} {w}"));
                continue;
            }
        }
        // "within seconds", "in milliseconds", "well under a second".
        if is_time(w) && i > 0 && !ordinal(i) {
            let mut j = i - 1;
            while j > 0 && matches!(word(j), "a" | "an" | "mere" | "well" | "few") {
                j -= 1;
            }
            let lead = word(j);
            let plural_or_article = w.ends_with('s') || j + 1 < i;
            if DURATION_LEADS.contains(&lead) && plural_or_article {
                found.push(words[j..=i].join(" "));
            }
        }
    }
    found
}

/// Drops `<pre>…</pre>` and `<code>…</code>` elements, then every tag, and
/// decodes the entities pulldown-cmark writes.
fn readable(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    'outer: while !rest.is_empty() {
        for (open, close) in [("<pre", "</pre>"), ("<code", "</code>")] {
            if rest.starts_with(open) {
                match rest.find(close) {
                    Some(end) => {
                        rest = &rest[end + close.len()..];
                        out.push(' ');
                        continue 'outer;
                    }
                    None => break 'outer,
                }
            }
        }
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => {
                    rest = &rest[end + 1..];
                    out.push(' ');
                    continue;
                }
                None => break,
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace(['’', '‘'], "'")
        .replace(['“', '”'], "\"")
        .replace('\u{a0}', " ")
}

/// Everything a learner reads in `lesson`, code left out.
fn shown_text(lesson: &Lesson) -> String {
    let mut html = format!("<p>{}</p><p>{}</p>", lesson.title, lesson.summary);
    for block in lesson.blocks.iter() {
        match block {
            Block::Html(h) => html.push_str(h),
            Block::Demo(_, Some(p)) => {
                html.push_str(&format!("<p>{}</p><p>{}</p>", p.question, p.why))
            }
            Block::Quiz(qs) => {
                for q in qs.iter() {
                    html.push_str(&format!("<p>{}</p>", q.prompt));
                    for c in q.choices.iter() {
                        html.push_str(&format!("<p>{c}</p>"));
                    }
                    html.push_str(&format!("<p>{}</p>", q.why));
                }
            }
            _ => {}
        }
    }
    readable(&html)
}

fn course() -> (Vec<Lesson>, Vec<Term>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let glossary = load_glossary(&dir.join("glossary.yaml")).expect("glossary parses");
    let lessons = load_dir(&dir.join("lessons"), &glossary).expect("lessons parse");
    (lessons, glossary)
}

/// Every flagged phrase not in [`CITED`], by where it stands.
fn uncited() -> Vec<String> {
    let (lessons, glossary) = course();
    let mut texts: Vec<(String, String)> = lessons
        .iter()
        .map(|l| (l.slug.to_string(), shown_text(l)))
        .collect();
    for t in glossary.iter() {
        texts.push((
            "glossary".to_string(),
            readable(&format!("<p>{}</p>{}", t.term, t.html)),
        ));
    }
    let mut bad = Vec::new();
    for (place, text) in texts {
        for phrase in quantities(&text) {
            if !CITED.iter().any(|(p, c, _)| *p == place && *c == phrase) {
                bad.push(format!("{place}: {phrase:?}"));
            }
        }
    }
    bad
}

#[test]
fn no_lesson_states_a_quantity_a_run_should_show() {
    let bad = uncited();
    assert!(
        bad.is_empty(),
        "numbers written as prose (a demo's run shows these; cite a published source and add it to CITED, or drop the number):\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_cited_figure_is_still_used_and_names_its_source() {
    let (lessons, _) = course();
    for (place, phrase, source) in CITED {
        let used = lessons
            .iter()
            .filter(|l| l.slug == *place)
            .any(|l| quantities(&shown_text(l)).iter().any(|p| p == phrase));
        assert!(
            used,
            "CITED lists {phrase:?} in {place}, which no longer says it: remove the entry"
        );
        assert!(source.len() > 20, "{phrase:?} needs its source");
    }
    // The one published boot figure is always said with its source, and as
    // a published figure, not a measurement.
    for l in lessons.iter() {
        if shown_text(l).contains("125 ms") {
            let html = l.prose_html();
            assert!(
                html.contains("Firecracker")
                    && html.contains("SPECIFICATION.md")
                    && (html.contains("not measured here") || html.contains("published figure")),
                "lesson {} quotes 125 ms without naming Firecracker's SPECIFICATION.md",
                l.slug
            );
        }
    }
}

/// The scan itself: it catches each phrasing issue 26 found in the lessons,
/// and lets ordinary sentences pass.
#[test]
fn the_scan_catches_the_phrasings_that_gave_answers_away() {
    for (sentence, expect) in [
        (
            "the kernel line is usually a second or two, and",
            "a second or two",
        ),
        ("takes a minute or two from create", "a minute or two"),
        (
            "through /dev/kvm takes a few milliseconds; the rest",
            "few milliseconds",
        ),
        (
            "lean guest kernel boots in well under a second; minutes",
            "under a second",
        ),
        (
            "Within seconds you have an isolated server",
            "within seconds",
        ),
        ("it is ready in seconds without booting", "in seconds"),
        ("request → ready 179 ms, VM 5.3 ms", "5.3 ms"),
        ("memory 12 KiB vs 888 KiB", "888 kib"),
        ("density grew 1.9× against 4.0×", "4.0 ×"),
        ("the probe held 57.7MiB", "57.7 mib"),
        ("about 40 % of it", "40 %"),
        ("costs tens of megabytes per guest", "tens megabytes"),
    ] {
        let found = quantities(sentence);
        assert!(
            found.iter().any(|f| f == expect),
            "{sentence:?}: expected {expect:?}, found {found:?}"
        );
    }
    for sentence in [
        "a second container from the same image",
        "In a second operating system that boots inside it",
        "the second pair answers the guide's question",
        "port 5432 on the host, PostgreSQL 15 and CVE-2015-3456",
        "a guest's kernel in ring 3, one of two ways, 64-bit mode",
        "the VMM converts the counts to microseconds",
        "the time each step took, measured on this server",
    ] {
        let found = quantities(sentence);
        assert!(
            found.is_empty(),
            "{sentence:?} is not a quantity: {found:?}"
        );
    }
}
