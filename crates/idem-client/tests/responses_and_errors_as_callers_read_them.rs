//! What a caller reads from the layer besides the status: the body's end-of-stream signal
//! after the layer read a 422 ahead, the attempts an error reports, and the `Debug` text
//! that logs show.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use idem_client::{BoxError, IdempotentRetryLayer, RetryError};
use tower::{Layer, Service, ServiceExt, service_fn};

fn layer() -> IdempotentRetryLayer {
    IdempotentRetryLayer::builder().seed(7).build().expect("a valid configuration")
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder().method(method).uri("http://server.invalid/orders").body(Full::default()).expect("valid")
}

/// A 422 problem+json that is not idem-http's key-reused problem.
const OTHER_PROBLEM: &[u8] = br#"{"type":"https://shop.invalid/problems#out-of-stock","status":422}"#;

#[tokio::test(start_paused = true)]
async fn a_422_read_ahead_does_not_end_its_body_before_its_bytes_are_read() {
    // Goal: after the layer read a 422 problem+json whole to classify it, the body it
    // returns still holds those bytes: `is_end_stream` is false until they are read (a
    // consumer that trusts it, such as hyper forwarding the body, would otherwise send an
    // empty body), then the bytes come out unchanged and the body ends.
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        let response = Response::builder()
            .status(StatusCode::UNPROCESSABLE_ENTITY)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .body(Full::new(Bytes::from_static(OTHER_PROBLEM)))
            .expect("a valid response");
        Ok::<_, Infallible>(response)
    });
    let response = layer().layer(inner).oneshot(request(Method::POST)).await.expect("another 422 is a response");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let mut body = response.into_body();
    assert!(!body.is_end_stream(), "the problem's bytes are still to be read");
    let debug = format!("{body:?}");
    assert!(debug.contains("ResponseBody") && debug.contains("buffered_bytes"), "{debug}");

    let frame = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(frame.into_data().expect("data"), Bytes::from_static(OTHER_PROBLEM));
    assert!(body.is_end_stream(), "everything was read");
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_pass_through_that_fails_to_connect_reports_one_attempt_and_no_key() {
    // Goal: a request the layer does not key (GET) is sent once; when the transport fails,
    // the error says one attempt was made and carries no key.
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, BoxError>("connection refused".into())
    });
    let error = layer().layer(inner).oneshot(request(Method::GET)).await.expect_err("the transport failed");
    assert!(matches!(error, RetryError::Transport(_)), "{error:?}");
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.key(), None);
}

#[tokio::test(start_paused = true)]
async fn a_pending_response_future_names_itself_in_debug_output() {
    // Goal: the future a caller holds prints as what it is in logs and panics messages.
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let mut service = layer().layer(inner);
    let future = service.call(request(Method::POST));
    let debug = format!("{future:?}");
    assert!(debug.contains("ResponseFuture"), "{debug}");
    assert_eq!(future.await.expect("answered").status(), StatusCode::OK);
}

/// A transport error with a cause, as hyper-util's are: its own text, then its source's.
#[derive(Debug)]
struct Wrapped {
    text: &'static str,
    source: std::io::Error,
}

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

async fn transport_error_text(text: &'static str) -> String {
    let inner = service_fn(move |_request: Request<Full<Bytes>>| async move {
        let source = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        Err::<Response<Full<Bytes>>, BoxError>(Box::new(Wrapped { text, source }))
    });
    layer().layer(inner).oneshot(request(Method::GET)).await.expect_err("the transport failed").to_string()
}

#[tokio::test(start_paused = true)]
async fn a_transport_error_names_its_causes_once_each() {
    // Goal: hyper's own message says only "client error (Connect)"; the error a caller
    // reads appends each cause, and a cause the message already ends with is not repeated.
    assert_eq!(
        transport_error_text("client error (Connect)").await,
        "request failed: client error (Connect): connection refused"
    );
    assert_eq!(
        transport_error_text("cannot connect: connection refused").await,
        "request failed: cannot connect: connection refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_header_key_equal_to_the_operation_key_is_sent_as_it_is() {
    // Goal: a caller that sets both the header and `OperationKey` to one key is not told
    // they conflict; the request goes out once with that key.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let seen = std::sync::Arc::clone(&seen);
        service_fn(move |request: Request<Full<Bytes>>| {
            let key = request.headers().get("idempotency-key").map(|value| value.as_bytes().to_vec());
            seen.lock().expect("not poisoned").push(key);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
        })
    };
    let mut both = request(Method::POST);
    both.headers_mut().insert("idempotency-key", http::HeaderValue::from_static("order-7"));
    both.extensions_mut().insert(idem_client::OperationKey(idem_core::Key::try_from("order-7").expect("a valid key")));

    let response = layer().layer(inner).oneshot(both).await.expect("the same key twice is no conflict");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*seen.lock().expect("not poisoned"), [Some(b"order-7".to_vec())]);
}
