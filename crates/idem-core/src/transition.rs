//! The decision table (SPEC, "The record's life") as pure functions.
//!
//! Each function takes the record as the store holds it (or `None`), the request's
//! facts and `now`, and returns a [`Transition`]: what to answer and what to write.
//! A store does not call these directly: it calls [`crate::step()`], which wraps them with
//! the store-wide rules (fence counter, admission, usage), and applies what it answers.

use std::time::Duration;

use crate::{ClaimRequest, Fence, Holder, Policy, Record, RecordState, StoredResponse, Timestamp};

/// What a transition answers and what the store must write to apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a transition is applied by writing `write` and answering `outcome`"]
pub struct Transition<T> {
    /// The answer for the caller.
    pub outcome: T,
    /// The change to the stored record.
    pub write: Write,
}

/// The change a transition makes to the stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Leave the record as it is (or absent).
    Unchanged,
    /// Store this record, replacing any other.
    Put(Record),
    /// Remove the record.
    Delete,
}

/// A claim the caller now holds: run the handler, then complete or release with `fence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The claim's fence; completions and releases must present it.
    pub fence: Fence,
    /// When the claim lapses if not completed.
    pub lease_expires_at: Timestamp,
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the caller must act on the decision"]
pub enum Decision {
    /// Nothing (live) is recorded: run the handler under this new claim.
    Execute(Claim),
    /// The last claim's lease lapsed (its holder is presumed crashed): run the handler
    /// under this new claim; the stale fence is refused from now on.
    TakeOver {
        /// The new claim.
        claim: Claim,
        /// The fence of the claim that lapsed.
        stale: Fence,
    },
    /// The response is recorded: answer with it, do not run the handler.
    Replay {
        /// The recorded response.
        response: StoredResponse,
        /// When the record's retention ends.
        expires_at: Timestamp,
    },
    /// Another request holds a valid claim: answer "in progress", do not run the handler.
    Conflict {
        /// How long until that claim lapses (a `Retry-After` hint).
        retry_after: Duration,
        /// When the in-flight record's retention ends (a completion restarts it).
        expires_at: Timestamp,
        /// Who holds the claim.
        holder: Holder,
    },
    /// The key was used for a different request: refuse, do not run the handler.
    Mismatch {
        /// When the record (or its tombstone) that holds the key expires.
        expires_at: Timestamp,
    },
    /// The record's retention ended and its tombstone remains (SPEC "Key lifecycle"):
    /// the operation ran long ago and never runs again; answer "gone".
    Gone {
        /// When the tombstone is forgotten.
        expires_at: Timestamp,
    },
}

impl Decision {
    /// The claim to run the handler under, if the decision is to run it.
    #[must_use]
    pub fn claim(&self) -> Option<Claim> {
        match self {
            Decision::Execute(claim) | Decision::TakeOver { claim, .. } => Some(*claim),
            Decision::Replay { .. } | Decision::Conflict { .. } | Decision::Mismatch { .. } | Decision::Gone { .. } => {
                None
            }
        }
    }

    /// The recorded response, if the decision is to replay it.
    #[must_use]
    pub fn replayed(&self) -> Option<&StoredResponse> {
        match self {
            Decision::Replay { response, .. } => Some(response),
            _ => None,
        }
    }
}

/// Why a completion or release was refused (G3). The record is left untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No record: it was released, purged, or never claimed.
    #[error("no record is in flight for this id")]
    NoRecord,
    /// Another claim is current: the presented fence lost its claim to a take-over.
    #[error("fence {presented:?} is stale; the current claim holds {current:?}")]
    StaleFence {
        /// The fence presented.
        presented: Fence,
        /// The fence of the current claim.
        current: Fence,
    },
    /// The record was completed under another claim.
    #[error("the record was already completed under fence {completed_by:?}")]
    AlreadyCompleted {
        /// The fence the completion carried.
        completed_by: Fence,
    },
}

/// Whether a fenced write (completion or release) took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a refused completion means the caller no longer holds the claim"]
pub enum Fenced {
    /// The fence was current and the write is applied (or was already, for a repeated completion).
    Applied,
    /// The fence was not current; nothing changed.
    Refused(Refusal),
}

/// What SPEC's decision table says about a request for a record id, read-only: the
/// part of [`claim`] that takes no claim. A waiting request looks until the claim in
/// flight is done, and an execution that lost its claim looks to learn what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a look is a decision to act on"]
pub enum Look {
    /// Nothing live is recorded (absent, released, or expired): a claim would execute.
    Absent,
    /// The claim in flight lapsed: a claim would take it over.
    Lapsed {
        /// The fence of the lapsed claim.
        stale: Fence,
    },
    /// The response is recorded: replay it.
    Replay {
        /// The recorded response.
        response: StoredResponse,
        /// When the record's retention ends.
        expires_at: Timestamp,
    },
    /// Another request holds a valid claim.
    InProgress {
        /// How long until that claim lapses.
        lease_left: Duration,
        /// When the in-flight record's retention ends.
        expires_at: Timestamp,
        /// Who holds the claim.
        holder: Holder,
    },
    /// The key was used for a different request.
    Mismatch {
        /// When the record (or its tombstone) that holds the key expires.
        expires_at: Timestamp,
    },
    /// Only the record's tombstone remains: the operation never runs again.
    Gone {
        /// When the tombstone is forgotten.
        expires_at: Timestamp,
    },
}

/// Looks at `record` for `request` at `now` (SPEC's decision table, and "Key lifecycle"
/// for tombstones). A record that has expired counts as absent; a fingerprint that
/// matches neither of the request's is a mismatch, whether the record is in flight,
/// completed or a tombstone; a tombstone of the same request is gone.
pub fn look(record: Option<&Record>, request: &ClaimRequest, now: Timestamp) -> Look {
    let Some(record) = record.filter(|record| !record.is_expired(now)) else {
        return Look::Absent;
    };
    let expires_at = record.answered_expiry(now);
    if !request.matches(&record.fingerprint) {
        return Look::Mismatch { expires_at };
    }
    if record.is_tombstone(now) {
        return Look::Gone { expires_at };
    }
    match &record.state {
        RecordState::Completed { response, .. } => Look::Replay { response: response.clone(), expires_at },
        RecordState::InFlight { lease_expires_at, holder, .. } if now < *lease_expires_at => {
            Look::InProgress { lease_left: now.until(*lease_expires_at), expires_at, holder: holder.clone() }
        }
        RecordState::InFlight { .. } => Look::Lapsed { stale: record.fence },
        RecordState::Tombstone => unreachable!("a tombstone that has not expired is gone"),
    }
}

/// Decides a new request for a record id (SPEC's decision table, through [`look`]).
///
/// `fresh_fence` is the fence a new claim would carry; the store draws it from a counter
/// that only grows, and it is used only if the decision is to execute.
///
/// # Panics
/// If `fresh_fence` is not newer than the record's fence: the store broke the rule that
/// fences are never reused, and continuing would break G3. ([`crate::step()`] checks this
/// first and answers an error instead.)
pub fn claim(
    record: Option<&Record>,
    request: &ClaimRequest,
    now: Timestamp,
    policy: &Policy,
    fresh_fence: Fence,
) -> Transition<Decision> {
    match look(record, request, now) {
        Look::Absent => execute(Decision::Execute, request, now, policy, fresh_fence),
        Look::Lapsed { stale } => {
            assert!(fresh_fence > stale, "store reused fence {fresh_fence:?} (record holds {stale:?})");
            execute(|claim| Decision::TakeOver { claim, stale }, request, now, policy, fresh_fence)
        }
        Look::Replay { response, expires_at } => unchanged(Decision::Replay { response, expires_at }),
        Look::InProgress { lease_left, expires_at, holder } => {
            unchanged(Decision::Conflict { retry_after: lease_left, expires_at, holder })
        }
        Look::Mismatch { expires_at } => unchanged(Decision::Mismatch { expires_at }),
        Look::Gone { expires_at } => unchanged(Decision::Gone { expires_at }),
    }
}

fn execute(
    decide: impl FnOnce(Claim) -> Decision,
    request: &ClaimRequest,
    now: Timestamp,
    policy: &Policy,
    fence: Fence,
) -> Transition<Decision> {
    let lease_expires_at = now.saturating_add(policy.lease());
    let record = Record {
        fingerprint: request.fingerprint,
        fence,
        created_at: now,
        expires_at: now.saturating_add(policy.retention()),
        state: RecordState::InFlight { lease_expires_at, holder: request.holder.clone(), renewals: 0 },
    };
    Transition { outcome: decide(Claim { fence, lease_expires_at }), write: Write::Put(record) }
}

fn unchanged<T>(outcome: T) -> Transition<T> {
    Transition { outcome, write: Write::Unchanged }
}

/// Records `response` for the claim `fence`; the record is kept for the retention from `now`.
///
/// Accepted only while `fence` holds the current claim (G3), even after its lease lapsed,
/// as long as no other request took over. Completing again with the same fence is
/// accepted and changes nothing (the first response stays, G2), so a completion whose
/// outcome was lost may be retried.
pub fn complete(
    record: Option<&Record>,
    fence: Fence,
    response: StoredResponse,
    now: Timestamp,
    policy: &Policy,
) -> Transition<Fenced> {
    match check_fence(record, fence) {
        FenceState::Current(record) => {
            let expires_at = now.saturating_add(policy.retention());
            let tombstone_until = policy.tombstone().map(|period| expires_at.saturating_add(period));
            let completed = Record {
                fingerprint: record.fingerprint,
                fence,
                created_at: record.created_at,
                expires_at,
                state: RecordState::Completed { response, replays: 0, tombstone_until },
            };
            Transition { outcome: Fenced::Applied, write: Write::Put(completed) }
        }
        FenceState::CompletedBy(completed_by) if completed_by == fence => unchanged(Fenced::Applied),
        FenceState::CompletedBy(completed_by) => unchanged(Fenced::Refused(Refusal::AlreadyCompleted { completed_by })),
        FenceState::Refused(refusal) => unchanged(Fenced::Refused(refusal)),
    }
}

/// Records `response` for the claim `fence` inside the caller's business transaction
/// (atomic mode, SPEC "Modes"); the caller commits on [`Fenced::Applied`] and rolls back
/// on [`Fenced::Refused`].
///
/// The same as [`complete`] except for a repeated completion: completing again with the
/// fence that already completed the record is *refused* (`AlreadyCompleted` naming that
/// very fence), because the second transaction's business writes would repeat the first
/// one's (G1).
pub fn complete_in_transaction(
    record: Option<&Record>,
    fence: Fence,
    response: StoredResponse,
    now: Timestamp,
    policy: &Policy,
) -> Transition<Fenced> {
    match check_fence(record, fence) {
        FenceState::CompletedBy(completed_by) => unchanged(Fenced::Refused(Refusal::AlreadyCompleted { completed_by })),
        FenceState::Current(_) | FenceState::Refused(_) => complete(record, fence, response, now, policy),
    }
}

/// Whether a renewal took effect, and until when the claim now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a refused renewal means the execution was taken over and must not answer its own response"]
pub enum Renewal {
    /// The fence holds the current claim; its lease now ends at `lease_expires_at`.
    Renewed {
        /// The claim's new end.
        lease_expires_at: Timestamp,
    },
    /// The fence does not hold the current claim (G3); nothing changed.
    Refused(Refusal),
}

/// Extends the lease of the claim `fence` to a whole lease from `now` (SPEC "renewal"):
/// the holder's heartbeat while its handler runs.
///
/// Accepted only while `fence` holds the current claim (G3), even after its lease lapsed,
/// as long as no other request took over, the same rule as [`complete`]. A renewal never
/// shortens a lease (a replica whose clock lags cannot cut another's time short). A
/// completed record refuses renewal, also from the fence that completed it: the handler
/// is done.
pub fn renew(record: Option<&Record>, fence: Fence, now: Timestamp, policy: &Policy) -> Transition<Renewal> {
    match check_fence(record, fence) {
        FenceState::Current(record) => {
            let RecordState::InFlight { lease_expires_at, ref holder, renewals } = record.state else {
                unreachable!("check_fence answers Current only for a record in flight")
            };
            let renewed = lease_expires_at.max(now.saturating_add(policy.lease()));
            let answer = Renewal::Renewed { lease_expires_at: renewed };
            if renewed == lease_expires_at {
                return unchanged(answer);
            }
            let state = RecordState::InFlight {
                lease_expires_at: renewed,
                holder: holder.clone(),
                renewals: renewals.saturating_add(1),
            };
            let record = Record { state, ..record.clone() };
            Transition { outcome: answer, write: Write::Put(record) }
        }
        FenceState::CompletedBy(completed_by) => {
            unchanged(Renewal::Refused(Refusal::AlreadyCompleted { completed_by }))
        }
        FenceState::Refused(refusal) => unchanged(Renewal::Refused(refusal)),
    }
}

/// Gives the claim `fence` back without a response, so that a retry may execute.
///
/// Accepted only while `fence` holds the current claim (G3). The record is deleted; the
/// fence counter is the store's, so the next claim still gets a newer fence.
pub fn release(record: Option<&Record>, fence: Fence) -> Transition<Fenced> {
    match check_fence(record, fence) {
        FenceState::Current(_) => Transition { outcome: Fenced::Applied, write: Write::Delete },
        FenceState::CompletedBy(completed_by) => unchanged(Fenced::Refused(Refusal::AlreadyCompleted { completed_by })),
        FenceState::Refused(refusal) => unchanged(Fenced::Refused(refusal)),
    }
}

/// What a purge does with `record` at `now` (see [`Record::due_at`]): nothing before it
/// is due; a completed record that leaves a tombstone shrinks to one at the end of its
/// retention (response dropped, kept until the tombstone's end); anything else that is
/// due is forgotten.
///
/// Forgetting an in-flight record whose lease lapsed is as safe as a take-over: its
/// holder's fence is no longer current, so its completion is refused.
#[must_use]
pub fn expire(record: &Record, now: Timestamp) -> Write {
    if now < record.due_at() {
        return Write::Unchanged;
    }
    match record.state {
        RecordState::Completed { tombstone_until: Some(until), .. } if now < until => {
            Write::Put(Record { expires_at: until, state: RecordState::Tombstone, ..record.clone() })
        }
        _ => Write::Delete,
    }
}

/// Forgets the record whatever its state (an operator's `forget`, SPEC "Key lifecycle"),
/// and answers what was removed. The store moves its fence counter on as well
/// ([`crate::step()`]), so a handler still running under the removed claim can never
/// complete afterwards (G3): its fence finds no record, or a newer claim.
pub fn forget(record: Option<&Record>) -> Transition<Option<Record>> {
    match record {
        Some(record) => Transition { outcome: Some(record.clone()), write: Write::Delete },
        None => unchanged(None),
    }
}

/// Counts one replay of a completed record within its retention (best effort, for
/// operators); anything else is left as it is. Answers whether it counted.
pub fn count_replay(record: Option<&Record>, now: Timestamp) -> Transition<bool> {
    match record {
        Some(record @ Record { state: RecordState::Completed { response, replays, tombstone_until }, .. })
            if now < record.expires_at =>
        {
            let state = RecordState::Completed {
                response: response.clone(),
                replays: replays.saturating_add(1),
                tombstone_until: *tombstone_until,
            };
            Transition { outcome: true, write: Write::Put(Record { state, ..record.clone() }) }
        }
        _ => unchanged(false),
    }
}

enum FenceState<'a> {
    Current(&'a Record),
    CompletedBy(Fence),
    Refused(Refusal),
}

fn check_fence(record: Option<&Record>, fence: Fence) -> FenceState<'_> {
    let Some(record) = record else {
        return FenceState::Refused(Refusal::NoRecord);
    };
    match record.state {
        RecordState::Completed { .. } | RecordState::Tombstone => FenceState::CompletedBy(record.fence),
        RecordState::InFlight { .. } if record.fence == fence => FenceState::Current(record),
        RecordState::InFlight { .. } => {
            FenceState::Refused(Refusal::StaleFence { presented: fence, current: record.fence })
        }
    }
}
