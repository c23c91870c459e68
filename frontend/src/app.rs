//! Pages and layout.

use leptos::prelude::*;

use crate::compare::{CompareBlock, LatestRuns};
use crate::diagram::StackDiagram;
use crate::history::{HistoryPage, RunView};
use crate::learn::{on_prose_click, GlossaryPage, OpenTerm, QuizBlock, TermCard};
use crate::lessons::{self, Block, Lesson, LESSONS};
use crate::live::LinuxGuestNote;
use crate::progress::Progress;
use crate::router::{Location, Route};
use crate::runs::ActiveRuns;
use crate::widgets::{DemoWidget, HostClaim};

/// What every page's components reach through context.
fn provide_contexts() {
    LatestRuns::provide();
    LinuxGuestNote::provide();
    Progress::provide();
    OpenTerm::provide();
    crate::learn::RoomTurn::provide();
    // After the contexts a finished run feeds.
    ActiveRuns::provide();
    HostClaim::provide();
}

/// The root of `/embed/{demo}`: that demo's card alone, framed by another
/// site's page (see the server's `http::embed`).
#[component]
pub fn Embedded(demo: lessons::DemoId) -> impl IntoView {
    provide_contexts();
    // `<stacklab-demo view="x-ray">`: its runs capture the kernel's events.
    let search = window().location().search().unwrap_or_default();
    if search.contains("view=x-ray") {
        crate::xray::ask_trace(demo);
    }
    view! {
        <main class="embed">
            <DemoWidget demo prediction=None />
            <TermCard />
        </main>
    }
}

/// The root component.
#[component]
pub fn App() -> impl IntoView {
    provide_contexts();
    OpenTerm::listen();
    let location = Location::provide();
    let route = Memo::new(move |_| Route::of(&location.path.get()));
    let current = move |href: &'static str| {
        move || (location.path.get().trim_end_matches('/') == href).then_some("page")
    };
    let host = HostClaim::get();
    let page_of = move |route: Route| match route {
        Route::Home => view! { <Home /> }.into_any(),
        Route::Lesson(slug) => match lessons::find(&slug) {
            Some(l) => view! { <LessonView lesson=l /> }.into_any(),
            None => view! { <NotFound /> }.into_any(),
        },
        Route::Runs => view! { <HistoryPage /> }.into_any(),
        Route::Run(id) => view! { <RunView id /> }.into_any(),
        Route::Glossary => view! { <GlossaryPage /> }.into_any(),
        Route::NotFound => view! { <NotFound /> }.into_any(),
    };
    let page = move || {
        // A new page shows the host explanation once again.
        if let Some(h) = host {
            h.reset();
        }
        page_of(route.get())
    };
    view! {
        <crate::learn::RoomFollow />
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="site-header">
            <a href="/" class="brand" aria-current=current("")>
                <span class="brand-mark" aria-hidden="true">"▤"</span>
                "stacklab"
            </a>
            <span class="tagline">"containers and virtual machines, measured"</span>
            <a href="/glossary" class="glossary-link" aria-current=current("/glossary")>"Glossary"</a>
            <a href="/runs" class="my-runs" aria-current=current("/runs")>"My runs"</a>
        </header>
        <div class="layout">
            <CourseNav />
            <main id="main" tabindex="-1">
                {page}
                <TermCard />
            </main>
        </div>
    }
}

/// The list of lessons beside every page; on narrow screens it folds into
/// a "Lessons" button above the page and closes again after a choice.
#[component]
fn CourseNav() -> impl IntoView {
    let path = Location::get().map(|l| l.path).unwrap_or_default();
    let progress = Progress::get();
    // Why Linux guests cannot run here (from /api/health), if they cannot.
    let linux_off = LinuxGuestNote::get().map(LinuxGuestNote::fetched);
    let open = RwSignal::new(false);
    Effect::new(move || {
        path.track();
        open.set(false);
    });
    view! {
        <nav class="course-nav" class:open=open aria-label="Lessons">
            <button
                class="nav-toggle"
                aria-expanded=move || open.get().to_string()
                aria-controls="lesson-list"
                on:click=move |_| open.update(|o| *o = !*o)
            >
                {move || if open.get() { "Lessons ▴" } else { "Lessons ▾" }}
            </button>
            <ol id="lesson-list">
                {LESSONS
                    .iter()
                    .map(|l| {
                        let href = lessons::href(l);
                        let target = href.clone();
                        let current = move || {
                            (path.get() == target).then_some("page")
                        };
                        let done = move || {
                            let mut p = progress.of(l);
                            // A demo this server cannot run does not count
                            // against the lesson.
                            if linux_off.is_some_and(|why| why.with(Option::is_some)) {
                                p.demos -= l
                                    .blocks
                                    .iter()
                                    .filter(|b| matches!(b, Block::Demo(d, _) if d.is_linux_guest()))
                                    .count()
                                    .min(p.demos - p.demos_run);
                            }
                            p.summary()
                        };
                        view! {
                            <li>
                                <a href=href aria-current=current>
                                    {l.title.as_ref()}
                                </a>
                                <span class="progress" data-lesson=l.slug.as_ref()>{done}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ol>
        </nav>
    }
}

/// The course overview.
#[component]
fn Home() -> impl IntoView {
    set_title("stacklab: containers and virtual machines, measured");
    let minutes: u32 = LESSONS.iter().map(|l| l.reading_minutes).sum();
    view! {
        <article class="home">
            <h1>"Containers and virtual machines, run for real"</h1>
            <p class="lead">{stacklab_content::HOME_LEAD}</p>
            <p class="meta">{format!("{} lessons · about {minutes} minutes of reading", LESSONS.len())}</p>
            <StackDiagram focus=lessons::StackFocus::Both />
            <ol class="lesson-cards">
                {LESSONS.iter().map(|l| view! { <LessonCard lesson=l /> }).collect_view()}
            </ol>
        </article>
    }
}

#[component]
fn LessonCard(lesson: &'static Lesson) -> impl IntoView {
    view! {
        <li class="lesson-card">
            <h2>
                <a href=lessons::href(lesson)>{lesson.title.as_ref()}</a>
            </h2>
            <p inner_html=lesson.summary.as_ref()></p>
            <p class="meta">
                {format!("{} min read", lesson.reading_minutes)}
                {lesson
                    .tags
                    .iter()
                    .map(|t| view! { <span class="tag">{t.as_ref()}</span> })
                    .collect_view()}
            </p>
        </li>
    }
}

#[component]
fn LessonView(lesson: &'static Lesson) -> impl IntoView {
    set_title(&format!("{} · stacklab", lesson.title));
    // A new lesson starts at its top, like a new page would.
    if let Some(window) = web_sys_window() {
        window.scroll_to_with_x_and_y(0.0, 0.0);
    }
    Progress::get().mark_read(&lesson.slug);
    let (prev, next) = lesson.neighbours(LESSONS);
    let position = LESSONS
        .iter()
        .position(|l| l.slug == lesson.slug)
        .unwrap_or(0)
        + 1;
    view! {
        <article class="lesson">
            <p class="meta">
                {format!("Lesson {position} of {} · {} min read", LESSONS.len(), lesson.reading_minutes)}
            </p>
            // Named for Element Timing: the browser test times its paint.
            {leptos::html::h1()
                .attr("elementtiming", "lesson-heading")
                .child(lesson.title.as_ref())}
            <p class="lead" inner_html=lesson.summary.as_ref()></p>
            {lesson.blocks.iter().map(|b| render_block(&lesson.slug, b)).collect_view()}
            <nav class="pager" aria-label="Previous and next lesson">
                {prev
                    .map(|p| {
                        view! {
                            <a class="prev" rel="prev" href=lessons::href(p)>
                                <span class="dir">"← Previous"</span>
                                <span>{p.title.as_ref()}</span>
                            </a>
                        }
                    })}
                {next
                    .map(|n| {
                        view! {
                            <a class="next" rel="next" href=lessons::href(n)>
                                <span class="dir">"Next →"</span>
                                <span>{n.title.as_ref()}</span>
                            </a>
                        }
                    })}
            </nav>
        </article>
    }
}

fn render_block(slug: &'static str, block: &'static Block) -> AnyView {
    match block {
        Block::Html(html) => {
            view! { <div class="prose" inner_html=html.as_ref() on:click=on_prose_click()></div> }
                .into_any()
        }
        Block::StackDiagram(focus) => view! { <StackDiagram focus=*focus /> }.into_any(),
        Block::Demo(demo, prediction) => {
            view! { <DemoWidget demo=*demo prediction=prediction.as_ref() /> }.into_any()
        }
        Block::XRay(demo, prediction) => {
            view! { <crate::xray::XRayBlock demo=*demo prediction /> }.into_any()
        }
        Block::Compare => view! { <CompareBlock /> }.into_any(),
        Block::Quiz(questions) => {
            view! { <QuizBlock slug questions=questions.as_ref() /> }.into_any()
        }
    }
}

#[component]
fn NotFound() -> impl IntoView {
    set_title("Not found · stacklab");
    view! {
        <article class="not-found">
            <h1>"No such page"</h1>
            <p>
                "This address is not a lesson. " <a href="/">"Back to the course overview"</a>
            </p>
        </article>
    }
}

fn set_title(title: &str) {
    document().set_title(title);
}

fn web_sys_window() -> Option<leptos::web_sys::Window> {
    leptos::web_sys::window()
}
