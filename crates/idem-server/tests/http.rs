//! The payments/users API over real HTTP on loopback, against a real server on a real
//! SQLite file (and, where noted, on the memory store).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use idem_http::ConflictPolicy;
use support::{PAYMENT, Reply, Server, Setup, manual_clock, post_as, send};
use tokio::sync::{Notify, Semaphore};

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let path = dir.path().join("idem.db");
    (dir, path)
}

fn assert_identical(first: &Reply, second: &Reply) {
    assert_eq!(first.status, second.status);
    assert_eq!(first.body, second.body);
    assert_eq!(first.lasting_headers(), second.lasting_headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_is_created_and_its_replay_is_byte_identical() {
    // Goal: the article's request answers 201 with the payment; the retry is the same bytes, marked replayed.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let first = server.post("/payments", Some("\"k1\""), PAYMENT).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let payment = first.json();
    let payment_id = payment["payment_id"].as_str().expect("payment_id is a string");
    assert!(payment_id.starts_with("pay_"));
    assert_eq!(payment["status"], "PENDING");
    assert_eq!(payment["currency"], "USD");
    assert_eq!(payment["destination"], "merchant-id-xyz");
    assert!(std::str::from_utf8(&first.body).expect("JSON is UTF-8").contains("\"amount\":100.00"));
    let created_at = payment["created_at"].as_str().expect("created_at is a string");
    assert!(humantime::parse_rfc3339(created_at).is_ok() && created_at.ends_with('Z'), "{created_at}");
    assert_eq!(first.header("location"), Some(format!("/payments/{payment_id}").as_str()));
    assert_eq!(first.header("idempotency-key"), Some("\"k1\""));
    assert!(!first.headers.contains_key("idempotent-replayed"));

    let retry = server.post("/payments", Some("\"k1\""), PAYMENT).await;
    assert!(retry.is_replay());
    assert_identical(&first, &retry);
    assert_eq!(server.payment_count().await, 1);

    let fetched = server.get(&format!("/payments/{payment_id}"), None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), payment);
    assert_eq!(server.get("/payments/pay_000000000000000000000000", None).await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_duplicates_create_one_payment() {
    // Goal: under a burst of identical requests one executes; the rest get 409 or the same 201.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let replies = burst(&server, 64).await;
    let created: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 201).collect();
    assert!(replies.iter().all(|reply| reply.status == 201 || reply.status == 409), "{replies:?}");
    assert!(!created.is_empty());
    assert_eq!(created.iter().filter(|reply| !reply.is_replay()).count(), 1, "exactly one first execution");
    for reply in &created {
        assert_identical(created[0], reply);
    }
    assert!(replies.iter().filter(|reply| reply.status == 409).all(|reply| reply.header("retry-after").is_some()));
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_wait_policy_every_duplicate_gets_the_same_201() {
    // Goal: with ConflictPolicy::Wait, the 64 duplicates all receive the one payment.
    let (_dir, path) = temp_db();
    let setup = Setup { conflict: Some(ConflictPolicy::Wait(Duration::from_secs(30))), ..Setup::default() };
    let server = Server::sqlite(&path, setup).await;
    let replies = burst(&server, 64).await;
    assert!(replies.iter().all(|reply| reply.status == 201), "{replies:?}");
    for reply in &replies {
        assert_identical(&replies[0], reply);
    }
    assert_eq!(replies.iter().filter(|reply| !reply.is_replay()).count(), 1);
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

async fn burst(server: &Server, count: usize) -> Vec<Reply> {
    let start = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (addr, start) = (server.addr, Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                send(addr, Method::POST, "/payments", &[("idempotency-key", b"burst")], PAYMENT).await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(count);
    for task in tasks {
        replies.push(task.await.expect("client tasks do not panic"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_for_another_body_path_or_method_is_422_and_runs_nothing() {
    // Goal: a reused key never executes another request (G5).
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    assert_eq!(server.post("/payments", Some("k"), PAYMENT).await.status, 201);
    let other_body = r#"{"amount": 200.00, "currency": "USD", "destination": "merchant-id-xyz"}"#;
    let user = r#"{"name": "Alice", "email": "alice@example.com"}"#;
    let replies = [server.post("/payments", Some("k"), other_body).await, server.post("/users", Some("k"), user).await];
    for reply in &replies {
        assert_eq!(reply.status, 422, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    }
    // A method no route takes never reaches the layer: 405, nothing compared or recorded.
    let patch = send(server.addr, Method::PATCH, "/payments", &[("idempotency-key", b"k")], PAYMENT).await;
    assert_eq!(patch.status, 405, "{patch:?}");
    assert_eq!(server.payment_count().await, 1);
    let metrics = server.get("/metrics", None).await;
    let text = std::str::from_utf8(&metrics.body).expect("metrics are text");
    assert!(text.contains("\nidem_executions_total 1\n"), "{text}");
    assert!(text.contains("\nidem_mismatches_total 2\n"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_and_quoted_and_bare_keys_are_the_same() {
    // Goal: every malformed key is refused before anything runs; "k" and k name one record.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let long = "a".repeat(256);
    let bad: [&[(&str, &[u8])]; 6] = [
        &[],
        &[("idempotency-key", b"")],
        &[("idempotency-key", long.as_bytes())],
        &[("idempotency-key", b"a\tb")],
        &[("idempotency-key", b"a b")],
        &[("idempotency-key", b"a"), ("idempotency-key", b"b")],
    ];
    for headers in bad {
        let reply = send(server.addr, Method::POST, "/payments", headers, PAYMENT).await;
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        assert!(reply.json()["detail"].is_string());
    }
    assert_eq!(server.payment_count().await, 0);

    let quoted = server.post("/payments", Some("\"same\""), PAYMENT).await;
    let bare = server.post("/payments", Some("same"), PAYMENT).await;
    assert_eq!(quoted.status, 201);
    assert!(bare.is_replay());
    assert_identical(&quoted, &bare);
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_are_400_and_leave_the_key_usable() {
    // Goal: validation refuses bad bodies with a problem, records nothing, and the fixed request then executes.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let invalid = [
        r#"{"amount": 100.001, "currency": "USD", "destination": "m"}"#,
        r#"{"amount": -1, "currency": "USD", "destination": "m"}"#,
        r#"{"amount": 0, "currency": "USD", "destination": "m"}"#,
        r#"{"amount": "100", "currency": "USD", "destination": "m"}"#,
        r#"{"amount": 100, "currency": "usd", "destination": "m"}"#,
        r#"{"amount": 100, "currency": "USD", "destination": ""}"#,
        r#"{"amount": 100, "currency": "USD", "destination": "m", "memo": "x"}"#,
        r#"{"amount": 100, "currency": "USD""#,
        "",
    ];
    for body in invalid {
        let reply = server.post("/payments", Some("fix-me"), body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        assert_eq!(reply.json()["status"], 400);
    }
    let long_destination = format!(r#"{{"amount": 1, "currency": "USD", "destination": "{}"}}"#, "d".repeat(256));
    assert_eq!(server.post("/payments", Some("fix-me"), &long_destination).await.status, 400);
    for body in [r#"{"name": "", "email": "a@b"}"#, r#"{"name": "A", "email": "a.b"}"#, r#"{"name": "A"}"#] {
        assert_eq!(server.post("/users", Some("fix-me"), body).await.status, 400, "{body}");
    }
    let fixed = server.post("/payments", Some("fix-me"), PAYMENT).await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_principals_with_one_key_get_separate_payments() {
    // Goal: keys and payments are scoped by bearer token; nothing crosses between callers (G4).
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let alice = post_as(server.addr, "alice", "/payments", "shared", PAYMENT).await;
    let bob = post_as(server.addr, "bob", "/payments", "shared", PAYMENT).await;
    assert_eq!((alice.status, bob.status), (201, 201));
    assert!(!alice.is_replay() && !bob.is_replay());
    let (alice_id, bob_id) = (alice.json()["payment_id"].clone(), bob.json()["payment_id"].clone());
    assert_ne!(alice_id, bob_id);
    assert_eq!(server.payment_count().await, 2);

    let bob_path = format!("/payments/{}", bob_id.as_str().expect("an id"));
    assert_eq!(server.get(&bob_path, Some("alice")).await.status, 404);
    assert_eq!(server.get(&bob_path, None).await.status, 404, "anonymous is a principal of its own");
    assert_eq!(server.get(&bob_path, Some("bob")).await.status, 200);
    let listed = server.get("/payments", Some("alice")).await.json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["payment_id"], alice_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_listed_newest_first_and_users_are_created() {
    // Goal: GET /payments lists the caller's payments newest first; users are created and fetched.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let mut ids = Vec::new();
    for index in 1..=3 {
        let body = format!(r#"{{"amount": {index}.50, "currency": "EUR", "destination": "d{index}"}}"#);
        let reply = post_as(server.addr, "carol", "/payments", &format!("list-{index}"), &body).await;
        assert_eq!(reply.status, 201);
        ids.push(reply.json()["payment_id"].clone());
    }
    let listed = server.get("/payments", Some("carol")).await.json();
    let listed: Vec<_> = listed["data"].as_array().expect("a list").iter().map(|p| p["payment_id"].clone()).collect();
    ids.reverse();
    assert_eq!(listed, ids);
    let limited = server.get("/payments?limit=2", Some("carol")).await.json();
    assert_eq!(limited["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(server.get("/payments?limit=0", Some("carol")).await.status, 400);

    let user =
        post_as(server.addr, "carol", "/users", "u1", r#"{"name": "Alice", "email": "alice@example.com"}"#).await;
    assert_eq!(user.status, 201);
    let user_json = user.json();
    let user_id = user_json["user_id"].as_str().expect("user_id is a string");
    assert!(user_id.starts_with("usr_"));
    assert_eq!((user_json["name"].as_str(), user_json["email"].as_str()), (Some("Alice"), Some("alice@example.com")));
    assert_eq!(user.header("location"), Some(format!("/users/{user_id}").as_str()));
    assert_eq!(server.get(&format!("/users/{user_id}"), Some("carol")).await.json(), user_json);
    assert_eq!(server.get(&format!("/users/{user_id}"), Some("dave")).await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_survive_a_restart_on_the_same_file() {
    // Goal: after the server stops and starts again on the same file, the retry is the same answer (G7).
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let first = post_as(server.addr, "erin", "/payments", "restart", PAYMENT).await;
    assert_eq!(first.status, 201);
    server.stop().await;

    let server = Server::sqlite(&path, Setup { seed: 99, ..Setup::default() }).await;
    let retry = post_as(server.addr, "erin", "/payments", "restart", PAYMENT).await;
    assert!(retry.is_replay());
    assert_identical(&first, &retry);
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_its_lease_is_taken_over_and_its_write_rolls_back() {
    // Goal: atomic mode keeps G1 across a lapsed lease: the take-over executes, the stale
    // completion is refused with its payment row, and both callers get the one payment.
    let (_dir, path) = temp_db();
    let clock = manual_clock();
    let (entered, gate, calls) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let hook: idem_server::BeforeWriteHook = {
        let (entered, gate, calls) = (Arc::clone(&entered), Arc::clone(&gate), Arc::clone(&calls));
        Arc::new(move || {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let (entered, gate) = (Arc::clone(&entered), Arc::clone(&gate));
            Box::pin(async move {
                if first {
                    entered.notify_one();
                    let _permit = gate.acquire().await.expect("the gate is never closed");
                }
            })
        })
    };
    let setup = Setup { clock: Some(clock.clone()), hook: Some(hook), ..Setup::default() };
    let server = Server::sqlite(&path, setup).await;

    let addr = server.addr;
    let slow = tokio::spawn(async move { post_as(addr, "frank", "/payments", "slow", PAYMENT).await });
    entered.notified().await;
    clock.advance(idem_core::Policy::DEFAULT.lease() + Duration::from_secs(1));

    let take_over = post_as(server.addr, "frank", "/payments", "slow", PAYMENT).await;
    assert_eq!(take_over.status, 201);
    assert!(!take_over.is_replay(), "the take-over executes");
    assert_eq!(server.payment_count().await, 1);

    gate.add_permits(1);
    let stale = slow.await.expect("the client task does not panic");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "both executions reached the write");
    assert_eq!(stale.status, 201);
    assert!(stale.is_replay(), "the stale execution answers the recorded response");
    assert_identical(&take_over, &stale);
    assert_eq!(server.payment_count().await, 1, "the stale execution's payment rolled back");
    let text = String::from_utf8(server.get("/metrics", None).await.body.to_vec()).expect("metrics are text");
    assert!(text.contains("idem_requests_total{outcome=\"superseded\"} 1\n"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_held_past_several_leases_keeps_its_claim_by_renewal_and_commits_once() {
    // Goal: atomic mode with renewal: a payment handler held at its write for five leases
    // (on the layer's clock) keeps its claim because the layer renews it in the SQLite
    // store; duplicates meanwhile get 409, not a take-over; the handler's own completion in
    // its transaction is applied, and there is exactly one payment.
    let (_dir, path) = temp_db();
    let clock = manual_clock();
    let lease = Duration::from_secs(1);
    let policy = idem_core::Policy::new(lease, Duration::from_secs(3600)).expect("a valid policy");
    let (entered, gate, calls) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let hook: idem_server::BeforeWriteHook = {
        let (entered, gate, calls) = (Arc::clone(&entered), Arc::clone(&gate), Arc::clone(&calls));
        Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let (entered, gate) = (Arc::clone(&entered), Arc::clone(&gate));
            Box::pin(async move {
                entered.notify_one();
                let _permit = gate.acquire().await.expect("the gate is never closed");
            })
        })
    };
    let setup = Setup { clock: Some(clock.clone()), hook: Some(hook), policy: Some(policy), ..Setup::default() };
    let server = Server::sqlite(&path, setup).await;
    let store = Arc::clone(server.store.as_ref().expect("a SQLite server"));
    let id = idem_core::RecordId::new(idem_core::Principal::anonymous(), "held".try_into().expect("a valid key"));

    let addr = server.addr;
    let slow =
        tokio::spawn(
            async move { send(addr, Method::POST, "/payments", &[("idempotency-key", b"held")], PAYMENT).await },
        );
    entered.notified().await;
    for _ in 0..2 {
        // Past the claim's lease on the layer's clock; only a renewal keeps the claim now.
        clock.advance(5 * lease);
        let now = idem_core::Clock::now(&clock);
        // The renewal ticks run on the runtime's timer (a third of the 1 s lease); wait for
        // one to land, at most 200 looks.
        let mut renewed = false;
        for _ in 0..200 {
            let record = idem_core::Store::get(&*store, &id).await.expect("the file is readable").expect("held");
            if matches!(record.state, idem_core::RecordState::InFlight { lease_expires_at, .. } if lease_expires_at > now)
            {
                renewed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(renewed, "the layer renewed the claim after the clock passed its lease");
        let duplicate = server.post("/payments", Some("held"), PAYMENT).await;
        assert_eq!(duplicate.status, 409, "the renewed claim holds: {:?}", duplicate.body);
    }

    gate.add_permits(1);
    let first = slow.await.expect("the client task does not panic");
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(!first.is_replay());
    let retry = server.post("/payments", Some("held"), PAYMENT).await;
    assert!(retry.is_replay());
    assert_identical(&first, &retry);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(server.payment_count().await, 1);
    let text = String::from_utf8(server.get("/metrics", None).await.body.to_vec()).expect("metrics are text");
    assert!(text.contains("idem_requests_total{outcome=\"conflict\"} 2\n"), "{text}");
    assert!(text.contains("idem_requests_total{outcome=\"executed\"} 1\n"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_outside_the_layer() {
    // Goal: /healthz and /metrics need no key, and metrics count outcomes in Prometheus text.
    let server = Server::memory(Setup::default()).await;
    let health = server.get("/healthz", None).await;
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));
    server.post("/payments", Some("m1"), PAYMENT).await;
    server.post("/payments", Some("m1"), PAYMENT).await;
    server.post("/payments", None, PAYMENT).await;
    let metrics = server.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").is_some_and(|value| value.starts_with("text/plain")));
    let text = std::str::from_utf8(&metrics.body).expect("metrics are text");
    for line in [
        "idem_executions_total 1",
        "idem_replays_total 1",
        "idem_conflicts_total 0",
        "idem_store_errors_total 0",
        "idem_requests_total{outcome=\"rejected\"} 1",
        "idem_request_duration_seconds_count{outcome=\"replayed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_authorization_is_401_and_creates_nothing() {
    // Goal: a caller that cannot be identified is refused, not merged into another principal.
    let server = Server::memory(Setup::default()).await;
    let reply = send(
        server.addr,
        Method::POST,
        "/payments",
        &[("idempotency-key", b"a"), ("authorization", b"Basic eDp5")],
        PAYMENT,
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(server.get("/payments", None).await.json()["data"].as_array().map(Vec::len), Some(0));
    // The read endpoints refuse the same caller the same way.
    for path in ["/payments", "/payments/pay_x", "/users/usr_x"] {
        let read = send(server.addr, Method::GET, path, &[("authorization", b"Basic eDp5")], "").await;
        assert_eq!(read.status, 401, "GET {path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_answers_503_and_gives_the_key_back() {
    // Goal: at its size bound the ledger refuses with 503 + Retry-After, and the claim is
    // released (a retry is refused again, not told 409), so the key works once there is room.
    let server = Server::memory(Setup { rows_max: Some(1), ..Setup::default() }).await;
    assert_eq!(server.post("/payments", Some("fits"), PAYMENT).await.status, 201);
    for _ in 0..2 {
        let refused = server.post("/payments", Some("no-room"), PAYMENT).await;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(refused.header("retry-after").is_some());
        assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    }
    let text = String::from_utf8(server.get("/metrics", None).await.body.to_vec()).expect("metrics are text");
    assert!(text.contains("\nidem_store_errors_total 2\n"), "{text}");
    assert!(text.contains("idem_requests_total{outcome=\"released\"} 2\n"), "{text}");
    server.stop().await;
}
