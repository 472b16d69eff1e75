//! One execution under a claim the caller already holds: run the work while renewing,
//! then complete (or release), and say what became of it as plain data ([`Executed`]).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use idem_core::{
    AtomicStore, Claim, CommitError, Fenced, RecordId, Store, StoreError, StoredOutcome, StoredResponse, Timestamp,
};

use crate::commit::Commit;
use crate::lease::{ClaimScope, LeaseState};
use crate::record::{self, Completion, Released};
use crate::renew::{Heartbeat, Renewing, while_renewing};
use crate::{Once, observe};

/// What became of one execution (`E` is the [`Failure`]). Every variant is a store's answer, never a guess.
#[derive(Debug)]
#[must_use = "an execution's end decides the answer or the settle"]
pub enum Executed<E> {
    /// This execution's completion committed: answer (ack) with this outcome.
    Completed {
        /// What the work produced, as recorded.
        outcome: StoredOutcome,
        /// When the completed record's retention ends, for the answer's expiry (SPEC "Key
        /// lifecycle": expiry on the wire; [`record::Completion::Applied`]). Computed from
        /// the `now` this process gave the store; a store that keeps its own clock (e.g.
        /// idem-postgres on the database's clock) may have stored a time off by their skew.
        expires_at: Timestamp,
    },
    /// The claim was lost (a renewal, the completion or the release was refused): another
    /// execution holds or completed the record, or an operator forgot it. Answer from the
    /// record as now stored (`idem_core::reply::superseded`, `idem_core::consume::superseded`,
    /// which also carry its expiry), never this one's outcome (G2).
    Lost,
    /// Nothing was recorded and the claim was given back (or lapses): a retry may run.
    Failed(E),
    /// Separate mode only: the work's side effect happened but its completion could not be
    /// recorded, after [`record::COMPLETE_ATTEMPTS_MAX`] attempts. The claim lapses with its
    /// lease; a retry after that runs again (SPEC separate mode).
    Unrecorded {
        /// What the work produced.
        outcome: StoredOutcome,
        /// The store's last error.
        error: StoreError,
    },
}

/// Why an execution failed without recording anything.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E, W = Infallible> {
    /// The work returned an error.
    #[error("the work failed: {0}")]
    Work(E),
    /// The work or its writes panicked (caught; in atomic mode nothing of them committed).
    #[error("the work panicked")]
    Panicked,
    /// Atomic mode: the business writes failed and were rolled back with the completion.
    #[error("the business writes failed: {0}")]
    Writes(W),
    /// Atomic mode: the store failed during the commit; nothing was committed.
    #[error(transparent)]
    Store(StoreError),
}

impl<S: Store> Once<S> {
    /// Runs `work` under `claim` (from [`Store::claim`]'s `Execute` or `TakeOver`) while
    /// renewing it and telling `heartbeat` after each applied renewal, then records the
    /// outcome (separate mode: the side effect inside `work` is not in the completion's
    /// transaction), or releases the claim if `work` failed or panicked.
    pub async fn execute<E, W, F>(
        &self,
        id: &RecordId,
        claim: Claim,
        heartbeat: &impl Heartbeat,
        work: W,
    ) -> Executed<Failure<E>>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<StoredOutcome, E>>,
    {
        let lease = Arc::new(LeaseState::new(claim.lease_expires_at));
        let scope = ClaimScope::new(id.clone(), claim.fence, Arc::clone(&lease));
        let ran = while_renewing(self.renewing(id, claim, &lease), heartbeat, caught(work(scope))).await;
        if lease.is_lost() {
            return Executed::Lost;
        }
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(failure) => return self.released(id, claim, failure).await,
        };
        let stored = StoredResponse::from(outcome.clone());
        match record::complete_expiring(&*self.store, id, claim.fence, stored, &*self.clock, &self.policy).await {
            Ok(Completion::Applied { expires_at }) => Executed::Completed { outcome, expires_at },
            Ok(Completion::Refused(refusal)) => {
                tracing::warn!(key = id.key.as_str(), %refusal, "completion refused: the claim was taken over");
                Executed::Lost
            }
            Err(error) => {
                tracing::error!(key = id.key.as_str(), %error, "could not record the outcome; the side effect ran unrecorded");
                Executed::Unrecorded { outcome, error }
            }
        }
    }

    /// The claim given back after a failure, unless it was lost meanwhile.
    async fn released<E>(&self, id: &RecordId, claim: Claim, failure: E) -> Executed<E> {
        match record::release(&*self.store, id, claim.fence).await {
            Released::Stale => Executed::Lost,
            Released::Yes | Released::Failed | Released::CompletedByThisClaim => Executed::Failed(failure),
        }
    }

    pub(crate) fn renewing<'a>(&'a self, id: &'a RecordId, claim: Claim, lease: &'a LeaseState) -> Renewing<'a, S> {
        Renewing {
            store: &*self.store,
            id,
            fence: claim.fence,
            policy: &self.policy,
            clock: &*self.clock,
            lease,
            execution_max: self.execution_max,
        }
    }
}

impl<S: AtomicStore> Once<S>
where
    S::Connection: 'static,
{
    /// Atomic mode: runs `work` under `claim` while renewing it; `work` computes and hands
    /// back a [`Commit`], whose writes run and commit with the completion in one
    /// transaction ([`AtomicStore::complete_with`]), or neither does. On any failure nothing
    /// was committed and the claim is released.
    ///
    /// If the store failed during the commit, the release's answer tells what happened: a
    /// record completed by this very claim did commit (its answer was lost), so this
    /// execution is [`Executed::Completed`].
    pub async fn execute_atomic<E, W, F>(
        &self,
        id: &RecordId,
        claim: Claim,
        heartbeat: &impl Heartbeat,
        work: W,
    ) -> Executed<Failure<E, S::WriteError>>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<Commit<S>, E>>,
    {
        let lease = Arc::new(LeaseState::new(claim.lease_expires_at));
        let scope = ClaimScope::new(id.clone(), claim.fence, Arc::clone(&lease));
        let committed = async {
            let Commit { outcome, writes } = caught(work(scope)).await.map_err(widen)?;
            let stored = StoredResponse::from(outcome.clone());
            let now = self.clock.now();
            let fenced = self.store.complete_with(id, claim.fence, stored, now, &self.policy, writes).await;
            // One call, so the `now` it carried is the completed record's.
            let expires_at = now.saturating_add(self.policy.retention());
            Ok::<_, Failure<E, S::WriteError>>((fenced, Completed { outcome, expires_at }))
        };
        // Catches a panic in the writes too (they run inline in some stores' completion):
        // nothing of them committed, and the claim is released.
        let committed = async {
            match AssertUnwindSafe(committed).catch_unwind().await {
                Ok(result) => result,
                Err(_panic) => Err(Failure::Panicked),
            }
        };
        let ran = while_renewing(self.renewing(id, claim, &lease), heartbeat, committed).await;
        match ran {
            Ok((Ok(Fenced::Applied), Completed { outcome, expires_at })) => Executed::Completed { outcome, expires_at },
            Ok((Ok(Fenced::Refused(refusal)), _)) => {
                tracing::warn!(key = id.key.as_str(), %refusal, "atomic completion refused: the claim was taken over; nothing committed");
                Executed::Lost
            }
            Ok((Err(CommitError::Writes(error)), _)) => self.released(id, claim, Failure::Writes(error)).await,
            Ok((Err(CommitError::Store(error)), Completed { outcome, expires_at })) => {
                observe::failed("complete", &error);
                match record::release(&*self.store, id, claim.fence).await {
                    // The commit that went through was this very call, with its `now`.
                    Released::CompletedByThisClaim => Executed::Completed { outcome, expires_at },
                    Released::Stale => Executed::Lost,
                    Released::Yes | Released::Failed => Executed::Failed(Failure::Store(error)),
                }
            }
            Err(failure) if lease.is_lost() => {
                drop(failure);
                tracing::warn!(key = id.key.as_str(), "the work failed after its claim was lost");
                Executed::Lost
            }
            Err(failure) => self.released(id, claim, failure).await,
        }
    }
}

/// An outcome and the expiry its completion gives the record.
struct Completed {
    outcome: StoredOutcome,
    expires_at: Timestamp,
}

/// Runs `work`, catching a panic, so a panicking handler still has its claim released.
async fn caught<T, E>(work: impl Future<Output = Result<T, E>>) -> Result<T, Failure<E>> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::Work(error)),
        Err(_panic) => Err(Failure::Panicked),
    }
}

/// A separate-mode failure as an atomic one.
fn widen<E, W>(failure: Failure<E>) -> Failure<E, W> {
    match failure {
        Failure::Work(error) => Failure::Work(error),
        Failure::Panicked => Failure::Panicked,
        Failure::Store(error) => Failure::Store(error),
        Failure::Writes(never) => match never {},
    }
}
