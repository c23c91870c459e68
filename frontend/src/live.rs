//! Talking to the stacklab server: start a run, follow its events, and
//! what `/api/health` says of Linux guests (asked once per visit).

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use stacklab_api::{DemoId, ErrorBody, ErrorCode, RunCreated, RunEvent};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{EventSource, MessageEvent, RequestInit, Response};

/// Why a run could not be started, in words for a learner.
#[derive(Debug, Clone, PartialEq)]
pub enum StartError {
    /// No answer at all: the page is served statically or the server is down.
    Unreachable,
    /// The server answered with an error (Docker down, image missing…).
    Refused { code: ErrorCode, message: String },
}

impl StartError {
    /// A sentence for the widget.
    pub fn explain(&self) -> String {
        match self {
            StartError::Unreachable => "The live demo is unavailable: the stacklab server does not answer (this page may be served as static files). The lesson text works without it.".into(),
            StartError::Refused { message, .. } => format!("The server cannot run this demo right now: {message}"),
        }
    }
}

/// Where the browser keeps its learner id.
const LEARNER_KEY: &str = "stacklab.learner";

/// This browser's learner id: random, made on first use and kept in
/// `localStorage`, so "my runs" lists the runs started from this browser.
/// It identifies a browser, not a person, and is not a secret.
pub fn learner_id() -> Option<String> {
    let storage = web_sys::window()?.local_storage().ok()??;
    if let Ok(Some(id)) = storage.get_item(LEARNER_KEY) {
        if stacklab_api::valid_learner(&id) {
            return Some(id);
        }
    }
    let id: String = (0..24)
        .map(|_| {
            let n = (js_sys::Math::random() * 36.0) as u32;
            char::from_digit(n.min(35), 36).unwrap_or('0')
        })
        .collect();
    storage.set_item(LEARNER_KEY, &id).ok()?;
    Some(id)
}

/// Where the join page keeps the class this browser joined.
const CLASS_KEY: &str = "stacklab.class";

/// The class this browser joined on `/join/{code}`, if any: runs name it,
/// and each demo card shows the room's results beside the learner's own.
pub fn class_code() -> Option<String> {
    let storage = web_sys::window()?.local_storage().ok()??;
    storage
        .get_item(CLASS_KEY)
        .ok()?
        .filter(|c| stacklab_api::valid_class_code(c))
}

thread_local! {
    /// The lab this page talks to: the origin that served it, or the one
    /// an exported page names in `<meta name="stacklab-lab">` (`stacklab
    /// export --lab`).
    static LAB: String = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector("meta[name=stacklab-lab]").ok().flatten())
        .and_then(|m| m.get_attribute("content"))
        .map(|lab| lab.trim_end_matches('/').to_owned())
        .unwrap_or_default();
}

/// The address of an API `path` (`/api/…`) on the lab.
pub fn api_url(path: &str) -> String {
    LAB.with(|lab| format!("{lab}{path}"))
}

/// `GET path` (`/api/…`) from the lab as text; `Err` with a sentence when
/// there is no answer or the server says no.
pub async fn get_text(path: &str) -> Result<String, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: Response = JsFuture::from(window.fetch_with_str(&api_url(path)))
        .await
        .map_err(|_| {
            "the stacklab server does not answer (this page may be served as static files)"
                .to_owned()
        })?
        .unchecked_into();
    let text = JsFuture::from(response.text().map_err(|_| "unreadable answer")?)
        .await
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    if response.ok() {
        return Ok(text);
    }
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => e.message,
        Err(_) => {
            "the stacklab server does not answer (this page may be served as static files)".into()
        }
    })
}

/// `POST path` (`/api/…`) with a JSON `body`: whether the server said
/// yes, and its answer's text; `Err` when there is no answer.
pub async fn post(path: &str, body: &str) -> Result<(bool, String), StartError> {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let headers = web_sys::Headers::new().map_err(|_| StartError::Unreachable)?;
    let _ = headers.set("Content-Type", "application/json");
    init.set_headers(&headers);
    let window = web_sys::window().ok_or(StartError::Unreachable)?;
    let response: Response = JsFuture::from(window.fetch_with_str_and_init(&api_url(path), &init))
        .await
        .map_err(|_| StartError::Unreachable)?
        .unchecked_into();
    let text = JsFuture::from(response.text().map_err(|_| StartError::Unreachable)?)
        .await
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    Ok((response.ok(), text))
}

/// `POST /api/runs`, with the guesses locked at the click.
pub async fn start_run(demo: DemoId) -> Result<String, StartError> {
    // A `CreateRun`, written out: learner ids and class codes are plain
    // ASCII (checked when read), and the guesses' numbers go through `num`
    // (serde's float writer would cost the bundle more than this).
    let mut body = format!(r#"{{"demo":"{demo}""#);
    if let Some(learner) = learner_id() {
        body.push_str(&format!(r#","learner":"{learner}""#));
    }
    if let Some(class) = class_code() {
        body.push_str(&format!(r#","class":"{class}""#));
    }
    body.push_str(&crate::predict::guesses_json(demo));
    if crate::xray::trace_asked(demo) {
        body.push_str(r#","trace":true"#);
    }
    body.push('}');
    let (ok, text) = post("/api/runs", &body).await?;
    if ok {
        return serde_json::from_str::<RunCreated>(&text)
            .map(|c| c.id)
            .map_err(|_| StartError::Unreachable);
    }
    // A static file server answers 404/405 with HTML: that is "no backend".
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(StartError::Refused {
            code: e.error,
            message: e.message,
        }),
        Err(_) => Err(StartError::Unreachable),
    }
}

/// An open event stream; closing it (or dropping it) stops the callbacks.
pub struct Subscription {
    source: EventSource,
    _callbacks: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Follows `/api/runs/{id}/events`: `on_event` for each event, `on_lost`
/// when the browser gives up on the stream before the run finished.
pub fn follow(
    id: &str,
    on_event: impl Fn(RunEvent) + 'static,
    on_lost: impl Fn() + 'static,
) -> Option<Rc<RefCell<Option<Subscription>>>> {
    let source = EventSource::new(&api_url(&format!("/api/runs/{id}/events"))).ok()?;
    let slot: Rc<RefCell<Option<Subscription>>> = Rc::new(RefCell::new(None));
    let on_event = Rc::new(on_event);
    let mut callbacks = Vec::new();
    for name in ["phase", "queued", "log", "x_ray", "finished"] {
        let on_event = on_event.clone();
        // Weak: the subscription owns these callbacks; no reference cycle.
        let slot = Rc::downgrade(&slot);
        let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let Some(data) = e
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string())
            else {
                return;
            };
            if let Some(event) = crate::wire::event(&data) {
                let finished = matches!(event.kind, stacklab_api::EventKind::Finished { .. });
                on_event(event);
                if finished {
                    // Otherwise EventSource would reconnect and replay the run.
                    if let Some(sub) = slot
                        .upgrade()
                        .as_ref()
                        .and_then(|s| s.borrow().as_ref().map(|s| s.source.clone()))
                    {
                        sub.close();
                    }
                }
            }
        });
        source
            .add_event_listener_with_callback(name, cb.as_ref().unchecked_ref())
            .ok()?;
        callbacks.push(cb);
    }
    let lost_slot = Rc::downgrade(&slot);
    // A dropped connection is retried by the browser itself, which names
    // the last event it saw (`Last-Event-ID`), and the server keeps the run
    // for a grace period: only a stream the browser gave up on is lost.
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let closed = lost_slot
            .upgrade()
            .as_ref()
            .and_then(|s| s.borrow().as_ref().map(|s| s.source.ready_state()))
            .is_none_or(|state| state == EventSource::CLOSED);
        if closed {
            on_lost();
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    callbacks.push(on_error);
    *slot.borrow_mut() = Some(Subscription {
        source,
        _callbacks: callbacks,
    });
    Some(slot)
}

/// Why this server cannot boot Linux guests (`None`: it can, or nobody has
/// asked yet). Shared by every Linux demo card and the compare block, so the server's
/// `/api/health` is asked once per visit, not once per card.
#[derive(Clone, Copy)]
pub struct LinuxGuestNote {
    reason: RwSignal<Option<String>>,
    asked: RwSignal<bool>,
}

impl LinuxGuestNote {
    /// Provides an empty note to the component tree.
    pub fn provide() {
        provide_context(LinuxGuestNote {
            reason: RwSignal::new(None),
            asked: RwSignal::new(false),
        });
    }

    pub fn get() -> Option<LinuxGuestNote> {
        use_context::<LinuxGuestNote>()
    }

    /// The reason, asking the server the first time.
    pub fn fetched(self) -> RwSignal<Option<String>> {
        if !self.asked.get_untracked() {
            self.asked.set(true);
            let reason = self.reason;
            leptos::task::spawn_local(async move {
                let Ok(text) = get_text("/api/health").await else {
                    return;
                };
                // Only the field read here (`linux_guests.reason`, present
                // when they cannot run): a whole `Health` costs the bundle
                // its deserialiser.
                #[derive(serde::Deserialize)]
                struct Health {
                    linux_guests: LinuxGuests,
                }
                #[derive(serde::Deserialize)]
                struct LinuxGuests {
                    reason: Option<String>,
                }
                if let Ok(Health {
                    linux_guests: LinuxGuests { reason: Some(why) },
                }) = serde_json::from_str(&text)
                {
                    reason.set(Some(why));
                }
            });
        }
        self.reason
    }
}

/// Each demo's headline figures, labelled and explained by the server's
/// figure table (`GET /api/figures`, cacheable), so the browser carries no
/// copy of the table.
pub async fn figures() -> Result<Vec<stacklab_api::DemoFigures>, String> {
    serde_json::from_str(&get_text("/api/figures").await?).map_err(|e| e.to_string())
}
