//! Atomic mode: the handler's business writes and the completion commit in one transaction.
//!
//! When the layer runs a handler under a claim, it puts a [`ClaimContext`] into the
//! request's extensions (and, with the `axum` feature, what [`crate::Claim`] extracts).
//!
//! **The recommended path** is [`crate::Claim::commit`], for stores that implement
//! [`idem_core::AtomicStore`] (idem-sqlite, idem-postgres): the handler extracts
//! `Claim<Store>` and ends with one call that records the very response it answers and
//! runs its writes in the completion's transaction. It cannot forget the marker, commit
//! without completing, or store a response other than the one sent (see [`crate::claim`]).
//!
//! **The manual path** remains for stores that can share a transaction without
//! implementing `AtomicStore`: the handler writes its rows and completes the record with
//! [`ClaimContext::stored_response`], [`ClaimContext::fence`] and [`ClaimContext::now`] in
//! its own transaction, then puts [`CompletedInTransaction`] with the store's answer into
//! the *response* extensions. `Applied`: the layer answers the response as it is;
//! `Refused(_)` (the claim was taken over, the transaction should have rolled back): the
//! layer answers what the store holds, the recorded response or a 409 (G2). A handler
//! that does not insert the marker is completed by the layer (separate mode).
//!
//! `stored_response` applies the layer's recording limit
//! ([`crate::IdempotencyBuilder::response_body_bytes_max`]) as the layer does in separate
//! mode: for a body longer than the limit it returns a `response-not-kept` problem with
//! the response's status and `Location`, not the body. The handler commits its writes with
//! that record and answers its response whole, so SPEC's rule holds on this path too: the
//! first client gets every byte, the operation never runs again for the key, and retries
//! get the problem (with `Idempotent-Replayed: true`), the same record the layer would
//! have kept. ([`crate::Claim::commit`] reads the response itself and does the same for
//! one it cannot keep; see [`crate::claim`].)
//!
//! While the handler runs, the layer renews its claim (every [`Policy::renew_every`]). If a
//! renewal is refused, another request has taken the claim over: [`ClaimContext::lost`]
//! turns true, the handler's completion will be refused (its transaction rolls back),
//! and the layer will not answer its response. A long handler may check `lost()` to stop
//! early; it need not, the fence check is what keeps G1.
//!
//! # Examples
//!
//! The manual path: a handler that completes the record itself. `MemoryStore` has no transactions, so here
//! the completion runs alone; with idem-sqlite it would be the last statement of the
//! handler's transaction, and the business writes would commit with it or not at all.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Extension, Router, response::IntoResponse, routing::post};
//! use bytes::Bytes;
//! use http::{HeaderMap, Request, StatusCode};
//! use idem_core::{MemoryStore, RecordState, Store};
//! use idem_http::{ClaimContext, CompletedInTransaction, IdempotencyLayer};
//! use tower::ServiceExt;
//!
//! async fn create_payment(Extension(claim): Extension<ClaimContext>, Extension(store): Extension<Arc<MemoryStore>>) -> impl IntoResponse {
//!     let (status, headers, body) = (StatusCode::CREATED, HeaderMap::new(), Bytes::from_static(b"pay_1"));
//!     // BEGIN; INSERT INTO payments ...; then, in the same transaction:
//!     let stored = claim.stored_response(status, &headers, &body);
//!     let fenced = store.complete(claim.id(), claim.fence(), stored, claim.now(), claim.policy()).await
//!         .expect("the memory store is always reachable");
//!     // COMMIT (or ROLLBACK if `fenced` is Refused).
//!     let mut response = (status, headers, body).into_response();
//!     response.extensions_mut().insert(CompletedInTransaction(fenced));
//!     response
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let app = Router::new()
//!     .route("/payments", post(create_payment))
//!     .layer(IdempotencyLayer::new(store.clone()))
//!     .layer(Extension(store.clone()));
//!
//! let request = || Request::post("/payments").header("idempotency-key", "k1").body(axum::body::Body::empty()).unwrap();
//! let response = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! let retry = app.oneshot(request()).await.unwrap();
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! let id = idem_core::RecordId::new(idem_core::Principal::anonymous(), "k1".try_into().unwrap());
//! let record = store.get(&id).await.unwrap();
//! assert!(matches!(record.unwrap().state, RecordState::Completed { .. }));
//! # });
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderMap, StatusCode};
use idem_core::{Clock, Fence, Fenced, Policy, RecordId, StoredResponse, Timestamp};

use crate::body::{NotKept, read_bounded};
use crate::config::Config;
use crate::problem::kinds;

/// Inserted into the request's extensions when the layer runs the handler under a claim:
/// what the handler needs to complete the record in its own transaction.
#[derive(Clone)]
pub struct ClaimContext {
    pub(crate) id: RecordId,
    pub(crate) fence: Fence,
    pub(crate) lease: Arc<LeaseState>,
    /// What `Claim::commit` did, read by the layer when the handler returns.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) commit: Arc<CommitState>,
    /// The layer's configuration: header filter, clock, limits, problem base.
    pub(crate) config: Arc<Config>,
    /// The request's route: its policy (lease, retention, tombstone).
    pub(crate) route: Arc<crate::route::Route>,
    /// The last time [`ClaimContext::now`] handed out (Unix ms; 0 for none): what a handler
    /// that completed by hand most likely completed with, so the layer states that record's
    /// expiry if it cannot read the record back.
    pub(crate) handed_now: Arc<AtomicU64>,
}

impl ClaimContext {
    /// The record id: (principal, key).
    #[must_use]
    pub fn id(&self) -> &RecordId {
        &self.id
    }

    /// The claim's fence; the completion must present it.
    #[must_use]
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// When the claim lapses if not completed or renewed again; past it another request
    /// may take over. The layer renews the claim while the handler runs, so this moves on.
    #[must_use]
    pub fn lease_expires_at(&self) -> Timestamp {
        self.lease.expires_at()
    }

    /// Whether the claim was lost: a renewal was refused because another request took the
    /// claim over. The handler's completion will be refused and its response will not be
    /// answered, so a handler may stop early (its transaction rolls back either way).
    #[must_use]
    pub fn lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// The lease and retention the layer uses; pass it to the completion.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.route.policy
    }

    /// The time on the layer's clock: the `now` to complete with.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        let now = self.config.clock.now();
        self.handed_now.store(now.unix_ms(), Ordering::SeqCst);
        now
    }

    /// The layer's clock, for handlers that read the time more than once.
    #[must_use]
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.config.clock)
    }

    /// The [`StoredResponse`] the layer itself would store for this response (same header
    /// filtering, same recording limit), so a replay is the same whoever completed the record.
    ///
    /// A body longer than [`crate::IdempotencyBuilder::response_body_bytes_max`] is not
    /// stored: what is returned is the `response-not-kept` problem the layer records for
    /// such a response in separate mode, with `status` and the `Location` of `headers`
    /// (SPEC "HTTP behaviour"; see [the module docs](self)). Complete with it and answer the
    /// response itself, whole: the first client gets every byte, retries get the problem.
    #[must_use]
    pub fn stored_response(&self, status: StatusCode, headers: &HeaderMap, body: &Bytes) -> StoredResponse {
        let bytes_max = self.config.response_body_bytes_max;
        if body.len() > bytes_max {
            tracing::warn!(
                key = self.id.key.as_str(),
                bytes = body.len(),
                bytes_max,
                "the handler's response is longer than the recording limit; storing a response-not-kept problem for retries"
            );
            return not_kept_record(&self.config, status, headers, NotKept::TooLarge { bytes_max });
        }
        self.config.filter.stored_response(status.as_u16(), headers, body.clone())
    }
}

/// What the layer records for a response it cannot keep (SPEC "HTTP behaviour": the
/// operation completed and retries get a problem saying its response was not kept): the
/// `response-not-kept` problem with the response's own status (the operation's result, so
/// a client does not retry) and its `Location`, through the layer's header filter.
pub(crate) fn not_kept_record(
    config: &Config,
    status: StatusCode,
    headers: &HeaderMap,
    why: NotKept,
) -> StoredResponse {
    let mut problem = config.answer(kinds::response_not_kept(status, why));
    if let Some(location) = headers.get(http::header::LOCATION) {
        problem.headers_mut().insert(http::header::LOCATION, location.clone());
    }
    let (head, body) = problem.into_parts();
    // A problem's body is one in-memory chunk: reading it is ready at once and cannot fail.
    let body = read_bounded(body, usize::MAX, |_| {})
        .now_or_never()
        .and_then(Result::ok)
        .expect("a problem body is in memory and cannot fail");
    config.filter.stored_response(head.status.as_u16(), &head.headers, body)
}

impl std::fmt::Debug for ClaimContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimContext")
            .field("id", &self.id)
            .field("fence", &self.fence)
            .field("lease_expires_at", &self.lease_expires_at())
            .field("lost", &self.lost())
            .field("policy", &self.route.policy)
            .finish_non_exhaustive()
    }
}

pub(crate) use idem_once::LeaseState;

/// What [`crate::Claim::commit`] did with a claim, shared by the handler's
/// [`ClaimContext`] and the layer. The layer reads it when the handler returns, to tell a
/// commit's own response from a response that bypassed it.
#[derive(Debug, Default)]
pub(crate) struct CommitState(AtomicU8);

/// What became of a claim's commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// `commit` was not called (the layer completes the record, separate mode).
    NotCalled,
    /// The store committed the writes and the completion.
    Applied,
    /// The store refused the completion (the claim was taken over); nothing committed.
    Refused,
    /// `commit` was called and committed nothing (its writes or the store failed, or the
    /// response could not be recorded); the claim is still this execution's.
    NothingCommitted,
}

impl CommitState {
    pub(crate) fn get(&self) -> Commit {
        match self.0.load(Ordering::SeqCst) {
            0 => Commit::NotCalled,
            1 => Commit::Applied,
            2 => Commit::Refused,
            3 => Commit::NothingCommitted,
            other => unreachable!("only `set` writes it, with 1 to 3, not {other}"),
        }
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn set(&self, commit: Commit) {
        let value = match commit {
            Commit::NotCalled => unreachable!("a commit is never un-called"),
            Commit::Applied => 1,
            Commit::Refused => 2,
            Commit::NothingCommitted => 3,
        };
        self.0.store(value, Ordering::SeqCst);
    }
}

/// Put into the *response* extensions by a handler that completed the record in its own
/// transaction; it holds the store's answer to that completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedInTransaction(pub Fenced);

/// Put into the response extensions by [`crate::Claim::commit`] when it committed nothing
/// (writes or store failed, response not recordable): the layer gives the claim back,
/// whatever its status rules say, so a retry runs the handler again.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct NothingCommitted;

/// Put into the request's extensions by the layer, next to the [`ClaimContext`]: the store
/// `Claim` (the axum extractor, `claim.rs`) commits to. Taken out by the first extraction.
#[cfg(feature = "axum")]
pub(crate) struct ClaimStore<S>(pub(crate) Arc<S>);

#[cfg(feature = "axum")]
impl<S> Clone for ClaimStore<S> {
    fn clone(&self) -> Self {
        ClaimStore(Arc::clone(&self.0))
    }
}
