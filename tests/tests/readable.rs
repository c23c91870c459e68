//! What people see, measured in a real browser (Debian's Chromium through
//! chromedriver, the real server and built frontend) at a phone's width
//! (375 px), a laptop's (1280 px) and a projector's (1920 px): every result
//! answers its questions with one headline figure each (time, memory), the
//! figure table's headline; no figure or chart label renders under 12 CSS
//! px; the host explanation appears at most once per page. Lessons 4, 5
//! and 6 and a PostgreSQL run page are checked, and screenshots of lessons
//! 4 and 5 and the run page written to `test-output/e2e/`, or to
//! `docs/screenshots/` (the README shows them) with
//! `STACKLAB_DOCS_SCREENSHOTS=1`. A micro-VM density sweep's headline is
//! checked against its run's events (the whole sweep, not its last step)
//! and its run page keeps the step charts; on a host where Linux guests
//! cannot boot, their cards ask no prediction and lesson 5's progress
//! counts only the demos this server can run. Before any run, lesson 4's
//! compare block says only what it will compare, and every glossary term
//! on that page previews its definition on hover and on keyboard focus;
//! after the runs its kernel row reads "shared" (the host's `uname -r`)
//! and "own" from the x-rays. The instructor's page, with a class of one
//! member, is screenshot at the three widths too.

mod util;

use std::str::FromStr;
use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use serde_json::Value;
use stacklab_api::DemoId;
use util::*;

const WIDTHS: [u32; 3] = [375, 1280, 1920];

/// Run in the page: every figure and chart label that is shown, with the
/// size it renders at (an SVG text's font size times its SVG's scale), the
/// headline figures of each result, and how often the host explanation is
/// there.
const MEASURE: &str = r#"
const shown = el => el.getClientRects().length > 0 && !el.closest('details:not([open])');
const small = [];
const texts = document.querySelectorAll(
  'svg text, .headline .figure, td.num, .timeline .t, .timeline .mem, .bar-label, .bar-value, .legend, .line-chart figcaption, .bars figcaption, .xray td, .xray th, .xray li');
for (const el of texts) {
  if (!shown(el) || !el.textContent.trim()) continue;
  let px = parseFloat(getComputedStyle(el).fontSize);
  const svg = el.closest('svg');
  if (svg) px *= svg.getScreenCTM().a;
  if (px < 11.95) small.push(`${el.textContent.trim().slice(0, 40)} (${px.toFixed(1)} px, ${el.className.baseVal ?? el.className})`);
}
const results = [];
for (const h of document.querySelectorAll('.headline')) {
  const card = h.closest('[data-demo]');
  const keys = q => [...h.querySelectorAll(`.figure[data-question="${q}"]`)].map(f => f.dataset.key);
  results.push({ demo: card ? card.dataset.demo : null, time: keys('time'), memory: keys('memory') });
}
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const hostTexts = [];
while (walker.nextNode()) {
  const t = walker.currentNode.textContent;
  // The host's description and why Linux guests cannot boot (not the
  // "how it was measured" of the host fact, which names the same flag).
  if (t.includes('hypervisor flag is set') || t.includes('not a virtual machine as far as')
      || t.includes('So a Linux guest cannot boot here')) hostTexts.push(t.slice(0, 60));
}
return { small, results,
         explanations: document.querySelectorAll('.host-explanation').length, hostTexts };
"#;

/// Checks the page at every width and writes its screenshots. `run_demo`:
/// the demo of a run page (its results have no card to name it).
async fn check_page(client: &Client, name: &str, run_demo: Option<DemoId>, shown: &str) {
    for width in WIDTHS {
        // At that width (resize checks the page has it), laid out.
        resize(client, width).await;
        let seen = eval(client, MEASURE, vec![]).await;
        let small: Vec<&Value> = seen["small"].as_array().unwrap().iter().collect();
        assert!(
            small.is_empty(),
            "{name} at {width} px: figures or chart labels under 12 px: {small:?}"
        );
        let results = seen["results"].as_array().unwrap();
        // Lesson 4 has the compare block only (its bars are checked for
        // size); the instructor's page shows the room, not a demo's result.
        assert!(
            !results.is_empty() || name == "lesson-4" || name == "instructor",
            "{name}: no result to check"
        );
        for r in results {
            let demo = r["demo"]
                .as_str()
                .map(|d| DemoId::from_str(d).unwrap())
                .or(run_demo)
                .unwrap_or_else(|| panic!("{name}: a result without its demo: {r}"));
            let (time, memory) = demo.headline_keys();
            assert_eq!(
                r["time"],
                serde_json::json!([time.to_string()]),
                "{name}: {demo}'s result answers \"how long\" with one figure, the table's headline"
            );
            assert_eq!(
                r["memory"],
                serde_json::json!([memory.to_string()]),
                "{name}: {demo}'s result answers \"how much memory\" with one figure, the table's headline"
            );
        }
        assert!(
            seen["explanations"].as_u64().unwrap() <= 1
                && seen["hostTexts"].as_array().unwrap().len() <= 1,
            "{name} at {width} px: the host explanation more than once: {seen}"
        );
        // The screenshot shows the results (the part this test is about).
        eval(
            client,
            "document.querySelector(arguments[0])?.scrollIntoView({block: 'start'})",
            vec![serde_json::json!(shown)],
        )
        .await;
        let png = client.screenshot().await.unwrap();
        // The README's screenshots are refreshed on request only, so a test
        // run leaves the tree clean.
        let dir = match std::env::var_os("STACKLAB_DOCS_SCREENSHOTS") {
            Some(_) => repo_root().join("docs/screenshots"),
            None => output_dir(),
        };
        std::fs::create_dir_all(&dir).unwrap();
        if name != "lesson-6" {
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
    }
    resize(client, 1280).await;
}

/// `shown` (the sweep card's headline time, e.g. "77.3 ms") is the whole
/// sweep as its run's events time it (left the queue → ready, every step
/// inside), within the shown figure's rounding; not one step of it.
async fn sweep_headline_is_the_sweep(client: &Client, shown: &str) {
    let record = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const learner = localStorage.getItem('stacklab.learner');
             fetch('/api/runs?limit=1&learner=' + learner).then(r => r.json())
               .then(p => fetch('/api/runs/' + p.runs[0].id)).then(r => r.json()).then(done);",
            vec![],
        )
        .await
        .unwrap();
    let record: stacklab_api::RunRecord = serde_json::from_value(record).unwrap();
    assert_eq!(
        record.demo,
        DemoId::DensityMicroVm,
        "the newest run is the sweep"
    );
    let at = |p| {
        record
            .phase_at(p)
            .unwrap_or_else(|| panic!("no {p:?} in {record:?}"))
    };
    let sweep_us = (at(stacklab_api::Phase::Ready) - at(stacklab_api::Phase::SlotGranted)) as f64;
    let (number, unit) = shown.trim().split_once(' ').unwrap();
    let number: f64 = number.parse().unwrap();
    let (shown_us, rounding_us) = match unit {
        "µs" => (number, 0.5),
        "ms" => (number * 1e3, 50.0),
        "s" => (number * 1e6, 5_000.0),
        other => panic!("unit {other:?} in {shown:?}"),
    };
    assert!(
        (shown_us - sweep_us).abs() <= rounding_us + 1.0,
        "the sweep's headline {shown} is its run's left-the-queue → ready, {sweep_us} µs"
    );
    // The N = DENSITY_MAX step alone is shorter than the sweep: the old
    // headline showed that step.
    let last_step = record
        .events
        .iter()
        .find_map(|e| match &e.kind {
            stacklab_api::EventKind::Finished { outcome } => {
                outcome.value(stacklab_api::Key::Density(
                    stacklab_api::DensityMetric::AllReady,
                    DemoId::DENSITY_MAX,
                ))
            }
            _ => None,
        })
        .expect("the sweep measured its last step");
    assert!(
        shown_us > last_step + rounding_us,
        "the headline {shown} is the sweep, not its last step ({last_step} µs)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn results_read_at_a_glance_on_a_phone_a_laptop_and_a_projector() {
    let state = stacklab_server::AppState::new(Some(dist_dir()), Default::default())
        .with_instructor_token(TOKEN);
    let Some(Session {
        client,
        base,
        profile: _profile,
        driver: _driver,
    }) = session_with(state).await
    else {
        return;
    };
    let lessons = lessons();
    let four = lessons
        .iter()
        .find(|l| l.slug == "key-differences")
        .unwrap();
    open_from_home(&client, &format!("{base}/"), four).await;
    compare_before_any_run(&client).await;
    terms_preview_on_hover_and_focus(&client).await;

    let five = lessons
        .iter()
        .find(|l| l.slug == "postgres-both-ways")
        .unwrap();
    open_from_home(&client, &format!("{base}/"), five).await;
    // The quick demos, then PostgreSQL (its run page is checked below).
    for demo in ["hello-container", "micro-vm", "postgres-container"] {
        let card = format!(r#"section.demo-card[data-demo="{demo}"]"#);
        decline_if_asked(&client, &card).await;
        click(&client, &format!("{card} button.run")).await;
        text_within(
            &client,
            &format!("{card} .headline .figure"),
            Duration::from_secs(60),
        )
        .await;
    }
    xray_card_layout(&client).await;
    check_page(
        &client,
        "lesson-5",
        None,
        r#"section.demo-card[data-demo="micro-vm"] .status"#,
    )
    .await;

    // A demo this server cannot run (Linux guests on a nested kvm-pvm
    // host) asks no prediction and does not count against the lesson.
    let nested =
        stacklab_vmm::host::probe().is_ok_and(|h| h.backing == stacklab_api::KvmBacking::NestedPvm);
    if nested {
        let seen = eval(
            &client,
            r#"const guess = document.querySelector('section.demo-card[data-demo="linux-vm"] fieldset.predict');
               return { guessShown: !!guess && guess.getClientRects().length > 0,
                        progress: document.querySelector('.progress[data-lesson="postgres-both-ways"]').textContent };"#,
            vec![],
        )
        .await;
        assert_eq!(
            seen["guessShown"], false,
            "no prediction on a card that cannot run: {seen}"
        );
        let demos = five
            .blocks
            .iter()
            .filter(|b| matches!(b, stacklab_content::Block::Demo(d, _) if !d.is_linux_guest()))
            .count();
        assert!(
            seen["progress"]
                .as_str()
                .unwrap()
                .ends_with(&format!("3/{demos} demos")),
            "three demos run, of the {demos} this server can run: {seen}"
        );
    } else {
        eprintln!("the Linux demos run on this host: nothing is \"not on this server\"");
    }

    // A micro-VM density sweep (it costs milliseconds): its headline is
    // the whole sweep, and its step charts stay readable.
    let six = lessons.iter().find(|l| l.slug == "choosing").unwrap();
    open_from_home(&client, &format!("{base}/"), six).await;
    let sweep = r#"section.demo-card[data-demo="density-micro-vm"]"#;
    decline_if_asked(&client, sweep).await;
    click(&client, &format!("{sweep} button.run")).await;
    let shown = text_within(
        &client,
        &format!(r#"{sweep} .headline .figure[data-question="time"]"#),
        Duration::from_secs(60),
    )
    .await;
    sweep_headline_is_the_sweep(&client, &shown).await;
    check_page(&client, "lesson-6", None, sweep).await;
    // Its run page keeps the step charts.
    open(&client, &format!("{base}/runs")).await;
    wait_for_h1(&client, "My runs").await;
    click(&client, "tr[data-run] a").await;
    text_of(&client, ".run-page .density .line-chart svg").await;

    open_from_home(&client, &format!("{base}/"), four).await;
    text_of(&client, ".compare .bar-value").await;
    kernel_row_from_the_xrays(&client).await;
    check_page(&client, "lesson-4", None, ".compare").await;

    // The PostgreSQL run, on its own page.
    open(&client, &format!("{base}/runs")).await;
    wait_for_h1(&client, "My runs").await;
    text_of(&client, "tr[data-run]").await;
    let id = eval(
        &client,
        "return [...document.querySelectorAll('tr[data-run]')]
           .find(tr => tr.querySelector('a').textContent === arguments[0]).dataset.run",
        vec![serde_json::json!(DemoId::PostgresContainer.title())],
    )
    .await;
    open(&client, &format!("{base}/runs/{}", id.as_str().unwrap())).await;
    text_of(&client, ".run-page .headline .figure").await;
    check_page(
        &client,
        "run-page",
        Some(DemoId::PostgresContainer),
        ".run-page",
    )
    .await;
    instructor_page(&client, &base).await;
    client.close().await.unwrap();
}

/// The micro-VM's x-ray card: its two sides side by side on a laptop and
/// stacked on a phone, and no cell reaching past the card (long kernel
/// strings and inode numbers wrap).
async fn xray_card_layout(client: &Client) {
    let card = r#"section.demo-card[data-demo="micro-vm"] .xray"#;
    text_of(client, card).await;
    for (width, side_by_side) in [(1280, true), (375, false)] {
        resize(client, width).await;
        let seen = eval(
            client,
            r#"const x = document.querySelector(arguments[0]);
               const box = x.getBoundingClientRect();
               const rows = [...x.querySelectorAll('tr[data-xray]')].map(tr =>
                 [tr.querySelector('td.inside').getBoundingClientRect(), tr.querySelector('td.host').getBoundingClientRect()]);
               return { rows: rows.length,
                 beside: rows.every(([i, h]) => Math.abs(i.top - h.top) < 2 && h.left >= i.right - 1),
                 stacked: rows.every(([i, h]) => h.top >= i.bottom - 1),
                 past: [...x.querySelectorAll('td, th')].filter(c => c.getBoundingClientRect().right > box.right + 1)
                   .map(c => c.textContent.slice(0, 40)) };"#,
            vec![serde_json::json!(card)],
        )
        .await;
        assert!(seen["rows"].as_u64().unwrap() >= 3, "{width} px: {seen}");
        let key = if side_by_side { "beside" } else { "stacked" };
        assert_eq!(seen[key], true, "{width} px: the sides are {key}: {seen}");
        assert_eq!(seen["past"], serde_json::json!([]), "{width} px: {seen}");
        screenshot_of(client, card, &format!("xray-card-{width}")).await;
    }
    resize(client, 1280).await;
}

/// The instructor token of this test's server.
const TOKEN: &str = "readable-instructor-token";

/// Before the learner has run anything, the compare block says what it
/// will compare and that it fills in after a run: no figures, no table.
async fn compare_before_any_run(client: &Client) {
    let said = text_of(client, ".compare .before-run").await;
    assert!(
        said.contains("fills in after you run"),
        "the compare block says when it fills in: {said}"
    );
    let shown = eval(
        client,
        "return document.querySelectorAll('.compare .pair, .compare table, .compare .bar-value').length",
        vec![],
    )
    .await;
    assert_eq!(shown, 0, "no figures before a run of the learner's own");
}

/// What the open term card says: `[title, definition, role, describedby]`
/// (`describedby`: the id the term button points to, if the card's
/// definition has it), or null when no card is open.
const CARD: &str = r#"
const card = document.querySelector('.term-card');
if (!card) return null;
const body = document.getElementById('term-card-body');
const by = document.querySelector('button.term[aria-describedby]');
return [card.querySelector('h2').textContent, body ? body.textContent.trim() : '', card.getAttribute('role'),
        by && body && body.closest('.term-card') === card ? by.dataset.term : null];
"#;

/// Every glossary term on the page previews its own definition while the
/// pointer is on it and closes when it leaves; keyboard focus previews one
/// too, Escape closes it with focus left on the term, and so does blur.
async fn terms_preview_on_hover_and_focus(client: &Client) {
    let glossary =
        stacklab_content::render::load_glossary(&repo_root().join("content/glossary.yaml"))
            .expect("glossary parses");
    let ids: Vec<String> = serde_json::from_value(
        eval(
            client,
            "return [...new Set([...document.querySelectorAll('.prose button.term')].map(b => b.dataset.term))]",
            vec![],
        )
        .await,
    )
    .unwrap();
    assert!(
        ids.len() >= 5,
        "lesson 4 links only {ids:?} to the glossary"
    );
    let mouse = |action| MouseActions::new("mouse".into()).then(action);
    for id in &ids {
        let term = glossary.iter().find(|t| t.id == id.as_str()).unwrap();
        let css = format!(r#".prose button.term[data-term="{id}"]"#);
        eval(
            client,
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
            vec![serde_json::json!(css)],
        )
        .await;
        let element = client.find(Locator::Css(&css)).await.unwrap();
        client
            .perform_actions(mouse(PointerAction::MoveToElement {
                element,
                duration: None,
                x: 0.0,
                y: 0.0,
            }))
            .await
            .unwrap();
        until(client, &format!("return !!document.querySelector('.term-card h2') && document.querySelector('.term-card h2').textContent === {:?}", &*term.term), &format!("hovering {id} shows its card")).await;
        let card = eval(client, CARD, vec![]).await;
        assert_eq!(card[0], serde_json::json!(&*term.term), "{id}: {card}");
        assert!(
            card[1].as_str().is_some_and(|d| d.len() > 20),
            "{id}: the card gives the definition: {card}"
        );
        assert_eq!(card[2], "tooltip", "{id}: a preview, not a dialog: {card}");
        assert_eq!(
            card[3],
            serde_json::json!(id),
            "{id}: the term is described by the card: {card}"
        );
        if id == &ids[0] {
            screenshot(client, "glossary-hover").await;
        }
        // The pointer leaves (to the page's top left corner): it closes.
        client
            .perform_actions(mouse(PointerAction::MoveTo {
                duration: None,
                x: 1.0,
                y: 1.0,
            }))
            .await
            .unwrap();
        until(
            client,
            "return !document.querySelector('.term-card') && !document.querySelector('button.term[aria-describedby]')",
            &format!("leaving {id} closes its card"),
        )
        .await;
    }
    client.release_actions().await.unwrap();

    // Keyboard: focus previews; Escape closes and leaves focus on the term.
    let id = &ids[0];
    let css = format!(r#".prose button.term[data-term="{id}"]"#);
    let focus = "document.querySelector(arguments[0]).focus()";
    eval(client, focus, vec![serde_json::json!(css)]).await;
    until(
        client,
        "return !!document.querySelector('.term-card[role=tooltip]')",
        "focus shows the card",
    )
    .await;
    let card = eval(client, CARD, vec![]).await;
    assert_eq!(card[3], serde_json::json!(id), "focus on {id}: {card}");
    client
        .active_element()
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Escape.to_string())
        .await
        .unwrap();
    until(
        client,
        "return !document.querySelector('.term-card')",
        "Escape closes the card",
    )
    .await;
    let focused = eval(
        client,
        "return document.activeElement.dataset.term ?? null",
        vec![],
    )
    .await;
    assert_eq!(focused, serde_json::json!(id), "focus stays on the term");
    eval(client, "document.activeElement.blur()", vec![]).await;
    eval(client, focus, vec![serde_json::json!(css)]).await;
    until(
        client,
        "return !!document.querySelector('.term-card')",
        "focus shows the card again",
    )
    .await;
    eval(client, "document.activeElement.blur()", vec![]).await;
    until(
        client,
        "return !document.querySelector('.term-card')",
        "blur closes the card",
    )
    .await;
}

/// After the runs, the compare table's kernel row is read from their
/// x-rays: the container's kernel is the one this host runs (the test's
/// own `uname -r`, shared), the micro-VM's the guest's own.
async fn kernel_row_from_the_xrays(client: &Client) {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let host = host.trim();
    let row = r#".compare tr[data-row="kernel"]"#;
    let container = text_of(client, &format!(r#"{row} [data-side="container"]"#)).await;
    assert!(
        container.contains(&format!("shared: {host} inside, {host} on the host")),
        "the container's kernel is the host's {host}: {container}"
    );
    let vm = text_of(client, &format!(r#"{row} [data-side="vm"]"#)).await;
    assert!(
        vm.starts_with("VM: own: ")
            && vm.contains(&format!("{host} on the host"))
            && !vm.contains(&format!("own: {host} inside")),
        "the micro-VM's kernel is its own: {vm}"
    );
}

/// The instructor's page with a class of one member (this learner, who
/// joins), checked and screenshot at the three widths.
async fn instructor_page(client: &Client, base: &str) {
    open(client, &format!("{base}/class#token={TOKEN}")).await;
    let name = find_within(client, "#class-name", Duration::from_secs(30)).await;
    name.send_keys("Readable workshop").await.unwrap();
    click(client, "#create-class button[type=submit]").await;
    let code = text_of(client, "#join-code").await;
    open(client, &format!("{base}/join/{code}")).await;
    let field = find_within(client, "#display-name", Duration::from_secs(30)).await;
    field.send_keys("Ada").await.unwrap();
    click(client, "#join-form button[type=submit]").await;
    wait_for_text(client, "#joined", "count for the room").await;
    open(client, &format!("{base}/class/{code}")).await;
    wait_for_text(client, "#members", "Ada").await;
    check_page(client, "instructor", None, ".members").await;
    // On a phone the room's wide tables scroll inside themselves; the page
    // does not scroll sideways.
    resize(client, 375).await;
    let sideways = eval(
        client,
        r#"const d = document.documentElement;
           const past = [...document.querySelectorAll('body *')]
             .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)
             .map(e => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
             .slice(0, 8);
           return { by: d.scrollWidth - d.clientWidth, past }"#,
        vec![],
    )
    .await;
    assert!(
        sideways["by"].as_i64().is_some_and(|px| px <= 1),
        "the instructor's page scrolls sideways at 375 px by {sideways} px"
    );
}

/// A card whose lesson asks for a guess runs only after one (or "I'd rather
/// not guess"): this test reads the results, so it declines where asked.
async fn decline_if_asked(client: &Client, card: &str) {
    let asked = eval(
        client,
        "return !!document.querySelector(arguments[0])",
        vec![serde_json::json!(format!("{card} button.decline"))],
    )
    .await;
    if asked == Value::Bool(true) {
        no_guess(client, card).await;
    }
}
