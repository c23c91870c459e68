//! Helpers the browser scenarios share: chromedriver and Chromium, the
//! server under test, and small waits and clicks that read as steps.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use stacklab_content::render::{load_dir, load_glossary};
use stacklab_content::Lesson;
use tokio::process::{Child, Command};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const WAIT: Duration = Duration::from_secs(20);
/// The wait for results that need real containers started one after the
/// other (a PostgreSQL run, a series, a density sweep) on a cold, loaded
/// 2-core host.
pub const RUN_WAIT: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromedriver on a free port, killed when dropped.
pub async fn chromedriver() -> Option<(Child, u16)> {
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

/// One learner's browser on a server of its own: the driver, the server's
/// base URL, a fresh profile and the browser (`None` where chromedriver
/// is missing outside CI). Keep it alive for the test: dropping it stops
/// the driver and removes the profile.
pub struct Session {
    pub client: Client,
    pub base: String,
    pub profile: tempfile::TempDir,
    pub driver: Child,
}

/// A [`Session`] on a new server.
pub async fn session() -> Option<Session> {
    session_with(stacklab_server::AppState::new(
        Some(dist_dir()),
        Default::default(),
    ))
    .await
}

/// A [`Session`] on a new server with this state (an instructor token).
pub async fn session_with(state: stacklab_server::AppState) -> Option<Session> {
    let (driver, port) = chromedriver().await?;
    let base = start_server_with(state).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(port, profile.path()).await;
    Some(Session {
        client,
        base,
        profile,
        driver,
    })
}

pub async fn browser(driver_port: u16, profile: &Path) -> Client {
    browser_with(driver_port, profile, &[]).await
}

/// [`browser`] with more Chromium flags (`--blink-settings=scriptEnabled=false`).
pub async fn browser_with(driver_port: u16, profile: &Path, extra: &[&str]) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("connect to chromedriver")
}

pub fn dist_dir() -> PathBuf {
    let dist = repo_root().join("frontend/dist");
    assert!(
        dist.join("index.html").is_file(),
        "frontend/dist is not built: run `trunk build --release` (./dev test does it)"
    );
    dist
}

/// The stacklab server, in-process on a free port, serving the built frontend.
pub async fn start_server() -> String {
    start_server_with(stacklab_server::AppState::new(
        Some(dist_dir()),
        Default::default(),
    ))
    .await
}

/// As [`start_server`] with a given state (the test keeps a clone to reach
/// the server's store).
pub async fn start_server_with(state: stacklab_server::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(stacklab_server::run(
        listener,
        state,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

pub fn output_dir() -> PathBuf {
    let dir = repo_root().join("test-output/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(output_dir().join(format!("{name}.png")), png).unwrap();
}

/// A screenshot taken on the way to a failure: one that cannot be taken
/// (the browser is gone) must not hide the failure's own message.
async fn screenshot_if_possible(client: &Client, name: &str) {
    match client.screenshot().await {
        Ok(png) => {
            let _ = std::fs::write(output_dir().join(format!("{name}.png")), png);
        }
        Err(e) => eprintln!("no screenshot {name}: {e}"),
    }
}

pub async fn text_of(client: &Client, css: &str) -> String {
    text_within(client, css, WAIT).await
}

/// Runs a JavaScript snippet in the page and returns its value.
pub async fn eval(client: &Client, js: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
    client
        .execute(js, args)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Makes the window `width` px wide (1000 high) and waits until the page
/// has its new width (the renderer learns it later) and has been laid out
/// and painted at it.
pub async fn resize(client: &Client, width: u32) {
    client.set_window_rect(0, 0, width, 1000).await.unwrap();
    // The window's frame may take up to 40 px of its width.
    until(
        client,
        &format!("return window.innerWidth <= {width} && window.innerWidth + 40 >= {width}"),
        &format!("the page is {width} px wide"),
    )
    .await;
    client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             requestAnimationFrame(() => requestAnimationFrame(() => done(null)));",
            vec![],
        )
        .await
        .unwrap();
}

/// Waits (up to [`WAIT`]) until `js`, a function body, returns true in
/// the page (a script that cannot run yet, the page being replaced, is
/// tried again).
pub async fn until(client: &Client, js: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let said = client.execute(js, vec![]).await;
        if matches!(said, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            screenshot_if_possible(client, "failure").await;
            panic!("{what}: not within {WAIT:?} (the page said {said:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of a result reading (`css` inside a demo card's "All readings"
/// disclosure): waits for it, opens the disclosures, then reads it as shown.
pub async fn reading_text(client: &Client, css: &str) -> String {
    reading_within(client, css, WAIT).await
}

/// [`reading_text`] with its own wait.
pub async fn reading_within(client: &Client, css: &str, wait: Duration) -> String {
    // Present (or a screenshot and the card's status on failure)...
    text_within(client, css, wait).await;
    // ...then shown.
    client
        .execute(
            "document.querySelectorAll('details.readings').forEach(d => d.open = true)",
            vec![],
        )
        .await
        .unwrap();
    text_within(client, css, WAIT).await
}

/// The element `css`, waiting up to `wait` for it. While a page is being
/// replaced (a navigation, a redraw) a lookup can fail for other reasons
/// than "no such element" ("aborted by navigation"): it is tried again
/// until the deadline. The last error when it did not come.
pub async fn try_find_within(
    client: &Client,
    css: &str,
    wait: Duration,
) -> Result<Element, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(el) => return Ok(el),
            Err(e) if tokio::time::Instant::now() > deadline || cannot_recover(&e) => {
                return Err(e.to_string())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// [`try_find_within`], failing the test when the element did not come.
pub async fn find_within(client: &Client, css: &str, wait: Duration) -> Element {
    match try_find_within(client, css, wait).await {
        Ok(el) => el,
        Err(e) => no_element(client, css, wait, &e).await,
    }
}

/// Errors that waiting longer cannot cure: the browser session is gone, or
/// the selector itself is wrong.
fn cannot_recover(e: &fantoccini::error::CmdError) -> bool {
    let said = e.to_string();
    said.contains("invalid session id") || said.contains("invalid selector")
}

/// Fails the test: `css` did not come within `wait`. With a screenshot
/// and what the page's cards said instead (a failure, a missing reading).
async fn no_element(client: &Client, css: &str, wait: Duration, error: &str) -> ! {
    screenshot_if_possible(client, "failure").await;
    let url = client.current_url().await.ok();
    let mut said = Vec::new();
    for el in client
        .find_all(Locator::Css(".demo-card .status, tr.missing"))
        .await
        .unwrap_or_default()
    {
        let text = el.text().await.unwrap_or_default();
        if !text.trim().is_empty() {
            said.push(text);
        }
    }
    panic!("no element {css:?} within {wait:?} at {url:?}: {error}; the page said: {said:?}")
}

/// The text of `css`, waiting up to `wait` for it to appear.
pub async fn text_within(client: &Client, css: &str, wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = match try_find_within(client, css, left).await {
            Ok(el) => el.text().await.map_err(|e| e.to_string()),
            Err(e) => no_element(client, css, wait, &e).await,
        };
        match text {
            Ok(text) => return text,
            // Drawn again between finding and reading (a live page): read
            // the new one.
            Err(e) if tokio::time::Instant::now() > deadline => {
                no_element(client, css, wait, &e).await
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the page's `<h1>` reads `title` and the WASM app drew it
/// (the page's static form, sent first, is gone).
pub async fn wait_for_h1(client: &Client, title: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h1 = match client.find(Locator::Css("main h1")).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if h1 == title && client.find(Locator::Id("prerendered")).await.is_err() {
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

/// Opens `url`, again when the load fails or Chromium shows its own error
/// page instead (`ERR_NETWORK_CHANGED`: other tests on this host add and
/// remove Docker network interfaces, and Chromium drops a page load when
/// one appears).
pub async fn open(client: &Client, url: &str) {
    let mut last = String::new();
    for attempt in 1..=3 {
        match client.goto(url).await {
            Ok(()) if !shows_error_page(client).await => return,
            Ok(()) => last = "Chromium showed its error page".to_string(),
            Err(e) => last = e.to_string(),
        }
        eprintln!("{url}: load {attempt} of 3 failed ({last})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{url}: not loaded in three tries; the last: {last}");
}

/// Loads the current page again, as the browser's reload button does; if
/// that load is dropped (see [`open`]), opens the page's address again.
pub async fn reload(client: &Client) {
    let url = client.current_url().await.unwrap();
    if client.refresh().await.is_err() || shows_error_page(client).await {
        open(client, url.as_str()).await;
    }
}

/// Whether the page is Chromium's own error page. A check that cannot
/// run (the page is navigating itself on load) is tried again; if it never
/// runs, the page is taken as loaded, and the waits that follow say what
/// it shows.
async fn shows_error_page(client: &Client) -> bool {
    for _ in 0..5 {
        let check = client
            .execute(
                "return document.documentURI.startsWith('chrome-error:') || !!document.querySelector('#main-frame-error')",
                vec![],
            )
            .await;
        match check {
            Ok(v) => return v == serde_json::Value::Bool(true),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

/// Opens the home page at `base`, then a lesson through its link there
/// (client-side navigation), and waits for it to render.
pub async fn open_from_home(client: &Client, base: &str, lesson: &Lesson) {
    open(client, base).await;
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

/// Clicks the element `css` names, waiting for it to appear (a page's
/// static form is there before the app that adds buttons).
pub async fn click(client: &Client, css: &str) {
    // Not clicked again on an error: a click that started a navigation
    // may report one, and a second click would land on the next page.
    find_within(client, css, WAIT)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

/// The `data-phase` of every timeline entry of a demo card, in order.
pub async fn phases_of(client: &Client, card: &str) -> Vec<stacklab_api::Phase> {
    let mut phases = Vec::new();
    for li in client
        .find_all(Locator::Css(&format!("{card} .timeline li")))
        .await
        .unwrap()
    {
        let name = li.attr("data-phase").await.unwrap().unwrap_or_default();
        phases.push(
            name.parse()
                .unwrap_or_else(|e| panic!("the page shows a phase the API does not know: {e}")),
        );
    }
    phases
}

/// Asserts that a stack-diagram layer has lit up for a live run.
pub async fn assert_lit(client: &Client, css: &str) {
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
pub async fn screenshot_of(client: &Client, css: &str, name: &str) {
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
pub async fn wait_for_text(client: &Client, css: &str, needle: &str) {
    wait_for_text_within(client, css, needle, WAIT).await
}

/// [`wait_for_text`] with its own wait.
pub async fn wait_for_text_within(client: &Client, css: &str, needle: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
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

pub async fn check_sections(client: &Client, lesson: &Lesson) {
    for section in lesson.sections.iter() {
        let text = text_of(client, &format!("h2#{}", section.id)).await;
        assert_eq!(text, section.title, "lesson {}", lesson.slug);
    }
}

pub fn lessons() -> Vec<Lesson> {
    let content = repo_root().join("content");
    let glossary = load_glossary(&content.join("glossary.yaml")).unwrap();
    load_dir(&content.join("lessons"), &glossary).unwrap()
}

/// A plain static file server (Python's `http.server`) over `dir` on a
/// free loopback port, the way a docs site is served: killed when the
/// child is dropped. Returns it and its origin.
pub async fn serve_static(dir: &Path) -> (Child, String) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("python3 -m http.server did not listen on {port} within 5 s");
}

/// A TCP proxy in front of a server, which can cut every connection open
/// through it (a network blip) and keeps taking new ones, or close for
/// good (the server, as its clients see it, is down).
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    cut: std::sync::Arc<tokio::sync::Notify>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub async fn to(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = std::sync::Arc::new(tokio::sync::Notify::new());
        let cuts = cut.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (upstream, cut) = (upstream.clone(), cuts.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Proxy {
            url,
            cut,
            accepting,
        }
    }

    /// Stops listening and drops every connection: nothing answers at
    /// its address any more.
    pub async fn close(self) {
        self.accepting.abort();
        let _ = self.accepting.await;
        self.cut.notify_waiters();
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }
}

/// "I'd rather not guess" on a demo card: its Run button waits for a guess
/// or this.
pub async fn no_guess(client: &Client, card: &str) {
    click(client, &format!("{card} button.decline")).await;
}

/// Moves the range input `css` to `value`, as a learner's drag would.
pub async fn slide(client: &Client, css: &str, value: f64) {
    click(client, css).await;
    eval(
        client,
        "const e = document.querySelector(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input', { bubbles: true }));",
        vec![json!(css), json!(value)],
    )
    .await;
}

/// The index (in the lesson's order) of the right choice of question
/// `number` of `lesson`.
pub fn quiz_answer(lesson: &Lesson, number: u32) -> u32 {
    lesson
        .blocks
        .iter()
        .find_map(|b| match b {
            stacklab_content::Block::Quiz(qs) => qs.iter().find(|q| q.number == number),
            _ => None,
        })
        .map(|q| q.answer)
        .unwrap_or_else(|| panic!("{} has no question {number}", lesson.slug))
}
