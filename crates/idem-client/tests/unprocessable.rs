//! How the client tells a 422 that means "key reused" (idem-http's problem) from any other
//! 422 (the server refusing the request's content), over real HTTP on loopback; and that
//! `client.oneshot(..)` can be spawned on tokio with the usual inner services.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Json;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use idem_client::{BoxError, IdempotentRetryLayer, OperationKey, RetryError, RetryReport};
use idem_core::Key;
use support::{Fault, Faulty, InProcess, payment, transport};
use tower::{Layer, ServiceExt};

/// Serves `router` on a loopback port until the test ends.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 can be bound");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("the test server runs") });
    addr
}

fn post_json(url: String, body: impl Into<String>) -> Request<String> {
    Request::post(url).header("content-type", "application/json").body(body.into()).expect("test requests are valid")
}

fn report<B>(response: &Response<B>) -> RetryReport {
    response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response")
}

async fn bytes_of<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.expect("the test servers send whole bodies").to_bytes()
}

/// What the server sends for `request`, read with the bare hyper client (no layer).
async fn sent_by_server(request: Request<String>) -> (StatusCode, Bytes) {
    let (parts, body) = request.into_parts();
    let response = transport().oneshot(Request::from_parts(parts, Full::new(Bytes::from(body)))).await;
    let response = response.expect("the test server answers");
    (response.status(), bytes_of(response.into_body()).await)
}

/// An order endpoint that takes `{"name": count, …}`, as an axum handler with the `Json` extractor.
async fn orders(Json(items): Json<HashMap<String, u64>>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("{} items", items.len()))
}

#[tokio::test]
async fn a_json_body_of_the_wrong_shape_is_the_servers_422_not_key_reuse() {
    // Goal: axum's Json extractor answers 422 to a body of the wrong shape; the client returns
    // that response (status and body as sent) after one attempt, instead of KeyReused.
    let addr = serve(axum::Router::new().route("/orders", post(orders))).await;
    let url = format!("http://{addr}/orders");
    let wrong_shape = r#"{"apples":"three"}"#;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = IdempotentRetryLayer::new().layer(transport.clone());

    let response = client.clone().oneshot(post_json(url.clone(), wrong_shape)).await.expect("an answer, not an error");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let report = report(&response);
    assert_eq!((report.attempts, report.replayed), (1, false));
    assert!(report.key.is_some(), "a POST gets a key");
    let body = bytes_of(response.into_body()).await;
    assert_eq!(transport.seen().len(), 1, "the 422 was not retried");
    let (status, sent) = sent_by_server(post_json(url.clone(), wrong_shape)).await;
    assert_eq!((status, &body), (StatusCode::UNPROCESSABLE_ENTITY, &sent), "the body arrives as the server sent it");
    assert!(String::from_utf8_lossy(&body).contains("deserialize"), "axum's own message: {body:?}");

    let ordered = client.oneshot(post_json(url, r#"{"apples":3}"#)).await.expect("an answer");
    assert_eq!(ordered.status(), StatusCode::CREATED, "the same endpoint takes a body of the right shape");
}

#[tokio::test]
async fn idem_https_key_reused_problem_is_key_reused() {
    // Goal: idem-http's layer (idem-server's app on idem-core's MemoryStore) answers a reused
    // key with a different body by its key-reused problem; the client reports KeyReused
    // after one attempt, with the whole problem.
    let server = InProcess::new();
    let addr = serve(server.router.clone()).await;
    let transport = Faulty::new(transport(), Fault::Nothing);
    let client = IdempotentRetryLayer::new().layer(transport.clone());
    let key = Key::try_from("order-8").expect("a valid key");
    let with_key = |amount| {
        let mut request = post_json(format!("http://{addr}/payments"), payment(amount));
        request.extensions_mut().insert(OperationKey(key.clone()));
        request
    };

    let first = client.clone().oneshot(with_key("10.00")).await.expect("the first payment succeeds");
    assert_eq!(first.status(), StatusCode::CREATED);
    let error = client.oneshot(with_key("11.00")).await.expect_err("another body under the same key is refused");

    let RetryError::KeyReused { key: reused, attempts: 1, body, .. } = &error else {
        panic!("expected KeyReused after one attempt, got {error:?}")
    };
    assert_eq!(reused, &key);
    let problem: serde_json::Value = serde_json::from_slice(body).expect("the whole problem+json is kept");
    assert_eq!(problem["status"], 422);
    let type_uri = problem["type"].as_str().expect("a problem has a type");
    assert!(type_uri.ends_with(&format!("#{}", idem_client::KEY_REUSED_SLUG)), "{type_uri}");
    assert_eq!(transport.seen().len(), 2, "one attempt per request");
    assert_eq!(server.payments().await.len(), 1, "the second body never executed");
}

/// A handler answering 422 with `content_type` and `body`.
fn unprocessable(content_type: &'static str, body: String) -> axum::Router {
    axum::Router::new().route(
        "/orders",
        post(move || {
            let body = body.clone();
            async move { (StatusCode::UNPROCESSABLE_ENTITY, [(header::CONTENT_TYPE, content_type)], body) }
        }),
    )
}

#[tokio::test]
async fn other_problems_and_oversized_bodies_are_ordinary_422s_returned_whole() {
    // Goal: a 422 is KeyReused only for a key-reused problem read whole within the bound: another
    // problem type, a plain-JSON body naming key-reused, and a key-reused problem past
    // PROBLEM_BODY_BYTES_MAX all come back as responses, every byte intact, after one attempt.
    let problem = |type_uri: &str, padding: usize| {
        serde_json::json!({ "type": type_uri, "status": 422, "detail": "x".repeat(padding) }).to_string()
    };
    let cases = [
        ("application/problem+json", problem("https://api.example/problems#validation", 10)),
        ("application/json", problem("https://api.example/problems#key-reused", 10)),
        (
            "application/problem+json",
            problem("https://api.example/problems#key-reused", idem_client::PROBLEM_BODY_BYTES_MAX),
        ),
        ("application/problem+json", "{not json".to_owned()),
    ];
    for (content_type, body) in cases {
        let addr = serve(unprocessable(content_type, body.clone())).await;
        let client = IdempotentRetryLayer::new().layer(transport());
        let response = client.oneshot(post_json(format!("http://{addr}/orders"), "{}")).await;
        let response = response.unwrap_or_else(|error| panic!("{content_type} {} bytes: {error:?}", body.len()));
        assert_eq!((response.status(), report(&response).attempts), (StatusCode::UNPROCESSABLE_ENTITY, 1));
        assert_eq!(bytes_of(response.into_body()).await, body.as_bytes(), "{content_type} {} bytes", body.len());
    }

    // The control: the same handler with a small key-reused problem is KeyReused.
    let addr = serve(unprocessable("application/problem+json", problem("https://api.example/p/key-reused", 10))).await;
    let client = IdempotentRetryLayer::new().layer(transport());
    let error = client.oneshot(post_json(format!("http://{addr}/orders"), "{}")).await.expect_err("key reused");
    assert!(matches!(error, RetryError::KeyReused { attempts: 1, .. }), "{error:?}");
}

/// Compiles only if the layer's error can cross threads and tasks.
const _: fn() = || {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<RetryError>();
    send_sync_static::<idem_client::Failure>();
};

#[tokio::test]
async fn oneshot_can_be_spawned_over_hyper_and_over_a_boxerror_service() {
    // Goal: `tokio::spawn(client.oneshot(request))` compiles and runs with hyper-util's legacy
    // client as the inner service, and with inner services whose error is idem-client's
    // BoxError (a named service, and a boxed one); the spawned request is answered. (Making
    // the future inside an async block does not compile for the boxed one: see the crate docs.)
    let server = InProcess::new();
    let addr = serve(server.router.clone()).await;
    let url = format!("http://{addr}/payments");
    let request = |amount| post_json(url.clone(), payment(amount));

    let over_hyper = IdempotentRetryLayer::new().layer(transport());
    let spawned = tokio::spawn(over_hyper.clone().oneshot(request("1.00")));
    let response = spawned.await.expect("the task completes").expect("an answer");
    assert_eq!(response.status(), StatusCode::CREATED);
    let second = request("2.00");
    let in_block = tokio::spawn(async move { over_hyper.oneshot(second).await.map(|r| r.status()) });
    assert_eq!(in_block.await.expect("the task completes").expect("an answer"), StatusCode::CREATED);

    let named: Faulty<_> = Faulty::new(transport(), Fault::Nothing); // Error = idem_client::BoxError
    let over_named = IdempotentRetryLayer::new().layer(named);
    let spawned = tokio::spawn(over_named.clone().oneshot(request("3.00")));
    assert_eq!(spawned.await.expect("the task completes").expect("an answer").status(), StatusCode::CREATED);
    let fourth = request("4.00");
    let in_block = tokio::spawn(async move { over_named.oneshot(fourth).await.map(|r| r.status()) });
    assert_eq!(in_block.await.expect("the task completes").expect("an answer"), StatusCode::CREATED);

    let boxed = tower::util::BoxCloneSyncService::new(transport().map_err(BoxError::from));
    let over_boxed = IdempotentRetryLayer::new().layer(boxed);
    let spawned = tokio::spawn(over_boxed.clone().oneshot(request("5.00")));
    assert_eq!(spawned.await.expect("the task completes").expect("an answer").status(), StatusCode::CREATED);
    // The documented shape for a boxed inner service in an async block: the future is boxed.
    type Answer = Result<Response<idem_client::ResponseBody<hyper::body::Incoming>>, RetryError>;
    let answer: Pin<Box<dyn Future<Output = Answer> + Send>> = Box::pin(over_boxed.oneshot(request("6.00")));
    let in_block = tokio::spawn(async move { answer.await.map(|r| r.status()) });
    assert_eq!(in_block.await.expect("the task completes").expect("an answer"), StatusCode::CREATED);

    assert_eq!(server.payments().await.len(), 6);
}
