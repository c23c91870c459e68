//! What makes the learner take part: "check yourself" questions, the guess
//! a demo card asks for before its run, and glossary terms that open a
//! definition card by click, tap or keyboard.

use leptos::ev;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;
use stacklab_api::{EventKind, Metric, Outcome, RunEvent};

use crate::charts::fmt_ms;
use crate::lessons::{self, time_scale_of, DemoId, Prediction, Question, GLOSSARY, TIME_SCALES};
use crate::progress::{question_key, Progress};

/// ```` ```quiz ````: each question answered in the page, kept in progress.
#[component]
pub fn QuizBlock(slug: &'static str, questions: &'static [Question]) -> impl IntoView {
    view! {
        <section class="quiz" aria-label="Check yourself">
            {questions.iter().map(|q| view! { <QuestionView slug q /> }).collect_view()}
        </section>
    }
}

#[component]
fn QuestionView(slug: &'static str, q: &'static Question) -> impl IntoView {
    let progress = Progress::get();
    let key = question_key(slug, q.number);
    let stored = {
        let key = key.clone();
        move || progress.answered(&key)
    };
    let chosen = RwSignal::new(stored());
    let name = format!("q-{slug}-{}", q.number);
    let check = {
        let key = key.clone();
        move |_| {
            if let Some(choice) = chosen.get_untracked() {
                progress.answer(key.clone(), choice);
            }
        }
    };
    let verdict = move || {
        stored().map(|choice| {
            let right = choice == q.answer;
            let answer = q.choices[q.answer as usize].as_ref();
            view! {
                <p class=if right { "verdict right" } else { "verdict wrong" } role="status">
                    <strong>{if right { "Right. " } else { "Not quite. " }}</strong>
                    {(!right).then(|| view! { "The answer: " <span inner_html=answer></span> ". " })}
                    <span inner_html=q.why.as_ref()></span>
                </p>
            }
        })
    };
    view! {
        <fieldset class="question" data-question=q.number>
            <legend inner_html=q.prompt.as_ref()></legend>
            {q.choices
                .iter()
                .enumerate()
                .map(|(i, choice)| {
                    let i = i as u32;
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

/// Before the run: the learner's guess of the time scale. After it: the
/// guess beside what was measured, with why.
#[component]
pub fn GuessBeside(
    demo: DemoId,
    prediction: &'static Prediction,
    events: RwSignal<Vec<RunEvent>>,
    /// Why the demo cannot run here, if it cannot: then there is no guess
    /// to make (and no Tab stops).
    unavailable: RwSignal<Option<String>>,
) -> impl IntoView {
    let progress = Progress::get();
    let guess = move || progress.guessed(demo);
    let name = format!("guess-{}", demo.as_str());
    // What the learner waited for: request → ready of a single run (the
    // wait in line included: it is from the click), or a whole sweep.
    let (key, said) = match demo.density_of() {
        None => (Metric::RequestToReady, "Measured from your click to ready"),
        Some(_) => (Metric::SweepTotal, "The whole sweep, every step"),
    };
    let measured = move || {
        events.with(|v| {
            v.iter().find_map(|e| match &e.kind {
                EventKind::Finished {
                    outcome: outcome @ Outcome::Ready { .. },
                } => outcome.value(key),
                _ => None,
            })
        })
    };
    let verdict = move || {
        measured().map(|us| {
            let actual = time_scale_of(us as u64);
            let line = match guess() {
                Some(g) if g == actual => format!("You guessed {}: right.", TIME_SCALES[g].0),
                Some(g) => format!(
                    "You guessed {}; it took {}.",
                    TIME_SCALES[g].0, TIME_SCALES[actual].0
                ),
                None => "You did not guess this time.".to_owned(),
            };
            view! {
                <p class="guess-verdict" role="status">
                    <strong>{line}</strong>
                    {format!(" {said}: {}. ", fmt_ms(us))}
                    <span inner_html=prediction.why.as_ref()></span>
                </p>
            }
        })
    };
    view! {
        <fieldset class="predict" disabled=move || unavailable.with(Option::is_some)>
            <legend>
                <span class="predict-label">"Before you run it: "</span>
                <span inner_html=prediction.question.as_ref()></span>
            </legend>
            {TIME_SCALES
                .iter()
                .enumerate()
                .map(|(i, (label, _))| {
                    // Written out like the quiz's choices: a shared generic
                    // helper costs more bundle bytes than the six lines.
                    view! {
                        <label class="choice">
                            <input
                                type="radio"
                                name=name.clone()
                                value=i.to_string()
                                prop:checked=move || guess() == Some(i)
                                on:change=move |_| progress.guess(demo, i)
                            />
                            {*label}
                        </label>
                    }
                })
                .collect_view()}
        </fieldset>
        {verdict}
    }
}

/// The glossary term whose card is open, and the button that opened it.
#[derive(Clone, Copy)]
pub struct OpenTerm(
    RwSignal<Option<&'static str>>,
    StoredValue<Option<web_sys::HtmlElement>, LocalStorage>,
);

impl OpenTerm {
    pub fn provide() {
        provide_context(OpenTerm(RwSignal::new(None), StoredValue::new_local(None)));
    }

    fn get() -> OpenTerm {
        use_context::<OpenTerm>().expect("OpenTerm::provide at the root")
    }

    fn close(&self) {
        self.0.set(None);
        if let Some(button) = self.1.get_value() {
            let _ = button.focus();
        }
    }
}

/// A click (or Enter/Space, which buttons turn into clicks) on a glossary
/// term in rendered prose opens its card.
pub fn on_prose_click() -> impl Fn(ev::MouseEvent) + 'static {
    let open = OpenTerm::get();
    move |e: ev::MouseEvent| {
        let Some(target) = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let Ok(Some(button)) = target.closest("button.term") else {
            return;
        };
        let Some(id) = button.get_attribute("data-term") else {
            return;
        };
        if let Some(term) = lessons::term(&id) {
            open.1
                .set_value(button.dyn_into::<web_sys::HtmlElement>().ok());
            open.0.set(Some(term.id.as_ref()));
        }
    }
}

/// The open term's definition, as a non-modal dialog at the foot of the
/// screen; Escape or "Close" returns focus to the term.
#[component]
pub fn TermCard() -> impl IntoView {
    let open = OpenTerm::get();
    let card = NodeRef::<leptos::html::Div>::new();
    Effect::new(move |_| {
        if open.0.get().is_some() {
            if let Some(el) = card.get() {
                let _ = el.focus();
            }
        }
    });
    move || {
        open.0.get().and_then(lessons::term).map(|term| {
            view! {
                <div
                    class="term-card"
                    role="dialog"
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
                    <div inner_html=term.html.as_ref()></div>
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
