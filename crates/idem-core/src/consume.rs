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
//! use idem_core::{Decision, StoredResponse};
//! use std::time::Duration;
//!
//! let rules = Redelivery::DEFAULT;
//! let recorded = StoredOutcome::bytes(&b"done"[..]);
//! let replay = Decision::Replay(StoredResponse::from(recorded.clone()));
//! assert_eq!(consume::handle(replay, &rules), Handle::Settle(Settle::Ack(recorded)));
//! let conflict = Decision::Conflict { retry_after: Duration::from_secs(4) };
//! let Handle::Settle(Settle::Redeliver { after }) = consume::handle(conflict, &rules) else { unreachable!() };
//! assert_eq!(after, Duration::from_secs(4));
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::outcome::StoredOutcome;
use crate::reply::{self, Superseded};
use crate::{Claim, Decision, Fenced, Fingerprint, Key, LEASE_DEFAULT, Policy, Record, StoreError, Timestamp};

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
}

impl DeadLetterReason {
    /// Every reason, in declaration order.
    pub const ALL: [DeadLetterReason; 5] = [
        DeadLetterReason::KeyReused,
        DeadLetterReason::KeyMissing,
        DeadLetterReason::KeyInvalid,
        DeadLetterReason::NotAnOutcome,
        DeadLetterReason::HandlerGaveUp,
    ];

    /// The reason's stable name: `key-reused`, `key-missing` and `key-invalid` as the HTTP
    /// problem types of docs/problems.md, then `not-an-outcome` and `handler-gave-up`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::KeyReused => "key-reused",
            DeadLetterReason::KeyMissing => "key-missing",
            DeadLetterReason::KeyInvalid => "key-invalid",
            DeadLetterReason::NotAnOutcome => "not-an-outcome",
            DeadLetterReason::HandlerGaveUp => "handler-gave-up",
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
    /// redelivered (`Some(3)`: it runs at most three times). `None`: redeliver until the
    /// broker's own delivery limit, if any.
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
/// [`Redelivery::conflict_after`]; dead-letter a mismatch.
pub fn handle(decision: Decision, rules: &Redelivery) -> Handle {
    match decision {
        Decision::Execute(claim) | Decision::TakeOver { claim, .. } => Handle::Run(claim),
        Decision::Replay(response) => Handle::Settle(replayed(response)),
        Decision::Conflict { retry_after } => {
            Handle::Settle(Settle::Redeliver { after: rules.conflict_after(retry_after) })
        }
        Decision::Mismatch => Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyReused)),
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
pub fn superseded(record: Option<&Record>, fingerprint: &Fingerprint, now: Timestamp, rules: &Redelivery) -> Settle {
    match reply::superseded(record, fingerprint, now) {
        Superseded::Replay(response) => replayed(response),
        Superseded::InProgress { lease_left } => Settle::Redeliver { after: rules.conflict_after(lease_left) },
        Superseded::Mismatch => Settle::DeadLetter(DeadLetterReason::KeyReused),
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
mod tests {
    use super::*;
    use crate::outcome::ContentType;
    use crate::{Fence, RecordState, Refusal, StoredResponse};

    const RULES: Redelivery = Redelivery::DEFAULT;

    fn claim() -> Claim {
        Claim { fence: Fence::new(7), lease_expires_at: Timestamp::from_unix_ms(10_000) }
    }

    fn outcome() -> StoredOutcome {
        StoredOutcome::new(ContentType::new("application/json").unwrap(), &b"{\"paid\":true}"[..])
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// Which SPEC consumer rows `handle` breaks, one entry per row it gets wrong: the
    /// oracle is written from the table, not from `handle`.
    fn table_violations(handle: impl Fn(Decision, &Redelivery) -> Handle) -> Vec<&'static str> {
        let mut wrong = Vec::new();
        if handle(Decision::Execute(claim()), &RULES) != Handle::Run(claim()) {
            wrong.push("execute runs under its claim");
        }
        let take_over = Decision::TakeOver { claim: claim(), stale: Fence::new(3) };
        if handle(take_over, &RULES) != Handle::Run(claim()) {
            wrong.push("take-over runs under the new claim");
        }
        let replay = Decision::Replay(StoredResponse::from(outcome()));
        if handle(replay, &RULES) != Handle::Settle(Settle::Ack(outcome())) {
            wrong.push("replay acks with the recorded outcome");
        }
        let http = Decision::Replay(StoredResponse::new(201, "pay_1"));
        if handle(http, &RULES) != Handle::Settle(Settle::DeadLetter(DeadLetterReason::NotAnOutcome)) {
            wrong.push("a recorded HTTP response is dead-lettered");
        }
        let conflict = Decision::Conflict { retry_after: secs(4) };
        if handle(conflict, &RULES) != Handle::Settle(Settle::Redeliver { after: secs(4) }) {
            wrong.push("conflict redelivers after the lease left");
        }
        if handle(Decision::Mismatch, &RULES) != Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyReused)) {
            wrong.push("mismatch is dead-lettered as key-reused");
        }
        wrong
    }

    #[test]
    fn handle_follows_the_consumer_table() {
        // Goal: every row of SPEC's consumer table, as `handle` answers it.
        assert_eq!(table_violations(handle), Vec::<&str>::new());
    }

    #[test]
    fn the_table_check_catches_planted_mappings() {
        // Goal: the row check has teeth: a conflict acked, a mismatch run, a replay run again,
        // a take-over settled instead of run, each is reported as the row it breaks.
        let conflict_acked = |decision: Decision, rules: &Redelivery| match decision {
            Decision::Conflict { .. } => Handle::Settle(Settle::Ack(StoredOutcome::empty())),
            other => handle(other, rules),
        };
        assert_eq!(table_violations(conflict_acked), ["conflict redelivers after the lease left"]);
        let mismatch_run = |decision: Decision, rules: &Redelivery| match decision {
            Decision::Mismatch => Handle::Run(claim()),
            other => handle(other, rules),
        };
        assert_eq!(table_violations(mismatch_run), ["mismatch is dead-lettered as key-reused"]);
        let replay_run = |decision: Decision, rules: &Redelivery| match decision {
            Decision::Replay(_) => Handle::Run(claim()),
            other => handle(other, rules),
        };
        assert_eq!(table_violations(replay_run).len(), 2, "both replay rows break");
        let take_over_naked = |decision: Decision, rules: &Redelivery| match decision {
            Decision::TakeOver { .. } => Handle::Settle(Settle::Redeliver { after: secs(1) }),
            other => handle(other, rules),
        };
        assert_eq!(table_violations(take_over_naked), ["take-over runs under the new claim"]);
    }

    #[test]
    fn conflict_delay_is_the_lease_left_within_bounds() {
        // Goal: the redelivery of a message in flight elsewhere lands when the holder's lease
        // ends, no sooner than the minimum, no later than the maximum, unrounded.
        assert_eq!(RULES.conflict_after(Duration::from_millis(6_250)), Duration::from_millis(6_250));
        assert_eq!(RULES.conflict_after(Duration::ZERO), RULES.conflict_after_min);
        assert_eq!(RULES.conflict_after(secs(3_600)), RULES.conflict_after_max);
        let inverted = Redelivery { conflict_after_min: secs(5), conflict_after_max: secs(2), ..RULES };
        assert_eq!(inverted.conflict_after(secs(3)), secs(5), "the minimum wins over a smaller maximum");
    }

    #[test]
    fn only_an_applied_completion_acks() {
        // Goal: an ack follows only a completion the store applied; every refusal means
        // "look again", never an ack on the lost claim's own outcome.
        assert_eq!(after_completion(Fenced::Applied, outcome()), Some(Settle::Ack(outcome())));
        let refusals = [
            Refusal::NoRecord,
            Refusal::StaleFence { presented: Fence::new(1), current: Fence::new(2) },
            Refusal::AlreadyCompleted { completed_by: Fence::new(2) },
        ];
        for refusal in refusals {
            assert_eq!(after_completion(Fenced::Refused(refusal), outcome()), None, "{refusal:?}");
        }
    }

    fn record(state: RecordState, fingerprint: Fingerprint) -> Record {
        Record { fingerprint, fence: Fence::new(9), expires_at: Timestamp::from_unix_ms(3_600_000), state }
    }

    #[test]
    fn a_superseded_execution_settles_by_the_record_as_stored() {
        // Goal: a lost claim acks with the *recorded* outcome (G2), redelivers while another
        // claim holds the record, and never acks on its own outcome.
        let ours = Fingerprint::of_message("orders", b"1");
        let now = Timestamp::from_unix_ms(1_000);
        let theirs = StoredOutcome::bytes(&b"theirs"[..]);
        let completed = record(RecordState::Completed { response: theirs.clone().into() }, ours);
        assert_eq!(superseded(Some(&completed), &ours, now, &RULES), Settle::Ack(theirs));
        let in_flight = record(RecordState::InFlight { lease_expires_at: Timestamp::from_unix_ms(4_000) }, ours);
        assert_eq!(superseded(Some(&in_flight), &ours, now, &RULES), Settle::Redeliver { after: secs(3) });
        let released = superseded(None, &ours, now, &RULES);
        assert_eq!(released, Settle::Redeliver { after: RULES.conflict_after_min });
        let mismatch = superseded(Some(&in_flight), &Fingerprint::of_message("orders", b"2"), now, &RULES);
        assert_eq!(mismatch, Settle::DeadLetter(DeadLetterReason::KeyReused));
        let http = record(RecordState::Completed { response: StoredResponse::new(200, "x") }, ours);
        assert_eq!(superseded(Some(&http), &ours, now, &RULES), Settle::DeadLetter(DeadLetterReason::NotAnOutcome));
    }

    #[test]
    fn a_failed_handler_is_redelivered_until_its_attempts_run_out() {
        // Goal: handler errors redeliver; with a bound, the delivery that reaches it dead-letters.
        let retry = Settle::Redeliver { after: RULES.handler_retry_after };
        assert_eq!(after_failure(Some(1_000), &RULES), retry, "unbounded by default");
        assert_eq!(after_failure(None, &RULES), retry);
        let bounded = Redelivery { handler_attempts_max: NonZeroU32::new(3), ..RULES };
        assert_eq!(after_failure(Some(1), &bounded), retry);
        assert_eq!(after_failure(Some(2), &bounded), retry);
        assert_eq!(after_failure(Some(3), &bounded), Settle::DeadLetter(DeadLetterReason::HandlerGaveUp));
        assert_eq!(after_failure(Some(4), &bounded), Settle::DeadLetter(DeadLetterReason::HandlerGaveUp));
        assert_eq!(after_failure(None, &bounded), retry, "an unknown attempt never dead-letters");
    }

    #[test]
    fn a_failed_store_never_runs_and_redelivers() {
        // Goal: G8: every store error redelivers (never Run, never Ack), after the store's hint if any.
        let hinted = StoreError::Unavailable { source: "down".into(), retry_after: Some(secs(7)) };
        assert_eq!(store_failed(&hinted, &RULES), Settle::Redeliver { after: secs(7) });
        let default = Settle::Redeliver { after: RULES.store_retry_after };
        assert_eq!(store_failed(&StoreError::unavailable("down"), &RULES), default);
        assert_eq!(store_failed(&StoreError::Full { what: "2 records".into() }, &RULES), default);
        assert_eq!(store_failed(&StoreError::Corrupt { detail: "row".into() }, &RULES), default);
    }

    #[test]
    fn a_message_without_a_valid_key_is_dead_lettered() {
        // Goal: fail closed: no id or a bad id is a dead-letter reason, a good id is its key as is.
        assert_eq!(message_key(Some("\"m-1\"")).unwrap().as_str(), "\"m-1\"");
        assert_eq!(message_key(None), Err(DeadLetterReason::KeyMissing));
        assert_eq!(message_key(Some("")), Err(DeadLetterReason::KeyInvalid));
        assert_eq!(message_key(Some("a b")), Err(DeadLetterReason::KeyInvalid));
        assert_eq!(message_key(Some("k".repeat(256).as_str())), Err(DeadLetterReason::KeyInvalid));
    }

    #[test]
    fn dead_letter_reasons_have_stable_distinct_names() {
        // Goal: the names on the dead-letter path are pinned and no two reasons share one.
        let names: Vec<&str> = DeadLetterReason::ALL.iter().map(|reason| reason.as_str()).collect();
        assert_eq!(names, ["key-reused", "key-missing", "key-invalid", "not-an-outcome", "handler-gave-up"]);
        assert_eq!(DeadLetterReason::KeyReused.to_string(), "key-reused");
    }

    #[test]
    fn ack_wait_must_cover_two_renewals() {
        // Goal: B1: with a 9 s lease (renewed every 3 s) an ack wait of 6 s holds and 5.999 s is refused.
        let policy = Policy::new(secs(9), secs(3_600)).unwrap();
        assert_eq!(check_timers(&policy, RedeliveryTimer::AckWait(secs(6)), secs(300)), Ok(()));
        let short = Duration::from_millis(5_999);
        let refused = TimerError::AckWaitTooShort { ack_wait: short, renew_every: secs(3) };
        assert_eq!(check_timers(&policy, RedeliveryTimer::AckWait(short), secs(300)), Err(refused));
        assert_eq!(recommended_ack_wait(&policy), secs(12));
        let recommended = RedeliveryTimer::AckWait(recommended_ack_wait(&policy));
        assert_eq!(check_timers(&policy, recommended, secs(300)), Ok(()));
    }

    #[test]
    fn consumer_timeout_must_outlast_the_ceiling_and_a_lease() {
        // Goal: B5: a channel timeout equal to ceiling + lease is refused, one millisecond more holds;
        // no timer needs nothing; huge values saturate instead of overflowing.
        let policy = Policy::new(secs(10), secs(3_600)).unwrap();
        let needed = secs(310);
        let refused = TimerError::ChannelTimeoutTooShort { timeout: needed, needed };
        assert_eq!(check_timers(&policy, RedeliveryTimer::ChannelTimeout(needed), secs(300)), Err(refused));
        let enough = RedeliveryTimer::ChannelTimeout(needed + Duration::from_millis(1));
        assert_eq!(check_timers(&policy, enough, secs(300)), Ok(()));
        assert_eq!(check_timers(&policy, RedeliveryTimer::None, Duration::MAX), Ok(()));
        let never = RedeliveryTimer::ChannelTimeout(Duration::MAX);
        assert!(check_timers(&policy, never, Duration::MAX).is_err(), "a ceiling of forever never fits");
    }
}
