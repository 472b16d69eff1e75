//! Atomic mode's hand-off: the outcome to record and the business writes that commit with it.

use std::fmt;

use idem_core::{AtomicStore, StoredOutcome, WritesFuture};

/// The writes of one atomic execution, boxed so a handler can return them.
pub(crate) type Writes<S> = Box<
    dyn for<'c> FnOnce(&'c mut <S as AtomicStore>::Connection) -> WritesFuture<'c, <S as AtomicStore>::WriteError>
        + Send,
>;

/// What an atomic execution hands back: its outcome and the business writes that commit
/// with the completion, in one transaction, or not at all ([`AtomicStore::complete_with`]).
/// The work computes outside the store's lock; the writes run under it, so they must only
/// write.
pub struct Commit<S: AtomicStore> {
    pub(crate) outcome: StoredOutcome,
    pub(crate) writes: Writes<S>,
}

impl<S: AtomicStore> Commit<S> {
    /// The outcome to record and the writes to commit with it.
    pub fn new(
        outcome: StoredOutcome,
        writes: impl for<'c> FnOnce(&'c mut S::Connection) -> WritesFuture<'c, S::WriteError> + Send + 'static,
    ) -> Commit<S> {
        Commit { outcome, writes: Box::new(writes) }
    }

    /// An outcome with no business writes (the completion alone commits).
    #[must_use]
    pub fn outcome_only(outcome: StoredOutcome) -> Commit<S> {
        Commit::new(outcome, |_| Box::pin(async { Ok(()) }))
    }

    /// The outcome that will be recorded.
    #[must_use]
    pub fn outcome(&self) -> &StoredOutcome {
        &self.outcome
    }
}

impl<S: AtomicStore> fmt::Debug for Commit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commit").field("outcome", &self.outcome).finish_non_exhaustive()
    }
}
