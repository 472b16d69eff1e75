//! Atomic mode as one call: the handler's business writes and the fenced completion
//! commit together or not at all (SPEC G1 across lease lapses, G2, G7).
//!
//! A store that keeps records in the same database as the application's own tables
//! (idem-sqlite, idem-postgres) implements [`AtomicStore`]. The handler does not hold a
//! transaction: it hands its writes to the store as a closure, and the store runs them,
//! then the completion ([`crate::step::op::CompleteInTransaction`]), in one transaction of
//! its own choosing. That is what lets idem-sqlite commit many handlers' writes and
//! completions with one `fsync` (group commit) while each stays all-or-nothing.

use std::future::Future;
use std::pin::Pin;

use crate::{Fence, Fenced, Policy, RecordId, Store, StoreError, StoredResponse, Timestamp};

/// The future a business write returns: it borrows the connection it runs on.
pub type WritesFuture<'c, E, T = ()> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Why an atomic completion did not commit. Either way nothing of it was committed:
/// neither the business writes nor the completion; the claim is still in flight.
#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    /// The business writes failed (a constraint, a bad statement); the store rolled them back.
    #[error("the business writes failed: {0}")]
    Writes(#[source] E),
    /// The store failed; the business writes were rolled back with the completion.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store that completes a claim in the same transaction as the caller's business writes.
pub trait AtomicStore: Store {
    /// What the business writes run on: a connection inside the store's transaction.
    type Connection: Send;
    /// What a business write fails with (the driver's error type).
    type WriteError: std::error::Error + Send + Sync + 'static;

    /// Runs `writes`, then completes the claim `fence` of `id` with `response`, in one
    /// transaction: on [`Fenced::Applied`] both are committed (and durable, where the store
    /// is); on [`Fenced::Refused`] (the claim was taken over, or purged) neither is.
    ///
    /// `writes` runs at most once, and only under the store's write lock, so it must not
    /// wait on anything slow: prepare the rows before, write them here. A second completion
    /// with the fence that already completed the record is refused, because its writes
    /// would repeat the first one's ([`crate::step::op::CompleteInTransaction`]).
    ///
    /// # Errors
    /// [`CommitError`]: nothing was committed.
    fn complete_with<W>(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
        writes: W,
    ) -> impl Future<Output = Result<Fenced, CommitError<Self::WriteError>>> + Send
    where
        W: for<'c> FnOnce(&'c mut Self::Connection) -> WritesFuture<'c, Self::WriteError> + Send + 'static;
}
