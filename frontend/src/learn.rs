//! What makes the learner take part: "check yourself" questions (choices
//! shuffled per learner, the first answer scored), the room a class member
//! follows (the lesson the instructor sends it to, the instructor's sweep
//! on the density cards, reports of reads and first answers), and glossary
//! terms whose definition card previews on hover or keyboard focus and
//! opens as a dialog by click, tap or Enter. Guesses
//! before a run live in `predict`.

use leptos::ev;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;
use stacklab_api::RunEvent;

use crate::lessons::{self, DemoId, Question, GLOSSARY};
use crate::live;
use crate::progress::{question_key, Progress};
use crate::widgets::DensityResults;

/// ```` ```quiz ````: each question answered in the page, kept in progress.
#[component]
pub fn QuizBlock(slug: &'static str, questions: &'static [Question]) -> impl IntoView {
    view! {
        <section class="quiz" aria-label="Check yourself">
            {questions.iter().map(|q| view! { <QuestionView slug q /> }).collect_view()}
        </section>
    }
}

/// The order `n` choices are shown in to this learner: a shuffle seeded by
/// the learner id and the question, so each learner has their own order
/// and a reload keeps it.
fn shuffled(n: usize, seed: &str) -> Vec<u32> {
    // FNV-1a of the seed, then xorshift64 for a Fisher–Yates shuffle.
    let mut x = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

#[component]
fn QuestionView(slug: &'static str, q: &'static Question) -> impl IntoView {
    let progress = Progress::get();
    let key = question_key(slug, q.number);
    let first = {
        let key = key.clone();
        move || progress.answered(&key)
    };
    let latest = {
        let key = key.clone();
        move || progress.latest(&key)
    };
    let chosen = RwSignal::new(progress.latest(&key));
    let name = format!("q-{slug}-{}", q.number);
    let order = shuffled(
        q.choices.len(),
        &format!("{}|{key}", live::learner_id().unwrap_or_default()),
    );
    let check = move |_| {
        if let Some(choice) = chosen.get_untracked() {
            // Only the first answer is scored, here and in the room.
            if progress.answer(&key, choice) {
                report(slug, Some((q.number, choice)));
            }
        }
    };
    let verdict = move || {
        first().map(|choice| {
            let right = choice == q.answer;
            let answer = q.choices[q.answer as usize].as_ref();
            let again = latest().filter(|l| *l != choice).map(|l| {
                view! {
                    <p class="retry" role="status">
                        {if l == q.answer { "This answer is right" } else { "This answer is not right either" }}
                        "; your first answer is the one that counts."
                    </p>
                }
            });
            view! {
                <p class=if right { "verdict right" } else { "verdict wrong" } role="status">
                    <strong>{if right { "Right. " } else { "Not quite. " }}</strong>
                    {(!right).then(|| view! { "The answer: " <span inner_html=answer></span> ". " })}
                    <span inner_html=q.why.as_ref()></span>
                </p>
                {again}
            }
        })
    };
    view! {
        <fieldset class="question" data-question=q.number>
            <legend inner_html=q.prompt.as_ref()></legend>
            {order
                .into_iter()
                .map(|i| {
                    let choice = &q.choices[i as usize];
                    view! {
                        <label class="choice">
                            <input
                                type="radio"
                                name=name.clone()
                                value=i.to_string()
                                prop:checked=move || chosen.get() == Some(i)
                                on:change=move |_| chosen.set(Some(i))
                            />
                            <span inner_html=choice.as_ref()></span>
                        </label>
                    }
                })
                .collect_view()}
            <button type="button" class="check" on:click=check disabled=move || chosen.get().is_none()>
                "Check"
            </button>
            {verdict}
        </fieldset>
    }
}

/// In a class: tells the room that this learner opened `lesson`, or
/// answered its question `answer.0` with choice `answer.1` (only a first
/// answer is sent; the server scores it and keeps only the first).
pub fn report(lesson: &str, answer: Option<(u32, u32)>) {
    let (Some(code), Some(learner)) = (live::class_code(), live::learner_id()) else {
        return;
    };
    // Slugs and learner ids are plain ASCII (checked when made): no escaping.
    let answer = answer
        .map(|(n, c)| format!(r#","answer":{{"question":{n},"choice":{c}}}"#))
        .unwrap_or_default();
    let body = format!(r#"{{"learner":"{learner}","lesson":"{lesson}"{answer}}}"#);
    leptos::task::spawn_local(async move {
        // Best effort: the learner's own progress is kept in any case.
        let _ = live::post(&format!("/api/classes/{code}/learning"), &body).await;
    });
}

/// Bumped when the class's stream says a run changed: the room's views on
/// the cards fetch again.
#[derive(Clone, Copy)]
pub struct RoomTurn(RwSignal<u32>);

impl RoomTurn {
    pub fn provide() {
        provide_context(RoomTurn(RwSignal::new(0)));
    }

    /// Tracks the room's changes (call inside an effect).
    pub fn track() {
        if let Some(t) = use_context::<RoomTurn>() {
            t.0.track();
        }
    }
}

/// In a class: follows the room's stream for the whole visit: a run that
/// changed refreshes the room's views on the cards; the instructor sending
/// the room to a lesson takes this page there.
#[component]
pub fn RoomFollow() -> impl IntoView {
    use wasm_bindgen::closure::Closure;
    let (Some(code), Some(turn)) = (live::class_code(), use_context::<RoomTurn>()) else {
        return;
    };
    let Ok(source) =
        web_sys::EventSource::new(&live::api_url(&format!("/api/classes/{code}/events")))
    else {
        return;
    };
    let location = crate::router::Location::get();
    let on_lesson =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            #[derive(serde::Deserialize)]
            struct Sent {
                lesson: String,
            }
            if let Some(sent) = e
                .data()
                .as_string()
                .and_then(|d| serde_json::from_str::<Sent>(&d).ok())
            {
                // As a link click would: a new history entry, the page drawn
                // by the app, from its top.
                let to = format!("/lessons/{}", sent.lesson);
                let window = window();
                if let Ok(history) = window.history() {
                    let _ =
                        history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&to));
                }
                if let Some(location) = location {
                    location.path.set(to);
                }
                window.scroll_to_with_x_and_y(0.0, 0.0);
            }
        });
    let on_change = Closure::<dyn FnMut()>::new(move || turn.0.update(|n| *n += 1));
    let _ = source.add_event_listener_with_callback("lesson", on_lesson.as_ref().unchecked_ref());
    let _ = source.add_event_listener_with_callback("changed", on_change.as_ref().unchecked_ref());
    // The stream and its callbacks live as long as the page.
    on_lesson.forget();
    on_change.forget();
}

/// On a density card in a class: the sweep the instructor ran for the
/// room, as its curves (time and memory against N = 1 → 5), arriving live.
#[component]
pub fn RoomSweep(demo: DemoId, base: DemoId) -> impl IntoView {
    let code = live::class_code();
    let events = RwSignal::new(Vec::<RunEvent>::new());
    let shown = StoredValue::new(String::new());
    if let Some(code) = code.clone() {
        Effect::new(move |_| {
            RoomTurn::track();
            let code = code.clone();
            leptos::task::spawn_local(async move {
                #[derive(serde::Deserialize)]
                struct Room {
                    points: Vec<Point>,
                }
                #[derive(serde::Deserialize)]
                struct Point {
                    demo: DemoId,
                    run: String,
                    time_to_ready_us: Option<f64>,
                }
                let Ok(text) = live::get_text(&format!("/api/classes/{code}/points")).await else {
                    return;
                };
                // In a class only the instructor runs a sweep: the room's.
                let Some(run) = serde_json::from_str::<Room>(&text).ok().and_then(|r| {
                    r.points
                        .into_iter()
                        .rev()
                        .find(|p| p.demo == demo && p.time_to_ready_us.is_some())
                        .map(|p| p.run)
                }) else {
                    return;
                };
                if shown.get_value() == run {
                    return;
                }
                let Ok(text) = live::get_text(&format!("/api/runs/{run}")).await else {
                    return;
                };
                if let Ok(record) = crate::wire::record(&text) {
                    shown.set_value(run);
                    events.set(record.events);
                }
            });
        });
    }
    move || {
        (!events.with(Vec::is_empty)).then(|| {
            view! {
                <figure class="room-sweep">
                    <figcaption>
                        {format!("Your class ({}): the sweep your instructor ran for the room, N = 1 → {}.", code.clone().unwrap_or_default(), DemoId::DENSITY_MAX)}
                    </figcaption>
                    <DensityResults base events />
                </figure>
            }
        })
    }
}

/// The glossary term whose card is open, and how it was opened.
#[derive(Clone, Copy)]
pub struct OpenTerm {
    id: RwSignal<Option<&'static str>>,
    /// The term's button (it carries `aria-describedby` while open).
    button: StoredValue<Option<web_sys::HtmlElement>, LocalStorage>,
    /// Opened by click, tap or Enter: a dialog that takes focus and stays
    /// until closed. Otherwise a preview, opened by hover or focus.
    pinned: RwSignal<bool>,
}

/// The id of the open card's definition (the term's `aria-describedby`).
const TERM_BODY: &str = "term-card-body";

impl OpenTerm {
    pub fn provide() {
        provide_context(OpenTerm {
            id: RwSignal::new(None),
            button: StoredValue::new_local(None),
            pinned: RwSignal::new(false),
        });
    }

    /// Listens for hover and focus on the terms in the app's pages (not in
    /// an embedded demo: the embedding page's document is not ours).
    pub fn listen() {
        listen_for_previews(OpenTerm::get());
    }

    fn get() -> OpenTerm {
        use_context::<OpenTerm>().expect("OpenTerm::provide at the root")
    }

    /// Opens the card of `button`'s term, as a dialog (`pin`) or a preview.
    fn open(&self, button: web_sys::Element, pin: bool) {
        let Some(term) = button
            .get_attribute("data-term")
            .and_then(|id| lessons::term(&id))
        else {
            return;
        };
        self.forget_button();
        let _ = button.set_attribute("aria-describedby", TERM_BODY);
        self.button.set_value(button.dyn_into().ok());
        self.pinned.set(pin);
        self.id.set(Some(term.id.as_ref()));
    }

    fn forget_button(&self) {
        if let Some(b) = self.button.get_value() {
            let _ = b.remove_attribute("aria-describedby");
        }
    }

    fn close(&self) {
        self.forget_button();
        self.id.set(None);
        if self.pinned.get_untracked() {
            // Focus goes back to the term while still pinned, so that this
            // focus does not open the preview again.
            if let Some(button) = self.button.get_value() {
                let _ = button.focus();
            }
            self.pinned.set(false);
        }
    }
}

/// The glossary term button an event happened in, if any.
fn term_button(e: &web_sys::Event) -> Option<web_sys::Element> {
    e.target()?
        .dyn_into::<web_sys::Element>()
        .ok()?
        .closest("button.term")
        .ok()?
}

/// A click (or Enter/Space, which buttons turn into clicks) on a glossary
/// term in rendered prose opens its card as a dialog.
pub fn on_prose_click() -> impl Fn(ev::MouseEvent) + 'static {
    let open = OpenTerm::get();
    move |e: ev::MouseEvent| {
        if let Some(button) = term_button(&e) {
            open.open(button, true);
        }
    }
}

/// Hover or keyboard focus on a term (mouseover, focusin) previews its
/// card; leaving it (mouseout, focusout) closes the preview unless the
/// term is still hovered or focused; Escape closes the preview. A
/// dialog opened by click stays. One document listener for all five
/// event types (the page's terms are in prose HTML).
fn listen_for_previews(open: OpenTerm) {
    use wasm_bindgen::closure::Closure;
    let on =
        Closure::<dyn Fn(web_sys::Event)>::new(move |e: web_sys::Event| match e.type_().as_str() {
            "keydown" => {
                let escape = e
                    .dyn_ref::<web_sys::KeyboardEvent>()
                    .is_some_and(|k| k.key() == "Escape");
                // Escape closes a preview wherever focus is (one opened by
                // the pointer, focus elsewhere); a pinned dialog closes on
                // its own Escape, or on the term's.
                let preview = !open.pinned.get_untracked();
                if escape
                    && (preview || term_button(&e).is_some())
                    && open.id.get_untracked().is_some()
                {
                    open.close();
                }
            }
            "mouseover" | "focusin" => preview(open, &e, true),
            _ => preview(open, &e, false),
        });
    let doc = document();
    for kind in ["mouseover", "mouseout", "focusin", "focusout", "keydown"] {
        let _ = doc.add_event_listener_with_callback(kind, on.as_ref().unchecked_ref());
    }
    // The page's lifetime: the listener stays with the document.
    on.forget();
}

/// [`listen_for_previews`]' work for hover and focus (`show`) and for
/// leaving and blur.
fn preview(open: OpenTerm, e: &web_sys::Event, show: bool) {
    let Some(button) = term_button(e) else {
        return;
    };
    if open.pinned.get_untracked() {
        return;
    }
    if show {
        open.open(button, false);
        return;
    }
    let mine = open
        .button
        .get_value()
        .is_some_and(|b| b.is_same_node(Some(&button)));
    let hovered = button.matches(":hover").unwrap_or(false);
    let focused = document()
        .active_element()
        .is_some_and(|a| a.is_same_node(Some(&button)));
    if mine && !hovered && !focused {
        open.close();
    }
}

/// The open term's definition at the foot of the screen: a preview while
/// its term is hovered or focused (`role=tooltip`, the term described by
/// it), or a non-modal dialog opened by click that takes focus; Escape or
/// "Close" returns focus to the term.
#[component]
pub fn TermCard() -> impl IntoView {
    let open = OpenTerm::get();
    let card = NodeRef::<leptos::html::Div>::new();
    Effect::new(move |_| {
        if open.id.get().is_some() && open.pinned.get() {
            if let Some(el) = card.get() {
                let _ = el.focus();
            }
        }
    });
    move || {
        open.id.get().and_then(lessons::term).map(|term| {
            let pinned = open.pinned.get();
            view! {
                <div
                    class="term-card"
                    role=if pinned { "dialog" } else { "tooltip" }
                    aria-labelledby="term-card-title"
                    tabindex="-1"
                    node_ref=card
                    on:keydown=move |e: ev::KeyboardEvent| {
                        if e.key() == "Escape" {
                            open.close();
                        }
                    }
                >
                    <h2 id="term-card-title">{term.term.as_ref()}</h2>
                    <div id=TERM_BODY inner_html=term.html.as_ref()></div>
                    <p>
                        <a href=format!("/glossary#{}", term.id)>"All terms in the glossary"</a>
                        <button type="button" class="close" on:click=move |_| open.close()>"Close"</button>
                    </p>
                </div>
            }
        })
    }
}

/// `/glossary`: every term, each with an anchor the cards link to.
#[component]
pub fn GlossaryPage() -> impl IntoView {
    document().set_title("Glossary · stacklab");
    view! {
        <article class="glossary">
            <h1>"Glossary"</h1>
            <p class="lead">"The terms the lessons use, in one place. In a lesson, a term's first use opens its entry in a card."</p>
            <dl>
                {GLOSSARY
                    .iter()
                    .map(|t| view! {
                        <dt id=t.id.as_ref()>{t.term.as_ref()}</dt>
                        <dd inner_html=t.html.as_ref()></dd>
                    })
                    .collect_view()}
            </dl>
        </article>
    }
}
