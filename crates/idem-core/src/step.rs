//! The store step: everything a store does for one operation on one record id, decided
//! in one pure call.
//!
//! A store is I/O around [`step()`]: it reads what the step needs (the record, the
//! store-wide [`Counters`], its [`Limits`]) into a [`StoreView`], calls `step` with an
//! operation from [`op`], and writes what the [`Step`] names: the record to put or
//! delete, the fence counter to advance, the usage delta. Then it answers
//! [`Step::answer`]. It has no `if` of its own about the protocol: the decision table
//! ([`crate::transition`]), the fence counter, admission at the size limits and the usage
//! accounting all live here, once, and the model checker drives this same function.
//!
//! A backend that must decide on the server in one round trip (a Lua script, one SQL
//! statement) mirrors this function and is pinned to it by a differential test.
//!
//! # Example
//!
//! ```
//! use idem_core::step::{self, Counters, StoreView, op};
//! use idem_core::{Decision, Fingerprint, Key, Limits, Policy, Principal, RecordId, Timestamp, Write};
//!
//! let id = RecordId::new(Principal::anonymous(), Key::parse(b"k1").unwrap());
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{}");
//! let view = StoreView { record: None, counters: Counters::EMPTY, limits: Limits::default() };
//! let claim = op::Claim { request: fingerprint.into(), now: Timestamp::EPOCH, policy: Policy::default() };
//! let step = step::step(&id, &view, claim).unwrap();
//!
//! // A new key executes; the store must write the claim, advance the counter, count it.
//! assert!(matches!(step.answer, Decision::Execute(_)));
//! assert!(matches!(step.write, Write::Put(_)));
//! assert_eq!(step.next_fence, Some(Counters::EMPTY.next_fence.next()));
//! assert_eq!(step.usage.records, 1);
//! ```

use crate::transition::{self, Renewal, Transition, Write};
use crate::usage::{self, Limits, Usage, UsageDelta};
use crate::{ClaimRequest, Decision, Fence, Fenced, Policy, Record, RecordId, StoreError, StoredResponse, Timestamp};

/// The store-wide values every step may read or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counters {
    /// The fence the next claim gets. It only grows, so fences are never reused for a
    /// record id, not after a release, a take-over or a purge.
    pub next_fence: Fence,
    /// What the store holds.
    pub usage: Usage,
}

impl Counters {
    /// An empty store's counters.
    pub const EMPTY: Counters = Counters { next_fence: Fence::FIRST, usage: Usage { records: 0, stored_bytes: 0 } };

    /// These counters after `step` was applied.
    #[must_use]
    pub fn after<A>(self, step: &Step<A>) -> Counters {
        Counters { next_fence: step.next_fence.unwrap_or(self.next_fence), usage: self.usage.after(step.usage) }
    }
}

/// What a store read for one record id, inside the atomic section it will write in.
#[derive(Debug, Clone, Copy)]
pub struct StoreView<'a> {
    /// The record as stored (expired or not), or `None`.
    pub record: Option<&'a Record>,
    /// The store-wide counters.
    pub counters: Counters,
    /// The store's size limits.
    pub limits: Limits,
}

/// Everything a store must do for one operation: write these, then answer `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a step is applied by writing `write`, `next_fence` and `usage`, then answering `answer`"]
pub struct Step<A> {
    /// The answer for the caller.
    pub answer: A,
    /// The change to the record.
    pub write: Write,
    /// The value to set the fence counter to, when this step issued a fence.
    pub next_fence: Option<Fence>,
    /// The change to the store's usage totals.
    pub usage: UsageDelta,
}

impl<A> Step<A> {
    /// Whether the step writes nothing: a store may skip its write (and its commit).
    #[must_use]
    pub fn writes_nothing(&self) -> bool {
        // A step that issues a fence or changes the usage always writes its record too.
        debug_assert!(self.write != Write::Unchanged || (self.next_fence.is_none() && self.usage.is_none()));
        self.write == Write::Unchanged
    }
}

/// Which size limit refused a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    /// The store holds `records_max` records.
    #[error("{0} records")]
    Records(u64),
    /// The store holds `stored_bytes_max` bytes.
    #[error("{0} bytes")]
    Bytes(u64),
}

/// Why a step cannot be applied. Nothing is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Admission: the store is at a size limit and takes no new claims.
    #[error("store is full ({0}); it takes no new claims until records expire")]
    Full(LimitReached),
    /// The fence counter is not past the record's fence: issuing it would reuse a fence
    /// (G3). Only damage to the store's data causes this.
    #[error("the fence counter ({next_fence:?}) is not past the record's fence ({record_fence:?})")]
    FenceCounterBehind {
        /// The counter as read.
        next_fence: Fence,
        /// The fence of the record read.
        record_fence: Fence,
    },
}

impl From<StepError> for StoreError {
    fn from(error: StepError) -> StoreError {
        match error {
            StepError::Full(limit) => StoreError::Full { what: limit.to_string() },
            StepError::FenceCounterBehind { .. } => StoreError::Corrupt { detail: error.to_string() },
        }
    }
}

/// An operation on one record id; the types in [`op`] are the only ones.
pub trait Operation: sealed::Sealed {
    /// What the operation answers.
    type Answer;

    /// Whether a write of this operation moves the fence counter on even though it
    /// issues no claim (a forget: SPEC "Key lifecycle", forget is fenced).
    #[doc(hidden)]
    const MOVES_FENCE: bool = false;

    /// The operation's transition on the record (see [`crate::transition`]).
    #[doc(hidden)]
    fn decide(self, record: Option<&Record>, fresh_fence: Fence) -> Transition<Self::Answer>;
}

mod sealed {
    pub trait Sealed {}
}

/// The operations a store performs, as plain data.
pub mod op {
    use super::{ClaimRequest, Fence, Policy, StoredResponse, Timestamp};

    /// A new request for the record id: decide, and take a claim if it executes.
    /// Answers a [`crate::Decision`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Claim {
        /// The request: its fingerprints and who would hold the claim.
        pub request: ClaimRequest,
        /// The time of the request.
        pub now: Timestamp,
        /// The lease and retention a new claim gets.
        pub policy: Policy,
    }

    /// Record `response` for the claim `fence` (separate mode). Answers [`crate::Fenced`];
    /// repeating it with the same fence is applied and changes nothing.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Complete {
        /// The claim's fence.
        pub fence: Fence,
        /// What to record.
        pub response: StoredResponse,
        /// The time of completion; retention counts from it.
        pub now: Timestamp,
        /// The retention.
        pub policy: Policy,
    }

    /// Record `response` for the claim `fence` inside the caller's business transaction
    /// (atomic mode). Answers [`crate::Fenced`]; repeating it with the same fence is
    /// refused, because its business writes would repeat.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CompleteInTransaction {
        /// The claim's fence.
        pub fence: Fence,
        /// What to record.
        pub response: StoredResponse,
        /// The time of completion; retention counts from it.
        pub now: Timestamp,
        /// The retention.
        pub policy: Policy,
    }

    /// Give the claim `fence` back without a response. Answers [`crate::Fenced`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Release {
        /// The claim's fence.
        pub fence: Fence,
    }

    /// Extend the lease of the claim `fence` from now. Answers [`crate::Renewal`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Renew {
        /// The claim's fence.
        pub fence: Fence,
        /// The time of renewal; the lease counts from it.
        pub now: Timestamp,
        /// The lease.
        pub policy: Policy,
    }

    /// Forget the record, or shrink it to its tombstone, if it is due. Answers whether
    /// it changed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Expire {
        /// The time of the purge.
        pub now: Timestamp,
    }

    /// Forget the record whatever its state (an operator's forget), moving the fence
    /// counter on. Answers the record removed, if there was one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Forget;

    /// Count one replay of a completed record (best effort). Answers whether it counted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CountReplay {
        /// The time of the replay.
        pub now: Timestamp,
    }
}

impl sealed::Sealed for op::Claim {}
impl Operation for op::Claim {
    type Answer = Decision;
    fn decide(self, record: Option<&Record>, fresh_fence: Fence) -> Transition<Decision> {
        transition::claim(record, &self.request, self.now, &self.policy, fresh_fence)
    }
}

impl sealed::Sealed for op::Complete {}
impl Operation for op::Complete {
    type Answer = Fenced;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<Fenced> {
        transition::complete(record, self.fence, self.response, self.now, &self.policy)
    }
}

impl sealed::Sealed for op::CompleteInTransaction {}
impl Operation for op::CompleteInTransaction {
    type Answer = Fenced;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<Fenced> {
        transition::complete_in_transaction(record, self.fence, self.response, self.now, &self.policy)
    }
}

impl sealed::Sealed for op::Release {}
impl Operation for op::Release {
    type Answer = Fenced;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<Fenced> {
        transition::release(record, self.fence)
    }
}

impl sealed::Sealed for op::Renew {}
impl Operation for op::Renew {
    type Answer = Renewal;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<Renewal> {
        transition::renew(record, self.fence, self.now, &self.policy)
    }
}

impl sealed::Sealed for op::Expire {}
impl Operation for op::Expire {
    type Answer = bool;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<bool> {
        let write = record.map_or(Write::Unchanged, |record| transition::expire(record, self.now));
        Transition { outcome: write != Write::Unchanged, write }
    }
}

impl sealed::Sealed for op::Forget {}
impl Operation for op::Forget {
    type Answer = Option<Record>;
    const MOVES_FENCE: bool = true;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<Option<Record>> {
        transition::forget(record)
    }
}

impl sealed::Sealed for op::CountReplay {}
impl Operation for op::CountReplay {
    type Answer = bool;
    fn decide(self, record: Option<&Record>, _: Fence) -> Transition<bool> {
        transition::count_replay(record, self.now)
    }
}

/// Decides `operation` on the record id `id` as the store read it in `view`, and returns
/// every write the store must make and the answer.
///
/// The store-wide rules, once for every store:
///
/// * **Fences.** A step that puts a record under a new fence (an execution or a
///   take-over) issues `view.counters.next_fence` and advances the counter past it. A
///   forget that removes a record advances it too (without admission), so no fence
///   issued before the forget is ever current afterwards.
///   A counter that is not past the record's fence is damage: [`StepError::FenceCounterBehind`].
/// * **Admission.** Such a step is refused at a size limit ([`StepError::Full`]): at
///   `records_max` records unless it replaces a held (expired) record, and at
///   `stored_bytes_max` bytes. Nothing else is ever refused for room: completions of
///   granted claims, renewals, releases and expiry always apply.
/// * **Usage.** The delta counts records added or removed and the bytes of
///   [`usage::stored_bytes`] before and after.
///
/// # Errors
/// [`StepError`]; the store then writes nothing.
pub fn step<O: Operation>(id: &RecordId, view: &StoreView<'_>, operation: O) -> Result<Step<O::Answer>, StepError> {
    let fresh_fence = view.counters.next_fence;
    if let Some(record) = view.record
        && record.fence >= fresh_fence
    {
        return Err(StepError::FenceCounterBehind { next_fence: fresh_fence, record_fence: record.fence });
    }
    let Transition { outcome, write } = operation.decide(view.record, fresh_fence);
    let issues_fence = matches!(&write, Write::Put(new) if view.record.map(|old| old.fence) != Some(new.fence));
    let next_fence = if issues_fence {
        debug_assert!(
            matches!(&write, Write::Put(new) if new.fence == fresh_fence),
            "a new claim carries the fresh fence"
        );
        admit(view)?;
        Some(fresh_fence.next())
    } else if O::MOVES_FENCE && write != Write::Unchanged {
        Some(fresh_fence.next())
    } else {
        None
    };
    let usage = usage_delta(id, view.record, &write);
    Ok(Step { answer: outcome, write, next_fence, usage })
}

/// Admission of a new claim at the size limits.
fn admit(view: &StoreView<'_>) -> Result<(), StepError> {
    let (usage, limits) = (view.counters.usage, view.limits);
    let adds_a_record = view.record.is_none();
    if adds_a_record && usage.records >= limits.records_max {
        return Err(StepError::Full(LimitReached::Records(limits.records_max)));
    }
    if usage.stored_bytes >= limits.stored_bytes_max {
        return Err(StepError::Full(LimitReached::Bytes(limits.stored_bytes_max)));
    }
    Ok(())
}

fn usage_delta(id: &RecordId, old: Option<&Record>, write: &Write) -> UsageDelta {
    let signed = |bytes: u64| i64::try_from(bytes).expect("one record's size fits i64");
    let old_bytes = old.map_or(0, |record| signed(usage::stored_bytes(id, record)));
    match write {
        Write::Unchanged => UsageDelta::NONE,
        Write::Put(new) => UsageDelta {
            records: i64::from(old.is_none()),
            stored_bytes: signed(usage::stored_bytes(id, new)) - old_bytes,
        },
        Write::Delete => UsageDelta { records: -i64::from(old.is_some()), stored_bytes: -old_bytes },
    }
}
