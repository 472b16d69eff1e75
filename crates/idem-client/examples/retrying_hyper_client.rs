//! A payments client that retries safely: hyper-util's legacy client, wrapped in
//! idem-client's retry layer, posts one payment, then resubmits the same operation (as a
//! client restarted after a crash would) and gets the server's recorded answer back.
//!
//! Start the demo server (`cargo run --release -- serve`), then:
//!
//! ```text
//! cargo run -p idem-client --example retrying_hyper_client                   # http://127.0.0.1:8080/payments
//! cargo run -p idem-client --example retrying_hyper_client -- http://127.0.0.1:8081/payments
//! ```

#![allow(clippy::print_stdout, reason = "an example prints what the server answered")]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idem_client::{IdempotentRetry, IdempotentRetryLayer, OperationKey, ResponseBody, RetryError, RetryReport};
use idem_core::Key;
use tower::{ServiceBuilder, ServiceExt};

/// The composed client: idem-client's retries around hyper's connection pool.
pub type PaymentsClient = IdempotentRetry<Client<HttpConnector, Full<Bytes>>>;

/// Where the payment goes when no URL is given: what `idem serve` answers by default.
pub const URL_DEFAULT: &str = "http://127.0.0.1:8080/payments";

/// The retrying client. Cheap to clone: clones share hyper's pool and the layer's settings.
pub fn client() -> PaymentsClient {
    let retries = IdempotentRetryLayer::builder()
        // Which retries are safe: the layer retries only POST and PATCH, each with one key
        // and the same body bytes on every attempt, so the server runs the payment at most
        // once however many attempts reach it. It retries what may have failed before the
        // payment committed or may clear up (connection errors, attempts without an answer,
        // 409 "still in flight", 429, 503) and never a final answer (400, 413, 422).
        //
        // How long: these are the defaults, spelled out. A server that crashed while
        // holding our key answers 409 until its lease lapses (idem serve: 10 s); 20 attempts
        // within 30 s wait that out (idem_client::config checks it at compile time).
        .attempts_max(20)
        .attempt_timeout(Duration::from_secs(10))
        .deadline(Duration::from_secs(30))
        .build()
        .expect("the settings above are within the builder's bounds");
    ServiceBuilder::new().layer(retries).service(Client::builder(TokioExecutor::new()).build_http())
}

/// Posts a payment of `amount` USD to `url` under `key` (a fresh UUID v4 from the layer when
/// `None`). The response carries a [`RetryReport`] in its extensions.
///
/// # Errors
/// [`RetryError`]: `KeyReused` when `key` was already used for a different request, or the
/// attempts or the deadline ran out (those errors carry the key, to resend with it later).
pub async fn pay(
    client: &PaymentsClient,
    url: &str,
    key: Option<Key>,
    amount: &str,
) -> Result<Response<ResponseBody<Incoming>>, RetryError> {
    let mut request = Request::post(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        // One logical operation, one key: resubmitting it later must reuse the key.
        request = request.extension(OperationKey(key));
    }
    let body = format!(r#"{{"amount":{amount},"currency":"USD","destination":"merchant-id-xyz"}}"#);
    let request = request.body(body).expect("a POST with a valid URL and a JSON body is a valid request");
    client.clone().oneshot(request).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| URL_DEFAULT.to_owned());
    url.parse::<http::Uri>()?;
    let client = client();

    let mut key = None;
    for attempt in ["first", "resubmitted"] {
        let response = match pay(&client, &url, key.clone(), "100.00").await {
            Ok(response) => response,
            // KeyReused: the server holds a record for this key made by a *different*
            // request (method, path or body) and refused to run this one (422). Retrying
            // cannot help: send the original request again, or use a new key for a new payment.
            Err(RetryError::KeyReused { key, .. }) => {
                return Err(format!("key {key} was already used for a different request; nothing ran").into());
            }
            // Out of attempts or time: the outcome is unknown, but resending with
            // `error.key()` later is still safe and returns the first outcome.
            Err(error) => return Err(error.into()),
        };
        let report = response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response");
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{attempt}: {status}, key {}, {} attempt(s), replayed: {}\n  {}",
            report.key.as_ref().map_or_else(|| "none".to_owned(), Key::to_string),
            report.attempts,
            report.replayed,
            String::from_utf8_lossy(&body),
        );
        key = report.key; // the resubmission reuses the key the layer picked
    }
    Ok(())
}
