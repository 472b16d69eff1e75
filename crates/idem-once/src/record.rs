//! Completing and releasing a claim: the two ends of an execution.

use std::time::Duration;

use idem_core::{
    Clock, Fence, Fenced, Policy, RecordId, RecordState, Refusal, Store, StoreError, StoredResponse, Timestamp,
};

use crate::observe;

/// Attempts at a completion before giving up (the first plus retries).
pub const COMPLETE_ATTEMPTS_MAX: u32 = 3;
/// Pause before the first retry of a completion; doubled before each further one.
pub const COMPLETE_RETRY_FIRST: Duration = Duration::from_millis(50);

/// Records `response` for the claim `fence`, retrying a store that is unavailable up to
/// [`COMPLETE_ATTEMPTS_MAX`] times in all (a completion is idempotent per fence, so a retry
/// after a lost answer is safe: SPEC G3, `Store::complete`).
///
/// # Errors
/// The last store error once the attempts ran out, or a full or corrupt store at once.
pub async fn complete<S: Store>(
    store: &S,
    id: &RecordId,
    fence: Fence,
    response: StoredResponse,
    clock: &dyn Clock,
    policy: &Policy,
) -> Result<Fenced, StoreError> {
    complete_expiring(store, id, fence, response, clock, policy).await.map(Completion::fenced)
}

/// What a completion answered ([`complete_expiring`]): [`Fenced`], with the expiry of the
/// record it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a refused completion means the caller no longer holds the claim"]
pub enum Completion {
    /// The record is completed by this fence.
    Applied {
        /// When the completed record's retention ends (SPEC "Key lifecycle": expiry on the
        /// wire): the retention from the `now` of the completion that applied.
        expires_at: Timestamp,
    },
    /// The fence was not current; nothing changed (G3).
    Refused(Refusal),
}

impl Completion {
    /// The store's answer without the expiry.
    pub fn fenced(self) -> Fenced {
        match self {
            Completion::Applied { .. } => Fenced::Applied,
            Completion::Refused(refusal) => Fenced::Refused(refusal),
        }
    }
}

/// [`complete`], also saying when the completed record expires. Where the attempt that
/// answered `Applied` was a retry, the earlier attempt whose answer was lost may be the
/// one that applied (with an earlier `now`), so the record is read back for its expiry, as
/// it is on a store that does not decide with the caller's `now`
/// ([`Store::decides_with_callers_now`]); if that read fails, the `now` passed is taken.
///
/// # Errors
/// As [`complete`].
pub async fn complete_expiring<S: Store>(
    store: &S,
    id: &RecordId,
    fence: Fence,
    response: StoredResponse,
    clock: &dyn Clock,
    policy: &Policy,
) -> Result<Completion, StoreError> {
    let mut pause = COMPLETE_RETRY_FIRST;
    let mut attempt = 1;
    loop {
        let now = clock.now();
        let result = store.complete(id, fence, response.clone(), now, policy).await;
        match observe::store("complete", result) {
            Err(StoreError::Unavailable { source, .. }) if attempt < COMPLETE_ATTEMPTS_MAX => {
                tracing::warn!(key = id.key.as_str(), attempt, error = %source, "completion failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Ok(Fenced::Applied) => {
                let computed = now.saturating_add(policy.retention());
                // The record is read back where `now` may not be what the store used: after a
                // retry, or on a store with a clock of its own.
                let known = attempt == 1 && store.decides_with_callers_now();
                let expires_at =
                    if known { computed } else { stored_expiry(store, id, fence).await.unwrap_or(computed) };
                return Ok(Completion::Applied { expires_at });
            }
            Ok(Fenced::Refused(refusal)) => return Ok(Completion::Refused(refusal)),
            Err(error) => return Err(error),
        }
    }
}

/// The expiry of `id`'s record if `fence` completed it.
async fn stored_expiry<S: Store>(store: &S, id: &RecordId, fence: Fence) -> Option<Timestamp> {
    let record = observe::store("get", store.get(id).await).ok()??;
    let completed = matches!(record.state, RecordState::Completed { .. }) && record.fence == fence;
    completed.then_some(record.expires_at)
}

/// Whether a release took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The claim is given back; a retry may run.
    Yes,
    /// The claim had been taken over, or the record completed by another claim: the
    /// execution lost its claim.
    Stale,
    /// The record was completed by this very claim (an atomic commit whose answer was lost
    /// did commit).
    CompletedByThisClaim,
    /// The store failed or held nothing; the claim, if any, lapses with its lease.
    Failed,
}

/// Gives back the claim `fence` of `id`, and says what the store answered.
pub async fn release<S: Store>(store: &S, id: &RecordId, fence: Fence) -> Released {
    match observe::store("release", store.release(id, fence).await) {
        Ok(Fenced::Applied) => Released::Yes,
        Ok(Fenced::Refused(Refusal::NoRecord)) => Released::Failed,
        Ok(Fenced::Refused(Refusal::AlreadyCompleted { completed_by })) if completed_by == fence => {
            Released::CompletedByThisClaim
        }
        Ok(Fenced::Refused(_)) => Released::Stale,
        Err(error) => {
            tracing::warn!(key = id.key.as_str(), %error, "could not release the claim; it lapses with its lease");
            Released::Failed
        }
    }
}
