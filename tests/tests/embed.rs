//! stacklab outside its own app, in a real browser: a docs site on
//! another origin embedding live demos with one line of HTML (and what
//! it shows when the lab is down or does not allow it), an mdBook book
//! built with the `mdbook-stacklab` preprocessor, the exported lessons
//! read with JavaScript off, and what pre-rendering does to the first
//! paint of a lesson's text.
//!
//! Docs sites are served by Python's `http.server` on their own loopback
//! port (another origin, as a real docs host would be); the lab is the
//! real server with the real built frontend.

mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;
use stacklab_server::AppState;
use util::*;

/// A docs page: the one-line embed, a PostgreSQL container demo with
/// fallback children, and a micro-VM demo without.
fn docs_page(script: &str, lab_attr: Option<&str>) -> String {
    let lab = lab_attr.map_or(String::new(), |l| format!(r#" lab="{l}""#));
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Our docs</title>
<script type="module" src="{script}"></script></head>
<style>stacklab-demo {{ --stacklab-accent: #aa00aa; }}</style>
<body><h1>Our docs</h1><p>PostgreSQL, started for you:</p>
<stacklab-demo demo="postgres-container"{lab}><p id="pg-fallback">A PostgreSQL container starts in about a second on our lab.</p></stacklab-demo>
<p>And a micro-VM:</p>
<stacklab-demo demo="micro-vm" theme="dark"{lab}></stacklab-demo>
</body></html>"#
    )
}

/// A lab allowing the `sites` to embed it, in-process with the built
/// frontend.
async fn lab_for(sites: &[&str]) -> String {
    let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    start_server_with(
        AppState::new(Some(dist_dir()), Default::default())
            .with_origins(None, &sites)
            .unwrap(),
    )
    .await
}

/// Waits until the element for `demo` has `state`.
async fn wait_for_state(client: &Client, demo: &str, state: &str) {
    let css = format!(r#"stacklab-demo[demo="{demo}"][state="{state}"]"#);
    if let Err(e) = try_find_within(client, &css, WAIT).await {
        screenshot(client, "failure").await;
        let states = eval(
            client,
            "return [...document.querySelectorAll('stacklab-demo')].map(e => e.getAttribute('demo') + '=' + e.getAttribute('state'))",
            vec![],
        )
        .await;
        panic!("{css} did not appear: {e}; states: {states}");
    }
}

/// Text inside the element's shadow root (`part` is `.note` or `.latest`).
async fn shadow_text(client: &Client, demo: &str, part: &str) -> String {
    eval(
        client,
        "const el = document.querySelector(`stacklab-demo[demo=\"${arguments[0]}\"]`).shadowRoot.querySelector(arguments[1]); return el && !el.hidden ? el.textContent : '';",
        vec![json!(demo), json!(part)],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// `js`'s value inside the frame of the element for `demo`.
async fn in_frame(client: &Client, demo: &str, js: &str) -> serde_json::Value {
    enter_frame_of(client, demo).await;
    let value = eval(client, js, vec![]).await;
    client.clone().enter_parent_frame().await.unwrap();
    value
}

/// Switches into the frame of the element for `demo` (inside its shadow
/// root, where WebDriver's frame numbers do not reach).
async fn enter_frame_of(client: &Client, demo: &str) {
    let host = client
        .find(Locator::Css(&format!(r#"stacklab-demo[demo="{demo}"]"#)))
        .await
        .unwrap();
    let frame = host
        .shadow_root()
        .await
        .unwrap()
        .find(Locator::Css("iframe"))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
}

/// Whether the PostgreSQL element's fallback child is rendered (through
/// the element's shadow root, which WebDriver's own check does not see).
async fn fallback_shown(client: &Client) -> bool {
    eval(
        client,
        "return document.getElementById('pg-fallback').checkVisibility()",
        vec![],
    )
    .await
    .as_bool()
    .unwrap()
}

/// The height of the element's frame, in CSS pixels.
async fn frame_height(client: &Client, demo: &str) -> f64 {
    eval(
        client,
        "return document.querySelector(`stacklab-demo[demo=\"${arguments[0]}\"]`).shadowRoot.querySelector('iframe').getBoundingClientRect().height",
        vec![json!(demo)],
    )
    .await
    .as_f64()
    .unwrap()
}

/// Inside the frame of the element for `demo`, runs the card's demo and
/// returns the reading `key`.
async fn run_in_frame(client: &Client, demo: &str, key: &str) -> String {
    enter_frame_of(client, demo).await;
    let card = format!(r#"section.demo-card[data-demo="{demo}"]"#);
    click(client, &format!("{card} button.run")).await;
    let reading = reading_within(
        client,
        &format!(r#"{card} tr[data-key="{key}"] td.num"#),
        Duration::from_secs(60),
    )
    .await;
    client.clone().enter_parent_frame().await.unwrap();
    reading
}

/// A docs site on another origin puts `<script type="module"
/// src=LAB/embed.js>` on its page and two `<stacklab-demo>` elements: both
/// come up live, sized to their content, and run the real demos. The same
/// page from an origin the lab does not allow gets no demo and says why.
/// With the lab down, the fallback children stay, and an element without
/// children shows the result this browser remembered, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn a_docs_site_on_another_origin_runs_live_demos_and_falls_back_without_the_lab() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let site = tempfile::tempdir().unwrap();
    let (_docs_server, docs) = serve_static(site.path()).await;
    // A second site: the lessons exported with `stacklab export --lab`.
    let exported = tempfile::tempdir().unwrap();
    let (_export_server, export_site) = serve_static(exported.path()).await;
    let lab = lab_for(&[&docs, &export_site]).await;
    // The docs site reaches the lab through a proxy that can be closed:
    // the lab as the site's readers see it, up and then down.
    let proxy = Proxy::to(lab.trim_start_matches("http://").to_owned()).await;
    let lab_url = proxy.url.clone();
    std::fs::write(
        site.path().join("index.html"),
        docs_page(&format!("{lab_url}/embed.js"), None),
    )
    .unwrap();
    // A site that keeps its own copy of embed.js (so its fallback works
    // even when the lab is down) names the lab on the element.
    let copy = std::process::Command::new("curl")
        .args(["-fsS", &format!("{lab_url}/embed.js")])
        .output()
        .expect("curl");
    assert!(copy.status.success(), "{copy:?}");
    std::fs::write(site.path().join("embed.js"), &copy.stdout).unwrap();
    std::fs::write(
        site.path().join("own-copy.html"),
        docs_page("./embed.js", Some(&lab_url)),
    )
    .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    open(&client, &format!("{docs}/index.html")).await;
    wait_for_state(&client, "postgres-container", "live").await;
    wait_for_state(&client, "micro-vm", "live").await;
    assert!(
        !fallback_shown(&client).await,
        "the fallback hides once the live card is up"
    );
    screenshot(&client, "embed-docs-site").await;
    let before = frame_height(&client, "micro-vm").await;
    assert!(before > 100.0, "the frame has its card's height: {before}");

    // Both demos run from the docs page, in their frames.
    let boot = run_in_frame(&client, "micro-vm", "guest_boot").await;
    assert!(boot.ends_with(" ms") || boot.ends_with(" µs"), "{boot}");
    let pss = run_in_frame(&client, "postgres-container", "memory_pss").await;
    assert!(pss.ends_with("MiB"), "{pss}");
    // The frame grew with its results (the height is posted, not fixed).
    let mut after = before;
    for _ in 0..40 {
        after = frame_height(&client, "micro-vm").await;
        if after > before + 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after > before + 50.0, "frame {before} → {after} px");
    screenshot(&client, "embed-docs-site-live").await;
    // The host page's theme and accent reached the card.
    let styled = in_frame(
        &client,
        "micro-vm",
        "return [document.documentElement.dataset.theme, getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()]",
    )
    .await;
    assert_eq!(styled, json!(["dark", "#aa00aa"]));

    // The exported lessons run their demos on the lab (`--lab`), across
    // origins.
    stacklab_server::tools::export::export(&dist_dir(), exported.path(), Some(&lab_url)).unwrap();
    open(
        &client,
        &format!("{export_site}/lessons/postgres-both-ways/"),
    )
    .await;
    let lessons = lessons();
    let title = &lessons
        .iter()
        .find(|l| l.slug == "postgres-both-ways")
        .unwrap()
        .title;
    wait_for_h1(&client, title).await;
    let card = r#"section.demo-card[data-demo="hello-container"]"#;
    // A lesson's card asks for a guess first.
    no_guess(&client, card).await;
    click(&client, &format!("{card} button.run")).await;
    let platform = reading_text(
        &client,
        &format!(r#"{card} tr[data-key="platform_share"] td.num"#),
    )
    .await;
    assert!(platform.ends_with(" ms"), "{platform}");

    // Back on the docs page: the element without children now has the
    // lab's latest result to show (and this browser remembers it).
    open(&client, &format!("{docs}/index.html")).await;
    wait_for_state(&client, "micro-vm", "live").await;

    // The same page served from an origin the lab does not allow.
    let (_other_server, other) = serve_static(site.path()).await;
    open(&client, &format!("{other}/index.html")).await;
    wait_for_state(&client, "micro-vm", "refused").await;
    let note = shadow_text(&client, "micro-vm", ".note").await;
    assert!(
        note.contains(&format!("pages on {other} may not use this lab"))
            && note.contains("--embed-origin"),
        "{note}"
    );
    let framed = eval(
        &client,
        "return [...document.querySelectorAll('stacklab-demo')].some(e => !!e.shadowRoot.querySelector('iframe').getAttribute('src'))",
        vec![],
    )
    .await;
    assert_eq!(framed, json!(false), "no demo is framed on a refused site");
    screenshot(&client, "embed-refused-origin").await;

    // The lab goes down.
    proxy.close().await;
    open(&client, &format!("{docs}/own-copy.html")).await;
    wait_for_state(&client, "postgres-container", "fallback").await;
    wait_for_state(&client, "micro-vm", "fallback").await;
    assert!(fallback_shown(&client).await, "children are the fallback");
    let latest = shadow_text(&client, "micro-vm", ".latest").await;
    assert!(
        latest.contains("Guest boot") || latest.contains("guest"),
        "the remembered result shows its figures: {latest}"
    );
    assert!(latest.contains("Remembered by this browser"), "{latest}");
    assert!(latest.contains("Measured "), "says when: {latest}");
    let note = shadow_text(&client, "micro-vm", ".note").await;
    assert!(note.contains("is unreachable"), "{note}");
    screenshot(&client, "embed-lab-down").await;

    // This browser has embed.js cached from the lab: the page that loads
    // it from the (dead) lab still gets the element, which falls back.
    open(&client, &format!("{docs}/index.html")).await;
    wait_for_state(&client, "postgres-container", "fallback").await;
    assert!(fallback_shown(&client).await);
    client.close().await.unwrap();
    // A new reader (cold cache) cannot load embed.js from a dead lab at
    // all: the element never upgrades, and its children simply stay.
    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    open(&client, &format!("{docs}/index.html")).await;
    assert!(fallback_shown(&client).await);
    let defined = eval(
        &client,
        "return !!customElements.get('stacklab-demo')",
        vec![],
    )
    .await;
    assert_eq!(defined, json!(false));
    client.close().await.unwrap();
}

/// The `mdbook-stacklab` binary, built now if it is not (cargo is at
/// hand: this runs under `cargo test`).
fn preprocessor() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "mdbook-stacklab"])
        .current_dir(repo_root())
        .status()
        .expect("cargo build -p mdbook-stacklab");
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug/mdbook-stacklab")
}

/// mdBook, as `./dev install` puts it (crates.io, version pinned there).
fn mdbook() -> Option<PathBuf> {
    let path = repo_root().join("target/tools/mdbook/bin/mdbook");
    if path.is_file() {
        return Some(path);
    }
    let why = format!("{} is missing (./dev install builds it)", path.display());
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// A book built with `mdbook build` and the preprocessor: its chapter
/// carries the element, and the demo runs from the built book.
#[tokio::test(flavor = "multi_thread")]
async fn an_mdbook_book_built_with_the_preprocessor_runs_a_demo() {
    let Some(mdbook) = mdbook() else { return };
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let book = tempfile::tempdir().unwrap();
    let out = book.path().join("book");
    std::fs::create_dir_all(&out).unwrap();
    // The site's origin comes first (the lab must allow it).
    let (_docs_server, docs) = serve_static(&out).await;
    let lab = lab_for(&[&docs]).await;
    std::fs::create_dir_all(book.path().join("src")).unwrap();
    std::fs::write(
        book.path().join("book.toml"),
        format!(
            "[book]\ntitle = \"Docs with a live demo\"\n\n[preprocessor.stacklab]\ncommand = \"{}\"\nlab = \"{lab}\"\n",
            preprocessor().display()
        ),
    )
    .unwrap();
    std::fs::write(
        book.path().join("src/SUMMARY.md"),
        "# Summary\n\n- [Micro-VMs](micro-vms.md)\n",
    )
    .unwrap();
    std::fs::write(
        book.path().join("src/micro-vms.md"),
        "# Micro-VMs\n\nBoot one on the lab:\n\n```stacklab demo=micro-vm\nThe lab boots a tiny guest in a KVM virtual machine.\n```\n",
    )
    .unwrap();
    let built = std::process::Command::new(&mdbook)
        .args(["build", "--dest-dir"])
        .arg(&out)
        .current_dir(book.path())
        .output()
        .expect("mdbook build");
    assert!(built.status.success(), "mdbook build: {built:?}");
    let chapter = std::fs::read_to_string(out.join("micro-vms.html")).unwrap();
    // The element, with its fallback inside it.
    let element = chapter
        .find(r#"<stacklab-demo demo="micro-vm">"#)
        .unwrap_or_else(|| panic!("no element in {chapter}"));
    let fallback = chapter
        .find("<p>The lab boots a tiny guest in a KVM virtual machine.</p>")
        .unwrap();
    let end = chapter.find("</stacklab-demo>").unwrap();
    assert!(element < fallback && fallback < end, "{chapter}");
    assert!(chapter.contains(&format!(
        r#"<script type="module" src="{lab}/embed.js"></script>"#
    )));

    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    open(&client, &format!("{docs}/micro-vms.html")).await;
    wait_for_state(&client, "micro-vm", "live").await;
    let boot = run_in_frame(&client, "micro-vm", "guest_boot").await;
    assert!(boot.ends_with(" ms") || boot.ends_with(" µs"), "{boot}");
    screenshot(&client, "embed-mdbook").await;
    client.close().await.unwrap();
}

/// `stacklab export` writes the lessons as files; with JavaScript off a
/// reader gets the text, the headings and the diagram, and the links lead
/// to the next lesson's page.
#[tokio::test(flavor = "multi_thread")]
async fn an_exported_lesson_reads_with_javascript_off() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let site = tempfile::tempdir().unwrap();
    let done = stacklab_server::tools::export::export(
        &dist_dir(),
        site.path(),
        Some("http://127.0.0.1:9"),
    )
    .unwrap();
    assert!(done.assets >= 3, "the app's files are copied: {done:?}");
    let (_server, origin) = serve_static(site.path()).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser_with(
        port,
        profile.path(),
        &["--blink-settings=scriptEnabled=false"],
    )
    .await;
    let lessons = lessons();
    let i = lessons.iter().position(|l| l.slug == "containers").unwrap();
    let lesson = &lessons[i];
    open(&client, &format!("{origin}/lessons/containers/")).await;
    assert_eq!(text_of(&client, "main h1").await, lesson.title);
    check_sections(&client, lesson).await;
    let layer = text_of(
        &client,
        r#"figure.stack-diagram g.layer[data-layer="Docker Engine"]"#,
    )
    .await;
    assert!(layer.contains("Docker Engine"), "{layer}");
    // JavaScript really is off: the app never took the page over.
    assert!(client.find(Locator::Id("prerendered")).await.is_ok());
    screenshot(&client, "export-no-js").await;
    // Navigable: the pager leads to the next lesson's page.
    let next = &lessons[i + 1];
    click(&client, "nav.pager a.next").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while text_of(&client, "main h1").await != next.title {
        assert!(tokio::time::Instant::now() < deadline, "no next lesson");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A demo's card says what it does and what running it needs.
    open(&client, &format!("{origin}/lessons/postgres-both-ways/")).await;
    let card = text_of(&client, r#"section.demo-card[data-demo="hello-container"]"#).await;
    assert!(card.contains("needs JavaScript"), "{card}");
    client.close().await.unwrap();
}

/// Time to the lesson's first heading, from navigation start, on a cold
/// cache over loopback: with the bare app shell (before) and with the
/// pre-rendered page (after). Reported, with the bundle's size; not a
/// pass/fail timing. And `curl` sees the lesson's text.
#[tokio::test(flavor = "multi_thread")]
async fn the_lessons_text_paints_before_the_app_has_loaded() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let after = start_server().await;
    let before =
        start_server_with(AppState::new(Some(dist_dir()), Default::default()).without_prerender())
            .await;
    let lessons = lessons();
    let lesson = lessons.iter().find(|l| l.slug == "containers").unwrap();

    let curl = std::process::Command::new("curl")
        .args(["-fsS", &format!("{after}/lessons/containers")])
        .output()
        .expect("curl");
    let html = String::from_utf8_lossy(&curl.stdout);
    assert!(
        html.contains(&format!(
            "<h1 elementtiming=\"lesson-heading\">{}</h1>",
            lesson.title
        )),
        "{html}"
    );
    let first_section = &lesson.sections[0];
    assert!(html.contains(&first_section.title.to_string()));

    const TRIES: usize = 3;
    let mut rows = Vec::new();
    for (name, base) in [
        ("before: app shell only", &before),
        ("after: pre-rendered", &after),
    ] {
        let mut heading = Vec::new();
        let mut fcp = Vec::new();
        for _ in 0..TRIES {
            // A new profile: a cold cache.
            let profile = tempfile::tempdir().unwrap();
            let client = browser(port, profile.path()).await;
            open(&client, &format!("{base}/lessons/containers")).await;
            wait_for_h1(&client, &lesson.title).await;
            let (h, f) = paint_times(&client).await;
            heading.push(h);
            fcp.extend(f);
            client.close().await.unwrap();
        }
        let fcp = match fcp.len() {
            0 => "not reported by the browser".to_string(),
            n => format!("{:7.1} ms ({n} of {TRIES} reported)", median(fcp)),
        };
        rows.push((name, median(heading), fcp));
    }
    let bundle = bundle_bytes(&dist_dir());
    let mut report = format!(
        "Time to the first lesson text: /lessons/containers, navigation start to the paint of its <h1> (Element Timing), cold cache (new profile), loopback, headless Chromium; median of {TRIES}.\n"
    );
    for (name, heading, fcp) in &rows {
        report.push_str(&format!(
            "{name:<24} heading painted at {heading:7.1} ms   first contentful paint {fcp}\n"
        ));
    }
    report.push_str(&format!(
        "ratio (before / after, heading): {:.1}x\napp bundle (wasm + js, uncompressed): {bundle} bytes; the pre-rendered page needs none of it for its text\nload: the other tests of this file may run at the same time (cargo runs tests in parallel); for a quiet figure run this test alone: cargo test -p stacklab-tests --test embed the_lessons_text\n",
        rows[0].1 / rows[1].1
    ));
    std::fs::write(output_dir().join("first-paint.txt"), &report).unwrap();
    eprintln!("{report}");
}

/// When the lesson's heading was painted and the first contentful paint,
/// in ms since navigation start. The first contentful paint is missing
/// when the browser has not reported it 2 s after the heading's paint.
async fn paint_times(client: &Client) -> (f64, Option<f64>) {
    let times = client
        .execute_async(
            // Both entries are observed as they come: the heading can be
            // in the DOM before anything is painted, so neither may exist
            // yet when this script starts (reading the first contentful
            // paint only then found none on a loaded CI machine).
            r#"const done = arguments[arguments.length - 1];
            let heading = null, fcp = null, sent = false;
            const send = () => {
                if (sent) return;
                sent = true;
                observer.disconnect();
                done([heading, fcp]);
            };
            const observer = new PerformanceObserver((list) => {
                for (const e of list.getEntries()) {
                    if (e.entryType === 'element' && e.identifier === 'lesson-heading') {
                        heading = e.renderTime || e.loadTime;
                    }
                    if (e.entryType === 'paint' && e.name === 'first-contentful-paint') {
                        fcp = e.startTime;
                    }
                }
                if (heading !== null && fcp !== null) send();
                else if (heading !== null) setTimeout(send, 2000);
            });
            observer.observe({ type: 'element', buffered: true });
            observer.observe({ type: 'paint', buffered: true });"#,
            vec![],
        )
        .await
        .expect("the heading's paint was observed");
    let t = times.as_array().expect("two paint times");
    let heading = t[0]
        .as_f64()
        .unwrap_or_else(|| panic!("the heading's paint time is not a number: {times}"));
    (heading, t[1].as_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The app's `.wasm` and `.js` files in `dist`, in bytes.
fn bundle_bytes(dist: &Path) -> u64 {
    std::fs::read_dir(dist)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".wasm") || name.ends_with(".js")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}
