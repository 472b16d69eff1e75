//! Tower middleware that makes mutating HTTP requests safe to retry with an `Idempotency-Key`.
//!
//! [`IdempotencyLayer`] wraps any tower `Service<http::Request<_>>` (an axum `Router`, a
//! plain hyper service). For a request whose method needs a key (POST and PATCH by
//! default) it parses the key ([`idem_core::Key::parse`]), scopes it by principal,
//! fingerprints method, path with query and body, and asks the [`idem_core::Store`]:
//!
//! | store says | the layer answers |
//! |---|---|
//! | execute (new key, or lapsed claim taken over) | runs the handler, renewing the claim; records a 2xx/4xx, releases on 5xx, 408, 425 and 429 (see [Which answers are kept](#which-answers-are-kept)) |
//! | replay | the recorded status, headers and body, plus `Idempotent-Replayed: true` |
//! | in progress | 409 with `Retry-After` (or waits, with [`ConflictPolicy::Wait`]) |
//! | mismatch (another method, path or body), in flight or completed | 422, the handler does not run |
//! | store error | 503 with `Retry-After`, the handler does not run (G8) |
//!
//! Every response after a valid key echoes it in `Idempotency-Key` (SPEC "HTTP
//! behaviour"), whichever path made it: the handler's answer, a replay, and every problem
//! the layer answers itself (400 for an unreadable body, 413, 409, 422, 503, a principal
//! extractor's refusal). The one answer without it is an error returned by the inner
//! service instead of a response (the layer has no response to mark). Errors are
//! `application/problem+json` (RFC 9457, [`Problem`]) whose `type` names a section of
//! `docs/problems.md` (see [Problem types](#problem-types)). A request refused before its
//! claim (bad key, body over the limit: 413) records nothing. Each response carries an
//! [`Outcome`] in its extensions.
//!
//! The layer decides nothing of its own: which statuses record and which release
//! ([`idem_core::StatusRules`], switched by [`IdempotencyBuilder::store_server_errors`]
//! and [`IdempotencyBuilder::store_try_later`]), the `Retry-After` of a 409
//! ([`idem_core::reply::retry_after`]), whether a waiting request keeps waiting
//! ([`idem_core::reply::keep_waiting`]) and what an execution that lost its claim answers
//! ([`idem_core::reply::superseded`]) are idem-core's, which the model checker drives too.
//!
//! # Examples
//!
//! An axum app gains idempotency with one `.layer(..)` (see also `examples/axum_app.rs`):
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post};
//! use http::{Request, StatusCode};
//! use idem_core::MemoryStore;
//! use idem_http::IdempotencyLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let app = Router::new()
//!     .route("/payments", post(|| async { (StatusCode::CREATED, "pay_1") }))
//!     .layer(IdempotencyLayer::new(store));
//!
//! let request = || Request::post("/payments").header("idempotency-key", "k1").body(axum::body::Body::empty()).unwrap();
//! let first = app.clone().oneshot(request()).await.unwrap();
//! let retry = app.oneshot(request()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! assert_eq!(first.headers().get("idempotent-replayed"), None);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(retry.headers()["idempotency-key"], "\"k1\"");
//! # });
//! ```
//!
//! # Leases, renewal and retrying clients
//!
//! A claim holds for a lease, [`idem_core::LEASE_DEFAULT`] (10 s) by default. While the
//! handler runs (and while its response body is read), the layer renews the claim every
//! [`idem_core::Policy::renew_every`], a third of the lease (3.3 s by default), on the
//! runtime's timer; a store error on renewal is logged and retried at the next tick. So a
//! slow handler keeps its claim however long it runs, and the lease only bounds how long a
//! crashed holder blocks its key: at most 10 s by default. Until then duplicates get 409
//! with a `Retry-After` of the lease left, capped at 1 s by default and never under 1 s
//! ([`IdempotencyBuilder::conflict_retry_after_max`]).
//!
//! idem-client's defaults outlast that (checked at compile time in idem-client): of its 20
//! attempts, up to 8 may fail fast on the transport (the attempt a crash cuts off,
//! connections refused while the server restarts), and the other 11 retries wait at least
//! 11 × 1 s = 11 s on 409s, longer than the 10 s lease; its 30 s deadline is longer than
//! the lease, one 1 s wait that crosses its end and one whole 10 s attempt after it
//! (10 + 1 + 10 = 21 s). A lease set longer than the default needs a client budget to match.
//!
//! If a renewal is refused, another request has taken the claim over (the store was
//! unreachable for a whole lease, or the holder's process stalled). The execution then
//! neither records nor answers its response: when the handler finishes, it answers what
//! the store holds ([`idem_core::reply::superseded`]): the recorded response, a 409, or a
//! 422 if the key now belongs to another request. Atomic-mode handlers can see this as
//! [`ClaimContext::lost`].
//!
//! # Guarantees and their limits
//!
//! * The handler never runs without a claim (G8), and a keyed request whose response
//!   future is dropped unfinished (the client went away) is handed to a task of its own
//!   on the layer's task tracker, so a client disconnect never cuts a handler short (and
//!   a draining server can wait for it; see [Shutdown](#shutdown)).
//! * Separate mode (the layer records the response after the handler returns): a handler
//!   whose claim lapses anyway (renewals failing for a whole lease, a stalled process) may
//!   run twice, because a retry may take the lapsed claim over. The stale execution's
//!   completion is refused (G3) and it answers the recorded response or a 409, never its
//!   own (G2).
//! * Atomic mode ([`Claim::commit`], or by hand, [`atomic`]): the handler's business
//!   writes and the completion commit in one transaction, so a stale execution's writes
//!   roll back with its refused completion (G1).
//! * If the store fails while recording (after bounded retries), the handler's response
//!   is answered unrecorded ([`Outcome::Unrecorded`]); a retry after the lease lapses
//!   runs the handler again. Atomic mode does not have this gap.
//!
//! # Which answers are kept
//!
//! A handler's 2xx and 4xx responses are recorded and replayed; its 5xx and the "try again
//! later" answers 408 Request Timeout, 425 Too Early and 429 Too Many Requests give the
//! claim back instead (SPEC "HTTP behaviour": the handler must not have committed
//! anything), so the retry the client was told to make runs the handler. They are never
//! replayed. [`IdempotencyBuilder::store_server_errors`] and
//! [`IdempotencyBuilder::store_try_later`] record them instead; the rule itself is
//! [`idem_core::StatusRules`].
//!
//! A response the layer cannot keep for replay (its body is longer than
//! [`IdempotencyBuilder::response_body_bytes_max`], 1 MiB by default, or it ends with
//! trailers) is handled as SPEC says: "a response too large to record still reaches the
//! first client whole; the operation never runs again for that key, and retries get a
//! problem saying it completed and its response was not kept".
//!
//! * The first client gets the handler's response as it is: status, headers, every byte
//!   of the body and its trailers. The layer holds at most the limit of it (the part read
//!   while deciding whether it fits); the rest streams through.
//! * The record is completed (before the rest of the body streams out) with a
//!   `response-not-kept` problem ([`Outcome::ResponseTooLarge`]), so a retry never runs
//!   the handler again (G1).
//! * A retry gets that problem as a replay (`Idempotent-Replayed: true`) with the
//!   **original status** and the original `Location` header. The status is the operation's
//!   result: a 5xx would tell a client (and idem-client) to retry an operation that is
//!   done, forever, and a 4xx would call a successful request wrong; with the original
//!   status the client stops, and the problem body says why the body is not the original
//!   one. The problem's `status` member carries the same status (RFC 9457 section 3.1.3).
//! * Trailers are not recorded: a record (`idem_core::StoredResponse`) has no place for
//!   them, and replaying a response without the trailers it was sent with would not be the
//!   same response (G2). A response with trailers is therefore "not kept", like a long one
//!   (empty trailers do not count).
//!
//! A body that breaks before the limit is reached is recorded as a `handler-failed`
//! problem (the head said the work was done); one that breaks after it was already on its
//! way to the client, whose record says "not kept".
//!
//! # Problem types
//!
//! Each problem's `type` is a base URI plus a slug, and each slug has a section in the
//! repository's `docs/problems.md` (when it is answered, its status, what a client should
//! do, which headers come with it; a unit test checks that every problem the layer answers
//! has one). The base defaults to [`problem::PROBLEM_TYPE_BASE`] (the repository's
//! `docs/problems.md#`); a server that publishes the page elsewhere sets
//! [`IdempotencyBuilder::problem_type_base`].
//!
//! # CORS
//!
//! Put tower-http's `CorsLayer` *outside* the idempotency layer, allow the
//! `Idempotency-Key` request header and expose `Idempotent-Replayed` (and
//! `Idempotency-Key`). CORS preflights (`OPTIONS`) are answered by the `CorsLayer` and never
//! reach the idempotency layer. The layer never records `Access-Control-*` headers (they
//! answer one request's origin), so a replay carries the ones the `CorsLayer` computes for
//! the replaying request.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post};
//! use http::{Method, Request, StatusCode};
//! use idem_core::MemoryStore;
//! use idem_http::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyLayer};
//! use tower::ServiceExt;
//! use tower_http::cors::CorsLayer;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cors = CorsLayer::new()
//!     .allow_origin(["https://app.example".parse().unwrap()])
//!     .allow_methods([Method::POST])
//!     .allow_headers([IDEMPOTENCY_KEY, http::header::CONTENT_TYPE])
//!     .expose_headers([IDEMPOTENT_REPLAYED, IDEMPOTENCY_KEY]);
//! let app = Router::new()
//!     .route("/payments", post(|| async { (StatusCode::CREATED, "pay_1") }))
//!     .layer(IdempotencyLayer::new(Arc::new(MemoryStore::default())))
//!     .layer(cors); // added last, so it runs first: outside the idempotency layer
//!
//! let preflight = Request::options("/payments")
//!     .header("origin", "https://app.example")
//!     .header("access-control-request-method", "POST")
//!     .header("access-control-request-headers", "idempotency-key")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(preflight).await.unwrap();
//! assert_eq!(response.headers()["access-control-allow-headers"], "idempotency-key,content-type");
//! # });
//! ```
//!
//! # Shutdown
//!
//! Every keyed request's work (claim, handler, completion) is tracked by a
//! [`tokio_util::task::TaskTracker`], also after its client went away and the work moved
//! to a task of its own. A server that drains on SIGTERM stops accepting requests, lets
//! its connections finish, then closes the tracker and waits for it within its deadline,
//! so no handler is cut short and no record is left in flight (SPEC: "a client disconnect
//! must not cancel a handler halfway"). The tracker is the layer's own
//! ([`IdempotencyLayer::task_tracker`]) or one the server passes
//! ([`IdempotencyBuilder::task_tracker`]):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use idem_core::MemoryStore;
//! use idem_http::IdempotencyLayer;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let layer = IdempotencyLayer::new(Arc::new(MemoryStore::default()));
//! let tracker = layer.task_tracker().clone();
//! let app: Router = Router::new().route("/payments", post(|| async { "ok" })).layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let shutdown = async {}; // e.g. tokio::signal::ctrl_c() or a SIGTERM stream
//! axum::serve(listener, app).with_graceful_shutdown(shutdown).await.unwrap();
//! // Connections are done; requests whose clients went away may still run.
//! tracker.close();
//! let drained = tokio::time::timeout(Duration::from_secs(25), tracker.wait()).await;
//! assert!(drained.is_ok(), "every handler finished and completed its record");
//! # });
//! ```
//!
//! Work still running at the deadline is cut off with the process: its claim lapses
//! with its lease and a retry takes it over (in separate mode, the side effect may then
//! run twice; see below).
//!
//! # Observability
//!
//! The [`Outcome`] of each request is in its response's extensions. Besides, the layer
//! reports through `tracing` and the [`metrics`] facade ([`observe`] has the names):
//!
//! * one span `idempotency` per keyed request (fields `key`, `principal`, `method`, `path`,
//!   then `outcome` and `status` once known), holding every event the layer logs for it,
//!   and one INFO event `idempotency` per answer;
//! * `idem_requests_total{outcome}` (counter, requests), `idem_request_duration_seconds{outcome}`
//!   (histogram, seconds, to the response head), `idem_store_errors_total{operation,error}`
//!   (counter, failed store calls). Install any `metrics` recorder (e.g. a Prometheus
//!   exporter) to collect them.
//!
//! # Determinism
//!
//! Time on the request path comes from the configured [`idem_core::Clock`]; waiting and
//! the renewal ticks use the runtime's timer (`tokio::time`), which tokio's paused time and
//! turmoil drive. There
//! is no randomness, and no behaviour depends on a hash map's iteration order.
//!
//! # Feature flags
//!
//! * `axum` (default): the [`Claim`] extractor and [`Claim::commit`] for axum handlers
//!   (adds a dependency on `axum-core`). Without it the layer still serves axum, hyper or
//!   any tower stack; atomic mode is then done by hand ([`atomic`]).
//!
//! # Contents
//!
//! * [`layer`]: [`IdempotencyLayer`], [`IntoStore`]; [`config`]: [`IdempotencyBuilder`] and its options.
//! * [`service`]: [`Idempotency`]; [`future`]: [`ResponseFuture`].
//! * [`claim`] (feature `axum`): [`Claim`], [`Claim::commit`], [`ClaimRejection`]: atomic mode in one call.
//! * [`atomic`]: [`ClaimContext`], [`CompletedInTransaction`] (atomic mode by hand).
//! * [`problem`]: [`Problem`]; [`principal`]: [`principal::authorization_principal`].
//! * [`headers`]: header names, and which response headers are recorded.
//! * [`route`]: [`RoutePolicy`], settings per route; [`semantic`]: [`FingerprintRules`],
//!   [`SemanticRules`] (semantic fingerprints).
//! * [`outcome`]: [`Outcome`]; [`observe`]: metric names and the span; [`body`]: the [`Body`] type.
//! * Re-exports of what a handler names from idem-core ([`AtomicStore`], [`CommitError`],
//!   [`WritesFuture`], [`Fenced`], [`StoreError`], [`Principal`], [`Key`], [`RecordId`],
//!   [`Policy`], [`MemoryStore`], [`StoredResponse`]), and [`idem_core`] itself.

// Without `axum`, the docs still name `Claim` (the recommended path), unlinked.
#![cfg_attr(not(feature = "axum"), allow(rustdoc::broken_intra_doc_links))]

mod answer;
pub mod atomic;
pub mod body;
pub mod builder;
mod catalogue;
#[cfg(feature = "axum")]
pub mod claim;
pub mod config;
pub mod error;
mod execute;
pub mod future;
pub mod headers;
mod keyed;
pub mod layer;
pub mod observe;
pub mod outcome;
pub mod principal;
pub mod problem;
pub mod problem_docs;
pub mod purge;
pub mod route;
pub mod semantic;
pub mod service;
mod settle;
mod wait;

pub use atomic::{ClaimContext, CompletedInTransaction};
pub use body::{Body, BoxError};
pub use builder::IdempotencyBuilder;
#[cfg(feature = "axum")]
pub use claim::{Claim, ClaimRejection};
pub use config::{CONFLICT_RETRY_AFTER_MAX_DEFAULT, ConflictPolicy, MissingKey};
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use headers::{IDEMPOTENCY_EXPIRES, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, REQUEST_ID};
pub use idem_core;
pub use idem_core::{
    AtomicStore, CommitError, Fenced, Key, MemoryStore, Policy, Principal, RecordId, StoreError, StoredResponse,
    WritesFuture,
};
pub use layer::{IdempotencyLayer, IntoStore};
pub use outcome::Outcome;
pub use principal::PrincipalExtractor;
pub use problem::Problem;
pub use problem_docs::ProblemDocs;
pub use purge::PurgeSchedule;
pub use route::RoutePolicy;
pub use semantic::{FingerprintRules, SemanticRules, SemanticRulesError};
pub use service::Idempotency;
