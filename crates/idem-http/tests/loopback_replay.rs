//! The layer over real HTTP on loopback (a hyper server around an axum app, or a plain
//! tower service; a hyper client; the real `MemoryStore` behind a counting wrapper): what
//! a key names (its spelling, its principal, the request it was first sent with), what a
//! retry gets back, and the headers every answer carries.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idem_core::RecordState;
use idem_http::{IdempotencyLayer, MissingKey, Outcome};
use support::{Harness, TestStore, anonymous, serve};
use tower::Layer;

#[tokio::test]
async fn replay_is_byte_identical_and_marked_only_on_replays() {
    // Goal: a retry gets the first response's status, headers and bytes, with
    // `Idempotent-Replayed: true` on the retry only, and the key echoed on both.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let first = server.post("/payments", "k1", "{\"amount\":100}").await;
    let retry = server.post("/payments", "k1", "{\"amount\":100}").await;

    assert_eq!(first.status, 201);
    assert_eq!(first.text(), "run 1: {\"amount\":100}");
    assert!(!first.is_replay() && first.header("idempotent-replayed").is_none());
    assert!(retry.is_replay());
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    assert_eq!(retry.header("content-type"), first.header("content-type"));
    assert_eq!(first.header("idempotency-key"), Some("\"k1\""));
    assert_eq!(retry.header("idempotency-key"), Some("\"k1\""));
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn same_key_for_another_body_path_or_method_is_422_and_never_executes() {
    // Goal: G5: a request whose fingerprint differs from the recorded one is refused with
    // 422 and its handler does not run, whatever part differs.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    assert_eq!(server.post("/payments", "k", "{\"amount\":100}").await.status, 201);

    let other_body = server.post("/payments", "k", "{\"amount\":999}").await;
    let other_query = server.post("/payments?currency=eur", "k", "{\"amount\":100}").await;
    let other_method = server.send(server.request("PATCH", "/payments", &[b"k"]), "{\"amount\":100}").await;

    for reply in [&other_body, &other_query, &other_method] {
        assert_eq!(reply.status, 422, "{reply:?}");
        assert_eq!(reply.problem()["type"], support::problem_type("key-reused"));
    }
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes()[1..], [Outcome::Mismatch; 3]);
}

#[tokio::test]
async fn bad_or_missing_keys_are_400_problems_and_record_nothing() {
    // Goal: a missing, empty, too long, control-character, space-holding or repeated key
    // is a 400 problem+json; nothing runs and nothing is recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let too_long = vec![b'a'; 256];
    let cases: [(&str, &[&[u8]]); 6] = [
        ("missing", &[]),
        ("empty", &[b""]),
        ("256 characters", &[&too_long]),
        ("control character", &[b"a\tb"]),
        ("space", &[b"a b"]),
        ("two headers", &[b"a", b"b"]),
    ];
    for (case, keys) in cases {
        let reply = server.send(server.request("POST", "/payments", keys), "{}").await;
        assert_eq!(reply.status, 400, "{case}: {reply:?}");
        let slug = if keys.is_empty() { "key-missing" } else { "key-invalid" };
        assert_eq!(reply.problem()["type"], support::problem_type(slug), "{case}");
        assert_eq!(reply.header("idempotency-key"), None, "{case}: no valid key to echo");
    }
    assert_eq!(counters.runs(), 0);
    assert_eq!(store.claims.load(Ordering::SeqCst), 0);
    assert!(store.memory.is_empty());
}

#[tokio::test]
async fn quoted_and_bare_spellings_are_one_key() {
    // Goal: `"k"` and `k` name the same record, and the key is echoed as an sf-string.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let quoted = server.post("/payments", "\"k\"", "{}").await;
    let bare = server.post("/payments", "k", "{}").await;
    assert_eq!(quoted.status, 201);
    assert!(bare.is_replay());
    assert_eq!(bare.body, quoted.body);
    assert_eq!(bare.header("idempotency-key"), Some("\"k\""));
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn two_principals_with_one_key_get_two_executions_and_no_leak() {
    // Goal: G4: the same key from two credentials is two records; each replay returns the
    // caller's own response.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;
    let as_user =
        |user: &str| server.request("POST", "/payments", &[b"k"]).header("authorization", format!("Bearer {user}"));

    let alice = server.send(as_user("alice"), "{\"from\":\"alice\"}").await;
    let bob = server.send(as_user("bob"), "{\"from\":\"bob\"}").await;
    let alice_again = server.send(as_user("alice"), "{\"from\":\"alice\"}").await;
    let bob_again = server.send(as_user("bob"), "{\"from\":\"bob\"}").await;

    assert_eq!((alice.status.as_u16(), bob.status.as_u16()), (201, 201));
    assert!(!alice.is_replay() && !bob.is_replay());
    assert_eq!(counters.runs(), 2);
    assert!(alice_again.is_replay() && bob_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(bob_again.body, bob.body);
    assert_ne!(alice.body, bob.body);
}

#[tokio::test]
async fn methods_without_a_key_requirement_pass_through_untouched() {
    // Goal: a GET, and with MissingKey::PassThrough a keyless POST, reach the handler
    // without any idempotency header being added and without a record.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b.missing_key(MissingKey::PassThrough)).await;

    let keyless = server.send(server.request("POST", "/payments", &[]), "{}").await;
    let again = server.send(server.request("POST", "/payments", &[]), "{}").await;
    let get = server.send(server.request("GET", "/payments", &[b"k"]), "").await;

    assert_eq!((keyless.status, again.status), (http::StatusCode::CREATED, http::StatusCode::CREATED));
    assert_eq!(get.status, 405, "the app's own answer to GET");
    for reply in [&keyless, &again, &get] {
        assert_eq!(reply.header("idempotency-key"), None);
        assert_eq!(reply.header("idempotent-replayed"), None);
    }
    assert_eq!(counters.runs(), 2);
    assert!(store.memory.is_empty());
    assert_eq!(server.outcomes(), [Outcome::PassedThrough; 3]);
}

#[tokio::test]
async fn recorded_headers_exclude_date_set_cookie_and_denied_headers() {
    // Goal: the record and the replay carry end-to-end headers only: no Date, no
    // Set-Cookie, nothing on the deny list.
    let store = Arc::new(TestStore::default());
    let (server, _, _) = serve(&store, |b| b.deny_header(http::HeaderName::from_static("x-internal-trace"))).await;

    let first = server.post("/headers", "k", "{}").await;
    let replay = server.post("/headers", "k", "{}").await;

    assert_eq!(first.header("set-cookie"), Some("session=secret"), "the first answer is the handler's own");
    let record = store.record(&anonymous("k")).await.expect("the response is recorded");
    let RecordState::Completed { response, .. } = record.state else { panic!("the record is completed: {record:?}") };
    let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["content-type", "location"]);
    assert!(replay.is_replay());
    assert_eq!(replay.header("location"), Some("/payments/1"));
    assert_eq!(replay.header("set-cookie"), None);
    assert_eq!(replay.header("x-internal-trace"), None);
    assert_ne!(replay.header("date"), Some("Tue, 01 Jan 2030 00:00:00 GMT"), "Date is the server's, not recorded");
}

#[tokio::test]
async fn every_answer_after_a_valid_key_echoes_it() {
    // Goal: SPEC: the validated key is echoed on every answer, whichever path made it:
    // body validation (400 unreadable, 413), the principal extractor's refusal, 409, 422,
    // 503, a handler's 5xx (released), a handler's own 4xx, a first answer, a replay.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| {
        b.request_body_bytes_max(64).principal(|parts| {
            if parts.headers.contains_key("x-refuse") {
                Err(idem_http::Problem::new(http::StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "refused"))
            } else {
                Ok(idem_core::Principal::anonymous())
            }
        })
    })
    .await;
    let server = Arc::new(server);
    let mut replies = Vec::new();
    replies.push(("413", server.post("/payments", "k", &"x".repeat(65)).await));
    replies
        .push(("401", server.send(server.request("POST", "/payments", &[b"k"]).header("x-refuse", "1"), "{}").await));
    replies.push(("handler 500", server.post("/flaky", "k-flaky", "{}").await));
    replies.push(("handler 404", server.post("/no-such-route", "k-404", "{}").await));
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/gated", "k-held", "{}").await })
    };
    assert!(started.recv().await.is_some(), "the holder is at the gate");
    replies.push(("409", server.post("/gated", "k-held", "{}").await));
    replies.push(("422", server.post("/gated", "k-held", "{\"other\":1}").await));
    counters.gate.add_permits(1);
    replies.push(("201", holder.await.expect("no panic")));
    replies.push(("replay", server.post("/gated", "k-held", "{}").await));
    store.fail_claims.store(true, Ordering::SeqCst);
    replies.push(("503", server.post("/payments", "k-down", "{}").await));
    store.fail_claims.store(false, Ordering::SeqCst);

    let expected_status = [413, 401, 500, 404, 409, 422, 201, 201, 503];
    for ((case, reply), status) in replies.iter().zip(expected_status) {
        assert_eq!(reply.status.as_u16(), status, "{case}: {reply:?}");
        let key = reply.header("idempotency-key").unwrap_or_else(|| panic!("{case}: no key echoed: {reply:?}"));
        assert!(key.starts_with("\"k"), "{case}: {key}");
    }

    // A request body that breaks (invalid chunked encoding) is a 400 that echoes the key too.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request = "POST /payments HTTP/1.1\r\nhost: test\r\nidempotency-key: k-broken\r\n\
                   transfer-encoding: chunked\r\n\r\nzz\r\n";
    raw.write_all(request.as_bytes()).await.expect("the server reads");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(read.is_ok(), "the server answers and closes the connection: {answer}");
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("idempotency-key: \"k-broken\""), "{answer}");
    assert!(answer.contains("body-unreadable"), "{answer}");
}

#[tokio::test]
async fn cors_headers_come_from_the_cors_layer_and_are_never_recorded() {
    // Goal: with tower-http's CorsLayer outside the idempotency layer, a preflight allows
    // Idempotency-Key, answers expose Idempotent-Replayed, and a replay's CORS headers are
    // the CorsLayer's for the replaying request: access-control-* headers a handler set
    // are not recorded.
    use http::{HeaderValue, Method};
    use tower_http::cors::CorsLayer;
    let store = Arc::new(TestStore::default());
    let cors = CorsLayer::new()
        .allow_origin([HeaderValue::from_static("https://a.example"), HeaderValue::from_static("https://b.example")])
        .allow_methods([Method::POST])
        .allow_headers([idem_http::IDEMPOTENCY_KEY, http::header::CONTENT_TYPE])
        .expose_headers([idem_http::IDEMPOTENT_REPLAYED, idem_http::IDEMPOTENCY_KEY]);
    let (router, counters, _) = support::app(Arc::clone(&store));
    let service =
        tower::ServiceBuilder::new().layer(cors).layer(IdempotencyLayer::new(Arc::clone(&store))).service(router);
    let server = Harness::start(service).await;

    let preflight = server
        .send(
            server
                .request("OPTIONS", "/cors-naive", &[])
                .header("origin", "https://a.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "idempotency-key, content-type"),
            "",
        )
        .await;
    assert_eq!(preflight.status, 200);
    let allowed = preflight.header("access-control-allow-headers").expect("the preflight allows headers");
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://a.example"));

    let from = |origin: &'static str| server.request("POST", "/cors-naive", &[b"k"]).header("origin", origin);
    let first = server.send(from("https://a.example"), "{}").await;
    let replay = server.send(from("https://b.example"), "{}").await;

    assert_eq!(first.status, 201);
    let record = store.record(&anonymous("k")).await.expect("the response is recorded");
    let RecordState::Completed { response, .. } = record.state else { panic!("the record is completed: {record:?}") };
    let names: Vec<&str> = response.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.iter().all(|name| !name.starts_with("access-control-")), "{names:?}");
    assert!(replay.is_replay());
    let origins: Vec<&str> =
        replay.headers.get_all("access-control-allow-origin").iter().map(|v| v.to_str().expect("ASCII")).collect();
    assert_eq!(origins, ["https://b.example"], "the CorsLayer's answer for the replaying origin");
    assert_eq!(
        replay.header("access-control-allow-credentials"),
        None,
        "the handler's own CORS header is not replayed"
    );
    let exposed = replay.header("access-control-expose-headers").expect("the CorsLayer exposes headers");
    assert!(exposed.contains("idempotent-replayed"), "{exposed}");
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Replayed], "the preflight never reached the layer");
}

#[tokio::test]
async fn the_problem_type_base_is_configurable() {
    // Goal: the type URI of every problem the layer answers is the configured base plus the slug.
    let store = Arc::new(TestStore::default());
    let (server, _, _) = serve(&store, |b| b.problem_type_base("https://api.example/problems#")).await;
    let missing = server.send(server.request("POST", "/payments", &[]), "{}").await;
    assert_eq!(missing.problem()["type"], "https://api.example/problems#key-missing");
}

#[tokio::test]
async fn a_plain_tower_service_works_without_axum() {
    // Goal: the layer wraps any tower service over http types (the plain hyper case).
    let store = Arc::new(TestStore::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let service = tower::service_fn(move |_request: http::Request<idem_http::Body>| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let body = http_body_util::Full::new(bytes::Bytes::from(format!("plain {run}")));
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(201).body(body).expect("static response"),
            )
        }
    });
    let server = Harness::start(IdempotencyLayer::new(Arc::clone(&store)).layer(service)).await;

    let first = server.post("/anything", "k", "{}").await;
    let retry = server.post("/anything", "k", "{}").await;

    assert_eq!((first.status, first.text()), (http::StatusCode::CREATED, "plain 1"));
    assert!(retry.is_replay());
    assert_eq!(retry.text(), "plain 1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
