//! Tests of `consume`: one per row of SPEC's consumer table, the timer checks, and
//! planted-bug checks that a wrong mapping is reported as the row it breaks.
use crate::consume::*;
use crate::outcome::ContentType;
use crate::{ClaimRequest, Fence, Fingerprint, Holder, RecordState, Refusal, StoredResponse};

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
    let expires_at = Timestamp::from_unix_ms(3_600_000);
    let replay = Decision::Replay { response: StoredResponse::from(outcome()), expires_at };
    if handle(replay, &RULES) != Handle::Settle(Settle::Ack(outcome())) {
        wrong.push("replay acks with the recorded outcome");
    }
    let http = Decision::Replay { response: StoredResponse::new(201, "pay_1"), expires_at };
    if handle(http, &RULES) != Handle::Settle(Settle::DeadLetter(DeadLetterReason::NotAnOutcome)) {
        wrong.push("a recorded HTTP response is dead-lettered");
    }
    let conflict = Decision::Conflict { retry_after: secs(4), expires_at, holder: Holder::NONE };
    if handle(conflict, &RULES) != Handle::Settle(Settle::Redeliver { after: secs(4) }) {
        wrong.push("conflict redelivers after the lease left");
    }
    if handle(Decision::Mismatch { expires_at }, &RULES)
        != Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyReused))
    {
        wrong.push("mismatch is dead-lettered as key-reused");
    }
    if handle(Decision::Gone { expires_at }, &RULES) != Handle::Settle(Settle::DeadLetter(DeadLetterReason::KeyExpired))
    {
        wrong.push("a tombstone is dead-lettered as key-expired, never run");
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
        Decision::Mismatch { .. } => Handle::Run(claim()),
        other => handle(other, rules),
    };
    assert_eq!(table_violations(mismatch_run), ["mismatch is dead-lettered as key-reused"]);
    let replay_run = |decision: Decision, rules: &Redelivery| match decision {
        Decision::Replay { .. } => Handle::Run(claim()),
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
    Record {
        fingerprint,
        fence: Fence::new(9),
        created_at: Timestamp::EPOCH,
        expires_at: Timestamp::from_unix_ms(3_600_000),
        state,
    }
}

#[test]
fn a_superseded_execution_settles_by_the_record_as_stored() {
    // Goal: a lost claim acks with the *recorded* outcome (G2), redelivers while another
    // claim holds the record, and never acks on its own outcome.
    let ours_fingerprint = Fingerprint::of_message("orders", b"1");
    let ours = ClaimRequest::new(ours_fingerprint);
    let now = Timestamp::from_unix_ms(1_000);
    let theirs = StoredOutcome::bytes(&b"theirs"[..]);
    let completed_state = |response| RecordState::Completed { response, replays: 0, tombstone_until: None };
    let completed = record(completed_state(theirs.clone().into()), ours_fingerprint);
    assert_eq!(superseded(Some(&completed), &ours, now, &RULES), Settle::Ack(theirs));
    let lease_expires_at = Timestamp::from_unix_ms(4_000);
    let in_flight_state = RecordState::InFlight { lease_expires_at, holder: Holder::NONE, renewals: 0 };
    let in_flight = record(in_flight_state, ours_fingerprint);
    assert_eq!(superseded(Some(&in_flight), &ours, now, &RULES), Settle::Redeliver { after: secs(3) });
    let released = superseded(None, &ours, now, &RULES);
    assert_eq!(released, Settle::Redeliver { after: RULES.conflict_after_min });
    let other = ClaimRequest::new(Fingerprint::of_message("orders", b"2"));
    let mismatch = superseded(Some(&in_flight), &other, now, &RULES);
    assert_eq!(mismatch, Settle::DeadLetter(DeadLetterReason::KeyReused));
    let http = record(completed_state(StoredResponse::new(200, "x")), ours_fingerprint);
    assert_eq!(superseded(Some(&http), &ours, now, &RULES), Settle::DeadLetter(DeadLetterReason::NotAnOutcome));
    let tombstone = Record { state: RecordState::Tombstone, ..record(RecordState::Tombstone, ours_fingerprint) };
    assert_eq!(superseded(Some(&tombstone), &ours, now, &RULES), Settle::DeadLetter(DeadLetterReason::KeyExpired));
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
    assert_eq!(names, ["key-reused", "key-missing", "key-invalid", "not-an-outcome", "handler-gave-up", "key-expired"]);
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
