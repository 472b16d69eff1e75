//! The one interface every backend implements: make a transition atomic.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use crate::{ClaimRequest, Decision, Fence, Fenced, Policy, Record, RecordId, Renewal, StoredResponse, Timestamp};

/// An error from a backend's driver (connection, I/O, protocol).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed. Fence refusals are not errors: they are
/// [`Fenced::Refused`], an answer the store gave.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer. Whether the operation was
    /// applied is unknown; each [`Store`] method says whether retrying it is safe.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// What the driver reported.
        #[source]
        source: BoxError,
        /// When the caller might try again (an HTTP layer's `Retry-After`), if the store can tell.
        retry_after: Option<Duration>,
    },
    /// The store is at a size limit and takes no new claims. Nothing was changed;
    /// records already held are kept (a store never evicts a live record).
    #[error("store is full ({what}); it takes no new claims until records expire")]
    Full {
        /// Which limit was reached, e.g. "100000 records".
        what: String,
    },
    /// The store holds data it cannot read back (a schema from another version,
    /// a hand-edited row). Nothing was changed.
    #[error("store holds a record it cannot read: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    /// An [`StoreError::Unavailable`] wrapping a driver error, with no retry hint.
    pub fn unavailable(source: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable { source: source.into(), retry_after: None }
    }
}

/// A place that keeps idempotency records and applies idem-core's transitions atomically.
///
/// Every implementation does the same thing per call: read what [`crate::step()`] needs
/// (the record, the store-wide counters, the limits), call it with the operation from
/// [`crate::step::op`], and write what it answers (record, fence counter, usage), all as
/// one atomic step with respect to other calls for the same record id. The store decides
/// nothing of its own. Every store runs the conformance suite
/// (`idem_core::conformance`, feature `testing`). The shape serves three kinds of backend:
///
/// * an in-process map behind a lock ([`crate::MemoryStore`]);
/// * a SQL database (idem-sqlite, idem-postgres), which in atomic mode also completes
///   inside the same transaction as the caller's business writes ([`crate::AtomicStore`]);
///   the methods here are the separate-mode path;
/// * Redis (idem-redis), which runs the step as one server-side script per call.
///
/// Time comes in as `now`; stores never read a clock, so the model, the simulations and
/// tests decide what time it is. (idem-postgres can instead take the database's clock,
/// an option of that store, so replicas with skewed clocks agree.)
///
/// # Which failures are safe to retry
///
/// Only [`StoreError::Unavailable`] leaves the outcome unknown; the notes per method say
/// what a retry does then. [`StoreError::Full`] and [`StoreError::Corrupt`] changed nothing.
pub trait Store: Send + Sync {
    /// Decides a new request for `id` and, if the decision is to execute, takes the claim.
    /// `request` is a [`ClaimRequest`] or just a `&Fingerprint`.
    ///
    /// Retry after `Unavailable`: safe. If the lost call did take a claim, the retry sees
    /// it as [`Decision::Conflict`] until the lease lapses and then takes it over; the
    /// handler never runs without a claim of its own.
    fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Records `response` for the claim `fence` (separate mode: outside any business transaction).
    ///
    /// Retry after `Unavailable`: safe, with the same fence. Completion is idempotent per
    /// fence: if the lost call applied, the retry answers [`Fenced::Applied`] and the first
    /// response stays.
    fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<Fenced, StoreError>> + Send;

    /// Gives back the claim `fence` without a response.
    ///
    /// Retry after `Unavailable`: safe. If the lost call applied, the retry answers
    /// `Refused(NoRecord)` (or a newer claim's fence), and there is nothing left to give back.
    /// Not retrying is safe too: the claim lapses with its lease.
    fn release(&self, id: &RecordId, fence: Fence) -> impl Future<Output = Result<Fenced, StoreError>> + Send;

    /// Extends the lease of the claim `fence` to a whole lease from `now` (the holder's
    /// heartbeat while its handler runs). [`Renewal::Refused`] means another request took
    /// the claim over: the execution must not answer its own response.
    ///
    /// Retry after `Unavailable`: safe, with the same fence; a renewal only ever lengthens
    /// the lease of the claim that presents it.
    fn renew(
        &self,
        id: &RecordId,
        fence: Fence,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<Renewal, StoreError>> + Send;

    /// The record as stored, expired or not (see [`Record::is_expired`]).
    ///
    /// Retry after `Unavailable`: safe, it changes nothing.
    fn get(&self, id: &RecordId) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Forgets up to `batch_max` records that have expired at `now`; returns how many.
    /// Call again while it returns `batch_max`. Bounded batches keep each call short, so
    /// purging never holds a lock or a transaction for long.
    ///
    /// Retry after `Unavailable`: safe, expired records are absent either way.
    fn purge_expired(&self, now: Timestamp, batch_max: usize)
    -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Counts one replay of `id`'s completed record, for operators
    /// ([`crate::RecordState::Completed::replays`]); answers whether it counted. Best
    /// effort: a layer calls it after answering the replay and ignores a failure, so a
    /// full or failing store never stops a replay. The default counts nothing (a store
    /// that wraps another should forward it).
    ///
    /// Retry after `Unavailable`: not needed; a lost count is only a lower number.
    fn count_replay(&self, id: &RecordId, now: Timestamp) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (id, now);
        std::future::ready(Ok(false))
    }

    /// Whether the store decides with the `now` its caller passes (true, the default), so a
    /// record completed with `now` expires at `now` + retention. A store that reads a clock
    /// of its own instead (PostgreSQL's `TimeSource::Database`) answers false, and a caller
    /// that states a completed record's expiry (`Idempotency-Expires`, which every replay
    /// states from the stored record) reads the record back instead of computing it (SPEC
    /// "Key lifecycle": expiry on the wire, G2). A store that wraps another should forward it.
    fn decides_with_callers_now(&self) -> bool {
        true
    }
}
