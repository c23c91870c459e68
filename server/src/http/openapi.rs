//! The API's OpenAPI 3.1 description, generated from the handlers'
//! `#[utoipa::path]` attributes and the `api` crate's types, and served at
//! `GET /api/openapi.json`. The API's routes are registered here, each
//! with its description (`routes!`), so a route cannot exist undescribed.
//!
//! Every operation may also answer 403 (a `Host` or `Origin` this server
//! does not serve), 500 (a store failure, with a code and a sentence, never
//! a path) and 503 (`request_timeout`); [`CommonErrors`]
//! adds those once.

use std::sync::OnceLock;

use stacklab_api::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{classes, demos, health, runs, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stacklab",
        description = "Runs real PostgreSQL containers and real KVM micro-VMs, and streams every phase and reading. Only the built-in demos can be run.",
    ),
    // Named only by the event streams' schemas (see below).
    components(schemas(stacklab_api::RoomChange, stacklab_api::RoomLesson, stacklab_api::RunEvent)),
    tags(
        (name = "lab", description = "What this server can run"),
        (name = "runs", description = "Start a demo, follow it, read the history"),
        (name = "classes", description = "Workshop mode: an instructor's class and its room"),
    )
)]
struct ApiDoc;

/// The errors any operation may answer, and the instructor's bearer token.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "instructor",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The instructor token `stacklab serve` prints"))
                    .build(),
            ),
        );
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(ErrorBody::schema()))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                for (status, what) in [
                    ("403", "A Host or Origin this server does not serve"),
                    (
                        "500",
                        "The server failed; the body names the code, not the cause",
                    ),
                    (
                        "503",
                        "No answer within the request deadline, or the run history past its bounds (then with Retry-After)",
                    ),
                ] {
                    op.responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| RefOr::T(error(what)));
                }
            }
        }
    }
}

/// What an operation with a JSON body answers when the body is wrong.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description only: handlers answer through AppError
pub enum BodyErrors {
    #[response(status = 413, description = "Body over 4 KiB")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not JSON")]
    NotJson(ErrorBody),
    #[response(
        status = 422,
        description = "Not the request this operation takes (unknown field or value)"
    )]
    Invalid(ErrorBody),
}

/// The document, made once when the app is built.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "lab",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    let text = DOCUMENT.get().map(String::as_str).unwrap_or("{}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
}

/// The API's routes (paths relative to `/api`); their description is
/// served at `/api/openapi.json`.
pub fn api_routes() -> axum::Router<AppState> {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(openapi_json))
        .routes(routes!(runs::create_run, runs::list_runs))
        .routes(routes!(runs::export_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::run_events))
        .routes(routes!(demos::latest))
        .routes(routes!(demos::figures))
        .routes(routes!(classes::create_class))
        .routes(routes!(classes::class_view))
        .routes(routes!(classes::join_class))
        .routes(routes!(classes::remove_member))
        .routes(routes!(classes::room_points))
        .routes(routes!(classes::export_class))
        .routes(routes!(classes::room_events))
        .routes(routes!(classes::report_learning))
        .routes(routes!(classes::send_lesson))
        .routes(routes!(classes::room_now))
        .split_for_parts();
    // The document names full paths: the router is nested under /api.
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| (format!("/api{path}"), item))
        .collect();
    // After the prefixing: it walks the paths the routes added.
    CommonErrors.modify(&mut doc);
    DOCUMENT.get_or_init(|| {
        let mut json = serde_json::to_value(&doc).unwrap_or_default();
        describe_event_streams(&mut json);
        json.to_string()
    });
    router
}

/// An event stream's schema is that of one event (OpenAPI 3.1 has no
/// stream type; this is how 3.2 and Schemathesis read it): its `event`
/// name, its `id`, and `data`, a JSON document of the named schema.
fn event_schema(names: &[&str], data: serde_json::Value, with_id: bool) -> serde_json::Value {
    let mut properties = serde_json::json!({
        "event": {"type": "string", "enum": names},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": data,
        },
    });
    if with_id {
        properties["id"] = serde_json::json!({"type": "string", "pattern": "^[0-9]+$"});
    }
    serde_json::json!({"type": "object", "required": ["event", "data"], "properties": properties})
}

fn describe_event_streams(doc: &mut serde_json::Value) {
    let streams = [
        (
            "/api/runs/{id}/events",
            event_schema(
                &super::runs::RUN_EVENT_NAMES,
                serde_json::json!({"$ref": "#/components/schemas/RunEvent"}),
                true,
            ),
        ),
        (
            "/api/classes/{code}/events",
            // `{}` when the stream missed changes (the page refetches) and
            // for `learning` (a member's learning changed: no names).
            event_schema(
                &["changed", "lesson", "learning"],
                serde_json::json!({"anyOf": [
                    {"$ref": "#/components/schemas/RoomChange"},
                    {"$ref": "#/components/schemas/RoomLesson"},
                    {"type": "object", "maxProperties": 0},
                ]}),
                false,
            ),
        ),
    ];
    for (path, schema) in streams {
        let content =
            &mut doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"];
        content["schema"] = schema;
    }
}
