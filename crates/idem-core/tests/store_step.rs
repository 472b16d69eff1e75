//! The store step's own rules, beyond the decision table: which writes it names (record,
//! fence counter, usage), admission at the size limits, and damage it refuses to build on.

use std::time::Duration;

use idem_core::step::{self, Counters, LimitReached, StepError, StoreView, op};
use idem_core::usage::{self, UsageDelta};
use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Holder, Key, Limits, MemoryState, Policy, Principal, Record, RecordId,
    RecordState, Renewal, StoreError, StoredResponse, Timestamp, Usage, Write,
};

fn policy() -> Policy {
    Policy::new(Duration::from_secs(10), Duration::from_secs(3600)).expect("valid")
}

fn id(key: &str) -> RecordId {
    RecordId::new(Principal::new("alice").expect("valid"), Key::parse(key.as_bytes()).expect("valid"))
}

fn fingerprint() -> Fingerprint {
    Fingerprint::of("POST", "/payments", b"{}")
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_ms(seconds * 1000)
}

fn claim_op(now: Timestamp) -> op::Claim {
    op::Claim { request: fingerprint().into(), now, policy: policy() }
}

fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).expect("small")
}

#[test]
fn execute_names_the_record_the_counter_and_the_usage() {
    // Goal: a claim that executes writes the in-flight record, advances the counter past its fence, counts one record.
    let view = StoreView { record: None, counters: Counters::EMPTY, limits: Limits::default() };
    let step = step::step(&id("k1"), &view, claim_op(at(5))).expect("room");
    let Decision::Execute(claim) = step.answer else { panic!("a new key executes") };
    assert_eq!(claim.fence, Fence::FIRST);
    let Write::Put(record) = &step.write else { panic!("the claim is written") };
    assert_eq!(record.state, RecordState::InFlight { lease_expires_at: at(15), holder: Holder::NONE, renewals: 0 });
    assert_eq!(step.next_fence, Some(Fence::FIRST.next()));
    let bytes = usage::stored_bytes(&id("k1"), record);
    assert_eq!(step.usage, UsageDelta { records: 1, stored_bytes: signed(bytes) });
}

#[test]
fn answers_that_change_nothing_write_nothing() {
    // Goal: a conflict, a replay, a mismatch and a refusal name no write at all, so a store may skip its commit.
    let mut state = MemoryState::new(Limits::default());
    let Decision::Execute(claim) = state.run(&id("k1"), claim_op(at(0))).expect("room") else { panic!() };
    let view = state.view(&id("k1"));
    let conflict = step::step(&id("k1"), &view, claim_op(at(1))).expect("no admission needed");
    assert!(matches!(conflict.answer, Decision::Conflict { .. }));
    assert!(conflict.writes_nothing());
    let stale = step::step(&id("k1"), &view, op::Release { fence: claim.fence.next() }).expect("fenced");
    assert!(matches!(stale.answer, Fenced::Refused(_)));
    assert!(stale.writes_nothing());
    let other = Fingerprint::of("POST", "/payments", b"{\"other\":1}");
    let mismatch = step::step(&id("k1"), &view, op::Claim { request: other.into(), now: at(1), policy: policy() });
    assert!(mismatch.expect("no admission").writes_nothing());
}

#[test]
fn completion_changes_bytes_not_records_and_issues_no_fence() {
    // Goal: completing replaces the record in place: usage counts the response's bytes, no new record, no fence.
    let mut state = MemoryState::new(Limits::default());
    let Decision::Execute(claim) = state.run(&id("k1"), claim_op(at(0))).expect("room") else { panic!() };
    let before = usage::stored_bytes(&id("k1"), state.record(&id("k1")).expect("held"));
    let response = StoredResponse::new(201, vec![7u8; 100]);
    let complete = op::Complete { fence: claim.fence, response, now: at(1), policy: policy() };
    let step = step::step(&id("k1"), &state.view(&id("k1")), complete).expect("always room for a completion");
    assert_eq!(step.next_fence, None);
    let Write::Put(completed) = &step.write else { panic!("the completion is written") };
    assert_eq!(
        step.usage,
        UsageDelta { records: 0, stored_bytes: signed(usage::stored_bytes(&id("k1"), completed)) - signed(before) }
    );
    assert_eq!(step.usage.stored_bytes, 100);
    assert!(!step.writes_nothing(), "a completion issues no fence but still writes its record");
}

#[test]
fn release_and_expiry_give_back_what_the_record_cost() {
    // Goal: deleting a record (release, expiry) returns its record and every byte to the totals.
    let mut state = MemoryState::new(Limits::default());
    let Decision::Execute(claim) = state.run(&id("k1"), claim_op(at(0))).expect("room") else { panic!() };
    let _ = state.run(&id("k2"), claim_op(at(0))).expect("room");
    assert_eq!(state.run(&id("k1"), op::Release { fence: claim.fence }), Ok(Fenced::Applied));
    assert_eq!(state.run(&id("k2"), op::Expire { now: at(3599) }), Ok(false), "k2 is live until 3600 s");
    assert_eq!(state.run(&id("k2"), op::Expire { now: at(3600) }), Ok(true));
    assert_eq!(state.counters().usage, Usage::default());
    assert_eq!(state.counters().next_fence, Fence::new(3), "fences are not given back");
    assert!(UsageDelta::NONE.is_none());
    assert!(!UsageDelta { records: 0, stored_bytes: -1 }.is_none());
}

#[test]
fn memory_store_reports_what_it_holds() {
    // Goal: the accessors a caller sizes and watches a store by tell the truth.
    let limits = Limits { records_max: 7, stored_bytes_max: 9_000 };
    let store = idem_core::MemoryStore::new(limits);
    assert!(store.is_empty());
    assert_eq!(store.snapshot().limits(), limits);
    let _ = pollster::block_on(idem_core::Store::claim(&store, &id("k1"), &fingerprint(), at(0), &policy()));
    assert!(!store.is_empty());
    assert_eq!(store.len(), 1);
    assert_eq!(store.usage().records, 1);
    assert_eq!(store.snapshot().records().count(), 1);
}

#[test]
fn admission_refuses_new_claims_only() {
    // Goal: at a limit only steps that issue a fence are refused; a renewal and a completion still apply.
    let limits = Limits { records_max: 1, stored_bytes_max: 1 << 20 };
    let mut state = MemoryState::new(limits);
    let Decision::Execute(claim) = state.run(&id("k1"), claim_op(at(0))).expect("room") else { panic!() };
    assert_eq!(state.run(&id("k2"), claim_op(at(0))), Err(StepError::Full(LimitReached::Records(1))));
    let renewed = state.run(&id("k1"), op::Renew { fence: claim.fence, now: at(5), policy: policy() });
    assert_eq!(renewed, Ok(Renewal::Renewed { lease_expires_at: at(15) }));
    // A take-over replaces the held record, so the record limit does not refuse it.
    assert!(matches!(state.run(&id("k1"), claim_op(at(15))), Ok(Decision::TakeOver { .. })));
    let error: StoreError = StepError::Full(LimitReached::Bytes(9)).into();
    assert!(matches!(error, StoreError::Full { ref what } if what == "9 bytes"), "{error}");
}

#[test]
fn a_counter_behind_a_record_is_damage_not_a_panic() {
    // Goal: a store whose fence counter is not past a record's fence gets an error (Corrupt), never a reused fence.
    let record = Record {
        fingerprint: fingerprint(),
        fence: Fence::new(7),
        expires_at: at(3600),
        created_at: at(0),
        state: RecordState::InFlight { lease_expires_at: at(10), holder: Holder::NONE, renewals: 0 },
    };
    let counters = Counters { next_fence: Fence::new(7), usage: Usage { records: 1, stored_bytes: 80 } };
    let view = StoreView { record: Some(&record), counters, limits: Limits::default() };
    let error = step::step(&id("k1"), &view, claim_op(at(20))).expect_err("the counter is behind");
    assert_eq!(error, StepError::FenceCounterBehind { next_fence: Fence::new(7), record_fence: Fence::new(7) });
    assert!(matches!(StoreError::from(error), StoreError::Corrupt { .. }));
}

#[test]
fn complete_in_transaction_refuses_a_repeat_that_complete_accepts() {
    // Goal: atomic mode's repeated completion with the same fence is refused (its business writes would repeat);
    // separate mode's is applied and changes nothing.
    let mut state = MemoryState::new(Limits::default());
    let Decision::Execute(claim) = state.run(&id("k1"), claim_op(at(0))).expect("room") else { panic!() };
    let response = || StoredResponse::new(201, &b"pay_1"[..]);
    let in_tx = || op::CompleteInTransaction { fence: claim.fence, response: response(), now: at(1), policy: policy() };
    assert_eq!(state.run(&id("k1"), in_tx()), Ok(Fenced::Applied));
    let repeated = state.run(&id("k1"), in_tx());
    assert_eq!(repeated, Ok(Fenced::Refused(idem_core::Refusal::AlreadyCompleted { completed_by: claim.fence })));
    let separate = op::Complete { fence: claim.fence, response: response(), now: at(2), policy: policy() };
    assert_eq!(state.run(&id("k1"), separate), Ok(Fenced::Applied));
}

#[test]
fn equal_histories_give_equal_states() {
    // Goal: MemoryState depends only on what it holds, not on the order records arrived (the model hashes it).
    let mut one = MemoryState::new(Limits::default());
    let mut two = MemoryState::new(Limits::default());
    let _ = one.run(&id("a"), claim_op(at(0)));
    let _ = one.run(&id("b"), claim_op(at(0)));
    let _ = two.run(&id("b"), claim_op(at(0)));
    let _ = two.run(&id("a"), claim_op(at(0)));
    // Same records, but the fences went to different ids: the states differ only there.
    assert_ne!(one, two);
    // The model checker deduplicates states by hash: equal states hash equally, and these
    // two (which differ only in which id holds which fence) hash apart.
    let hash = |state: &MemoryState| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(state, &mut hasher);
        std::hash::Hasher::finish(&hasher)
    };
    assert_eq!(hash(&one), hash(&one.clone()));
    assert_ne!(hash(&one), hash(&two));
    let _ = one.purge_expired(at(10_000), 10);
    let _ = two.purge_expired(at(10_000), 10);
    assert_eq!(one, two, "after both purged everything, only the counters remain, and they agree");
}

#[test]
fn a_reseeded_state_issues_fences_from_the_new_range_and_never_moves_back() {
    // Goal: a store that lost its state and reseeds its counter never issues a fence from
    // before the loss (G3's premise), and reseeding with a lower fence changes nothing.
    let reseeded = MemoryState::new(Limits::default()).with_fences_from(Fence::new(1 << 40));
    assert_eq!(reseeded.counters().next_fence, Fence::new(1 << 40));
    let mut state = reseeded.clone().with_fences_from(Fence::new(7));
    assert_eq!(state.counters().next_fence, Fence::new(1 << 40));
    let decision = state.run(&id("k"), claim_op(at(0))).expect("an empty store admits a claim");
    let Decision::Execute(claim) = decision else { panic!("a new key executes") };
    assert_eq!(claim.fence, Fence::new(1 << 40));
}
