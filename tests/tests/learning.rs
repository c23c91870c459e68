//! The room's learning, end to end in real browsers against one server: an
//! instructor and two learners (three Chromium profiles). Quizzes shuffled
//! per learner with the first answer scored; guesses that lock when the run
//! starts; the instructor seeing each member's reading, first-try score and
//! predictions, and the room's guesses beside the measured result; the
//! room sent to lesson 5 and every open page following; the instructor's
//! sweep reaching the learners' cards as a curve, live.
//!
//! Screenshots land in `test-output/e2e/` (`learning-*`).

mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;
use stacklab_content::Lesson;
use util::*;

const TOKEN: &str = "learning-instructor-token";

/// Clicks `css` on the instructor's page, which is drawn again on every
/// change in the room: an element found just before a redraw is stale, so
/// it is found again.
async fn click_live(client: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(el) => el.click().await.is_ok(),
            Err(_) => false,
        };
        if clicked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css}: not clickable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each quiz question's choices on the page, as their indices in the
/// lesson's order, in the order shown.
async fn shown_orders(client: &Client) -> Vec<Vec<u32>> {
    let orders = eval(
        client,
        "return [...document.querySelectorAll('fieldset.question')].map((q) => [...q.querySelectorAll('input[type=radio]')].map((i) => Number(i.value)))",
        vec![],
    )
    .await;
    serde_json::from_value(orders).unwrap()
}

/// Where the right answer of every question of the course is shown to this
/// learner (0 = first), reading every lesson; and the orders themselves.
async fn right_positions(client: &Client, base: &str, lessons: &[Lesson]) -> Vec<Vec<u32>> {
    let mut all = Vec::new();
    open(client, &format!("{base}/lessons/{}", lessons[0].slug)).await;
    for (i, lesson) in lessons.iter().enumerate() {
        if i > 0 {
            // Through the app's own link: no page load.
            click(client, "a[rel=next]").await;
        }
        wait_for_h1(client, &lesson.title).await;
        text_of(client, "fieldset.question").await;
        let orders = shown_orders(client).await;
        for (i, order) in orders.iter().enumerate() {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..order.len() as u32).collect::<Vec<_>>(),
                "{}: question {} shows each choice once",
                lesson.slug,
                i + 1
            );
        }
        all.extend(orders);
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instructor_follows_the_rooms_learning() {
    let Some((_driver, port)) = chromedriver().await else {
        return;
    };
    let state = stacklab_server::AppState::new(Some(dist_dir()), Default::default())
        .with_instructor_token(TOKEN);
    let base = start_server_with(state.clone()).await;
    let lessons = lessons();
    let profiles: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let instructor = browser(port, profiles[0].path()).await;

    // The instructor's token: from the link, out of the address at once,
    // kept by this browser (a new visit does not ask again).
    open(&instructor, &format!("{base}/class#token={TOKEN}")).await;
    wait_for_text(&instructor, "h1", "Run a workshop").await;
    assert_eq!(instructor.current_url().await.unwrap().fragment(), None);
    open(&instructor, &format!("{base}/class")).await;
    let name = find_within(&instructor, "#class-name", WAIT).await;
    assert!(
        instructor.find(Locator::Css("#token")).await.is_err(),
        "the token is remembered: no token form on a new visit"
    );
    name.send_keys("Learning room").await.unwrap();
    click_live(&instructor, "#create-class button[type=submit]").await;
    let code = text_of(&instructor, "#join-code").await;
    assert!(stacklab_api::valid_class_code(&code), "{code:?}");

    // Two learners join; opening the join link again says "you are in".
    let mut learners = Vec::new();
    for (i, who) in ["Ada", "Bob"].into_iter().enumerate() {
        let client = browser(port, profiles[i + 1].path()).await;
        open(&client, &format!("{base}/join/{code}")).await;
        let field = find_within(&client, "#display-name", WAIT).await;
        field.send_keys(who).await.unwrap();
        click(&client, "#join-form button[type=submit]").await;
        wait_for_text(&client, "#joined", "count for the room").await;
        open(&client, &format!("{base}/join/{code}")).await;
        wait_for_text(&client, "h1", "You are in Learning room").await;
        assert!(client.find(Locator::Css("#join-form")).await.is_err());
        learners.push(client);
    }
    let (ada, bob) = (&learners[0], &learners[1]);

    // Quizzes: each learner sees the choices in their own order, the
    // right answers spread over the positions; a reload keeps the order.
    let mut positions = Vec::new();
    let mut orders = Vec::new();
    for client in [ada, bob] {
        let shown = right_positions(client, &base, &lessons).await;
        let answers: Vec<u32> = lessons
            .iter()
            .flat_map(|l| {
                l.blocks.iter().filter_map(|b| match b {
                    stacklab_content::Block::Quiz(qs) => Some(qs.iter().map(|q| q.answer)),
                    _ => None,
                })
            })
            .flatten()
            .collect();
        assert_eq!(shown.len(), answers.len(), "every question is on its page");
        let at: Vec<usize> = shown
            .iter()
            .zip(&answers)
            .map(|(order, right)| order.iter().position(|c| c == right).unwrap())
            .collect();
        let distinct: BTreeSet<_> = at.iter().collect();
        let most = distinct
            .iter()
            .map(|p| at.iter().filter(|a| a == p).count())
            .max()
            .unwrap();
        assert!(
            distinct.len() >= 2 && most * 4 <= at.len() * 3,
            "right answers at positions {at:?}: not spread"
        );
        positions.push(at);
        orders.push(shown);
    }
    assert_ne!(orders[0], orders[1], "each learner has their own order");
    let last = lessons.last().unwrap();
    let before = shown_orders(ada).await;
    reload(ada).await;
    wait_for_h1(ada, &last.title).await;
    text_of(ada, "fieldset.question").await;
    assert_eq!(
        shown_orders(ada).await,
        before,
        "a reload does not reshuffle"
    );

    // The first answer is the one scored: Ada wrong then right, Bob right.
    let vm_lesson = lessons
        .iter()
        .find(|l| l.slug == "virtual-machines")
        .unwrap();
    let right = quiz_answer(vm_lesson, 1);
    let wrong = if right == 0 { 1 } else { 0 };
    let q1 = r#"fieldset.question[data-question="1"]"#;
    for (client, picks) in [(ada, vec![wrong, right]), (bob, vec![right])] {
        open(client, &format!("{base}/lessons/virtual-machines")).await;
        wait_for_h1(client, &vm_lesson.title).await;
        for pick in picks {
            click(client, &format!(r#"{q1} input[value="{pick}"]"#)).await;
            click(client, &format!("{q1} button.check")).await;
        }
    }
    let ada_says = text_of(ada, &format!("{q1} .verdict")).await;
    assert!(ada_says.starts_with("Not quite."), "{ada_says}");
    wait_for_text(
        ada,
        &format!("{q1} .retry"),
        "your first answer is the one that counts",
    )
    .await;
    wait_for_text(
        ada,
        r#".course-nav .progress[data-lesson="virtual-machines"]"#,
        "0/3 right first try",
    )
    .await;
    wait_for_text(
        bob,
        r#".course-nav .progress[data-lesson="virtual-machines"]"#,
        "1/3 right first try",
    )
    .await;
    screenshot(ada, "learning-01-quiz-first-answer").await;

    // The instructor sends the room to lesson 5: both open pages follow,
    // live, and the join page points there.
    let lesson5 = &lessons[4];
    eval(
        &instructor,
        "const s = document.querySelector('#send-lesson'); s.value = arguments[0]; s.dispatchEvent(new Event('change'))",
        vec![json!(lesson5.slug)],
    )
    .await;
    click_live(&instructor, "#send-room button[type=submit]").await;
    wait_for_text(&instructor, "#room-lesson", "The room is at lesson 5").await;
    for client in [ada, bob] {
        wait_for_h1(client, &lesson5.title).await;
        assert!(client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&*lesson5.slug));
    }
    screenshot(bob, "learning-02-sent-to-lesson-5").await;

    // Predictions: Ada guesses, runs, then moves her guess: the verdict
    // keeps the locked one. Bob would rather not guess.
    let vm = r#"section.demo-card[data-demo="micro-vm"]"#;
    let time = format!(r#"{vm} label[data-quantity="time"] input"#);
    let memory = format!(r#"{vm} label[data-quantity="memory"] input"#);
    // 10^3 µs (1 ms) and about 10^6 bytes.
    let exits = format!(r#"{vm} label[data-quantity="exits"] input"#);
    slide(ada, &time, 3.0).await;
    slide(ada, &memory, 6.0).await;
    // The card's one more question: exits to the VMM, 10^2.
    slide(ada, &exits, 2.0).await;
    click(ada, &format!("{vm} button.run")).await;
    slide(ada, &time, 8.0).await;
    slide(ada, &exits, 5.0).await;
    let verdict = text_of(ada, &format!("{vm} .guess-verdict"))
        .await
        .replace('\u{a0}', " ");
    assert!(
        verdict.contains("Time: you guessed 1.0 ms; measured "),
        "the locked guess: {verdict}"
    );
    // The slider moves in steps of 0.05 from its lower end, 100 KiB: 10^6
    // bytes snaps to 10^6.0103 = 1000 KiB.
    assert!(
        verdict.contains("Memory: you guessed 1000 KiB"),
        "{verdict}"
    );
    // Exits: the locked 100 against the run's own count, as its readings
    // show it.
    let counted = reading_text(ada, &format!(r#"{vm} tr[data-key="exits"] td.num"#)).await;
    assert!(
        verdict.contains(&format!(
            "Exits to the VMM: you guessed 100; measured {counted}: "
        )),
        "the locked exits guess against the card's {counted}: {verdict}"
    );
    let headline = text_of(ada, &format!("{vm} .headline")).await;
    let measured = verdict
        .split("measured ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap_or_default();
    assert!(
        measured.ends_with(" ms") || measured.ends_with(" µs") || measured.ends_with(" s"),
        "a measured time with its unit: {verdict}"
    );
    assert!(
        verdict.contains("orders of magnitude") || verdict.contains("spot on"),
        "{verdict}"
    );
    screenshot_of(ada, vm, "learning-03-locked-guess-verdict").await;
    // The slider moved after the click: the verdict keeps the locked guess.
    let after = text_of(ada, &format!(r#"{vm} .guess-verdict [data-verdict]"#))
        .await
        .replace('\u{a0}', " ");
    assert!(
        after.contains("Time: you guessed 1.0 ms"),
        "moving the slider after the run does not rewrite the verdict: {after}"
    );
    let moved = eval(
        ada,
        "return document.querySelector(arguments[0]).getAttribute('aria-valuetext')",
        vec![json!(time)],
    )
    .await;
    assert_eq!(
        moved,
        json!("1.7\u{a0}min"),
        "the slider itself did move (10^8 µs)"
    );
    assert!(headline.starts_with("Ready "), "{headline}");

    let run = bob
        .find(Locator::Css(&format!("{vm} button.run")))
        .await
        .unwrap();
    assert!(!run.is_enabled().await.unwrap(), "Run waits for a guess");
    no_guess(bob, vm).await;
    click(bob, &format!("{vm} button.run")).await;
    wait_for_text(
        bob,
        &format!("{vm} .guess-verdict"),
        "You chose not to guess",
    )
    .await;

    // The instructor: each member's reading, first-try score and
    // predictions; the room's guesses, the result hidden until revealed.
    let cell = |name: &'static str, col: &'static str| {
        let js = format!("return [...document.querySelectorAll('#members tbody tr')].find((r) => r.firstChild.textContent === '{name}')?.querySelector('td[data-col=\"{col}\"]')?.textContent ?? ''");
        let instructor = &instructor;
        async move {
            eval(instructor, &js, vec![])
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cell("Bob", "predictions").await.starts_with('3') {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Bob's three declined guesses do not reach the instructor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = lessons.len();
    assert!(
        cell("Ada", "read")
            .await
            .starts_with(&format!("{n} of {n}")),
        "{}",
        cell("Ada", "read").await
    );
    assert_eq!(cell("Ada", "quiz").await, "0 of 1 right");
    assert_eq!(cell("Bob", "quiz").await, "1 of 1 right");
    assert_eq!(cell("Ada", "predictions").await, "3", "time, memory, exits");
    assert_eq!(cell("Bob", "predictions").await, "3 (3 declined)");
    let guesses = r#"section.demo[data-demo="micro-vm"] [data-figure="guesses-time"]"#;
    wait_for_text(
        &instructor,
        guesses,
        "1 guess(es), 1 “I'd rather not guess”",
    )
    .await;
    assert!(text_of(&instructor, guesses)
        .await
        .contains("hidden until you reveal"));
    assert!(instructor
        .find(Locator::Css(
            r#"section.demo[data-demo="micro-vm"] svg.guesses line.measured"#
        ))
        .await
        .is_err());
    screenshot(&instructor, "learning-04-instructor-guesses-hidden").await;
    click_live(&instructor, r#"button.reveal[data-reveal="micro-vm/time"]"#).await;
    wait_for_text(&instructor, guesses, "Measured in the room: median").await;
    let said = text_of(&instructor, guesses).await;
    assert!(said.contains("orders of magnitude off"), "{said}");
    let dots = instructor
        .find_all(Locator::Css(
            r#"section.demo[data-demo="micro-vm"] [data-quantity="time"] svg.guesses circle.guess"#,
        ))
        .await
        .unwrap();
    assert_eq!(dots.len(), 1, "Ada's guess; Bob declined");
    instructor
        .find(Locator::Css(r#"section.demo[data-demo="micro-vm"] [data-quantity="time"] svg.guesses line.measured"#))
        .await
        .expect("the measured result beside the guesses");
    // The exits guesses too, beside the exits Ada's run counted.
    let exits = r#"section.demo[data-demo="micro-vm"] [data-figure="guesses-exits"]"#;
    wait_for_text(&instructor, exits, "1 guess(es), 1 “I'd rather not guess”").await;
    click_live(
        &instructor,
        r#"button.reveal[data-reveal="micro-vm/exits"]"#,
    )
    .await;
    wait_for_text(&instructor, exits, "Measured in the room: median").await;
    let said = text_of(&instructor, exits).await;
    assert!(
        said.contains(&format!("median {counted}.")) && said.contains("orders of magnitude off"),
        "Ada's run counted {counted} exits: {said}"
    );
    screenshot(&instructor, "learning-05-instructor-guesses-revealed").await;

    // The instructor's sweep for the room reaches both learners' density
    // cards as a 1 → 5 curve, without a reload.
    for client in [ada, bob] {
        open(client, &format!("{base}/lessons/choosing")).await;
        text_of(client, r#"section.demo-card[data-demo="density-micro-vm"]"#).await;
    }
    click_live(&instructor, "#room-density-micro-vm").await;
    for client in [ada, bob] {
        let curve = r#"section.demo-card[data-demo="density-micro-vm"] figure.room-sweep"#;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let n = client
                .find_all(Locator::Css(&format!(
                    "{curve} figure.line-chart svg g.series circle"
                )))
                .await
                .unwrap()
                .len();
            // Two charts (time, memory), a point per N.
            if n == 2 * 5 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the room's sweep is not on the card as a curve: {n} points"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let text = text_of(client, curve).await;
        assert!(
            text.contains("N started at the same moment"),
            "labelled axes: {text}"
        );
        assert!(text.contains(&code), "{text}");
    }
    screenshot_of(
        ada,
        r#"section.demo-card[data-demo="density-micro-vm"] figure.room-sweep"#,
        "learning-06-room-sweep-on-a-learners-card",
    )
    .await;

    // The instructor's page: the sweep as curves; projector mode keeps
    // them and hides what is for the laptop.
    let curves = r#"section.demo[data-demo="density-micro-vm"] svg.curve polyline"#;
    until(
        &instructor,
        &format!("return document.querySelectorAll('{curves}').length === 2"),
        "the instructor's page draws the sweep's two curves",
    )
    .await;
    click_live(&instructor, "#projector").await;
    wait_for_text(&instructor, "#projector", "Leave projector mode").await;
    until(
        &instructor,
        &format!("return document.querySelectorAll('{curves}').length === 2 && ['#send-room', '#room-density-micro-vm', '#export-csv', '#forget-token'].every((s) => document.querySelector(s).getClientRects().length === 0)"),
        "projector mode: the whole curve, no laptop controls",
    )
    .await;
    screenshot(&instructor, "learning-07-projector").await;
    click_live(&instructor, "#projector").await;

    // The export names guesses and quiz scores, and the instructor's run.
    let csv = eval(
        &instructor,
        "return fetch(`/api/classes/${arguments[0]}/export?format=csv`, { headers: { Authorization: 'Bearer ' + localStorage.getItem('stacklab.instructor') } }).then((r) => r.text())",
        vec![json!(code)],
    )
    .await;
    let csv = csv.as_str().unwrap();
    let header = csv.lines().next().unwrap();
    for column in [
        "guess_time_ms",
        "guess_memory_mib",
        "lessons_read",
        "quiz_first_try_right",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(csv.lines().any(|l| l.contains(",(instructor),")), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.contains(",Ada,") && l.contains(",1.000,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",Bob,") && l.contains(",declined,declined,")),
        "{csv}"
    );

    // "Forget the token": the next visit asks for it, and says how to get
    // it in words (no Markdown backticks).
    click_live(&instructor, "#forget-token").await;
    let help = text_of(&instructor, "#token-help").await;
    assert!(help.contains("stacklab serve prints a link"), "{help}");
    assert!(!help.contains('`'), "{help}");
    open(&instructor, &format!("{base}/class")).await;
    text_of(&instructor, "#token-help").await;

    for client in learners {
        client.close().await.unwrap();
    }
    instructor.close().await.unwrap();
}
