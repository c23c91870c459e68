//! The HTTP surface, driven through `app(state)` with `oneshot` (no socket),
//! plus one test on a real listener.

mod common;

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::get;
use http_body_util::BodyExt;
use stacklab_api::{
    DockerStatus, ErrorBody, ErrorCode, Health, KvmBacking, KvmStatus, LinuxGuestStatus,
};
use stacklab_server::{app, AppState, Settings};
use tower::ServiceExt;

/// A fake `dist/` folder: an app shell shaped like Trunk's and one asset.
fn dist() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!DOCTYPE html><html><head><title>shell</title><script type=\"module\">boot()</script></head><body><noscript>shell</noscript></body></html>",
    )
    .unwrap();
    std::fs::write(dir.path().join("app-123.js"), "console.log('app')").unwrap();
    dir
}

fn state(static_dir: Option<&Path>) -> AppState {
    AppState::new(static_dir.map(Path::to_path_buf), Settings::default())
}

#[tokio::test]
async fn health_reports_this_host() {
    let (status, headers, body) = get(state(None), "/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let health: Health = serde_json::from_str(&body).unwrap();
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));

    // Docker: compare with what the docker CLI says about the same engine.
    let cli = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match (cli, &health.docker) {
        (Ok(out), DockerStatus::Reachable { version, .. }) if out.status.success() => {
            assert_eq!(version, String::from_utf8_lossy(&out.stdout).trim());
        }
        (Ok(out), DockerStatus::Unreachable { reason }) if !out.status.success() => {
            assert!(
                reason.contains("dockerd"),
                "the reason says how to start it: {reason}"
            );
        }
        (Err(_), DockerStatus::Unreachable { .. }) => {}
        (cli, docker) => panic!("health says {docker:?} but the docker CLI says {cli:?}"),
    }

    // KVM: on this project's machines /dev/kvm comes from the nested kvm_pvm module.
    match &health.kvm {
        KvmStatus::Available {
            api_version,
            backing,
            explanation,
        } => {
            assert_eq!(*api_version, 12);
            assert!(!explanation.is_empty());
            let pvm = Path::new("/sys/module/kvm_pvm").exists();
            assert_eq!(*backing == KvmBacking::NestedPvm, pvm);
            // On kvm-pvm a Linux kernel cannot boot, and health says so
            // with the same code a run request would get.
            if pvm {
                match &health.linux_guests {
                    LinuxGuestStatus::Unavailable { code, reason } => {
                        assert_eq!(*code, ErrorCode::LinuxGuestUnsupported);
                        assert!(reason.contains("cannot boot here"), "{reason}");
                    }
                    other => panic!("kvm-pvm, yet Linux guests are {other:?}"),
                }
            }
        }
        KvmStatus::Unavailable { reason } => {
            assert!(
                !Path::new("/dev/kvm").exists(),
                "/dev/kvm exists but: {reason}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_api_routes_get_json_404_and_wrong_methods_json_405() {
    let (status, headers, body) = get(state(None), "/api/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let err: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(err.error, ErrorCode::NotFound);
    assert!(err.message.contains("/api/nope"), "{}", err.message);

    let res = app(state(None))
        .oneshot(Request::delete("/api/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.error, ErrorCode::MethodNotAllowed);
}

#[tokio::test]
async fn serves_files_and_the_app_shell_for_deep_links() {
    let dir = dist();
    let (status, _, body) = get(state(Some(dir.path())), "/app-123.js").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "console.log('app')")
    );

    let (status, _, body) = get(state(Some(dir.path())), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<noscript>shell</noscript>"), "{body}");

    let (status, headers, body) = get(state(Some(dir.path())), "/runs/abc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<noscript>shell</noscript>"),
        "deep links get the shell"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");

    // A missing asset is a 404, not the shell (which would confuse the browser).
    let (status, _, _) = get(state(Some(dir.path())), "/missing-456.wasm").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// What `curl /lessons/containers` sees: the lesson's text, its headings
/// and its diagram in the first response, under a CSP that lets only the
/// shell's own boot script run and nobody frame the page.
#[tokio::test]
async fn a_lesson_page_carries_its_text_before_any_script_runs() {
    let dir = dist();
    let lessons = common::lessons();
    let lesson = lessons.iter().find(|l| l.slug == "containers").unwrap();
    let (status, headers, body) = get(state(Some(dir.path())), "/lessons/containers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&format!(
            "<h1 elementtiming=\"lesson-heading\">{}</h1>",
            lesson.title
        )),
        "{body}"
    );
    for section in lesson.sections.iter() {
        assert!(
            body.contains(&format!("id=\"{}\"", section.id)),
            "{}",
            section.id
        );
    }
    assert!(body.contains(r#"<figure class="stack-diagram static""#));
    assert!(body.contains(&format!("<title>{} · stacklab</title>", lesson.title)));
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-"),
        "{csp}"
    );
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");

    // A lesson that does not exist is a 404 (with the shell, whose app
    // says so in words).
    let (status, _, _) = get(state(Some(dir.path())), "/lessons/no-such-lesson").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // --no-prerender: the bare shell, as before.
    let bare = state(Some(dir.path())).without_prerender();
    let (status, _, body) = get(bare, "/lessons/containers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("prerendered"), "{body}");
}

/// `/embed/{demo}` may be framed by the lab and the `--embed-origin`s
/// only; `/embed.js` is readable by any page; the API answers embed
/// origins with CORS and refuses others in a way their page can read.
#[tokio::test]
async fn embeds_are_framed_and_called_only_from_allowed_origins() {
    let dir = dist();
    let docs = "http://127.0.0.1:4000";
    let lab = || {
        state(Some(dir.path()))
            .with_origins(None, &[docs.to_owned()])
            .unwrap()
    };
    let (status, headers, body) = get(lab(), "/embed/micro-vm").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .ends_with("frame-ancestors 'self' http://127.0.0.1:4000"),
        "{headers:?}"
    );
    assert!(
        body.contains(r#"<section class="demo-card static" data-demo="micro-vm""#),
        "{body}"
    );
    assert!(body.contains(r#"<script src="/embed/frame.js"></script>"#));
    let (status, _, body) = get(lab(), "/embed/no-such-demo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: ErrorBody = serde_json::from_str(&body).unwrap();
    assert!(
        err.message.contains("micro-vm"),
        "names the demos: {}",
        err.message
    );

    let (status, headers, body) = get(lab(), "/embed.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(body.contains("customElements.define(\"stacklab-demo\""));

    let ask = |method: &str, origin: &str| {
        Request::builder()
            .method(method)
            .uri("/api/health")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap()
    };
    // The preflight of a docs page's request, then the request.
    let res = app(lab()).oneshot(ask("OPTIONS", docs)).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], docs);
    assert!(res.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .contains("POST"));
    let res = app(lab()).oneshot(ask("GET", docs)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], docs);

    // Another site: refused, and its page may read why.
    let other = "http://127.0.0.1:4001";
    let res = app(lab()).oneshot(ask("GET", other)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], other);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.error, ErrorCode::OriginNotAllowed);
    assert!(
        err.message.contains("--embed-origin http://127.0.0.1:4001"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn path_traversal_is_a_404() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
    let dist = root.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "shell").unwrap();
    for uri in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/lessons/..%2F..%2Fsecret.txt",
        "/..%2fsecret.txt",
    ] {
        let (status, _, body) = get(state(Some(&dist)), uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!body.contains("secret"), "{uri} leaked the file");
    }
}

#[tokio::test]
async fn without_a_built_frontend_pages_say_how_to_build_it() {
    let (status, _, body) = get(state(None), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("trunk build"), "{body}");
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let dir = dist();
    std::fs::write(dir.path().join("big.js"), "let x = 1;\n".repeat(2000)).unwrap();
    let res = app(state(Some(dir.path())))
        .oneshot(
            Request::get("/big.js")
                .header(header::ACCEPT_ENCODING, "br")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "br");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        body.len() < 2000,
        "22 KB of repetition compresses to {} bytes",
        body.len()
    );
}

/// A real TCP listener on port 0: a request over the socket, then a graceful
/// shutdown that lets the server task finish.
#[tokio::test]
async fn real_listener_serves_and_shuts_down_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stacklab_server::run(listener, state(None), async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\"kvm\""));

    stop.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops within 5 s of the shutdown signal");
    result.unwrap().unwrap();
}

/// DNS rebinding and other sites' pages: a request for a name this lab
/// does not serve, or from a page of another origin, is refused with a
/// JSON 403; loopback, IP literals and `--public-url` pass.
#[tokio::test]
async fn the_api_answers_only_its_own_names_and_origins() {
    let state = state(None)
        .with_origins(Some("https://lab.example.org"), &[])
        .unwrap();
    let ask = |host: &'static str, origin: Option<&'static str>| {
        let state = state.clone();
        async move {
            let mut req = Request::get("/api/health").header(header::HOST, host);
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            common::send(state, req.body(Body::empty()).unwrap()).await
        }
    };
    for (host, origin) in [
        ("127.0.0.1:8080", None),
        ("localhost:8080", Some("http://localhost:8080")),
        ("lab.example.org", Some("https://lab.example.org")),
        ("10.1.2.3:8080", None),
    ] {
        assert_eq!(
            ask(host, origin).await.0,
            StatusCode::OK,
            "{host} {origin:?}"
        );
    }
    for (host, origin, code) in [
        ("rebound.evil.example:8080", None, ErrorCode::HostNotAllowed),
        (
            "127.0.0.1:8080",
            Some("https://evil.example"),
            ErrorCode::OriginNotAllowed,
        ),
    ] {
        let (status, _, body) = ask(host, origin).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host} {origin:?}");
        let err: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(err.error, code);
    }
    assert!(state
        .clone()
        .with_origins(Some("lab.example.org"), &[])
        .is_err());
}

/// An export longer than one page of the history is streamed page by page
/// and arrives whole: every run once, in both formats.
#[tokio::test]
async fn a_long_history_exports_whole_page_by_page() {
    let state = state(None);
    let history = state.runs.history().clone();
    let n = 1234;
    common::fill_history(&history, n, "learner-long").await;
    let (status, _, csv) = get(
        state.clone(),
        "/api/runs/export?format=csv&learner=learner-long",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(csv.lines().count(), n + 1, "a header and a line per run");
    let (status, _, json) = get(
        state.clone(),
        "/api/runs/export?format=json&learner=learner-long",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let runs: Vec<stacklab_api::RunSummary> = serde_json::from_str(&json).unwrap();
    assert_eq!(runs.len(), n);
    let ids: std::collections::HashSet<_> = runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), n, "each run once");
    assert_eq!(runs[0].id, format!("run-{:06}", n - 1), "newest first");
}

/// Every API route, as the router serves it: the OpenAPI document must
/// list exactly these.
const API_ROUTES: [(&str, &str); 19] = [
    ("get", "/api/health"),
    ("get", "/api/openapi.json"),
    ("get", "/api/runs"),
    ("post", "/api/runs"),
    ("get", "/api/runs/export"),
    ("get", "/api/runs/{id}"),
    ("get", "/api/runs/{id}/events"),
    ("get", "/api/demos/{demo}/latest"),
    ("get", "/api/figures"),
    ("post", "/api/classes"),
    ("get", "/api/classes/{code}"),
    ("post", "/api/classes/{code}/join"),
    ("get", "/api/classes/{code}/points"),
    ("get", "/api/classes/{code}/export"),
    ("get", "/api/classes/{code}/events"),
    ("delete", "/api/classes/{code}/members/{learner}"),
    ("post", "/api/classes/{code}/learning"),
    ("post", "/api/classes/{code}/lesson"),
    ("get", "/api/classes/{code}/now"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_only_routes() {
    let (status, headers, body) = get(state(None), "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            listed.push((method.clone(), path.clone()));
            let responses = op["responses"].as_object().unwrap();
            for code in ["403", "500", "503"] {
                assert!(
                    responses.contains_key(code),
                    "{method} {path} documents {code}"
                );
            }
        }
    }
    listed.sort();
    let mut want: Vec<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    // Each schema a response names is in the document.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "RunRecord",
        "RunEvent",
        "Health",
        "ErrorBody",
        "ClassView",
        "ErrorCode",
        "Key",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }

    // Each listed operation is served by its handler, not the fallbacks,
    // and the other methods on its path are refused.
    for (method, path) in API_ROUTES {
        let uri = path
            .replace("{id}", "0123456789abcdef")
            .replace("{code}", "ABCDEF")
            .replace("{learner}", "learner-aaaa");
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let res = app(state(None)).oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no API route"),
            "{method} {uri} reached a fallback: {status} {text}"
        );
        for other in ["PUT", "DELETE", "PATCH"]
            .into_iter()
            .filter(|m| !m.eq_ignore_ascii_case(method))
        {
            let req = Request::builder()
                .method(other)
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let res = app(state(None)).oneshot(req).await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {uri}"
            );
        }
    }
}

/// The figure table reaches clients: every demo's headline time, wait in
/// line and memory, labelled and explained as `api/src/figures.rs` says.
#[tokio::test]
async fn figures_are_served_from_the_one_table() {
    let (status, _, body) = get(state(None), "/api/figures").await;
    assert_eq!(status, StatusCode::OK);
    let all: Vec<stacklab_api::DemoFigures> = serde_json::from_str(&body).unwrap();
    assert_eq!(all.len(), stacklab_api::DemoId::ALL.len());
    for f in &all {
        let time = stacklab_api::figures::headline(f.demo, stacklab_api::Question::Time);
        assert_eq!(f.time.label, time.label, "{}", f.demo);
        assert!(!f.waited.how.is_empty() && !f.memory.how.is_empty());
        assert_eq!(
            f.platform.is_some(),
            f.demo.density_of().is_none(),
            "{}",
            f.demo
        );
    }
}

/// The scripts the server sends as they are (room, embed) parse: a
/// syntax error there breaks a whole page, and no Rust compiler sees them.
#[test]
fn the_served_scripts_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    for script in ["room/room.js", "embed/embed.js", "embed/frame.js"] {
        let out = std::process::Command::new("node")
            .arg("--check")
            .arg(dir.join(script))
            .output()
            .expect("node (./dev installs npm, which brings it)");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
