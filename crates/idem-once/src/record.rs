//! Completing and releasing a claim: the two ends of an execution.

use std::time::Duration;

use idem_core::{Clock, Fence, Fenced, Policy, RecordId, Refusal, Store, StoreError, StoredResponse};

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
    let mut pause = COMPLETE_RETRY_FIRST;
    let mut attempt = 1;
    loop {
        let result = store.complete(id, fence, response.clone(), clock.now(), policy).await;
        match observe::store("complete", result) {
            Err(StoreError::Unavailable { source, .. }) if attempt < COMPLETE_ATTEMPTS_MAX => {
                tracing::warn!(key = id.key.as_str(), attempt, error = %source, "completion failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
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
