//! The lessons teach a correct model, and ask the learner to take part.
//!
//! A list of wrong pictures earlier versions taught (each with why it is
//! wrong), the concepts a correct course must name, and a check that no
//! host-specific number is written into the prose: numbers come from the
//! learner's own runs. Maintained here, beside the lessons they guard.

use std::path::Path;

use stacklab_content::render::{load_dir, load_glossary};
use stacklab_content::{Block, Lesson};

fn course() -> Vec<Lesson> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let glossary = load_glossary(&dir.join("glossary.yaml")).expect("glossary parses");
    load_dir(&dir.join("lessons"), &glossary).expect("lessons parse")
}

/// A lesson's readable text: its prose with the tags stripped, plus the
/// questions and predictions it asks, lower-cased, whitespace folded.
fn text_of(lesson: &Lesson) -> String {
    let mut raw = format!("{} {} ", lesson.title, lesson.summary);
    for block in lesson.blocks.iter() {
        match block {
            Block::Html(h) => raw.push_str(h),
            Block::Demo(_, Some(p)) => raw.push_str(&format!(" {} {} ", p.question, p.why)),
            Block::Quiz(qs) => {
                for q in qs.iter() {
                    raw.push_str(&format!(" {} {} {} ", q.prompt, q.choices.join(" "), q.why));
                }
            }
            _ => {}
        }
        raw.push(' ');
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in raw.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace(['’', '‘'], "'")
        .replace(['“', '”'], "\"");
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Wrong statements, by a phrase that gives them away, and why each is wrong.
const FORBIDDEN: &[(&str, &str)] = &[
    ("only talks to the one directly below", "a container's system calls go straight to the host kernel, and guest code runs on the CPU; the engine and the hypervisor are not in every path"),
    ("tens of seconds or minutes to start", "a Linux guest boots in well under a second to seconds on KVM; minutes are installs, provisioning, firmware and services"),
    ("minutes, mostly spent booting", "as above: booting the guest kernel is not where minutes go"),
    ("minutes to boot", "as above"),
    ("booting a full distribution", "as above"),
    ("needs the cpu's hardware virtualisation", "the project's own test boots Linux under pure software emulation"),
    ("needs vt-x", "as above"),
    ("emulates guest kernels one instruction at a time", "a mechanism the lesson cannot back; say what was observed"),
    ("this server is itself a virtual machine", "host-specific: read it from /api/health"),
    ("few kilobytes", "a host-specific number in prose"),
    ("about 10 ms", "a host-specific number in prose"),
    ("the vm is ready sooner", "gives the answer away and depends on the host"),
    ("a container is a lightweight vm", "only allowed as a misconception to answer, quoted"),
    ("docker runs natively on macos", "Docker Desktop runs a Linux VM"),
];

/// Concepts a correct course names, each with where it belongs.
const REQUIRED: &[&str] = &[
    // Who is in the path at run time.
    "straight to the host kernel",
    "vm exit",
    "sets up, then steps aside",
    // Where KVM lives.
    "type 1",
    "type 2",
    "part of the host kernel",
    "user-space",
    // Minutes.
    "125 ms",
    "provisioning",
    // Security.
    "venom",
    "cve-2015-3456",
    "l1tf",
    "mds",
    "seccomp",
    "user namespace",
    "docker.sock",
    "gvisor",
    "kata",
    "firecracker",
    // Memory.
    "lazily",
    "tickless",
    "ksm",
    "virtio-fs",
    "overlay2",
    "page cache",
    // Portability.
    "arm64",
    "docker desktop",
    "live migration",
    // PostgreSQL.
    "pulls the image",
    "volume",
    "127.0.0.1:5432:5432",
    "ufw",
    "tmpfs",
    "unix socket",
    // Try it yourself.
    "uname -r",
    "lsns",
    "unshare --pid --fork --mount-proc",
    "systemd-analyze",
    // Misconceptions.
    "root in a container",
];

#[test]
fn no_lesson_teaches_a_wrong_picture() {
    for lesson in course() {
        let text = text_of(&lesson);
        for (phrase, why) in FORBIDDEN {
            // A misconception may be named in quotes, to be answered.
            let quoted = text.contains(&format!("\"{phrase}"));
            assert!(
                !text.contains(phrase) || quoted,
                "lesson {} says {phrase:?}: {why}",
                lesson.slug
            );
        }
    }
}

#[test]
fn the_course_names_what_a_correct_model_needs() {
    let all: String = course().iter().map(text_of).collect::<Vec<_>>().join(" ");
    let missing: Vec<&&str> = REQUIRED.iter().filter(|c| !all.contains(**c)).collect();
    assert!(missing.is_empty(), "no lesson mentions {missing:?}");
}

/// Numbers with a unit of time or memory that may stand in prose, because
/// they are not this host's: each with its source.
const ALLOWED_NUMBERS: &[(&str, &str)] = &[
    (
        "125 ms",
        "Firecracker's published boot target (its SPECIFICATION.md)",
    ),
    (
        "128 mib",
        "the demo container's memory cap, from the server's own spec (spec.rs)",
    ),
    ("5432", "PostgreSQL's port"),
];

#[test]
fn no_host_specific_number_is_written_into_the_prose() {
    let units = [
        "ms",
        "µs",
        "s",
        "sec",
        "seconds",
        "mib",
        "mb",
        "gib",
        "gb",
        "kib",
        "kb",
        "kilobytes",
        "megabytes",
        "minutes",
    ];
    for lesson in course() {
        let text = text_of(&lesson);
        let words: Vec<&str> = text.split(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let number = word.trim_start_matches(['~', '≈', '(', '≤', '<']);
            if number.is_empty() || !number.chars().next().unwrap().is_ascii_digit() {
                continue;
            }
            let Some(unit) = words.get(i + 1) else {
                continue;
            };
            let unit = unit.trim_end_matches(['.', ',', ';', ':', ')']);
            if !units.contains(&unit) {
                continue;
            }
            let phrase = format!("{number} {unit}");
            assert!(
                ALLOWED_NUMBERS.iter().any(|(p, _)| *p == phrase),
                "lesson {} writes {phrase:?} into its prose: read it from a live run or /api/health instead, or allow it in ALLOWED_NUMBERS with its source",
                lesson.slug
            );
        }
    }
}

#[test]
fn every_lesson_ends_by_checking_the_learner() {
    for lesson in course() {
        let last = lesson
            .blocks
            .iter()
            .rev()
            .find(|b| !matches!(b, Block::Html(h) if h.trim().is_empty()));
        let Some(Block::Quiz(questions)) = last else {
            panic!("lesson {} does not end with a quiz", lesson.slug)
        };
        assert!(
            (2..=4).contains(&questions.len()),
            "lesson {} asks {} questions; 2-4 keeps it a check, not an exam",
            lesson.slug,
            questions.len()
        );
    }
}

#[test]
fn every_demo_asks_for_a_prediction_first() {
    for lesson in course() {
        for block in lesson.blocks.iter() {
            if let Block::Demo(demo, prediction) = block {
                assert!(
                    prediction.is_some(),
                    "the {demo:?} demo in lesson {} runs without asking the learner to predict",
                    lesson.slug
                );
            }
        }
    }
}

#[test]
fn the_first_use_of_key_terms_links_the_glossary() {
    for (lesson, term) in [
        ("virtual-machines", "hypervisor"),
        ("virtual-machines", "vm-exit"),
        ("virtual-machines", "vmm"),
        ("containers", "namespace"),
        ("containers", "cgroup"),
    ] {
        let course = course();
        let l = course.iter().find(|l| l.slug == lesson).expect(lesson);
        let html = l.prose_html();
        assert!(
            html.contains(&format!("data-term=\"{term}\"")),
            "lesson {lesson} does not link {term} to the glossary"
        );
    }
}
