//! End to end in a real browser: Debian's Chromium, headless, driven through
//! chromedriver by fantoccini, against the real server and the real built
//! frontend (`frontend/dist`, built by `./dev test`).
//!
//! Screenshots land in `test-output/e2e/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use stacklab_content::render::load_dir;
use stacklab_content::Lesson;
use tokio::process::{Child, Command};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromedriver on a free port, killed when dropped.
async fn chromedriver() -> Option<(Child, u16)> {
    if !Path::new(CHROMEDRIVER).exists() {
        let why = format!("{CHROMEDRIVER} is missing (apt-get install chromium chromium-driver; ./dev test does it)");
        // CI must run the browser tests: a missing driver there is a failure.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start chromedriver");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some((child, port));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port} within 10 s");
}

async fn browser(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("connect to chromedriver")
}

fn dist_dir() -> PathBuf {
    let dist = repo_root().join("frontend/dist");
    assert!(
        dist.join("index.html").is_file(),
        "frontend/dist is not built: run `trunk build --release` (./dev test does it)"
    );
    dist
}

/// The stacklab server, in-process on a free port, serving the built frontend.
async fn start_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = stacklab_server::AppState::new(Some(dist_dir()), Default::default());
    tokio::spawn(stacklab_server::run(
        listener,
        state,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

fn output_dir() -> PathBuf {
    let dir = repo_root().join("test-output/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(output_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    text_within(client, css, WAIT).await
}

/// The text of `css`, waiting up to `wait` for it to appear.
async fn text_within(client: &Client, css: &str, wait: Duration) -> String {
    let el = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(css))
        .await;
    match el {
        Ok(el) => el.text().await.unwrap(),
        Err(e) => {
            screenshot(client, "failure").await;
            let url = client.current_url().await.ok();
            panic!("no element {css:?} within {wait:?} at {url:?}: {e}")
        }
    }
}

/// Waits until the page's `<h1>` reads `title` (the WASM app rendered it).
async fn wait_for_h1(client: &Client, title: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h1 = match client.find(Locator::Css("main h1")).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if h1 == title {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            screenshot(client, "failure").await;
            let body = client.source().await.unwrap_or_default();
            panic!(
                "expected <h1> {title:?}, found {h1:?} after {WAIT:?}; page: {}",
                &body[..body.len().min(2000)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens the home page at `base`, then a lesson through its link there
/// (client-side navigation), and waits for it to render.
async fn open_from_home(client: &Client, base: &str, lesson: &Lesson) {
    client.goto(base).await.unwrap();
    wait_for_h1(client, "Containers and virtual machines, run for real").await;
    client
        .find(Locator::LinkText(&lesson.title))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_h1(client, &lesson.title).await;
}

/// Clicks the element `css` names.
async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The `data-phase` of every timeline entry of a demo card, in order.
async fn phases_of(client: &Client, card: &str) -> Vec<String> {
    let mut phases = Vec::new();
    for li in client
        .find_all(Locator::Css(&format!("{card} .timeline li")))
        .await
        .unwrap()
    {
        phases.push(li.attr("data-phase").await.unwrap().unwrap_or_default());
    }
    phases
}

/// Asserts that a stack-diagram layer has lit up for a live run.
async fn assert_lit(client: &Client, css: &str) {
    let el = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    let class = el.attr("class").await.unwrap().unwrap_or_default();
    assert!(
        class.split_whitespace().any(|c| c == "lit"),
        "{css} is not lit: {class:?}"
    );
}

/// Scrolls `css` into view, then saves a screenshot.
async fn screenshot_of(client: &Client, css: &str, name: &str) {
    client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView()",
            vec![serde_json::json!(css)],
        )
        .await
        .unwrap();
    screenshot(client, name).await;
}

/// Waits until the element's text contains `needle`.
async fn wait_for_text(client: &Client, css: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = text_of(client, css).await;
        if text.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never said {needle:?}; it says {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_sections(client: &Client, lesson: &Lesson) {
    for section in lesson.sections.iter() {
        let text = text_of(client, &format!("h2#{}", section.id)).await;
        assert_eq!(text, section.title, "lesson {}", lesson.slug);
    }
}

fn lessons() -> Vec<Lesson> {
    load_dir(&repo_root().join("content/lessons")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_reads_every_lesson_in_the_browser() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let base = start_server().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    let lessons = lessons();

    // Home: the WASM app starts (a blank page fails here) and lists the course.
    client.goto(&base).await.unwrap();
    wait_for_h1(&client, "Containers and virtual machines, run for real").await;
    let cards = client.find_all(Locator::Css(".lesson-card")).await.unwrap();
    assert_eq!(cards.len(), lessons.len());
    screenshot(&client, "01-home").await;

    // Into the first lesson from its card, then through the whole course with
    // the "Next" links (client-side navigation).
    client
        .find(Locator::LinkText(&lessons[0].title))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (i, lesson) in lessons.iter().enumerate() {
        wait_for_h1(&client, &lesson.title).await;
        assert!(client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&*lesson.slug));
        check_sections(&client, lesson).await;
        let meta = text_of(&client, "article.lesson > p.meta").await;
        assert!(
            meta.contains(&format!("Lesson {} of {}", i + 1, lessons.len())),
            "{meta}"
        );
        assert!(meta.contains("min read"), "{meta}");
        screenshot(&client, &format!("lesson-{}-{}", i + 1, lesson.slug)).await;
        if let Some(next) = lessons.get(i + 1) {
            client
                .find(Locator::Css("a[rel=next]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for_h1(&client, &next.title).await;
        } else {
            assert!(
                client.find(Locator::Css("a[rel=next]")).await.is_err(),
                "the last lesson has no next"
            );
        }
    }

    // The comparison lesson: click a layer of each stack, read its explanation.
    let diff = lessons
        .iter()
        .find(|l| l.slug == "key-differences")
        .unwrap();
    client
        .goto(&format!("{base}/lessons/{}", diff.slug))
        .await
        .unwrap();
    wait_for_h1(&client, &diff.title).await;
    let caption = ".stack-diagram figcaption";
    assert!(text_of(&client, caption).await.contains("Select a layer"));
    client
        .find(Locator::Css(
            r#"g[aria-label="Virtual machine: Hypervisor"]"#,
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let explained = text_of(&client, caption).await;
    assert!(
        explained.contains("Virtual machine · Hypervisor"),
        "{explained}"
    );
    assert!(
        explained.contains("KVM is part of the Linux kernel"),
        "{explained}"
    );
    let pressed = client
        .find(Locator::Css(
            r#"g[aria-label="Virtual machine: Hypervisor"]"#,
        ))
        .await
        .unwrap()
        .attr("aria-pressed")
        .await
        .unwrap();
    assert_eq!(pressed.as_deref(), Some("true"));
    // Keyboard: focus the container's engine layer and press Enter.
    let engine = client
        .find(Locator::Css(
            r#"g[aria-label="Docker container: Docker Engine"]"#,
        ))
        .await
        .unwrap();
    client
        .execute(
            "arguments[0].focus();",
            vec![serde_json::to_value(&engine).unwrap()],
        )
        .await
        .unwrap();
    client
        .active_element()
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    let explained = text_of(&client, caption).await;
    assert!(
        explained.contains("Docker container · Docker Engine"),
        "{explained}"
    );
    screenshot(&client, "diagram-selected").await;

    // The container demo, run for real from the lesson.
    client
        .goto(&format!("{base}/lessons/postgres-both-ways"))
        .await
        .unwrap();
    let card = r#"section.demo-card[data-demo="postgres-container"]"#;
    let text = text_of(&client, card).await;
    assert!(
        text.contains("LIVE DEMO") || text.contains("Live demo"),
        "{text}"
    );
    click(&client, &format!("{card} button.run")).await;
    let pss = text_of(
        &client,
        &format!(r#"{card} tr[data-key="memory_pss"] td.num"#),
    )
    .await;
    assert!(pss.ends_with("MiB"), "{pss}");
    let phases = phases_of(&client, card).await;
    assert_eq!(phases.first().map(String::as_str), Some("accepted"));
    assert_eq!(
        phases.last().map(String::as_str),
        Some("ready"),
        "{phases:?}"
    );
    let image = text_of(&client, &format!(r#"{card} tr[data-key="image"] td"#)).await;
    assert!(
        image.contains("postgres"),
        "the widget says which image ran: {image}"
    );
    let status = text_of(&client, &format!("{card} .status")).await;
    assert!(status.starts_with("Ready."), "{status}");
    // Its stack diagram lit up, each layer with the time it was reached.
    assert_lit(
        &client,
        &format!(r#"{card} g[aria-label="Docker container: Docker Engine"]"#),
    )
    .await;
    let layer = text_of(
        &client,
        &format!(r#"{card} g[aria-label="Docker container: Container (app + dependencies)"]"#),
    )
    .await;
    assert!(
        layer.contains(" ms"),
        "the container layer carries its time: {layer}"
    );
    screenshot_of(&client, card, "container-demo-ready").await;

    // The micro-VM demo: our VMM boots the guest kernel on KVM.
    let vm = r#"section.demo-card[data-demo="micro-vm"]"#;
    click(&client, &format!("{vm} button.run")).await;
    let boot = text_of(
        &client,
        &format!(r#"{vm} tr[data-key="guest_boot"] td.num"#),
    )
    .await;
    assert!(boot.ends_with(" ms") || boot.ends_with(" µs"), "{boot}");
    let phases = phases_of(&client, vm).await;
    assert!(
        phases.contains(&"guest_user_return".to_owned()),
        "{phases:?}"
    );
    assert_eq!(
        phases.last().map(String::as_str),
        Some("ready"),
        "{phases:?}"
    );
    assert_lit(
        &client,
        &format!(r#"{vm} g[aria-label="Virtual machine: Guest OS"]"#),
    )
    .await;
    screenshot_of(&client, vm, "micro-vm-demo-ready").await;

    // A real Linux guest: on a nested kvm-pvm host the widget says plainly
    // why it cannot boot here; with hardware KVM it boots.
    let linux = r#"section.demo-card[data-demo="linux-vm"]"#;
    let nested =
        stacklab_vmm::host::probe().is_ok_and(|h| h.backing == stacklab_api::KvmBacking::NestedPvm);
    if nested {
        // Said before any click, from /api/health; the button is off.
        wait_for_text(&client, &format!("{linux} .host-note"), "cannot boot here").await;
        let note = text_of(&client, &format!("{linux} .host-note")).await;
        assert!(note.contains("hardware virtualisation"), "{note}");
        let button = client
            .find(Locator::Css(&format!("{linux} button.run")))
            .await
            .unwrap();
        assert!(!button.is_enabled().await.unwrap(), "nothing to start here");
        // The PostgreSQL-in-a-VM card shares the same answer.
        let pg_vm = r#"section.demo-card[data-demo="postgres-vm"]"#;
        wait_for_text(&client, &format!("{pg_vm} .host-note"), "cannot boot here").await;
        screenshot_of(&client, linux, "linux-vm-unavailable-on-this-host").await;
    } else {
        click(&client, &format!("{linux} button.run")).await;
        text_within(
            &client,
            &format!(r#"{linux} tr[data-key="guest_boot"] td.num"#),
            Duration::from_secs(60),
        )
        .await;
        screenshot_of(&client, linux, "linux-vm-ready").await;
    }

    // The compare block (next lesson, reached by a client-side link so the
    // runs above are kept) fills its table from them.
    client
        .find(Locator::Css("a[rel=next]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let cmp = r#"section.demo-card[data-demo="compare"]"#;
    wait_for_text(
        &client,
        &format!("{cmp} table"),
        "kernel inside = kernel on the host",
    )
    .await;
    let table = text_of(&client, &format!("{cmp} table")).await;
    assert!(table.contains("to the first SELECT 1"), "{table}");
    assert!(table.contains("hypervisor"), "{table}");
    assert!(!table.contains("not run yet"), "both demos ran: {table}");
    screenshot_of(&client, cmp, "compare-filled").await;

    // Density, in the same lesson: 1 to 5 micro-VMs, then 1 to 5 containers,
    // each step charted (five points on each of the two charts).
    for (demo, wait) in [
        ("density-micro-vm", WAIT),
        ("density-container", Duration::from_secs(120)),
    ] {
        let card = format!(r#"section.demo-card[data-demo="{demo}"]"#);
        click(&client, &format!("{card} button.run")).await;
        let last = text_within(
            &client,
            &format!(r#"{card} tr[data-key="memory_total@5"] td.num"#),
            wait,
        )
        .await;
        assert!(last.ends_with("MiB"), "{last}");
        let points = client
            .find_all(Locator::Css(&format!("{card} .density svg circle")))
            .await
            .unwrap();
        assert_eq!(
            points.len(),
            10,
            "{demo}: 5 time points and 5 memory points"
        );
        let label = client
            .find(Locator::Css(&format!("{card} .density svg")))
            .await
            .unwrap()
            .attr("aria-label")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            label.contains("5 → "),
            "the chart's accessible name lists its values: {label}"
        );
        screenshot_of(
            &client,
            &format!("{card} .density"),
            &format!("{demo}-charted"),
        )
        .await;
    }

    // My runs: the four runs above, newest first, charted and exportable.
    click(&client, "a.my-runs").await;
    wait_for_h1(&client, "My runs").await;
    let rows = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("table.runs tbody tr:nth-child(4)"))
        .await;
    assert!(rows.is_ok(), "four runs listed");
    let mut demos = Vec::new();
    let mut ids = Vec::new();
    for tr in client
        .find_all(Locator::Css("table.runs tbody tr"))
        .await
        .unwrap()
    {
        ids.push(tr.attr("data-run").await.unwrap().unwrap_or_default());
        demos.push(
            tr.find(Locator::Css("td:nth-child(2)"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        demos,
        [
            "Density: 1 to 5 containers at once",
            "Density: 1 to 5 micro-VMs at once",
            "A tiny guest in a micro-VM",
            "PostgreSQL 15 in a container"
        ]
    );
    assert_eq!(
        client
            .find_all(Locator::Css(".history svg circle"))
            .await
            .unwrap()
            .len(),
        2
    );
    screenshot(&client, "my-runs").await;
    for (link, needle) in [
        ("CSV", "seq,id,demo,state"),
        ("JSON", "\"time_to_ready_us\""),
    ] {
        let href = client
            .find(Locator::LinkText(link))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        let body = client
            .execute_async(
                "fetch(arguments[0]).then(r => r.text()).then(arguments[1])",
                vec![json!(href)],
            )
            .await
            .unwrap();
        let body = body.as_str().unwrap_or_default();
        assert!(body.contains(needle), "{link}: {body}");
        for id in &ids {
            assert!(body.contains(id.as_str()), "{link} export has run {id}");
        }
    }

    // A deep link survives a reload (the server hands out the app shell).
    let deep = &lessons[2];
    client
        .goto(&format!("{base}/lessons/{}", deep.slug))
        .await
        .unwrap();
    client.refresh().await.unwrap();
    wait_for_h1(&client, &deep.title).await;
    check_sections(&client, deep).await;

    // An unknown lesson is a friendly in-app "not found".
    client
        .goto(&format!("{base}/lessons/no-such-lesson"))
        .await
        .unwrap();
    wait_for_h1(&client, "No such page").await;

    // Narrow phone-sized screen: the page still renders its lesson.
    client.set_window_size(375, 800).await.unwrap();
    client
        .goto(&format!("{base}/lessons/{}", diff.slug))
        .await
        .unwrap();
    wait_for_h1(&client, &diff.title).await;
    // The lesson list folds into a button so the lesson comes first.
    let list = client.find(Locator::Css("#lesson-list")).await.unwrap();
    assert!(
        !list.is_displayed().await.unwrap(),
        "the list starts folded"
    );
    screenshot(&client, "narrow-375px").await;
    click(&client, "button.nav-toggle").await;
    assert!(list.is_displayed().await.unwrap(), "the button unfolds it");
    let expanded = client
        .find(Locator::Css("button.nav-toggle"))
        .await
        .unwrap()
        .attr("aria-expanded")
        .await
        .unwrap();
    assert_eq!(expanded.as_deref(), Some("true"));
    screenshot(&client, "narrow-375px-nav-open").await;
    client
        .find(Locator::LinkText(&lessons[0].title))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_h1(&client, &lessons[0].title).await;
    assert!(
        !list.is_displayed().await.unwrap(),
        "choosing a lesson folds it again"
    );

    client.close().await.unwrap();
}

/// The lessons are static files: with no stacklab server at all (a plain
/// static file server over `frontend/dist`) they still render.
#[tokio::test(flavor = "multi_thread")]
async fn lessons_render_without_the_stacklab_server() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let static_port = free_port();
    let _static_server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &static_port.to_string(),
        ])
        .current_dir(dist_dir())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", static_port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    let lessons = lessons();
    let home = format!("http://127.0.0.1:{static_port}/");
    let last = lessons.last().unwrap();
    open_from_home(&client, &home, last).await;
    check_sections(&client, last).await;
    screenshot(&client, "static-only").await;

    // Without the stacklab server, a live demo says it is unavailable.
    let lesson = lessons
        .iter()
        .find(|l| l.slug == "postgres-both-ways")
        .unwrap();
    open_from_home(&client, &home, lesson).await;
    let card = r#"section.demo-card[data-demo="postgres-container"]"#;
    click(&client, &format!("{card} button.run")).await;
    wait_for_text(
        &client,
        &format!("{card} .status"),
        "The live demo is unavailable",
    )
    .await;
    screenshot(&client, "static-only-demo-unavailable").await;

    // The history needs the server too, and says so.
    // (python's http.server has no app-shell fallback: go through the app.)
    open_from_home(&client, &home, lesson).await;
    click(&client, "a.my-runs").await;
    wait_for_h1(&client, "My runs").await;
    wait_for_text(&client, ".history .status", "The history is unavailable").await;
    screenshot(&client, "static-only-history-unavailable").await;
    client.close().await.unwrap();
}
