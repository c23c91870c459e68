//! `/runs`: the runs started from this browser, as the server's history
//! database has them, charted, paged and exportable; `/runs/:id`: one of
//! them again.

use leptos::prelude::*;
use stacklab_api::{DemoFigures, DemoId, RunPage, RunState, RunSummary};

use crate::charts::{fmt_mib, fmt_ms, LineChart, Series};
use crate::live;

/// Runs fetched per page.
const PAGE: u32 = 20;

async fn fetch_page(learner: &str, before: Option<i64>) -> Result<RunPage, String> {
    let mut url = format!("/api/runs?limit={PAGE}&learner={learner}");
    if let Some(b) = before {
        url.push_str(&format!("&before={b}"));
    }
    let text = live::get_text(&url).await?;
    serde_json::from_str(&text).map_err(|e| format!("unexpected answer from the server: {e}"))
}

/// The "my runs" page.
#[component]
pub fn HistoryPage() -> impl IntoView {
    document().set_title("My runs · stacklab");
    let learner = live::learner_id();
    let runs = RwSignal::new(Vec::<RunSummary>::new());
    let next = RwSignal::new(None::<i64>);
    let error = RwSignal::new(None::<String>);
    let loaded = RwSignal::new(false);
    let named = RwSignal::new(Vec::<DemoFigures>::new());
    let load = {
        let learner = learner.clone();
        move |before: Option<i64>| {
            let Some(learner) = learner.clone() else {
                error.set(Some(
                    "This browser does not allow local storage, so it cannot keep a learner id."
                        .into(),
                ));
                return;
            };
            leptos::task::spawn_local(async move {
                if named.with_untracked(Vec::is_empty) {
                    // What each chart's figure is, from the server's figure table.
                    named.set(live::figures().await.unwrap_or_default());
                }
                match fetch_page(&learner, before).await {
                    Ok(page) => {
                        runs.update(|r| r.extend(page.runs));
                        next.set(page.next_before);
                        error.set(None);
                    }
                    Err(e) => error.set(Some(format!("The history is unavailable: {e}."))),
                }
                loaded.set(true);
            });
        }
    };
    load(None);
    let older = move |_| load(next.get_untracked());
    let export = move |format: &str| {
        live::api_url(&format!(
            "/api/runs/export?format={format}&learner={}",
            learner.as_deref().unwrap_or_default()
        ))
    };
    view! {
        <article class="history">
            <h1>"My runs"</h1>
            <p class="lead">
                "Every demo you started from this browser, as the server recorded it. "
                "The server keeps them in its SQLite database, so they survive a restart."
            </p>
            <Show when=move || !runs.with(Vec::is_empty)>
                <p class="export">
                    "Download all your runs: " <a href=export("csv") download="stacklab-runs.csv">"CSV"</a> " · "
                    <a href=export("json") download="stacklab-runs.json">"JSON"</a>
                </p>
            </Show>
            <p class="status" role="status" aria-live="polite">
                {move || error.get().unwrap_or_else(|| {
                    if !loaded.get() {
                        "Loading…".into()
                    } else if runs.with(Vec::is_empty) {
                        "No runs yet: start a demo in a lesson and it will appear here.".into()
                    } else {
                        String::new()
                    }
                })}
            </p>
            {move || (!runs.with(Vec::is_empty)).then(|| view! { <HistoryChart runs=runs.get() named=named.get() /> })}
            <Show when=move || !runs.with(Vec::is_empty)>
                <table class="runs">
                    <caption>"Newest first. Times are the server's measurements; memory is what each run held at ready (a density sweep: all five together)."</caption>
                    <thead>
                        <tr>
                            <th scope="col">"Started (UTC)"</th>
                            <th scope="col">"Demo"</th>
                            <th scope="col">"Result"</th>
                            <th scope="col">"Time (start → ready)"</th>
                            <th scope="col">"Waited in line"</th>
                            <th scope="col">"Memory"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || runs.get().into_iter().map(run_row).collect_view()}
                    </tbody>
                </table>
            </Show>
            <Show when=move || next.get().is_some()>
                <button class="older" on:click=older.clone()>"Show older runs"</button>
            </Show>
        </article>
    }
}

fn run_row(r: RunSummary) -> impl IntoView {
    let when = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(r.accepted_at_ms as f64))
        .to_iso_string()
        .as_string()
        .unwrap_or_default()
        .replace('T', " ");
    let when = when.get(..19).unwrap_or(&when).to_owned();
    let result = match (&r.state, &r.error) {
        (RunState::Succeeded, _) => "ready".to_owned(),
        (_, Some(e)) => format!("failed: {}", e.code),
        (RunState::Queued | RunState::Running, _) => "running".to_owned(),
        (RunState::Failed, None) => "failed".to_owned(),
    };
    let prefix = if r.demo.density_of().is_some() {
        format!("{} at once: ", DemoId::DENSITY_MAX)
    } else {
        String::new()
    };
    let time = r.time_to_ready_us.map(|t| {
        if r.demo.density_of().is_some() {
            format!("whole sweep: {}", fmt_ms(t))
        } else {
            fmt_ms(t)
        }
    });
    // Absent for runs stored before the wait was its own figure.
    let waited = r.queue_wait_us.map(fmt_ms).unwrap_or_else(|| "—".into());
    let memory = r.memory_bytes.map(|b| format!("{prefix}{}", fmt_mib(b)));
    view! {
        <tr data-run=r.id.clone() title=r.error.map(|e| e.message).unwrap_or_default()>
            <td>{when}</td>
            <td><a href=format!("/runs/{}", r.id)>{r.demo.title()}</a></td>
            <td>{result}</td>
            <td class="num">{time}</td>
            <td class="num">{waited}</td>
            <td class="num">{memory}</td>
        </tr>
    }
}

/// Time to ready of each successful run, oldest to newest: one chart per
/// demo, each on its own scale (a micro-VM's milliseconds would vanish on
/// the container's scale).
#[component]
fn HistoryChart(runs: Vec<RunSummary>, named: Vec<DemoFigures>) -> impl IntoView {
    let chart = |demo: DemoId, name: &'static str, class: &'static str| {
        // What the figure is, from the server's figure table.
        let figure = named
            .iter()
            .find(|f| f.demo == demo)
            .map(|f| f.time.clone())?;
        let mut times: Vec<f64> = runs
            .iter()
            .filter(|r| r.demo == demo && r.state == RunState::Succeeded)
            .filter_map(|r| r.time_to_ready_us)
            .collect();
        times.reverse();
        let points: Vec<(f64, f64)> = times
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i as f64 + 1.0, t))
            .collect();
        (!points.is_empty()).then(|| {
            view! {
                <LineChart
                    title=format!("{name}: {}, run by run", figure.label)
                    x_label="your 1st, 2nd, … run listed here"
                    series=vec![Series { name, class, points }]
                    fmt_y=fmt_ms
                    how=format!("{} (time waiting in line for a free slot is not in it).", figure.how)
                />
            }
        })
    };
    view! {
        <div class="charts">
            {chart(DemoId::HelloContainer, "Smallest container", "s-container")}
            {chart(DemoId::PostgresContainer, "PostgreSQL container", "s-container")}
            {chart(DemoId::MicroVm, "Micro-VM", "s-vm")}
        </div>
    }
}

/// `/runs/:id`: one run again, from the server's history: its phases, its
/// results with how each was measured, and when it ran in the viewer's own
/// time zone. Shareable: the id is the whole address.
#[component]
pub fn RunView(id: String) -> impl IntoView {
    let events = RwSignal::new(Vec::<stacklab_api::RunEvent>::new());
    let record = RwSignal::new(None::<(DemoId, Option<i64>)>);
    let error = RwSignal::new(None::<String>);
    leptos::task::spawn_local(async move {
        match live::get_text(&format!("/api/runs/{id}"))
            .await
            .and_then(|t| {
                crate::wire::record(&t)
                    .map_err(|e| format!("unexpected answer from the server: {e}"))
            }) {
            Ok(r) => {
                document().set_title(&format!("{} · stacklab run", r.demo.title()));
                record.set(Some((r.demo, r.accepted_at_ms)));
                events.set(r.events);
            }
            Err(why) => error.set(Some(why)),
        }
    });
    let when = |ms: i64| {
        js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64))
            .to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED)
            .as_string()
            .unwrap_or_default()
    };
    view! {
        <article class="run-page">
            <p class="meta"><a href="/runs">"← My runs"</a></p>
            <h1>{move || record.get().map_or("A run".to_owned(), |(d, _)| d.title().to_owned())}</h1>
            <p class="status" role="status">
                {move || error.get().or_else(|| record.get().map(|(_, at)| match at {
                    Some(ms) => format!("Started {} (your time zone). Times below count from the moment the server accepted the request.", when(ms)),
                    None => "Times below count from the moment the server accepted the request.".into(),
                }))}
            </p>
            <crate::widgets::Timeline events />
            <crate::widgets::Results events />
            <crate::widgets::ConsoleTail events />
        </article>
    }
}
