//! The lessons teach a correct model, and ask the learner to take part.
//!
//! A list of wrong pictures earlier versions taught (each with why it is
//! wrong), the concepts a correct course must name, and the glossary terms
//! every page must define where it first uses them. Maintained here,
//! beside the lessons they guard. (That no number in the prose gives a
//! demo's answer away is checked in `numbers_in_prose.rs`.)

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
    // Issue 26's review.
    ("deletes the database with the container", "the image declares VOLUME for PGDATA: docker rm leaves an anonymous volume behind"),
    ("lived in the container's writable layer", "as above: PGDATA is a volume, never the writable layer"),
    ("ksm or virtio-fs can share", "plain virtio-fs caches a file twice; only DAX avoids the guest's copy, and DAX is rare"),
    ("which containers cannot do", "CRIU checkpoints and restores containers (Podman, Docker experimental, LXD)"),
    ("vm-backed sandbox such as kata containers, gvisor", "gVisor's default platform (systrap) uses no VM"),
    ("runs each container in its own lightweight vm", "Kata runs one VM per pod"),
    ("only watches", "the engine stays in the path of logs, embedded DNS and some published ports"),
    ("sits in the path of ordinary work", "a VM's disk and network I/O goes through device emulation; container logs through the shim"),
    ("an idle guest costs memory, not cpu", "timers and halt polling cost a little host CPU"),
    ("as strong as the weakest one", "the shared kernel is the single point of failure: one kernel bug defeats every layer"),
    ("an image is the recipe", "the Dockerfile is the recipe, the image the built result"),
    ("as vmms do for linux", "true of Firecracker; QEMU usually boots through firmware, Cloud Hypervisor via PVH"),
    ("a whole computer, simulated", "primes the emulation picture the lesson refutes"),
    ("exits (each is a trip into the vmm)", "the count is of exits to the VMM; KVM handles others in the kernel"),
    ("may lack instructions debian", "say the virtual CPU lacks the instructions (only kvm-pvm), not the code"),
    // Close paraphrases of the source guide.
    ("happy coding", "the guide's sign-off"),
    ("happy building", "a paraphrase of the guide's sign-off"),
    ("light, start quickly and scale", "the guide's \"lightweight, fast, and scalable\""),
    ("isolation at the level of a whole operating system", "the guide's \"full OS-level isolation\""),
    ("start faster, ship as smaller files", "the guide's \"faster to start, smaller to ship\""),
    ("without having booted an operating system", "the guide's \"without booting a whole OS\""),
    ("which one is better in general", "the guide's \"isn't about which one is better\""),
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
    // Issue 26's corrections, each where a learner meets it.
    "anonymous volume",
    "docker rm -v",
    "dax",
    "criu",
    "systrap",
    "each kubernetes pod in its own",
    "prerouting",
    "docker engine 28.0",
    "kvm is not what is slow",
    "not measured here",
    "i/o path",
    "vhost",
    "balloon",
    "free page reporting",
    "halt polling",
    "cve-2019-5736",
    "cve-2024-21626",
    "cve-2022-0847",
    "cve-2021-29657",
    "docker group",
    "rootless mode",
    "side channel",
    "single point of failure",
    "kvm-pvm",
    "software emulation",
    "exits to the vmm",
    "docker-proxy",
    "shim",
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

/// Terms a learner may not know, each with the words that name it. On
/// every page that uses one, its first use (outside code blocks and
/// headings) must be the glossary link that explains it, so a reader who
/// lands on any lesson meets the definition with the word.
const TERMS: &[(&str, &[&str])] = &[
    ("vcpu", &["vcpu", "vcpus"]),
    ("virtio", &["virtio", "virtio-fs"]),
    ("vhost", &["vhost"]),
    ("dax", &["dax"]),
    ("ksm", &["ksm"]),
    ("l1tf", &["l1tf"]),
    ("mds", &["mds"]),
    ("page-tables", &["page tables", "page table"]),
    ("interrupt-table", &["interrupt table"]),
    ("gdt", &["gdt"]),
    ("apic", &["apic"]),
    ("runc", &["runc"]),
    ("containerd", &["containerd"]),
    ("shim", &["shim"]),
    ("oci", &["oci"]),
    ("lsm", &["lsm", "security module", "security modules"]),
    ("apparmor", &["apparmor"]),
    ("selinux", &["selinux"]),
    ("iptables", &["iptables"]),
    ("copy-up", &["copy-up", "copied up"]),
    ("criu", &["criu"]),
    ("tmpfs", &["tmpfs"]),
    ("entrypoint", &["entrypoint"]),
    ("initdb", &["initdb"]),
    ("pgdata", &["pgdata", "data directory"]),
    ("long-mode", &["long mode"]),
    ("rings", &["ring 3", "ring 0"]),
    ("tsc", &["tsc"]),
    ("initramfs", &["initramfs"]),
    ("pss", &["pss"]),
    ("overlay2", &["overlay2"]),
    ("vm-exit", &["vm exit", "vm exits"]),
    ("seccomp", &["seccomp"]),
];

/// The terms the reviews of issues 26 ("Words and order") and 27 ("Plain
/// words first") found used before they were explained, by glossary id.
/// Each must have a glossary entry and be in [`TERMS`], so that the check
/// below finds every page that uses it without its definition.
const REVIEWED_TERMS: &[&str] = &[
    // Issue 26.
    "initdb",
    "pgdata",
    "virtio",
    "dax",
    "l1tf",
    "mds",
    "runc",
    "containerd",
    "oci",
    "lsm",
    "apparmor",
    "selinux",
    "iptables",
    "page-tables",
    "interrupt-table",
    "vcpu",
    "copy-up",
    "shim",
    "vhost",
    "criu",
    // Issue 27.
    "tmpfs",
    "entrypoint",
    "gdt",
    "apic",
];

#[test]
fn every_listed_term_has_a_glossary_entry_and_is_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let glossary = load_glossary(&dir.join("glossary.yaml")).expect("glossary parses");
    let defined = |id: &str| glossary.iter().any(|t| &*t.id == id);
    let checked = |id: &str| TERMS.iter().any(|(t, _)| *t == id);
    let mut bad = Vec::new();
    for id in REVIEWED_TERMS {
        if !defined(id) {
            bad.push(format!("{id:?} has no entry in glossary.yaml"));
        }
        if !checked(id) {
            bad.push(format!("{id:?} is not in TERMS (its uses go unchecked)"));
        }
    }
    for (id, words) in TERMS {
        if !defined(id) {
            bad.push(format!("TERMS names {id:?}, which glossary.yaml lacks"));
        }
        if words.is_empty() {
            bad.push(format!("TERMS gives {id:?} no words to look for"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The page's readable characters, lower-cased, each with the glossary id
/// of the term button it sits in (if any). Code blocks and headings are
/// left out; inline code is kept (a term in `code` is still a term).
fn chars_with_terms(html: &str) -> Vec<(char, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = html;
    let mut term: Option<String> = None;
    'scan: while !rest.is_empty() {
        for (open, close) in [
            ("<pre", "</pre>"),
            ("<h1", "</h1>"),
            ("<h2", "</h2>"),
            ("<h3", "</h3>"),
        ] {
            if rest.starts_with(open) {
                let end = rest.find(close).map_or(rest.len(), |e| e + close.len());
                rest = &rest[end..];
                out.push((' ', None));
                continue 'scan;
            }
        }
        if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |e| e + 1);
            let tag = &rest[..end];
            if let Some(at) = tag.find("data-term=\"") {
                let id = &tag[at + "data-term=\"".len()..];
                term = id.split('"').next().map(str::to_string);
            } else if tag == "</button>" {
                term = None;
            }
            rest = &rest[end..];
            out.push((' ', term.clone()));
            continue;
        }
        let c = rest.chars().next().unwrap();
        for l in c.to_lowercase() {
            out.push((l, term.clone()));
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[test]
fn every_page_defines_a_term_where_it_first_uses_it() {
    let word_char = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut bad = Vec::new();
    for lesson in course() {
        let chars = chars_with_terms(&lesson.prose_html());
        let text: Vec<char> = chars.iter().map(|(c, _)| *c).collect();
        for (id, words) in TERMS {
            let first = words
                .iter()
                .filter_map(|w| {
                    let w: Vec<char> = w.chars().collect();
                    (0..text.len().saturating_sub(w.len() - 1)).find(|&i| {
                        text[i..i + w.len()] == w[..]
                            && (i == 0 || !word_char(text[i - 1]))
                            && text.get(i + w.len()).is_none_or(|c| !word_char(*c))
                    })
                })
                .min();
            if let Some(at) = first {
                if chars[at].1.as_deref() != Some(*id) {
                    let context: String = text[at.saturating_sub(30)..(at + 40).min(text.len())]
                        .iter()
                        .collect();
                    bad.push(format!(
                        "lesson {}: {id:?} first used unexplained in {context:?}",
                        lesson.slug
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "link each term's first use on the page as [word](glossary:id):\n{}",
        bad.join("\n")
    );
}

/// A choice's visible text (its inline HTML without tags).
fn visible(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Quizzes cannot be passed by a pattern: in the source the right answer
/// is spread over the positions (the page also shuffles them per learner),
/// it is not given away by being the longest choice, and every distractor
/// is of a similar length to it (a short, silly distractor is no test).
#[test]
fn quiz_answers_follow_no_pattern() {
    let questions: Vec<(String, stacklab_content::Question)> = course()
        .iter()
        .flat_map(|l| {
            l.blocks.iter().flat_map(move |b| match b {
                Block::Quiz(qs) => qs
                    .iter()
                    .map(|q| (l.slug.to_string(), q.clone()))
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })
        })
        .collect();
    let n = questions.len();
    assert!(n >= 10, "only {n} questions in the course");
    let mut at = [0usize; 3];
    let mut longest = 0;
    for (slug, q) in questions.iter() {
        assert_eq!(
            q.choices.len(),
            3,
            "lesson {slug}: {:?} should offer three choices",
            q.prompt
        );
        at[q.answer as usize] += 1;
        let lens: Vec<usize> = q
            .choices
            .iter()
            .map(|c| visible(c).chars().count())
            .collect();
        let right = lens[q.answer as usize];
        if lens.iter().filter(|&&l| l >= right).count() == 1 {
            longest += 1;
        }
        for (i, len) in lens.iter().enumerate() {
            let ratio = *len as f64 / right as f64;
            assert!(
                (0.6..=1.6).contains(&ratio),
                "lesson {slug}: choice {i} of {:?} is {len} characters against the answer's {right}: write a distractor of similar length",
                q.prompt
            );
        }
    }
    for (position, count) in at.iter().enumerate() {
        assert!(
            *count * 5 >= n && *count * 2 <= n,
            "the right answer is choice {position} in {count} of {n} questions: spread the answers ({at:?})"
        );
    }
    assert!(
        longest * 3 <= n,
        "the right answer is the longest choice in {longest} of {n} questions: a learner could game that"
    );
}

/// The home page promises only what the lessons hold: its lead (one
/// constant, which the pre-rendered page and the app both show) may not
/// say every lesson starts something real unless every lesson has a live
/// demo (an earlier lead said so when two of seven had one).
#[test]
fn the_home_page_promises_what_the_lessons_hold() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let glossary = load_glossary(&dir.join("glossary.yaml")).expect("glossary parses");
    let lessons = course();
    let pages = stacklab_content::page::site(&lessons, &glossary);
    let home = pages.iter().find(|p| p.path == "/").expect("a home page");
    assert!(
        home.body.contains(stacklab_content::HOME_LEAD),
        "the pre-rendered home page shows the lead"
    );
    let lead = stacklab_content::HOME_LEAD.to_lowercase();
    let live = |l: &Lesson| {
        l.blocks
            .iter()
            .any(|b| matches!(b, Block::Demo(..) | Block::XRay(..)))
    };
    let with_demos = lessons.iter().filter(|l| live(l)).count();
    assert!(with_demos > 0, "the home page promises live demos");
    let all = [
        "every lesson",
        "each lesson",
        "all lessons",
        "all the lessons",
        "every chapter",
    ];
    if all.iter().any(|p| lead.contains(p)) {
        assert_eq!(
            with_demos,
            lessons.len(),
            "the lead says every lesson starts something real: {lead}"
        );
    }
}
