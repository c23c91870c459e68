//! The server's edges as an attacker or an operator meets them: client
//! identity behind Debian's nginx (each learner their own allowance, a
//! flood locking out only its sender), a crowd of connections trickling
//! their headers (the server stays responsive to others, connections
//! beyond the cap are closed, tricklers are cut at the header timeout),
//! `/metrics` behind the Host guard, and density sweeps limited outside a
//! class and the instructor's inside one.
//!
//! Every address is on loopback: clients bind to 127.0.0.2, 127.0.0.10 …
//! to be different addresses. No Docker engine is given to the servers: a
//! run request that passes every limit fails fast with 503
//! `docker_unavailable`, which is all these tests need to tell "let
//! through" from "refused".

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use stacklab_api::{ErrorBody, ErrorCode, Health};
use stacklab_server::http::client::TrustedProxies;
use stacklab_server::http::conn::ConnLimits;
use stacklab_server::{AppState, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::nginx::{start_nginx, Processes};

/// A lab served on a loopback port by the real accept loop, in this
/// test's runtime; stopped when dropped.
struct Lab {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_lab(state: AppState) -> Lab {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(stacklab_server::run(listener, state, async move {
        let _ = stopped.await;
    }));
    Lab {
        addr,
        stop: Some(stop),
    }
}

/// A state without a Docker engine (see the module's doc).
fn lab_state() -> AppState {
    AppState::with_docker(None, None, Settings::default())
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((src, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// One HTTP/1.0 request from `src`: status and body.
async fn request_from(
    src: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, String) {
    let mut s = connect_from(src, to).await;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, body.to_owned())
}

fn error_of(body: &str) -> ErrorCode {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("{e}: {body}"))
        .error
}

const RUN: &str = r#"{"demo":"hello-container"}"#;
/// Run requests one client may send at once in these tests.
const BURST: usize = 3;

/// A run request from `src` through `lb`: its status and error code.
async fn run_from(src: Ipv4Addr, lb: SocketAddr, extra: &str) -> (u16, ErrorCode) {
    let (status, body) = request_from(src, lb, "POST", "/api/runs", extra, RUN).await;
    (status, error_of(&body))
}

fn learner(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + i)
}

/// Behind Debian's nginx, with `--trusted-proxy 127.0.0.1` (nginx's
/// address as the lab sees it): a flooder at 127.0.0.30 is refused with
/// 429 after its burst, however it spoofs `X-Forwarded-For`, and 20
/// learners at 127.0.0.10 … 127.0.0.29 each still get their whole burst,
/// then their own 429. Without the flag (a second lab behind its own
/// nginx), the same flood locks the first learner out: the threat this
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_each_learner_has_their_own_allowance_and_a_flood_only_its_own() {
    if !common::nginx::present() {
        return;
    }
    let limited = |trusted: &[&str]| {
        lab_state()
            .with_run_limit(BURST as f64, Duration::from_secs(600))
            .with_trusted_proxies(
                TrustedProxies::parse(&trusted.iter().map(|t| t.to_string()).collect::<Vec<_>>())
                    .unwrap(),
            )
    };
    let lab = start_lab(limited(&["127.0.0.1"])).await;
    let blind = start_lab(limited(&[])).await;
    let (dir, blind_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut procs = Processes::default();
    let (nginx, lb) = start_nginx(dir.path(), &[&lab.addr.to_string()]);
    procs.add("nginx", nginx);
    let (nginx, blind_lb) = start_nginx(blind_dir.path(), &[&blind.addr.to_string()]);
    procs.add("nginx-blind", nginx);
    let (lb, blind_lb): (SocketAddr, SocketAddr) = (lb.parse().unwrap(), blind_lb.parse().unwrap());

    // The flood: a new made-up X-Forwarded-For on every request.
    let flooder = Ipv4Addr::new(127, 0, 0, 30);
    let mut accepted = 0;
    for i in 0..10 {
        let spoof = format!("X-Forwarded-For: 127.0.0.{}\r\n", 100 + i);
        match run_from(flooder, lb, &spoof).await {
            (503, ErrorCode::DockerUnavailable) => accepted += 1,
            (429, ErrorCode::RateLimited) => break,
            other => panic!("the flood's request {i}: {other:?}"),
        }
    }
    assert_eq!(accepted, BURST, "the flooder gets its burst, then 429");
    assert_eq!(
        run_from(flooder, lb, "").await,
        (429, ErrorCode::RateLimited),
        "and stays refused"
    );

    // Twenty learners, twenty addresses: each their whole burst.
    let learners = (0..20u8).map(|i| {
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..BURST {
                answers.push(run_from(learner(i), lb, "").await);
            }
            let over = run_from(learner(i), lb, "").await;
            (answers, over)
        })
    });
    for (i, done) in futures_util::future::join_all(learners)
        .await
        .into_iter()
        .enumerate()
    {
        let (answers, over) = done.unwrap();
        assert!(
            answers
                .iter()
                .all(|a| *a == (503, ErrorCode::DockerUnavailable)),
            "learner {i} was refused within their burst: {answers:?}"
        );
        assert_eq!(
            over,
            (429, ErrorCode::RateLimited),
            "learner {i} has a limit of their own"
        );
    }

    // The lab without --trusted-proxy: everyone is nginx's one address.
    for _ in 0..BURST {
        assert_eq!(run_from(flooder, blind_lb, "").await.0, 503);
    }
    assert_eq!(run_from(flooder, blind_lb, "").await.0, 429);
    assert_eq!(
        run_from(learner(0), blind_lb, "").await,
        (429, ErrorCode::RateLimited),
        "without the flag one flooder locks everyone out"
    );
    procs.stop("nginx");
    procs.stop("nginx-blind");
}

/// `/api/health` from `src`: how long it took, and what it said.
async fn health_from(src: Ipv4Addr, to: SocketAddr) -> (Duration, Health) {
    let started = Instant::now();
    let (status, body) = request_from(src, to, "GET", "/api/health", "", "").await;
    assert_eq!(status, 200, "{body}");
    (started.elapsed(), serde_json::from_str(&body).unwrap())
}

/// 50 connections from 127.0.0.2 (the per-address cap here) trickle a
/// byte of their headers every 300 ms and never finish: `/api/health`
/// from 127.0.0.3 answers throughout, each in well under the timeout; 10
/// more connections from 127.0.0.2 are closed at once; every trickler is
/// closed after the 5 s header-read timeout, not before. The numbers show
/// in the health report. About 6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_crowd_holds_only_its_cap_and_others_are_served() {
    const CAP: usize = 50;
    // Long enough that a loaded host connects the crowd and tries the
    // connections over the cap before the first tricklers are cut.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 3);
    let limits = ConnLimits::new(HEADER_TIMEOUT, Duration::from_secs(60), CAP, None);
    let lab = start_lab(lab_state().with_connection_limits(limits)).await;
    let to = lab.addr;

    // Health from another address, every 100 ms, until told to stop.
    let (stop_watch, mut stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        let mut asked = 0;
        while !*stopped.borrow() {
            let (took, _) = health_from(other, to).await;
            slowest = slowest.max(took);
            asked += 1;
            tokio::select! {
                _ = stopped.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        (slowest, asked)
    });

    let started = Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..CAP {
        let mut s = connect_from(attacker, to).await;
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        tricklers.push(tokio::spawn(async move {
            // Writes until the server closes; returns when it did.
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = s.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {} // a 408, say: read on to the close
                    },
                    () = tokio::time::sleep(Duration::from_millis(300)) => {
                        if s.write_all(b"a").await.is_err() {
                            return Instant::now();
                        }
                    }
                }
            }
        }));
    }
    // All held: the report says so.
    let mut held = 0;
    for _ in 0..50 {
        held = health_from(other, to).await.1.connections.busiest_address;
        if held as usize == CAP {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(held as usize, CAP, "the attacker holds its cap");

    // Beyond the cap: closed at once (EOF or reset before any answer).
    for i in 0..10 {
        assert!(
            started.elapsed() < HEADER_TIMEOUT - Duration::from_millis(500),
            "too slow to try connection {i} over the cap while the crowd is held: {:?}",
            started.elapsed()
        );
        let mut s = connect_from(attacker, to).await;
        let _ = s.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} over the cap is still open after 1 s"));
        assert!(
            read.is_err() || buf.is_empty(),
            "connection {i} over the cap was answered: {}",
            String::from_utf8_lossy(&buf)
        );
    }

    // The tricklers: closed by the header timeout, not before it.
    for t in tricklers {
        let closed = tokio::time::timeout(HEADER_TIMEOUT * 4, t)
            .await
            .expect("a trickler is closed")
            .unwrap();
        let after = closed.duration_since(started);
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(500) && after < HEADER_TIMEOUT * 3,
            "a trickler closed after {after:?} (header timeout {HEADER_TIMEOUT:?})"
        );
    }
    let _ = stop_watch.send(true);
    let (slowest, asked) = watcher.await.unwrap();
    assert!(asked >= 10, "health was asked {asked} times");
    // Not held up until the crowd is cut.
    assert!(
        slowest < HEADER_TIMEOUT / 2,
        "the slowest health answer from another address took {slowest:?}"
    );
    eprintln!("health from another address: {asked} answers, slowest {slowest:?}");

    let (_, health) = health_from(other, to).await;
    let c = health.connections;
    assert_eq!(
        (c.per_address_cap as usize, c.header_read_timeout_s),
        (CAP, HEADER_TIMEOUT.as_secs_f64())
    );
    assert!(c.refused_total >= 10, "{c:?}");
    assert!(c.open <= 2, "the crowd is gone: {c:?}");
    assert!(u64::from(c.total_cap) < c.fd_limit, "{c:?}");
}

/// A request whose body stalls after its headers (past hyper's header
/// timeout, which covers only the head) is closed by the idle timeout,
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_closed_by_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let limits = ConnLimits::new(Duration::from_secs(10), idle, 8, None);
    let lab = start_lab(lab_state().with_connection_limits(limits)).await;
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 4), lab.addr).await;
    let started = Instant::now();
    s.write_all(
        b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"demo\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("closed within 10 s");
    let after = started.elapsed();
    assert!(
        after >= idle && after < idle * 4,
        "closed after {after:?} (idle timeout {idle:?})"
    );
    let (_, health) = health_from(Ipv4Addr::new(127, 0, 0, 5), lab.addr).await;
    assert_eq!(health.connections.idle_closed_total, 1);
}

/// `/metrics` answers only names this lab serves, like the API.
#[tokio::test]
async fn metrics_refuse_a_foreign_host() {
    let state = lab_state();
    let req = |host: &str| {
        axum::http::Request::get("/metrics")
            .header(header::HOST, host)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let (status, _, body) = common::send(state.clone(), req("evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body), ErrorCode::HostNotAllowed);
    let (status, _, body) = common::send(state.clone(), req("127.0.0.1:8080")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&format!(
            "stacklab_connections_per_address_cap {}",
            stacklab_server::http::conn::PER_ADDRESS
        )),
        "{body}"
    );
}

/// A run request as from `ip`, with the instructor's token if `token`.
fn post_run(ip: [u8; 4], body: &str, token: Option<&str>) -> axum::http::Request<axum::body::Body> {
    let mut req =
        axum::http::Request::post("/api/runs").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let mut req = req.body(axum::body::Body::from(body.to_owned())).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((ip, 1))));
    req
}

/// Density sweeps: outside a class one per client per period (429
/// `density_limited`, `Retry-After`), other addresses unaffected, single
/// runs unaffected, the instructor's token not limited; in a class a
/// learner is refused (403 `density_for_instructor`), the instructor not.
#[tokio::test]
async fn density_sweeps_are_limited_outside_a_class_and_the_instructors_in_one() {
    const TOKEN: &str = "edges-test-token";
    let state = lab_state()
        .with_instructor_token(TOKEN)
        .with_density_limit(1.0, Duration::from_secs(600));
    let density = r#"{"demo":"density-container"}"#;
    let send = |req| common::send(state.clone(), req);

    let (status, _, body) = send(post_run([10, 0, 0, 1], density, None)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first passes: {body}"
    );
    let (status, headers, body) = send(post_run([10, 0, 0, 1], density, None)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_of(&body), ErrorCode::DensityLimited);
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((500..=600).contains(&wait), "{wait}");
    let micro = r#"{"demo":"density-micro-vm"}"#;
    let (status, _, _) = send(post_run([10, 0, 0, 1], micro, None)).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "one limit for both sweeps"
    );
    let (status, _, body) = send(post_run([10, 0, 0, 1], RUN, None)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "single runs pass: {body}"
    );
    let (status, _, _) = send(post_run([10, 0, 0, 2], density, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "another address");
    let (status, _, _) = send(post_run([10, 0, 0, 1], density, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the instructor");

    // In a class.
    let (status, _, body) = common::send_json(
        state.clone(),
        "POST",
        "/api/classes",
        r#"{"name":"Density","expires_in_secs":3600}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let code = serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = common::send_json(
        state.clone(),
        "POST",
        &format!("/api/classes/{code}/join"),
        r#"{"learner":"density-learner-1"}"#,
        None,
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    let in_class =
        format!(r#"{{"demo":"density-container","class":"{code}","learner":"density-learner-1"}}"#);
    let (status, _, body) = send(post_run([10, 0, 0, 3], &in_class, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_of(&body), ErrorCode::DensityForInstructor);
    let for_room = format!(r#"{{"demo":"density-container","class":"{code}"}}"#);
    let (status, _, body) = send(post_run([10, 0, 0, 3], &for_room, Some(TOKEN))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the instructor runs it: {body}"
    );
}
