//! Client-side tower middleware that makes retries of mutating HTTP requests safe.
//!
//! [`IdempotentRetryLayer`] wraps any tower `Service<http::Request<Full<Bytes>>>`: a hyper
//! client over tokio TCP, or over turmoil's simulated TCP in the simulations. It holds the
//! client's levers from SPEC ("Client side"):
//!
//! * **A fresh key per logical operation.** A POST or PATCH without an `Idempotency-Key`
//!   gets one from the [`KeyGenerator`] ([`UuidV4Keys`] by default, [`SeededKeys`] for
//!   deterministic runs), sent as a structured-field string (`"550e8400-…"`). A caller
//!   whose operation spans several calls passes its own: an [`OperationKey`] extension or
//!   an `Idempotency-Key` header it set (never overwritten).
//! * **The same key and the same bytes on every retry.** The body is buffered once (up to
//!   a limit) and resent identically.
//! * **Retries that are safe because of the key**: on connection errors, per-attempt
//!   timeouts, 409, 429 and 503, with exponential backoff and full jitter (or the server's
//!   `Retry-After`), bounded by an attempt count and an overall deadline. 400, 413 and 422
//!   are never retried.
//! * **Key reuse told apart from other 422s.** Only idem-http's key-reused problem (a 422
//!   with `Content-Type: application/problem+json` whose `type` URI ends in `#key-reused` or
//!   `/key-reused`, read whole within [`PROBLEM_BODY_BYTES_MAX`]) is
//!   [`RetryError::KeyReused`]. Any other 422, such as axum's `Json` extractor refusing a
//!   body of the wrong shape, is the server's answer and comes back as a response, body
//!   intact: [`ResponseBody`] hands out the bytes the layer read ahead, then the rest.
//! * **An expired key stops the retries.** A server that keeps tombstones answers a retry
//!   that arrives after the key's record expired with `410 Gone` and idem-http's
//!   `key-expired` problem: the operation's outcome is no longer known, and running it again
//!   could pay twice. That is [`RetryError::KeyExpired`], never retried; any other 410 is a
//!   response.
//! * **A replay is a normal answer.** The final response carries a [`RetryReport`]: the
//!   key, the attempts, whether the server replayed its recorded response, and when the
//!   server forgets the key (`Idempotency-Expires`, an HTTP-date; until then a resend with
//!   the same key is answered from the record).
//!
//! # Example
//!
//! A payment through a hyper client to the demo payments server (`idem serve`, here
//! started on a loopback port).
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use idem_client::{IdempotentRetryLayer, OperationKey, RetryReport};
//! use idem_core::Key;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # use std::sync::Arc;
//! # let ledger = Arc::new(idem_server::MemoryLedger::new(Arc::new(idem_core::MemoryStore::default()), 100));
//! # let state = idem_server::AppState::new(ledger, Arc::new(idem_core::SystemClock), Arc::new(idem_server::SeededIds::new(1)));
//! # let app = idem_server::app(state).unwrap();
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let server = format!("http://{}", listener.local_addr().unwrap());
//! # tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
//! let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(
//!         IdempotentRetryLayer::builder()
//!             .attempts_max(5)
//!             .attempt_timeout(Duration::from_secs(5))
//!             .deadline(Duration::from_secs(20))
//!             .build()
//!             .expect("a valid configuration"),
//!     )
//!     .service(hyper);
//!
//! // One logical operation, one key: a resubmission (after a crash, say) reuses it.
//! let key = Key::try_from("order-42-payment").unwrap();
//! let pay = || {
//!     Request::post(format!("{server}/payments"))
//!         .header("content-type", "application/json")
//!         .extension(OperationKey(key.clone()))
//!         .body(String::from(r#"{"amount":100.00,"currency":"USD","destination":"merchant-id-xyz"}"#))
//!         .unwrap()
//! };
//!
//! let first = client.clone().oneshot(pay()).await.expect("the server answers");
//! let report = first.extensions().get::<RetryReport>().cloned().unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! assert_eq!((report.key.as_ref(), report.replayed), (Some(&key), false));
//! let first_body = first.into_body().collect().await.unwrap().to_bytes();
//!
//! // The same operation again: the server replays its answer instead of paying twice.
//! let again = client.oneshot(pay()).await.expect("the server answers");
//! assert!(again.extensions().get::<RetryReport>().unwrap().replayed);
//! assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), first_body);
//! # });
//! ```
//!
//! For simulations, [`IdempotentRetryBuilder::seed`] fixes both the keys and the jitter.
//!
//! # Errors and tasks
//!
//! [`RetryError`] is `Send + Sync + 'static` (transport errors are kept as [`BoxError`]), so
//! it crosses `?` into `Box<dyn Error + Send + Sync>` or `anyhow::Error` and leaves a
//! spawned task. `tokio::spawn(client.oneshot(request))` works with hyper-util's legacy
//! client and with an inner service whose error is [`BoxError`].
//!
//! One shape does not compile, because of a known rustc limitation (lifetimes are erased
//! when it checks that an `async` block is `Send`), not of this crate: creating the `oneshot` future *inside* an `async` block that must be `Send`
//! (`tokio::spawn(async move { client.oneshot(request).await })`) when the inner service's
//! *type* itself names `BoxError` (a `service_fn` closure returning it, a
//! `BoxCloneSyncService<_, _, BoxError>`, a `map_err(BoxError::from)`). The compiler then
//! forgets that the `'static` in `BoxError` is `'static` and reports "implementation of
//! `From` is not general enough" or "higher-ranked lifetime error". Spawn the future
//! directly, or box it before the block: `let answer: Pin<Box<dyn Future<Output = _> +
//! Send>> = Box::pin(client.oneshot(request));`, then `answer.await` inside. With hyper's
//! client, or an inner service whose type does not name `BoxError` (its `Error` may still
//! be `BoxError`), every shape works.
//!
//! # The default budget and the server's lease
//!
//! A server that crashes while handling a request leaves its claim on the key until the
//! claim's lease lapses: idem-http's default lease is 10 s ([`idem_core::LEASE_DEFAULT`];
//! a live server renews it every 3.3 s, so only a crashed one lets it run out). Until
//! then each retry gets 409 with a `Retry-After` of at least 1 s
//! ([`idem_core::reply::RETRY_AFTER_MIN`]), which this client waits. The defaults outlast
//! that, checked at compile time in [`config`]:
//!
//! * [`ATTEMPTS_MAX_DEFAULT`] = 20 attempts: up to [`config::FAST_FAILURES_ALLOWED`] = 8
//!   may fail fast on the transport (the attempt the crash cut off, connections refused
//!   while the server restarts, each retried after a jittered backoff that may be near
//!   zero), and the other 11 retries each wait at least 1 s on a 409: 11 s > 10 s.
//! * [`DEADLINE_DEFAULT`] = 30 s > the lease, one 1 s wait that crosses its end and one
//!   whole [`ATTEMPT_TIMEOUT_DEFAULT`] attempt after it (10 s + 1 s + 10 s = 21 s).
//!
//! A server configured with a longer lease needs a client budget to match.
//!
//! # Determinism
//!
//! On the retry path time is read only from tokio's clock (`tokio::time::Instant`,
//! `sleep`, `timeout_at`), which tokio's paused time and turmoil drive, never from
//! `std::time`. Randomness comes only from the configured [`KeyGenerator`] and jitter
//! source (`rand::RngCore`); with seeded ones, the same run sends the same keys and waits
//! the same times.
//!
//! # Feature flags
//!
//! None: idem-client has no cargo features. It needs a tokio runtime (its timers are
//! tokio's) and any inner service over `http` types; it names no HTTP client itself.
//!
//! # Contents
//!
//! * [`layer`]: [`IdempotentRetryLayer`]; [`config`]: [`IdempotentRetryBuilder`] and its bounds.
//! * [`service`]: [`IdempotentRetry`]; [`future`]: [`ResponseFuture`].
//! * [`keys`]: [`KeyGenerator`], [`UuidV4Keys`], [`SeededKeys`], [`OperationKey`].
//! * [`backoff`]: [`Backoff`] and `Retry-After`.
//! * [`report`]: [`RetryReport`]; [`error`]: [`RetryError`], [`Failure`].
//! * [`ResponseBody`]: the body of every response returned, and the 422 bounds.

pub mod backoff;
mod body;
pub mod config;
pub mod error;
pub mod future;
pub mod keys;
pub mod layer;
pub mod report;
pub mod service;

pub use backoff::Backoff;
pub use body::{FAILURE_BODY_BYTES_MAX, KEY_EXPIRED_SLUG, KEY_REUSED_SLUG, PROBLEM_BODY_BYTES_MAX, ResponseBody};
pub use config::{
    ATTEMPT_TIMEOUT_DEFAULT, ATTEMPTS_MAX_DEFAULT, ConfigError, DEADLINE_DEFAULT, IdempotentRetryBuilder,
};
pub use error::{BoxError, Failure, RetryError};
pub use future::ResponseFuture;
pub use keys::{KeyGenerator, OperationKey, SeededKeys, UuidV4Keys};
pub use layer::IdempotentRetryLayer;
pub use report::RetryReport;
pub use service::{IDEMPOTENCY_EXPIRES, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotentRetry};
