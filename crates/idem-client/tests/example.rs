//! The example `retrying_hyper_client` run against the real payments server (`idem-server`
//! on SQLite, over TCP on loopback), so the example stays correct, not only compiling. The
//! layer's own behaviour (lost responses, timeouts, Retry-After, 400/413/422) is tested in
//! retries.rs and unprocessable.rs; this file checks the example's code paths only.

mod support;

#[path = "../examples/retrying_hyper_client.rs"]
#[allow(dead_code, unreachable_pub)] // the example's `main` is not called here
mod example;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use idem_client::{RetryError, RetryReport};
use support::Server;

async fn answer<B>(response: Response<B>) -> (StatusCode, RetryReport, Bytes)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let report = response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response");
    let status = response.status();
    (status, report, response.into_body().collect().await.expect("the server sends whole bodies").to_bytes())
}

#[tokio::test]
async fn the_examples_client_pays_once_and_replays_the_resubmission() {
    // Goal: the example's composition (hyper legacy client inside the retry layer) pays,
    // a resubmission under the layer's key is replayed with the same bytes, and the same key
    // with another amount is KeyReused; the server holds one payment throughout.
    let server = Server::start().await;
    let client = example::client();
    let url = server.url("/payments");

    let (status, first, body) = answer(example::pay(&client, &url, None, "100.00").await.expect("paid")).await;
    assert_eq!((status, first.attempts, first.replayed), (StatusCode::CREATED, 1, false));
    let key = first.key.expect("a POST gets a key from the layer");

    let again = example::pay(&client, &url, Some(key.clone()), "100.00").await.expect("replayed");
    let (status, report, replayed_body) = answer(again).await;
    assert_eq!((status, report.key.as_ref(), report.replayed), (StatusCode::CREATED, Some(&key), true));
    assert_eq!(replayed_body, body, "the resubmission gets the first answer's bytes");

    let reused = example::pay(&client, &url, Some(key.clone()), "999.00").await;
    assert!(matches!(&reused, Err(RetryError::KeyReused { key: k, attempts: 1, .. }) if *k == key), "{reused:?}");
    assert_eq!(server.payment_count().await, 1, "one payment for one operation");
}
