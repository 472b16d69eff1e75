//! The message consumer's rules (SPEC "Message consumers"), as plain data: what a delivery
//! whose record the store decided turns into, and how it is settled with the broker.
//!
//! This is the consumer's [`crate::reply`]: no I/O, no clock, no broker. A consumer
//! adapter, the model checker and the simulations all call these functions, so the rules
//! have one home. The invariant they keep: **[`Settle::Ack`] comes only from a completed
//! record** (a replay, or this execution's applied completion), so a message is never
//! acked while its side effect may still be missing, and never acked twice into two runs.
//!
//! ```
//! use idem_core::consume::{self, Handle, Redelivery, Settle};
//! use idem_core::outcome::StoredOutcome;
//! use idem_core::{Decision, Holder, StoredResponse, Timestamp};
//! use std::time::Duration;
//!
//! let (rules, expires_at) = (Redelivery::DEFAULT, Timestamp::from_unix_ms(86_400_000));
//! let recorded = StoredOutcome::bytes(&b"done"[..]);
//! let replay = Decision::Replay { response: StoredResponse::from(recorded.clone()), expires_at };
//! assert_eq!(consume::handle(replay, &rules), Handle::Settle(Settle::Ack(recorded)));
//! let conflict = Decision::Conflict { retry_after: Duration::from_secs(4), expires_at, holder: Holder::NONE };
//! let Handle::Settle(Settle::Redeliver { after }) = consume::handle(conflict, &rules) else { unreachable!() };
//! assert_eq!(after, Duration::from_secs(4));
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::outcome::StoredOutcome;
use crate::reply::{self, Superseded};
use crate::{Claim, ClaimRequest, Decision, Fenced, Key, LEASE_DEFAULT, Policy, Record, StoreError, Timestamp};

/// What to do with a delivery whose record the store decided ([`handle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a delivery must be run or settled"]
pub enum Handle {
    /// SPEC consumer row "execute (new, or take-over)": run the handler under this claim,
    /// complete (atomic mode: in the handler's transaction), then ack.
    Run(Claim),
    /// Every other row: settle the delivery without running the handler.
    Settle(Settle),
}

/// How a delivery ends with the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use = "a delivery left unsettled is redelivered by the broker's timer, not by a rule"]
pub enum Settle {
    /// SPEC rows "replay (completed)" and "execute" once completed: ack. Carries the
    /// recorded outcome (e.g. to re-send a reply); only a completed record ever acks.
    Ack(StoredOutcome),
    /// SPEC rows "in flight elsewhere" and "handler error" (after the release), and G8 (the
    /// store failed, nothing ran): leave the message to the broker, back after `after` (nak
    /// with this delay).
    Redeliver {
        /// How long until the broker should deliver the message again.
        after: Duration,
    },
    /// SPEC row "mismatch" (G5), and messages that cannot be guarded (fail closed): never
    /// run; hand the message to the dead-letter path with this reason.
    DeadLetter(DeadLetterReason),
}

/// Why a message is dead-lettered. [`DeadLetterReason::as_str`] is its stable name on the
/// dead-letter path (a header such as `Idem-Dead-Letter-Reason`, logs, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeadLetterReason {
    /// SPEC row "mismatch" (G5): the key's record belongs to a message with another subject
    /// or payload; running this one could only repeat or clobber that one's side effect.
    KeyReused,
    /// Fail closed (G8's spirit): the message carries no key, so it cannot be guarded and
    /// is never run unguarded.
    KeyMissing,
    /// Fail closed: the message's key is not a key (empty, over 255 bytes, or a byte
    /// outside visible ASCII; see [`Key::from_chars`]).
    KeyInvalid,
    /// G2: the key's record is completed but holds an HTTP response, not an outcome, so
    /// there is no outcome to replay (and the side effect must not run again).
    NotAnOutcome,
    /// SPEC row "handler error", bounded: the handler failed on the delivery that reached
    /// [`Redelivery::handler_attempts_max`].
    HandlerGaveUp,
    /// SPEC "Key lifecycle": only the record's tombstone remains. The message was handled
    /// long ago and is never run again, but its outcome is gone, so it cannot be replayed.
    KeyExpired,
}

impl DeadLetterReason {
    /// Every reason, in declaration order.
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::KeyReused,
        DeadLetterReason::KeyMissing,
        DeadLetterReason::KeyInvalid,
        DeadLetterReason::NotAnOutcome,
        DeadLetterReason::HandlerGaveUp,
        DeadLetterReason::KeyExpired,
    ];

    /// The reason's stable name: `key-reused`, `key-missing` and `key-invalid` as the HTTP
    /// problem types of docs/problems.md, then `not-an-outcome`, `handler-gave-up` and
    /// `key-expired` (also a problem type).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::KeyReused => "key-reused",
            DeadLetterReason::KeyMissing => "key-missing",
            DeadLetterReason::KeyInvalid => "key-invalid",
            DeadLetterReason::NotAnOutcome => "not-an-outcome",
            DeadLetterReason::HandlerGaveUp => "handler-gave-up",
            DeadLetterReason::KeyExpired => "key-expired",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When messages come back: the delays of [`Settle::Redeliver`] and the bound on handler
/// failures. Every nak costs a delivery where the broker counts them (JetStream
/// `max_deliver`, quorum queues' `x-delivery-limit`), so delays are not shorter than needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redelivery {
    /// Shortest delay for a message in flight elsewhere.
    pub conflict_after_min: Duration,
    /// Longest delay for a message in flight elsewhere, however much lease the holder has
    /// left (a live holder usually completes sooner, and the redelivery then replays).
    /// Where it is below `conflict_after_min`, the minimum wins.
    pub conflict_after_max: Duration,
    /// Delay for a message whose handler failed and whose claim was released.
    pub handler_retry_after: Duration,
    /// The delivery on which a failing handler's message is dead-lettered instead of
    /// redelivered (`Some(3)`: a handler that fails on the third delivery gives up). The
    /// count is the broker's delivery count, which also counts conflicts, store outages,
    /// crashes and lost acks, so set it well above what those cost; brokers that do not
    /// count (a RabbitMQ classic queue) never reach it. `None` (the default): redeliver
    /// until the broker's own delivery limit, if any.
    pub handler_attempts_max: Option<NonZeroU32>,
    /// Delay when the store failed and gave no hint of its own.
    pub store_retry_after: Duration,
}

impl Redelivery {
    /// Conflicts come back after the holder's lease left, between 1 s
    /// ([`reply::RETRY_AFTER_MIN`], as an HTTP client is told) and one default lease (10 s);
    /// a failed handler and a failed store after 1 s; handler failures are not bounded here.
    pub const DEFAULT: Redelivery = Redelivery {
        conflict_after_min: reply::RETRY_AFTER_MIN,
        conflict_after_max: LEASE_DEFAULT,
        handler_retry_after: Duration::from_secs(1),
        handler_attempts_max: None,
        store_retry_after: reply::RETRY_AFTER_MIN,
    };

    /// The delay for a message whose record another claim holds with `lease_left`: the
    /// lease left (the holder may have crashed; its claim can be taken over then), within
    /// `[conflict_after_min, conflict_after_max]`. Not rounded: brokers take milliseconds.
    #[must_use]
    pub fn conflict_after(&self, lease_left: Duration) -> Duration {
        lease_left.min(self.conflict_after_max).max(self.conflict_after_min)
    }
}

impl Default for Redelivery {
    fn default() -> Self {
        Redelivery::DEFAULT
    }
}

/// What to do with a delivery, from the store's decision on its record (SPEC's consumer
/// table): run on execute or take-over; ack a replay with its recorded outcome (or
/// dead-letter a record that holds no outcome); redeliver a conflict after
/// [`Redelivery::conflict_after`]; dead-letter a mismatch, and a tombstone (its outcome
/// is gone).
pub fn handle(decision: Decision, rules: &Redelivery) -> Handle {
    match decision {
        Decision::Execute(claim) | Decision::TakeOver { claim, .. } => Handle::Run(claim),
        Decision::Replay { response, .. } => Handle::Settle(replayed(response)),
        Decision::Conflict { retry_after, .. } => {
            Handle::Settle(Settle::Redeliver { after: rules.conflict_after(retry_after) })
        }
        Decision::Mismatch { .. } => Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyReused)),
        Decision::Gone { .. } => Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyExpired)),
    }
}

/// What this execution's completion answered means: [`Fenced::Applied`] acks with `own`
/// outcome (the completion committed); a refusal gives `None`: the claim was lost, so look
/// at the record and settle by [`superseded`], never ack on this execution's word.
#[must_use]
pub fn after_completion(fenced: Fenced, own: StoredOutcome) -> Option<Settle> {
    match fenced {
        Fenced::Applied => Some(Settle::Ack(own)),
        Fenced::Refused(_) => None,
    }
}

/// How an execution that lost its claim (its renewal or completion refused) settles, from
/// the record as now stored, by [`reply::superseded`] (the same rule idem-http answers
/// by): ack a completed record with *its* outcome; redeliver while another claim holds it
/// (after its lease left, or at once-ish when none does); dead-letter a mismatch.
pub fn superseded(record: Option<&Record>, request: &ClaimRequest, now: Timestamp, rules: &Redelivery) -> Settle {
    match reply::superseded(record, request, now) {
        Superseded::Replay { response, .. } => replayed(response),
        Superseded::InProgress { lease_left, .. } => Settle::Redeliver { after: rules.conflict_after(lease_left) },
        Superseded::Mismatch { .. } => Settle::DeadLetter(DeadLetterReason::KeyReused),
        Superseded::Gone { .. } => Settle::DeadLetter(DeadLetterReason::KeyExpired),
    }
}

/// How a delivery whose handler failed settles, once its claim was released (SPEC row
/// "handler error"): redeliver after `handler_retry_after`, or dead-letter when `attempt`
/// (which delivery this is, from 1, if the broker says) reached `handler_attempts_max`.
pub fn after_failure(attempt: Option<u32>, rules: &Redelivery) -> Settle {
    match (attempt, rules.handler_attempts_max) {
        (Some(attempt), Some(max)) if attempt >= max.get() => Settle::DeadLetter(DeadLetterReason::HandlerGaveUp),
        _ => Settle::Redeliver { after: rules.handler_retry_after },
    }
}

/// How a delivery settles when the store failed before a claim (G8: never run): redeliver
/// after the store's own hint ([`StoreError::Unavailable`]'s `retry_after`), else
/// `store_retry_after`. A full or corrupt store redelivers too: it may have room or be
/// repaired later, and dead-lettering would blame the message for the store.
pub fn store_failed(error: &StoreError, rules: &Redelivery) -> Settle {
    let hint = match error {
        StoreError::Unavailable { retry_after, .. } => *retry_after,
        StoreError::Full { .. } | StoreError::Corrupt { .. } => None,
    };
    Settle::Redeliver { after: hint.unwrap_or(rules.store_retry_after) }
}

/// The key of a message from its id (`Nats-Msg-Id`, AMQP `message_id`, or what a key
/// function made), taken as it is ([`Key::from_chars`]).
///
/// # Errors
/// [`DeadLetterReason::KeyMissing`] for no id, [`DeadLetterReason::KeyInvalid`] for an id
/// that is not a key: such a message is dead-lettered, never run unguarded (fail closed).
pub fn message_key(id: Option<&str>) -> Result<Key, DeadLetterReason> {
    let id = id.ok_or(DeadLetterReason::KeyMissing)?;
    Key::from_chars(id).map_err(|_| DeadLetterReason::KeyInvalid)
}

/// The broker's own redelivery timer, which the lease must stay in step with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedeliveryTimer {
    /// JetStream's `ack_wait`: the message comes back this long after its delivery or its
    /// last in-progress ack, which the consumer sends after each applied renewal.
    AckWait(Duration),
    /// RabbitMQ's `consumer_timeout`: no in-progress ack exists; past this the broker closes
    /// the whole channel and requeues every delivery on it.
    ChannelTimeout(Duration),
    /// No timer: messages come back only when a consumer's connection closes.
    None,
}

/// Why a broker's redelivery timer does not fit the policy ([`check_timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// The ack wait is under two renewal intervals: one late renewal and the broker would
    /// redeliver a message whose handler is alive and holds its claim.
    #[error(
        "ack_wait {ack_wait:?} is under two lease renewal intervals ({renew_every:?} each); set it near lease + renew_every"
    )]
    AckWaitTooShort {
        /// The broker's ack wait.
        ack_wait: Duration,
        /// How often the lease is renewed and progress sent ([`Policy::renew_every`]).
        renew_every: Duration,
    },
    /// The consumer timeout does not outlast the execution ceiling plus one lease: the broker
    /// could close the channel under a handler that is alive, or not yet presumed crashed.
    #[error("consumer timeout {timeout:?} must be longer than the execution ceiling plus one lease ({needed:?})")]
    ChannelTimeoutTooShort {
        /// The broker's consumer timeout.
        timeout: Duration,
        /// The execution ceiling plus one lease.
        needed: Duration,
    },
}

/// Checks, at start, that the broker's redelivery timer is tied to the lease (SPEC "Message
/// consumers": the lease is renewed together with the broker's own redelivery timer).
///
/// * `AckWait(w)`: `2 × policy.renew_every() <= w`.
/// * `ChannelTimeout(t)`: `execution_max + policy.lease() < t` (a handler that hangs frees its
///   key within the ceiling plus a lease, before the broker acts).
/// * `None`: nothing to check.
///
/// # Errors
/// [`TimerError`] naming the timer and what it would need.
pub fn check_timers(policy: &Policy, timer: RedeliveryTimer, execution_max: Duration) -> Result<(), TimerError> {
    match timer {
        RedeliveryTimer::AckWait(ack_wait) => {
            let renew_every = policy.renew_every();
            if renew_every.saturating_mul(2) > ack_wait {
                return Err(TimerError::AckWaitTooShort { ack_wait, renew_every });
            }
        }
        RedeliveryTimer::ChannelTimeout(timeout) => {
            let needed = execution_max.saturating_add(policy.lease());
            if timeout <= needed {
                return Err(TimerError::ChannelTimeoutTooShort { timeout, needed });
            }
        }
        RedeliveryTimer::None => {}
    }
    Ok(())
}

/// The ack wait to configure for `policy`: one lease and one renewal interval, so
/// a crashed holder's message comes back just after its lease lapsed and is taken over at
/// once, instead of meeting a valid lease and being naked once more.
#[must_use]
pub fn recommended_ack_wait(policy: &Policy) -> Duration {
    policy.lease().saturating_add(policy.renew_every())
}

/// A completed record's response as this consumer's settle: ack with its outcome, or
/// dead-letter a record that holds an HTTP response.
fn replayed(response: crate::StoredResponse) -> Settle {
    match StoredOutcome::try_from(response) {
        Ok(outcome) => Settle::Ack(outcome),
        Err(_) => Settle::DeadLetter(DeadLetterReason::NotAnOutcome),
    }
}

#[cfg(test)]
#[path = "consume_tests.rs"]
mod tests;
