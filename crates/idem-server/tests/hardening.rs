//! Hostile and unlucky clients against a real server on loopback (issue 11): routing
//! rejections that record nothing, the input contract, pagination, connection and body
//! limits, and the drain on shutdown.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use idem_server::{Drained, FairnessLimits, RequestLimits, ServerLimits};
use support::{PAYMENT, Server, Setup, post_as, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let path = dir.path().join("idem.db");
    (dir, path)
}

/// Reads from `stream` until the server closes it or `within` passes; returns what was read
/// and whether the server closed the connection.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut read = Vec::new();
    let mut buffer = [0_u8; 4096];
    let outcome = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    (read, outcome.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rejections_record_nothing_and_the_key_stays_usable() {
    // Goal: a keyed request that reaches no handler (404 for a typo, 405 for a wrong method)
    // is problem+json, is not claimed, and the corrected request with the same key runs.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let typo = server.post("/payment", Some("k-typo"), PAYMENT).await;
    assert_eq!(typo.status, 404, "{typo:?}");
    assert_eq!(typo.header("content-type"), Some("application/problem+json"));
    assert_eq!(typo.header("idempotency-key"), Some("k-typo"));
    let wrong_method = server.post("/payments/pay_1", Some("k-typo"), PAYMENT).await;
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
    assert_eq!(wrong_method.header("content-type"), Some("application/problem+json"));
    assert_eq!(wrong_method.header("allow"), Some("GET,HEAD"));
    // Nothing was recorded: the same key now executes, once.
    let fixed = server.post("/payments", Some("k-typo"), PAYMENT).await;
    assert_eq!(fixed.status, 201, "{fixed:?}");
    assert!(!fixed.is_replay());
    assert_eq!(server.payment_count().await, 1);
    // An unkeyed POST to an unknown path is a 404 too, not "key missing".
    let unknown = send(server.addr, Method::POST, "/nowhere", &[], PAYMENT).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_or_not_valid_are_refused_with_the_key_echoed() {
    // Goal: a declared non-JSON type is 415, a bad field 400, a large body 413, each echoing
    // the key and recording nothing; the same key then works.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let key: &[u8] = b"k-input";
    let text = send(
        server.addr,
        Method::POST,
        "/payments",
        &[("idempotency-key", key), ("content-type", b"text/plain")],
        PAYMENT,
    )
    .await;
    assert_eq!(text.status, 415, "{text:?}");
    assert_eq!(text.header("idempotency-key"), Some("k-input"));
    let form = send(
        server.addr,
        Method::POST,
        "/payments",
        &[("idempotency-key", key), ("content-type", b"application/x-www-form-urlencoded")],
        "amount=1",
    )
    .await;
    assert_eq!(form.status, 415);
    let control = r#"{"amount": 1.00, "currency": "USD", "destination": "line\nbreak"}"#;
    let invalid = send(server.addr, Method::POST, "/payments", &[("idempotency-key", key)], control).await;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    assert_eq!(invalid.header("idempotency-key"), Some("k-input"));
    assert!(invalid.json()["detail"].as_str().is_some_and(|detail| detail.contains("control")), "{invalid:?}");
    // A declared length over the limit is refused before the body is read. The client sends
    // the head only: the server answers and closes at once, and a client still writing a
    // 2 MiB body would race that close.
    let mut declared = TcpStream::connect(server.addr).await.expect("connects");
    let head = format!(
        "POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: k-input\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 << 20
    );
    declared.write_all(head.as_bytes()).await.expect("writes");
    let (answer, _) = read_until_closed(&mut declared, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("idempotency-key: k-input"), "{answer}");
    // A JSON type with parameters, or a +json type, is JSON.
    let typed = send(
        server.addr,
        Method::POST,
        "/payments",
        &[("idempotency-key", key), ("content-type", b"application/json; charset=utf-8")],
        PAYMENT,
    )
    .await;
    assert_eq!(typed.status, 201, "{typed:?}");
    assert_eq!(server.payment_count().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_every_row_once_while_rows_are_added() {
    // Goal: 130 payments are listed in pages (Stripe's limit/starting_after/has_more), every
    // payment exactly once even while more are inserted during the walk; users page too.
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;
    let mut created = BTreeSet::new();
    for n in 0..130 {
        let reply = post_as(server.addr, "pager", "/payments", &format!("p{n}"), PAYMENT).await;
        assert_eq!(reply.status, 201);
        created.insert(reply.json()["payment_id"].as_str().expect("an id").to_owned());
    }
    let first = server.get("/payments", Some("pager")).await;
    assert_eq!(first.json()["data"].as_array().map(Vec::len), Some(20), "default limit 20");
    assert_eq!(first.json()["has_more"], true);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0..10 {
        let path = match &cursor {
            None => "/payments?limit=40".to_owned(),
            Some(last) => format!("/payments?limit=40&starting_after={last}"),
        };
        let page = server.get(&path, Some("pager")).await.json();
        let ids: Vec<String> = page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|p| p["payment_id"].as_str().expect("id").to_owned())
            .collect();
        seen.extend(ids.iter().cloned());
        // Rows written during the walk are newer than any cursor: they never show up in it.
        let newer = post_as(server.addr, "pager", "/payments", &format!("late{page_number}"), PAYMENT).await;
        assert_eq!(newer.status, 201);
        if page["has_more"] == false {
            break;
        }
        cursor = ids.last().cloned();
    }
    assert_eq!(seen.len(), 130, "every payment once");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);

    let unknown = server.get("/payments?starting_after=pay_nope", Some("pager")).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(server.get("/payments?limit=101", Some("pager")).await.status, 400);
    // Another caller's cursor is unknown to this one.
    let theirs = seen[0].clone();
    assert_eq!(server.get(&format!("/payments?starting_after={theirs}"), Some("someone-else")).await.status, 400);

    for n in 0..3 {
        let user = format!(r#"{{"name": "U{n}", "email": "u{n}@example.com"}}"#);
        assert_eq!(post_as(server.addr, "pager", "/users", &format!("u{n}"), &user).await.status, 201);
    }
    let users = server.get("/users?limit=2", Some("pager")).await.json();
    assert_eq!(users["data"][0]["name"], "U2", "newest first");
    assert_eq!(users["has_more"], true);
    let last = users["data"][1]["user_id"].as_str().expect("an id").to_owned();
    let rest = server.get(&format!("/users?limit=2&starting_after={last}"), Some("pager")).await.json();
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["data"][0]["name"], "U0");
    assert_eq!(rest["has_more"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_and_do_not_lock_others_out() {
    // Goal: a connection that sends nothing, or half its headers, is closed after the
    // header-read timeout; with the connection cap reached by such clients, a normal client
    // is still served once they are closed.
    let limits =
        ServerLimits { connections_max: 2, header_read_timeout: Duration::from_millis(300), ..ServerLimits::DEFAULT };
    let server = Server::memory(Setup { server_limits: Some(limits), ..Setup::default() }).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connects");
    let mut half = TcpStream::connect(server.addr).await.expect("connects");
    half.write_all(b"POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: k").await.expect("writes");
    // Both slots are taken; a normal request waits in the backlog, then is served.
    let normal = tokio::spawn({
        let addr = server.addr;
        async move { send(addr, Method::POST, "/payments", &[("idempotency-key", b"normal")], PAYMENT).await }
    });
    let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    let (half_answer, half_closed) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(silent_closed && half_closed, "both connections are closed by the server");
    assert!(!String::from_utf8_lossy(&half_answer).contains("201"), "the half request never ran");
    let served = tokio::time::timeout(Duration::from_secs(5), normal).await.expect("served").expect("no panic");
    assert_eq!(served.status, 201, "{served:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_refused() {
    // Goal: an h2c connection preface gets no HTTP/2 session (no SETTINGS frame), only a
    // closed connection, so no client can open hundreds of streams on one socket.
    let server = Server::memory(Setup::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("writes");
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the server closes the connection");
    // An HTTP/2 server's first frame is SETTINGS: type 0x4 at byte 3.
    assert!(!(answer.len() >= 9 && answer[3] == 0x4), "no HTTP/2 frames: {answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_and_buffered_bytes_are_bounded() {
    // Goal: a body that stalls is answered 408 after the body-read timeout; while a stalled
    // body holds the whole buffer budget, another body gets 503 with Retry-After; neither
    // records anything, so the key works afterwards.
    let budget = 64 * 1024;
    let limits = RequestLimits { body_read_timeout: Duration::from_millis(500), body_bytes_buffered_max: budget };
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup { request_limits: Some(limits), ..Setup::default() }).await;
    // A client that declares a large body and stalls after a few bytes holds only those.
    let mut declared_only = TcpStream::connect(server.addr).await.expect("connects");
    let small_head =
        "POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: k-declared\r\ncontent-length: 1048576\r\n\r\n{";
    declared_only.write_all(small_head.as_bytes()).await.expect("writes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.post("/payments", Some("k-ok"), PAYMENT).await.status, 201);
    let mut stalled = TcpStream::connect(server.addr).await.expect("connects");
    // It declares 1 MiB and sends all but 16 bytes of the budget: only what arrived counts.
    let head = format!(
        "POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: k-slow\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        1 << 20,
        " ".repeat(budget - 16)
    );
    stalled.write_all(head.as_bytes()).await.expect("writes");
    // Give the server time to reserve the stalled body's bytes; then the budget is spent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = send(server.addr, Method::POST, "/payments", &[("idempotency-key", b"k-busy")], PAYMENT).await;
    assert_eq!(busy.status, 503, "{busy:?}");
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.header("idempotency-key"), Some("k-busy"));
    let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed, "the connection is closed after a 408");
    let (declared_answer, _) = read_until_closed(&mut declared_only, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&declared_answer).starts_with("HTTP/1.1 408"));
    // None of the refused keys was claimed.
    for key in ["k-slow", "k-busy", "k-declared"] {
        let reply = server.post("/payments", Some(key), PAYMENT).await;
        assert_eq!(reply.status, 201);
        assert!(!reply.is_replay());
    }
    assert_eq!(server.payment_count().await, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_within_its_deadline() {
    // Goal: on shutdown a request in progress finishes and is answered if it can within the
    // drain deadline; a request stuck past it is cut, and shutdown still ends.
    let release = Arc::new(Notify::new());
    let hook_release = Arc::clone(&release);
    let hook: idem_server::BeforeWriteHook = Arc::new(move || {
        let release = Arc::clone(&hook_release);
        Box::pin(async move { release.notified().await })
    });
    let limits = ServerLimits { drain_timeout: Duration::from_millis(800), ..ServerLimits::DEFAULT };
    let setup = Setup { hook: Some(hook.clone()), server_limits: Some(limits), ..Setup::default() };

    // A request that finishes during the drain is answered; the drain is clean.
    let server = Server::memory(setup.clone()).await;
    let addr = server.addr;
    let in_progress =
        tokio::spawn(
            async move { send(addr, Method::POST, "/payments", &[("idempotency-key", b"d1")], PAYMENT).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drain = tokio::spawn(server.drain());
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_one();
    assert_eq!(in_progress.await.expect("no panic").status, 201);
    assert_eq!(drain.await.expect("no panic"), Drained::Clean);

    // A request that never finishes is cut at the deadline.
    let server = Server::memory(setup).await;
    let addr = server.addr;
    let _stuck = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let request = format!(
            "POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: d2\r\ncontent-length: {}\r\n\r\n{PAYMENT}",
            PAYMENT.len()
        );
        stream.write_all(request.as_bytes()).await.expect("writes");
        read_until_closed(&mut stream, Duration::from_secs(10)).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drained = tokio::time::timeout(Duration::from_secs(5), server.drain()).await.expect("shutdown ends");
    assert_eq!(drained, Drained::Cut(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_creating_keys_too_fast_gets_429_and_others_do_not() {
    // Goal: past its rate a principal's new keys get 429 with Retry-After and are not
    // recorded (the same key works later); its replays and other principals are unaffected.
    let fairness = FairnessLimits { new_keys_per_second: 1, burst: 2, principals_tracked_max: 100 };
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup { fairness: Some(fairness), ..Setup::default() }).await;
    assert_eq!(post_as(server.addr, "greedy", "/payments", "g1", PAYMENT).await.status, 201);
    assert_eq!(post_as(server.addr, "greedy", "/payments", "g2", PAYMENT).await.status, 201);
    let limited = post_as(server.addr, "greedy", "/payments", "g3", PAYMENT).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.header("content-type"), Some("application/problem+json"));
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Replays are not new keys; another caller has its own share.
    assert!(post_as(server.addr, "greedy", "/payments", "g1", PAYMENT).await.is_replay());
    assert_eq!(post_as(server.addr, "modest", "/payments", "m1", PAYMENT).await.status, 201);
    assert_eq!(server.payment_count().await, 3);
    // The refused key was released, not recorded: after Retry-After it executes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = post_as(server.addr, "greedy", "/payments", "g3", PAYMENT).await;
    assert_eq!(later.status, 201, "{later:?}");
    assert!(!later.is_replay());
    assert_eq!(server.payment_count().await, 4);
    server.stop().await;
}
