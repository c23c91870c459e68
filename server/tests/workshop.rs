//! Workshop mode through the HTTP API: an instructor creates a class,
//! learners join with its code, their runs (real micro-VMs) count for the
//! room, and the instructor sees names where learners see only points.

mod common;
use common::{get, get_as_instructor, kvm_present, run_request_over_http, send_json};

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use stacklab_api::{Class, ClassView, ErrorBody, ErrorCode, Health, RoomPoints, RunState};
use stacklab_server::{AppState, Settings};

fn state() -> AppState {
    AppState::new(None, Settings::default()).with_instructor_token("workshop-test-token")
}

const TOKEN: Option<&str> = Some("workshop-test-token");

fn error_of(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn create_class(state: &AppState, name: &str) -> Class {
    create_class_with(
        state,
        &format!(r#"{{"name":"{name}","expires_in_secs":3600}}"#),
    )
    .await
}

/// A class created by the instructor with `body` (the request as sent).
async fn create_class_with(state: &AppState, body: &str) -> Class {
    let (status, _, body) = send_json(state.clone(), "POST", "/api/classes", body, TOKEN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn join(state: &AppState, code: &str, learner: &str, name: Option<&str>) -> StatusCode {
    let body = match name {
        Some(n) => format!(r#"{{"learner":"{learner}","display_name":"{n}"}}"#),
        None => format!(r#"{{"learner":"{learner}"}}"#),
    };
    let uri = format!("/api/classes/{code}/join");
    send_json(state.clone(), "POST", &uri, &body, None).await.0
}

#[tokio::test]
async fn the_instructors_routes_need_the_token() {
    let state = state();
    let (status, headers, body) = send_json(
        state.clone(),
        "POST",
        "/api/classes",
        r#"{"name":"x"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(error_of(&body).error, ErrorCode::InstructorTokenRequired);
    let (status, _, _) = send_json(
        state.clone(),
        "POST",
        "/api/classes",
        r#"{"name":"x"}"#,
        Some("a-wrong-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let class = create_class(&state, "Tuesday").await;
    for uri in [
        format!("/api/classes/{}", class.code),
        format!("/api/classes/{}/export", class.code),
        "/api/runs".to_owned(),
        "/api/runs/export".to_owned(),
    ] {
        let (status, _, body) = get(state.clone(), &uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert_eq!(error_of(&body).error, ErrorCode::InstructorTokenRequired);
    }
    // A learner still lists their own runs without it.
    let (status, _, _) = get(state.clone(), "/api/runs?learner=learner-aaaa").await;
    assert_eq!(status, StatusCode::OK);

    // Bad classes are refused with a sentence.
    for (body, why) in [
        (r#"{"name":""}"#, "name must be"),
        (r#"{"name":"x","expires_in_secs":5}"#, "expires_in_secs"),
    ] {
        let (status, _, text) = send_json(state.clone(), "POST", "/api/classes", body, TOKEN).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(error_of(&text).message.contains(why), "{text}");
    }
}

#[tokio::test]
async fn an_expired_class_refuses_to_join_and_an_unknown_code_is_not_found() {
    let state = state();
    let over = state
        .runs
        .history()
        .create_class("Last week", -1000)
        .await
        .unwrap();
    let uri = format!("/api/classes/{}/join", over.code);
    let (status, _, body) = send_json(
        state.clone(),
        "POST",
        &uri,
        r#"{"learner":"learner-aaaa"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
    let err = error_of(&body);
    assert_eq!(err.error, ErrorCode::ClassExpired);
    assert!(err.message.contains("Last week"), "{}", err.message);
    assert_eq!(
        join(&state, "ZZZZZZ", "learner-aaaa", None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        join(&state, "../etc", "learner-aaaa", None).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_class_sees_its_learners_runs_with_names_and_learners_see_only_points() {
    if !kvm_present() {
        return;
    }
    let state = state();
    let class = create_class(&state, "Room 101").await;
    assert_eq!(
        join(&state, &class.code, "learner-ada1", Some("Ada")).await,
        StatusCode::OK
    );
    // The code is read in any case.
    let lower = class.code.to_lowercase();
    assert_eq!(
        join(&state, &lower, "learner-bob1", Some("Bob")).await,
        StatusCode::OK
    );

    // A browser that did not join cannot count for the room.
    let (status, _, body) = send_json(
        state.clone(),
        "POST",
        "/api/runs",
        &format!(
            r#"{{"demo":"micro-vm","learner":"learner-eve1","class":"{}"}}"#,
            class.code
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body).error, ErrorCode::NotAMember);

    // The room's stream hears each run change, without names.
    let changes_uri = format!("/api/classes/{}/events", class.code);
    let res = tower::ServiceExt::oneshot(
        stacklab_server::app(state.clone()),
        axum::http::Request::get(&changes_uri)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut changes = res.into_body().into_data_stream();

    for learner in ["learner-ada1", "learner-bob1"] {
        let body = format!(
            r#"{{"demo":"micro-vm","learner":"{learner}","class":"{}"}}"#,
            class.code
        );
        let (_, events) = run_request_over_http(&state, &body, Duration::from_secs(30)).await;
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            stacklab_api::EventKind::Finished {
                outcome: stacklab_api::Outcome::Ready { .. }
            }
        )));
    }
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut changes),
    )
    .await
    .expect("the room's stream says something changed")
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("event: changed"), "{text}");
    assert!(
        !text.contains("Ada"),
        "no names on the room's stream: {text}"
    );

    // The history row is written just after the run reports finished.
    let mut view: Option<ClassView> = None;
    for _ in 0..100 {
        let (status, _, body) =
            get_as_instructor(state.clone(), &format!("/api/classes/{}", class.code)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: ClassView = serde_json::from_str(&body).unwrap();
        let done = v.points.len() == 2;
        view = Some(v);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = view.unwrap();
    assert!(!view.expired);
    let names: Vec<_> = view
        .members
        .iter()
        .map(|m| m.display_name.clone())
        .collect();
    assert_eq!(names, [Some("Ada".to_owned()), Some("Bob".to_owned())]);
    assert!(view
        .members
        .iter()
        .all(|m| m.runs == 1 && m.active.is_empty()));
    assert_eq!(view.points.len(), 2, "{:?}", view.points);
    for p in &view.points {
        assert_eq!(p.state, RunState::Succeeded);
        assert!(p.time_to_ready_us.is_some_and(|t| t > 0.0));
        assert!(p.memory_bytes.is_some_and(|m| m > 0.0));
        assert!(p.learner.is_some(), "the instructor sees whose");
        assert!(p.others_at_start.is_some());
    }
    assert!(!view.capacity.is_empty());

    // A learner's view: the same points, no learner ids, their own marked.
    let (status, _, body) = get(
        state.clone(),
        &format!("/api/classes/{}/points?learner=learner-ada1", class.code),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !body.contains("learner-bob1") && !body.contains("Bob"),
        "{body}"
    );
    let room: RoomPoints = serde_json::from_str(&body).unwrap();
    assert_eq!(room.points.iter().filter(|p| p.mine).count(), 1);
    assert!(room.points.iter().all(|p| p.learner.is_none()));

    // The export has a learner column and the names.
    let (status, headers, csv) = get_as_instructor(
        state.clone(),
        &format!("/api/classes/{}/export?format=csv", class.code),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let lines: Vec<_> = csv.lines().collect();
    assert!(
        lines[0].ends_with(
            ",learner,display_name,other_runs_at_start,guess_time_ms,guess_memory_mib,\
             guess_platform_share_pct,guess_density_slope_x,guess_exits,\
             guess_same_kernel_1yes_0no,guess_shared_namespaces,guess_page_faults,\
             lessons_read,quiz_answered,quiz_first_try_right"
        ),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        csv.contains(",learner-ada1,Ada,") && csv.contains(",learner-bob1,Bob,"),
        "{csv}"
    );

    // The same runs in /metrics, in Prometheus' text format.
    let (status, headers, metrics) = get(state.clone(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for line in [
        "stacklab_runs_started_total{demo=\"micro-vm\"} 2",
        "stacklab_runs_finished_total{demo=\"micro-vm\",outcome=\"succeeded\"} 2",
        "stacklab_time_to_ready_seconds_count{demo=\"micro-vm\"} 2",
        "stacklab_time_to_ready_seconds_bucket{demo=\"micro-vm\",le=\"+Inf\"} 2",
        "stacklab_queue_wait_seconds_count{demo=\"micro-vm\"} 2",
        "stacklab_runs_in_progress 0",
        // The room's stream, still open above.
        "stacklab_event_streams_open 1",
        "# TYPE stacklab_queue_waiting gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    // The room's pages are served by the binary itself.
    let (status, headers, page) = get(state.clone(), &format!("/class/{}", class.code)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page.contains("/room/room.js"));
}

/// The density sweep (fifteen starts) is run once by the instructor for
/// the room, not by every learner: with the token and no learner, a run
/// counts for the class; without the token it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_instructor_runs_the_density_sweep_once_for_the_room() {
    if !kvm_present() {
        return;
    }
    let state = state();
    let class = create_class(&state, "Sweep room").await;
    assert_eq!(
        join(&state, &class.code, "learner-ada1", None).await,
        StatusCode::OK
    );
    let body = format!(r#"{{"demo":"density-micro-vm","class":"{}"}}"#, class.code);
    let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, TOKEN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let id = serde_json::from_str::<stacklab_api::RunCreated>(&text)
        .unwrap()
        .id;
    let run = state.runs.get(&id).unwrap();
    let _watching = run.watch();
    let mut changes = run.subscribe();
    while !run.is_finished() {
        tokio::time::timeout(Duration::from_secs(60), changes.changed())
            .await
            .expect("the sweep finishes")
            .unwrap();
    }
    let mut room = RoomPoints { points: vec![] };
    for _ in 0..100 {
        let (_, _, body) = get(
            state.clone(),
            &format!("/api/classes/{}/points?learner=learner-ada1", class.code),
        )
        .await;
        room = serde_json::from_str(&body).unwrap();
        if !room.points.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(room.points.len(), 1, "the room sees the instructor's sweep");
    let sweep = &room.points[0];
    assert_eq!(sweep.demo, stacklab_api::DemoId::DensityMicroVm);
    assert_eq!(sweep.state, RunState::Succeeded);
    assert!(!sweep.mine);
    assert!(sweep.time_to_ready_us.is_some_and(|t| t > 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_class_no_longer_tags_runs_they_stay_the_learners_own() {
    if !kvm_present() {
        return;
    }
    let state = state();
    let class = create_class(&state, "Short").await;
    assert_eq!(
        join(&state, &class.code, "learner-ada1", None).await,
        StatusCode::OK
    );
    // Close it (as time would).
    let over = state
        .runs
        .history()
        .create_class("Over", -1000)
        .await
        .unwrap();
    let body = format!(
        r#"{{"demo":"micro-vm","learner":"learner-ada1","class":"{}"}}"#,
        over.code
    );
    let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "an expired class is ignored: {text}"
    );
}

#[tokio::test]
async fn run_requests_are_paced_per_address_and_per_learner_in_a_class() {
    // No Docker client here: a request that passes the pace check fails
    // fast with 503, which is all this test needs.
    let state = AppState::with_docker(None, None, Settings::default())
        .with_instructor_token("workshop-test-token")
        .with_run_limit(2.0, Duration::from_secs(60));
    let post = |ip: [u8; 4], body: String| {
        let mut req = axum::http::Request::post("/api/runs")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 1,
            ))));
        common::send(state.clone(), req)
    };
    let anon = || r#"{"demo":"postgres-container"}"#.to_owned();
    for _ in 0..2 {
        let (status, _, _) = post([10, 0, 0, 1], anon()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, headers, body) = post([10, 0, 0, 1], anon()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_of(&body).error, ErrorCode::RateLimited);
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another address is not affected.
    assert_eq!(
        post([10, 0, 0, 2], anon()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // A room behind one address: members are paced one by one.
    let class = create_class(&state, "NAT room").await;
    for n in 0..4 {
        let learner = format!("learner-nat{n}");
        assert_eq!(
            join(&state, &class.code, &learner, None).await,
            StatusCode::OK
        );
        let body = format!(
            r#"{{"demo":"postgres-container","learner":"{learner}","class":"{}"}}"#,
            class.code
        );
        let (status, _, text) = post([10, 0, 0, 1], body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{learner}: {text}");
    }
}

#[tokio::test]
async fn health_reports_each_queues_capacity_and_why_that_many_slots() {
    let (status, _, body) = get(state(), "/api/health").await;
    assert_eq!(status, StatusCode::OK);
    let health: Health = serde_json::from_str(&body).unwrap();
    assert_eq!(health.capacity.len(), 4, "{:?}", health.capacity);
    let containers = &health.capacity[0];
    let cores = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(
        containers.slots,
        (cores / stacklab_server::engine::CORES_PER_CONTAINER_RUN as u32).max(1)
    );
    assert!(
        containers.sized_by.contains("CPU"),
        "{}",
        containers.sized_by
    );
    assert_eq!((containers.in_use, containers.queued), (0, 0));
    assert_eq!(
        containers.max_waiting,
        containers.slots * stacklab_server::engine::WAITING_PER_SLOT as u32,
        "a line of 60 per slot"
    );
    assert_eq!(health.capacity[1].slots, cores, "a micro-VM slot per CPU");
    for sweeps in &health.capacity[2..] {
        assert_eq!(sweeps.slots, 1, "one sweep at a time");
        assert!(sweeps.sized_by.contains("after the single runs"));
    }
}

/// Live streams hold a connection each: one client may hold only so many,
/// and the next is refused with 429 and `Retry-After` until one closes.
#[tokio::test]
async fn event_streams_are_capped_per_client() {
    let state = state().with_stream_caps(1, 100);
    let class = state
        .runs
        .history()
        .create_class("Streams", 60_000)
        .await
        .unwrap();
    let uri = format!("/api/classes/{}/events", class.code);
    let open = || {
        tower::ServiceExt::oneshot(
            stacklab_server::app(state.clone()),
            axum::http::Request::get(&uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = open().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key(header::RETRY_AFTER));
    let body = http_body_util::BodyExt::collect(second.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        error_of(&String::from_utf8_lossy(&body)).error,
        ErrorCode::RateLimited
    );
    drop(first);
    assert_eq!(
        open().await.unwrap().status(),
        StatusCode::OK,
        "freed on close"
    );

    // A room behind one address: each member's run streams count for that
    // member, not for the address they share.
    if !kvm_present() {
        return;
    }
    let mut streams = Vec::new();
    for learner in ["learner-nat1", "learner-nat2"] {
        assert_eq!(
            join(&state, &class.code, learner, None).await,
            StatusCode::OK
        );
        let body = format!(
            r#"{{"demo":"micro-vm","learner":"{learner}","class":"{}"}}"#,
            class.code
        );
        let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let id = serde_json::from_str::<stacklab_api::RunCreated>(&text)
            .unwrap()
            .id;
        let res = tower::ServiceExt::oneshot(
            stacklab_server::app(state.clone()),
            axum::http::Request::get(format!("/api/runs/{id}/events"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{learner}'s stream");
        streams.push(res);
    }
}

/// `POST /api/classes/{code}/join` from a given client address.
async fn join_from(
    state: &AppState,
    ip: [u8; 4],
    code: &str,
    learner: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = axum::http::Request::post(format!("/api/classes/{code}/join"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(format!(
            r#"{{"learner":"{learner}"}}"#
        )))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 1,
        ))));
    common::send(state.clone(), req).await
}

/// A class made for 20 takes 20: the 21st join is refused with
/// `class_full` (409), a member joining again is not a new member, and
/// joins from one address beyond twice the class's size in a burst get
/// 429 with `Retry-After` (a whole room behind one NAT joins freely).
#[tokio::test]
async fn a_class_for_20_refuses_the_21st_join_and_paces_joins_per_address() {
    let state = state();
    let class = create_class_with(&state, r#"{"name":"Twenty","max_members":20}"#).await;
    assert_eq!(class.max_members, 20);
    let nat = [10, 0, 0, 7];
    let first_join = std::time::Instant::now();
    for n in 0..20 {
        let (status, _, body) =
            join_from(&state, nat, &class.code, &format!("learner-{n:04}")).await;
        assert_eq!(status, StatusCode::OK, "join {n}: {body}");
    }
    let (status, headers, body) = join_from(&state, nat, &class.code, "learner-0020").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(!headers.contains_key(header::RETRY_AFTER));
    let err = error_of(&body);
    assert_eq!(err.error, ErrorCode::ClassFull);
    assert!(
        err.message.contains("Twenty") && err.message.contains("20"),
        "{}",
        err.message
    );
    // A member joining again (a reload) is still welcome.
    assert_eq!(
        join_from(&state, nat, &class.code, "learner-0003").await.0,
        StatusCode::OK
    );
    let (_, _, body) =
        get_as_instructor(state.clone(), &format!("/api/classes/{}", class.code)).await;
    let view: ClassView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.members.len(), 20);
    assert_eq!(view.class.max_members, 20);

    // A script inventing learner ids from that address: refused as full
    // until its burst (twice the class) is spent, then paced.
    let mut paced = None;
    for n in 22..60 {
        let (status, headers, body) =
            join_from(&state, nat, &class.code, &format!("learner-{n:04}")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_of(&body).error, ErrorCode::RateLimited);
            let wait: u64 = headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=3).contains(&wait), "a minute per 20 joins: {wait}");
            paced = Some(n);
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    // The 41st join is paced, unless this host took more than 3 s for
    // them: the bucket refills one join every 3 s.
    let earned = (first_join.elapsed().as_secs_f64() / 3.0).floor() as usize;
    let paced = paced.expect("joins from one address are paced");
    assert!(
        (40..=40 + earned).contains(&paced),
        "the 41st join from one address is paced (+{earned} earned meanwhile): the join at {paced} was"
    );
    // Another address is not.
    let (status, _, _) = join_from(&state, [10, 0, 0, 8], &class.code, "learner-0099").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Sizes outside 1..=500 are refused with a sentence.
    for size in ["0", "501"] {
        let body = format!(r#"{{"name":"x","max_members":{size}}}"#);
        let (status, _, text) =
            send_json(state.clone(), "POST", "/api/classes", &body, TOKEN).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{size}");
        assert!(error_of(&text).message.contains("max_members"), "{text}");
    }
    // Without a size, the default.
    assert_eq!(
        create_class(&state, "Default").await.max_members,
        stacklab_api::DEFAULT_MAX_MEMBERS
    );
}

/// The instructor removes a member: only with the token; the member is
/// gone from the room, cannot join again and cannot start runs in the
/// class (403 `removed_from_class`), while the others still can.
#[tokio::test]
async fn a_removed_member_cannot_join_again_nor_run_in_the_class() {
    // No Docker client: a run request that passes the class checks fails
    // fast with 503, which is all this test needs.
    let state = AppState::with_docker(None, None, Settings::default())
        .with_instructor_token("workshop-test-token");
    let class = create_class(&state, "Removals").await;
    for learner in ["learner-ada1", "learner-flood"] {
        assert_eq!(
            join(&state, &class.code, learner, None).await,
            StatusCode::OK
        );
    }
    let uri = format!("/api/classes/{}/members/learner-flood", class.code);
    let (status, _, body) = send_json(state.clone(), "DELETE", &uri, "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = send_json(state.clone(), "DELETE", &uri, "", TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let removed: stacklab_api::RemovedMember = serde_json::from_str(&body).unwrap();
    assert_eq!(removed.learner, "learner-flood");
    assert_eq!(removed.runs_ended, 0, "it had none going");
    let unknown = format!("/api/classes/{}/members/learner-nobody", class.code);
    let (status, _, body) = send_json(state.clone(), "DELETE", &unknown, "", TOKEN).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_of(&body).error, ErrorCode::NotFound);

    let (status, _, body) = join_from(&state, [10, 0, 0, 1], &class.code, "learner-flood").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_of(&body).error, ErrorCode::RemovedFromClass);
    let run = |learner: &str| {
        format!(
            r#"{{"demo":"postgres-container","learner":"{learner}","class":"{}"}}"#,
            class.code
        )
    };
    let (status, _, body) = send_json(
        state.clone(),
        "POST",
        "/api/runs",
        &run("learner-flood"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let err = error_of(&body);
    assert_eq!(err.error, ErrorCode::RemovedFromClass);
    assert!(err.message.contains("removed"), "{}", err.message);
    let (status, _, body) = send_json(
        state.clone(),
        "POST",
        "/api/runs",
        &run("learner-ada1"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the others still run: {body}"
    );

    let (_, _, body) =
        get_as_instructor(state.clone(), &format!("/api/classes/{}", class.code)).await;
    let view: ClassView = serde_json::from_str(&body).unwrap();
    let members: Vec<_> = view.members.iter().map(|m| m.learner.as_str()).collect();
    assert_eq!(members, ["learner-ada1"]);
    // The room page offers the removal.
    let (_, _, script) = get(state.clone(), "/room/room.js").await;
    assert!(script.contains("/members/") && script.contains("\"DELETE\""));
}

/// Holds its slot until the run is stopped or the gate opens: a stand-in
/// for a demo, so a long line needs no container or VM, and no run can
/// finish on its own while the test is filling or emptying the line.
struct Gated(tokio::sync::watch::Receiver<bool>);

impl stacklab_server::engine::Runtime for Gated {
    async fn run(
        &self,
        ctx: &stacklab_server::engine::RunContext,
    ) -> Result<stacklab_server::engine::Ready, stacklab_api::RunError> {
        let mut gate = self.0.clone();
        tokio::select! {
            _ = async {
                // A gate whose sender is gone never opens.
                if gate.wait_for(|open| *open).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => Ok(Default::default()),
            error = ctx.stopped() => Err(error),
        }
    }
}

/// A flooder fills a class for 20 from one address with 19 invented
/// learners, each with two runs queued (a stand-in runtime behind one
/// slot); the instructor removes them through the API. Their runs end
/// with `removed_from_class`, the line empties, and the honest member's
/// run starts within one run per slot of the last removal.
#[tokio::test]
async fn removing_a_flooder_through_the_api_ends_their_runs_and_the_honest_member_goes_next() {
    use stacklab_server::engine::{Queue, Requester};
    let state = state();
    let class = create_class_with(&state, r#"{"name":"Flooded","max_members":20}"#).await;
    let flooders: Vec<String> = (0..19).map(|n| format!("flooder-{n:02}")).collect();
    for learner in flooders.iter().map(String::as_str).chain(["honest-member"]) {
        let (status, _, body) = join_from(&state, [10, 0, 0, 66], &class.code, learner).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, _) = join_from(&state, [10, 0, 0, 66], &class.code, "flooder-19").await;
    assert_eq!(status, StatusCode::CONFLICT, "the 21st is refused");

    let queue = Arc::new(Queue::new(1));
    let (gate, shut) = tokio::sync::watch::channel(false);
    let runtime = Arc::new(Gated(shut));
    let start = async |learner: &str| {
        state
            .runs
            .try_start(
                Requester {
                    who: format!("learner {learner}"),
                    learner: Some(learner.to_owned()),
                    class: Some(class.code.clone()),
                    trace: false,
                },
                stacklab_api::DemoId::HelloContainer,
                runtime.clone(),
                queue.clone(),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
    };
    let mut changes = state.runs.room_changes();
    let mut flood = Vec::new();
    for l in &flooders {
        flood.push(start(l).await);
        flood.push(start(l).await);
    }
    let honest = start("honest-member").await;
    let waited = std::time::Instant::now();
    while queue.snapshot().2 < 38 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "every run but the first waits in the line: {:?}",
            queue.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let removing = std::time::Instant::now();
    let mut ended = 0;
    let mut last_removal = removing;
    for learner in &flooders {
        if learner == flooders.last().unwrap() {
            // The earlier removals' runs end as their tasks wind down (a
            // slot they free goes on to the next in line meanwhile): wait
            // for all of them, then whatever left the queue before the
            // last removal is not counted.
            let earlier = &flood[..flood.len() - 2];
            let waited = std::time::Instant::now();
            while !earlier.iter().all(|r| r.is_finished()) {
                assert!(
                    waited.elapsed() < Duration::from_secs(10),
                    "removed members' runs end"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            while changes.try_recv().is_ok() {}
            last_removal = std::time::Instant::now();
        }
        let uri = format!("/api/classes/{}/members/{learner}", class.code);
        let (status, _, body) = send_json(state.clone(), "DELETE", &uri, "", TOKEN).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let removed: stacklab_api::RemovedMember = serde_json::from_str(&body).unwrap();
        ended += removed.runs_ended;
    }
    // The gate is shut: no flood run can finish on its own. It opens once
    // every one has ended (a run stopped while its gate opened could
    // still finish as ready).
    assert_eq!(ended, 38, "their unfinished runs ended");
    let mut others_first = Vec::new();
    loop {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("the honest run leaves the queue")
            .unwrap()
            .change;
        if change.state != RunState::Running {
            continue;
        }
        if change.run == honest.id() {
            break;
        }
        others_first.push(change.run);
    }
    let after_last = last_removal.elapsed();
    let after_first = removing.elapsed();
    // Within one run per slot: a flood run handed the slot just before
    // the last removal (its start told after it) is the most that may go
    // first; none is handed a slot after it.
    assert!(
        others_first.len() <= 1,
        "the honest run started next: {others_first:?}"
    );
    let last: Vec<&str> = flood[36..].iter().map(|r| r.id()).collect();
    assert!(
        others_first.iter().all(|id| last.contains(&id.as_str())),
        "only a run of the last member removed: {others_first:?}"
    );
    for run in &flood {
        let mut changed = run.subscribe();
        while !run.is_finished() {
            tokio::time::timeout(Duration::from_secs(5), changed.changed())
                .await
                .expect("a removed member's run ends at once")
                .unwrap();
        }
        let error = run
            .record()
            .events
            .iter()
            .find_map(|e| match &e.kind {
                stacklab_api::EventKind::Finished {
                    outcome: stacklab_api::Outcome::Failed { error },
                } => Some(error.clone()),
                _ => None,
            })
            .expect("it failed");
        assert_eq!(error.code, ErrorCode::RemovedFromClass);
        assert!(error.message.contains("removed you"), "{}", error.message);
    }
    assert_eq!(queue.snapshot().2, 0, "the line is empty");
    gate.send_replace(true);
    eprintln!(
        "honest member started {} ms after the first of 19 removals through the API, {} ms after the last",
        after_first.as_millis(),
        after_last.as_millis()
    );
    // The room now: the honest member alone.
    let (_, _, body) =
        get_as_instructor(state.clone(), &format!("/api/classes/{}", class.code)).await;
    let view: ClassView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].learner, "honest-member");
}

/// A member's learning through the API: reads and the first answer to a
/// question count (the server scores it; a later answer does not count),
/// guesses travel with a run and sit beside what it measured in the
/// instructor's view, and the instructor sends the room to a lesson, which
/// the room's stream announces (a slug, no name) and `now` reports.
#[tokio::test(flavor = "multi_thread")]
async fn the_room_learns_guesses_travel_with_runs_and_follows_the_instructor() {
    use http_body_util::BodyExt;
    use stacklab_api::{LearningKept, Metric, Quantity, RoomNow, RunRecord};
    let state = state();
    let class = create_class(&state, "Learning room").await;
    let code = class.code.clone();
    assert_eq!(
        join(&state, &code, "learner-ada1", Some("Ada")).await,
        StatusCode::OK
    );
    let learning = format!("/api/classes/{code}/learning");
    let report = |body: String| {
        let (state, learning) = (state.clone(), learning.clone());
        async move { send_json(state, "POST", &learning, &body, None).await }
    };
    let (status, _, body) =
        report(r#"{"learner":"learner-zzz9","lesson":"containers"}"#.into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_of(&body).error, ErrorCode::NotAMember);
    for (body, counted) in [
        (r#"{"learner":"learner-ada1","lesson":"containers"}"#, true),
        (r#"{"learner":"learner-ada1","lesson":"containers"}"#, false),
    ] {
        let (status, _, text) = report(body.into()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let kept: LearningKept = serde_json::from_str(&text).unwrap();
        assert_eq!((kept.counted, kept.right), (counted, None));
    }
    let lessons = common::lessons();
    let vm = lessons
        .iter()
        .find(|l| l.slug == "virtual-machines")
        .unwrap();
    let right = vm
        .blocks
        .iter()
        .find_map(|b| match b {
            stacklab_content::Block::Quiz(qs) => Some(qs[0].answer),
            _ => None,
        })
        .unwrap();
    let wrong = if right == 0 { 1 } else { 0 };
    for (choice, counted) in [(wrong, true), (right, false)] {
        let (status, _, text) = report(format!(
            r#"{{"learner":"learner-ada1","lesson":"virtual-machines","answer":{{"question":1,"choice":{choice}}}}}"#
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let kept: LearningKept = serde_json::from_str(&text).unwrap();
        assert_eq!(kept.counted, counted, "only the first answer counts");
        assert_eq!(kept.right, Some(choice == right), "scored by the server");
    }
    for bad in [
        r#"{"learner":"learner-ada1","lesson":"no-such-lesson"}"#,
        r#"{"learner":"learner-ada1","lesson":"containers","answer":{"question":99,"choice":0}}"#,
        r#"{"learner":"learner-ada1","lesson":"containers","answer":{"question":1,"choice":9}}"#,
    ] {
        let (status, _, text) = report(bad.into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {text}");
        assert!(!error_of(&text).message.is_empty());
    }

    // A guess outside the log scale is refused before anything runs.
    let body = format!(
        r#"{{"demo":"micro-vm","learner":"learner-ada1","class":"{code}","guesses":[{{"quantity":"time","value":5}}]}}"#
    );
    let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    // So is one of the other kinds off its scale, not whole where it must
    // be, or of a quantity the demo's cards do not ask: a JSON 4xx that
    // names the quantity, before anything runs.
    for (demo, guess, says) in [
        (
            "postgres-container",
            r#"{"quantity":"same_kernel","value":0.5}"#,
            "same_kernel",
        ),
        (
            "postgres-container",
            r#"{"quantity":"shared_namespaces","value":9}"#,
            "shared_namespaces",
        ),
        (
            "hello-container",
            r#"{"quantity":"platform_share","value":150}"#,
            "platform_share",
        ),
        (
            "hello-container",
            r#"{"quantity":"exits","value":10}"#,
            "asks no exits",
        ),
        (
            "micro-vm",
            r#"{"quantity":"page_faults","value":0}"#,
            "page_faults",
        ),
        (
            "density-container",
            r#"{"quantity":"density_slope","value":11}"#,
            "density_slope",
        ),
    ] {
        let body = format!(
            r#"{{"demo":"{demo}","learner":"learner-ada1","class":"{code}","guesses":[{guess}]}}"#
        );
        let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
        let message = error_of(&text).message;
        assert!(message.contains(says), "{body}: {message}");
        assert!(!message.contains("/src/"), "no server path: {message}");
    }
    let body = format!(
        r#"{{"demo":"micro-vm","learner":"learner-ada1","class":"{code}","guesses":[{{"quantity":"vibes","value":1}}]}}"#
    );
    let (status, _, text) = send_json(state.clone(), "POST", "/api/runs", &body, None).await;
    assert!(status.is_client_error(), "{status}: {text}");
    assert!(error_of(&text).message.contains("vibes"), "{text}");

    // The room's stream, open before the instructor sends the room on.
    let req = axum::http::Request::get(format!("/api/classes/{code}/events"))
        .body(axum::body::Body::empty())
        .unwrap();
    let mut stream = tower::ServiceExt::oneshot(stacklab_server::app(state.clone()), req)
        .await
        .unwrap()
        .into_body();
    let lesson = format!("/api/classes/{code}/lesson");
    let send_to = r#"{"lesson":"postgres-both-ways"}"#;
    let (status, _, _) = send_json(state.clone(), "POST", &lesson, send_to, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, text) = send_json(
        state.clone(),
        "POST",
        &lesson,
        r#"{"lesson":"nope"}"#,
        TOKEN,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let (status, _, text) = send_json(state.clone(), "POST", &lesson, send_to, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let mut said = String::new();
    while !said.contains("event: lesson") {
        let frame = tokio::time::timeout(Duration::from_secs(5), stream.frame())
            .await
            .expect("the room's stream announces the lesson")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            said.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(
        said.contains(r#"data: {"lesson":"postgres-both-ways"}"#),
        "{said}"
    );
    assert!(
        !said.contains("Ada"),
        "no names on the room's stream: {said}"
    );
    for (learner, member) in [("learner-ada1", true), ("learner-bob2", false)] {
        let (_, _, text) = get(
            state.clone(),
            &format!("/api/classes/{code}/now?learner={learner}"),
        )
        .await;
        let now: RoomNow = serde_json::from_str(&text).unwrap();
        assert_eq!(now.lesson.as_deref(), Some("postgres-both-ways"));
        assert_eq!(now.member, member, "{learner}");
    }

    if !kvm_present() {
        return eprintln!("skipped the guesses with a run: no /dev/kvm here");
    }
    let body = format!(
        r#"{{"demo":"micro-vm","learner":"learner-ada1","class":"{code}","guesses":[{{"quantity":"time","value":1000}},{{"quantity":"memory"}},{{"quantity":"exits","value":50}}]}}"#
    );
    let (run, _) = run_request_over_http(&state, &body, Duration::from_secs(30)).await;
    let mut view: Option<ClassView> = None;
    for _ in 0..100 {
        let (_, _, text) = get_as_instructor(state.clone(), &format!("/api/classes/{code}")).await;
        let v: ClassView = serde_json::from_str(&text).unwrap();
        if v.guesses.iter().any(|g| g.measured.is_some()) {
            view = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = view.expect("the guess sits beside its run's result");
    let ada = &view.members[0].learning;
    assert_eq!(
        ada.lessons_read,
        ["virtual-machines", "containers"],
        "course order"
    );
    assert_eq!((ada.answered, ada.first_try_right), (1, 0));
    assert_eq!((ada.guesses, ada.declined), (3, 1));
    assert_eq!(view.lesson.as_deref(), Some("postgres-both-ways"));
    assert_eq!(view.lessons.len(), lessons.len());
    let point = view.points.iter().find(|p| p.run == run).unwrap();
    let time = view
        .guesses
        .iter()
        .find(|g| g.quantity == Quantity::Time)
        .unwrap();
    assert_eq!(
        (time.run.as_str(), time.value),
        (run.as_str(), Some(1000.0))
    );
    assert_eq!(
        time.measured, point.time_to_ready_us,
        "the run's own headline time"
    );
    let memory = view
        .guesses
        .iter()
        .find(|g| g.quantity == Quantity::Memory)
        .unwrap();
    assert_eq!(memory.value, None, "declined, recorded as such");
    assert_eq!(memory.measured, point.memory_bytes);
    // The exits guess sits beside the exits the run counted (its record's
    // own figure, read the way the learner's card reads it).
    let (_, _, text) = get(state.clone(), &format!("/api/runs/{run}")).await;
    let record: RunRecord = serde_json::from_str(&text).unwrap();
    let counted = record.outcome().and_then(|o| o.value(Metric::Exits));
    assert!(counted.is_some_and(|n| n > 0.0), "{text}");
    let exits = view
        .guesses
        .iter()
        .find(|g| g.quantity == Quantity::Exits)
        .unwrap();
    assert_eq!((exits.value, exits.measured), (Some(50.0), counted));
    let (_, _, csv) =
        get_as_instructor(state.clone(), &format!("/api/classes/{code}/export")).await;
    let row = csv.lines().find(|l| l.contains(&run)).unwrap();
    // Time in ms, memory declined, the exits guess in its own column.
    assert!(row.ends_with(",1.000,declined,,,50,,,,2,1,0"), "{row}");
}
