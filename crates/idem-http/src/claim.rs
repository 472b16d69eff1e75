//! [`Claim`]: the claim an axum handler runs under, and [`Claim::commit`], atomic mode in one call.
//!
//! A handler behind an [`crate::IdempotencyLayer`] over an [`AtomicStore`] extracts
//! `Claim<Store>` and ends with `claim.commit(response, writes).await`. The commit turns
//! `response` into an HTTP response, reads its body (at most the layer's
//! [`crate::IdempotencyBuilder::response_body_bytes_max`]), builds the record from *that*
//! response with the layer's header filter, and hands the record and `writes` to
//! [`AtomicStore::complete_with`]: the business writes and the fenced completion commit in
//! one transaction, or neither does (SPEC G1 across lease lapses; G2 because the record
//! is the answer). It answers:
//!
//! | the store says | the client gets | the claim |
//! |---|---|---|
//! | applied | `response`, byte for byte what retries replay | completed |
//! | refused (the claim was taken over) | what the store holds: the other execution's response, or 409 | the other execution's |
//! | `writes` failed | 500 `handler-failed` (nothing committed) | given back: a retry runs the handler again |
//! | the store failed | 503 `store-unavailable` / `store-full`, 500 `store-corrupt` | given back |
//! | `response` cannot be kept for replay (body over the limit, trailers) | `response`, whole; retries get the `response-not-kept` problem (SPEC "HTTP behaviour") | completed, with that problem as its record |
//! | the response body fails before its end | 500 `handler-failed` (nothing committed) | given back |
//!
//! The layer answers the first row itself too: a handler that called `commit` and then
//! returned another response (not the one `commit` gave it) is logged as an error and
//! answered what the store holds, never its own response, and the layer records nothing
//! a second time. A handler that extracts `Claim` and returns without calling `commit`
//! (say a 422 for a request that fails validation) is recorded by the layer, as in
//! separate mode: it wrote nothing, so there is nothing to commit atomically.
//!
//! Extracting `Claim<S>` where there is none is answered as problem+json, never a panic:
//! 400 `key-missing` for a request without an `Idempotency-Key`; 500 `handler-failed` for
//! a keyed request that is not under a claim of a layer over `S` (the route is not behind
//! the layer, the method is not one it claims, the layer's store is another type, or the
//! claim was already extracted: each claim is extracted once, so it commits at most once).
//! `Option<Claim<S>>` is `None` for a request without a key (for routes that also take
//! keyless requests, [`crate::MissingKey::PassThrough`]) and refuses the same
//! misconfigurations.
//!
//! # Examples
//!
//! ```
//! use axum::{Json, Router, response::Response, routing::post};
//! use http::{Request, StatusCode};
//! use idem_http::{Claim, IdempotencyLayer};
//! use idem_sqlite::{SqliteOptions, SqliteStore};
//! use tower::ServiceExt;
//!
//! async fn create_order(claim: Claim<SqliteStore>, Json(item): Json<String>) -> Response {
//!     let order = serde_json::json!({ "item": item });
//!     claim.commit((StatusCode::CREATED, Json(order)), move |tx| Box::pin(async move {
//!         sqlx::query("INSERT INTO orders (item) VALUES (?)").bind(item).execute(&mut *tx).await?;
//!         Ok(())
//!     })).await
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(SqliteOptions::new(dir.path().join("app.db"))).await.unwrap();
//! sqlx::query("CREATE TABLE orders (item TEXT)").execute(store.pool()).await.unwrap();
//! let app = Router::new().route("/orders", post(create_order)).layer(IdempotencyLayer::new(store.clone()));
//!
//! let request = || Request::post("/orders").header("idempotency-key", "k1")
//!     .header("content-type", "application/json").body(axum::body::Body::from("\"tea\"")).unwrap();
//! let first = app.clone().oneshot(request()).await.unwrap();
//! let retry = app.oneshot(request()).await.unwrap();
//! assert_eq!((first.status(), retry.status()), (StatusCode::CREATED, StatusCode::CREATED));
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(store.pool()).await.unwrap();
//! assert_eq!(orders, 1);
//! # });
//! ```

use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use idem_core::{AtomicStore, CommitError, Fenced, Store, WritesFuture};

use crate::atomic::{ClaimStore, Commit, NothingCommitted};
use crate::body::{Body, ResponseRead, read_to_keep};
use crate::headers::IDEMPOTENCY_KEY;
use crate::problem::kinds;
use crate::{ClaimContext, CompletedInTransaction, Problem};

/// The claim a handler runs under, with the layer's store: extract it, then finish with
/// [`Claim::commit`]. See the [module docs](self).
pub struct Claim<S> {
    context: ClaimContext,
    store: Arc<S>,
}

impl<S> Claim<S> {
    /// The claim's record id, fence, lease and the layer's policy and clock.
    #[must_use]
    pub fn context(&self) -> &ClaimContext {
        &self.context
    }

    /// The layer's store (the one the claim is in).
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

impl<S: AtomicStore> Claim<S> {
    /// Runs `writes` and records `response` for this claim in one transaction
    /// ([`AtomicStore::complete_with`]), and returns the response to answer: `response`
    /// itself, or a problem if nothing was committed (see the [module docs](self)).
    ///
    /// `writes` runs under the store's write lock: prepare rows before, write them here.
    pub async fn commit<W>(self, response: impl IntoResponse, writes: W) -> Response
    where
        W: for<'c> FnOnce(&'c mut S::Connection) -> WritesFuture<'c, S::WriteError> + Send + 'static,
    {
        let Claim { context, store } = self;
        let (config, key) = (&context.config, context.id.key.as_str());
        let (head, body) = response.into_response().into_parts();
        let (stored, answer_body) = match read_to_keep(Body::new(body), config.response_body_bytes_max).await {
            ResponseRead::Whole(body) => {
                let stored = config.filter.stored_response(head.status.as_u16(), &head.headers, body.clone());
                (stored, axum_core::body::Body::from(body))
            }
            ResponseRead::NotKept { why, body } => {
                // As the layer does in separate mode (SPEC "HTTP behaviour"): the writes
                // commit with a response-not-kept record, this client gets every byte, and
                // retries get the problem; the operation never runs again for the key.
                tracing::warn!(
                    key,
                    ?why,
                    "Claim::commit: the response cannot be kept for replay; recording a response-not-kept problem"
                );
                (
                    crate::atomic::not_kept_record(config, head.status, &head.headers, why),
                    axum_core::body::Body::new(body),
                )
            }
            ResponseRead::Broken(error) => {
                tracing::error!(key, %error, "Claim::commit: the response body failed; committing nothing");
                let detail = "the handler's response body failed; nothing was committed";
                return nothing_committed(&context, kinds::handler_failed(detail));
            }
        };
        let now = config.clock.now();
        let policy = context.route.policy;
        let result = store.complete_with(&context.id, context.fence, stored, now, &policy, writes).await;
        let fenced = match result {
            Ok(fenced) => fenced,
            Err(CommitError::Writes(error)) => {
                tracing::error!(key, %error, "Claim::commit: the business writes failed; nothing was committed");
                let detail = "the handler's writes failed; nothing was committed, a retry runs the request again";
                return nothing_committed(&context, kinds::handler_failed(detail));
            }
            Err(CommitError::Store(error)) => {
                let error = crate::observe::store("complete", Err::<(), _>(error)).expect_err("passed through");
                let (problem, _) = crate::answer::store_failed(config, &error);
                return mark(
                    &context,
                    Commit::NothingCommitted,
                    problem.map(axum_core::body::Body::new),
                    NothingCommitted,
                );
            }
        };
        let commit = if fenced == Fenced::Applied { Commit::Applied } else { Commit::Refused };
        let mut response = Response::from_parts(head, answer_body);
        if fenced == Fenced::Applied && store.decides_with_callers_now() {
            // The record's retention counts from this completion's `now` (SPEC "Key lifecycle").
            // A store with a clock of its own is read back by the layer instead.
            crate::answer::mark_expiry(response.headers_mut(), now.saturating_add(policy.retention()));
        }
        mark(&context, commit, response, CompletedInTransaction(fenced))
    }
}

/// Records what the commit did and marks `response` for the layer.
fn mark<T: Clone + Send + Sync + 'static>(
    context: &ClaimContext,
    commit: Commit,
    mut response: Response,
    marker: T,
) -> Response {
    context.commit.set(commit);
    response.extensions_mut().insert(marker);
    response
}

/// `problem` under the layer's type base, marked so the layer gives the claim back.
fn nothing_committed(context: &ClaimContext, problem: Problem) -> Response {
    let response = context.config.answer(problem).map(axum_core::body::Body::new);
    mark(context, Commit::NothingCommitted, response, NothingCommitted)
}

impl<S> std::fmt::Debug for Claim<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("context", &self.context).finish_non_exhaustive()
    }
}

/// Why a [`Claim`] could not be extracted; answered as problem+json.
#[derive(Debug)]
pub struct ClaimRejection {
    problem: Problem,
}

impl ClaimRejection {
    /// The problem answered.
    #[must_use]
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl std::fmt::Display for ClaimRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no idempotency claim: {}", self.problem.detail())
    }
}

impl std::error::Error for ClaimRejection {}

impl IntoResponse for ClaimRejection {
    fn into_response(self) -> Response {
        self.problem.into_response().map(axum_core::body::Body::new)
    }
}

/// The claim in `parts`, taken out; `Ok(None)` for a request without a key that runs
/// without a claim; a rejection for a request that should have one.
fn take<S: Store + 'static>(parts: &mut Parts) -> Result<Option<Claim<S>>, ClaimRejection> {
    let context = parts.extensions.get::<ClaimContext>().cloned();
    let store = parts.extensions.remove::<ClaimStore<S>>();
    match (context, store) {
        (Some(context), Some(ClaimStore(store))) => Ok(Some(Claim { context, store })),
        (None, None) if !parts.headers.contains_key(IDEMPOTENCY_KEY) => Ok(None),
        (None, _) => {
            tracing::error!(
                store = std::any::type_name::<S>(),
                "a keyed request reached a handler that extracts Claim without a claim; is the route behind the IdempotencyLayer?"
            );
            let detail = "the request carries an Idempotency-Key but was not claimed: the route is not behind the idempotency layer, or its method is not one the layer claims";
            Err(ClaimRejection { problem: kinds::handler_failed(detail) })
        }
        (Some(_), None) => {
            tracing::error!(
                store = std::any::type_name::<S>(),
                "Claim extracted twice, or the layer's store is another type"
            );
            let detail =
                "the claim was already extracted, or the idempotency layer's store is not the one the handler asks for";
            Err(ClaimRejection { problem: kinds::handler_failed(detail) })
        }
    }
}

impl<S, AppState> FromRequestParts<AppState> for Claim<S>
where
    S: Store + 'static,
    AppState: Send + Sync,
{
    type Rejection = ClaimRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        take(parts)?.ok_or_else(|| ClaimRejection { problem: kinds::key_missing(&IDEMPOTENCY_KEY) })
    }
}

impl<S, AppState> OptionalFromRequestParts<AppState> for Claim<S>
where
    S: Store + 'static,
    AppState: Send + Sync,
{
    type Rejection = ClaimRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        take(parts)
    }
}
