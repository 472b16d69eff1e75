//! Tower middleware that makes mutating HTTP requests safe to retry with an `Idempotency-Key`.
//!
//! [`IdempotencyLayer`] wraps any tower `Service<http::Request<_>>` (an axum `Router`, a
//! plain hyper service). For a request whose method needs a key (POST and PATCH by
//! default) it parses the key ([`idem_core::Key::parse`]), scopes it by principal,
//! fingerprints method, path with query and body, and asks the [`idem_core::Store`]:
//!
//! | store says | the layer answers |
//! |---|---|
//! | execute (new key, or lapsed claim taken over) | runs the handler, renewing the claim; records a 2xx/4xx, releases on 5xx, 408, 425 and 429 |
//! | replay | the recorded status, headers and body, plus `Idempotent-Replayed: true` |
//! | in progress | 409 with `Retry-After` (or waits, with [`ConflictPolicy::Wait`]) |
//! | mismatch (another method, path or body), in flight or completed | 422, the handler does not run |
//! | store error | 503 with `Retry-After`, the handler does not run (G8) |
//!
//! Every response after a valid key echoes it in `Idempotency-Key`. Errors are
//! `application/problem+json` ([`Problem`]). A request refused before its claim (bad key,
//! body over the limit: 413) records nothing. Each response carries an [`Outcome`] in its
//! extensions.
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
//!   future is dropped unfinished (the client went away) is handed to a task of its own,
//!   so a client disconnect never cuts a handler short.
//! * Separate mode (the layer records the response after the handler returns): a handler
//!   whose claim lapses anyway (renewals failing for a whole lease, a stalled process) may
//!   run twice, because a retry may take the lapsed claim over. The stale execution's
//!   completion is refused (G3) and it answers the recorded response or a 409, never its
//!   own (G2).
//! * Atomic mode ([`atomic`]): the handler completes the record in its own transaction,
//!   so a stale execution's business writes roll back with its refused completion (G1).
//! * If the store fails while recording (after bounded retries), the handler's response
//!   is answered unrecorded ([`Outcome::Unrecorded`]); a retry after the lease lapses
//!   runs the handler again. Atomic mode does not have this gap.
//!
//! # Determinism
//!
//! Time on the request path comes from the configured [`idem_core::Clock`]; waiting and
//! the renewal ticks use the runtime's timer (`tokio::time`), which tokio's paused time and
//! turmoil drive. There
//! is no randomness, and no behaviour depends on a hash map's iteration order.
//!
//! # Contents
//!
//! * [`layer`]: [`IdempotencyLayer`]; [`config`]: [`IdempotencyBuilder`] and its options.
//! * [`service`]: [`Idempotency`]; [`future`]: [`ResponseFuture`].
//! * [`atomic`]: [`ClaimContext`], [`CompletedInTransaction`].
//! * [`problem`]: [`Problem`]; [`principal`]: [`principal::authorization_principal`].
//! * [`headers`]: header names, and which response headers are recorded.
//! * [`outcome`]: [`Outcome`]; [`body`]: the [`Body`] type.

pub mod atomic;
pub mod body;
pub mod config;
mod execute;
pub mod future;
pub mod headers;
pub mod layer;
pub mod observe;
pub mod outcome;
pub mod principal;
pub mod problem;
pub mod service;

pub use atomic::{ClaimContext, CompletedInTransaction};
pub use body::{Body, BoxError};
pub use config::{CONFLICT_RETRY_AFTER_MAX_DEFAULT, ConfigError, ConflictPolicy, IdempotencyBuilder, MissingKey};
pub use future::ResponseFuture;
pub use headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use layer::IdempotencyLayer;
pub use outcome::Outcome;
pub use principal::PrincipalExtractor;
pub use problem::Problem;
pub use service::Idempotency;
