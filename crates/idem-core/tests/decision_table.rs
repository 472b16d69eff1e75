//! One test per row of SPEC's decision table, and per guarantee that the core alone can
//! break (G1 within one store, G3, G4, G5), through `MemoryStore` (which applies
//! idem-core's transitions) and through the pure functions where the write matters.

use std::time::Duration;

use idem_core::transition::{self, Write};
use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Holder, Key, MemoryStore, Policy, Principal, RecordId, RecordState, Refusal,
    Store, StoredResponse, Timestamp,
};
use pollster::block_on;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);

fn policy() -> Policy {
    Policy::new(LEASE, RETENTION).expect("60 s lease, 1 h retention is a valid policy")
}

fn id(principal: &str, key: &str) -> RecordId {
    RecordId::new(
        Principal::new(principal).expect("test principals are valid"),
        Key::try_from(key).expect("test keys are valid"),
    )
}

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of("POST", "/payments", body.as_bytes())
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_ms(1_000_000 + seconds * 1000)
}

fn response(body: &str) -> StoredResponse {
    StoredResponse::new(201, body.as_bytes().to_vec())
}

/// Claims and expects an execution; returns its fence.
fn claim_executes(store: &MemoryStore, id: &RecordId, fp: &Fingerprint, now: Timestamp) -> Fence {
    match block_on(store.claim(id, fp, now, &policy())).expect("memory store is available") {
        Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim.fence,
        other => panic!("expected an execution, got {other:?}"),
    }
}

fn claim(store: &MemoryStore, id: &RecordId, fp: &Fingerprint, now: Timestamp) -> Decision {
    block_on(store.claim(id, fp, now, &policy())).expect("memory store is available")
}

fn complete(store: &MemoryStore, id: &RecordId, fence: Fence, body: &str, now: Timestamp) -> Fenced {
    block_on(store.complete(id, fence, response(body), now, &policy())).expect("memory store is available")
}

#[test]
fn absent_record_executes_with_a_new_fence() {
    // Goal: row 1 — nothing recorded → execute under a fresh claim whose lease starts now.
    let store = MemoryStore::default();
    let decision = claim(&store, &id("alice", "k1"), &fingerprint("a"), at(0));
    let Decision::Execute(claim) = decision else { panic!("expected Execute, got {decision:?}") };
    assert_eq!(claim.lease_expires_at, at(60));
    assert_eq!(store.len(), 1);
}

#[test]
fn expired_record_executes_again() {
    // Goal: row 1 — a completed record past its retention counts as absent.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = claim_executes(&store, &id, &fp, at(0));
    assert_eq!(complete(&store, &id, first, "r1", at(1)), Fenced::Applied);
    assert!(
        matches!(claim(&store, &id, &fp, at(1 + 3599)), Decision::Replay { .. }),
        "still retained one second before the end"
    );
    let again = claim_executes(&store, &id, &fp, at(1 + 3600));
    assert!(again > first, "a new claim after expiry gets a newer fence");
}

#[test]
fn conflict_while_in_flight() {
    // Goal: row 2 — same fingerprint, valid lease → in progress, with the time left as Retry-After.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    claim_executes(&store, &id, &fp, at(0));
    let conflict =
        Decision::Conflict { retry_after: Duration::from_secs(40), expires_at: at(3600), holder: Holder::NONE };
    assert_eq!(claim(&store, &id, &fp, at(20)), conflict);
}

#[test]
fn take_over_after_lease_lapse() {
    // Goal: row 3 — same fingerprint, lapsed lease → execute under a new fence; the old one is stale.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = claim_executes(&store, &id, &fp, at(0));
    let decision = claim(&store, &id, &fp, at(60));
    let Decision::TakeOver { claim, stale } = decision else { panic!("expected TakeOver, got {decision:?}") };
    assert_eq!(stale, first);
    assert!(claim.fence > first);
}

#[test]
fn replay_after_completion() {
    // Goal: row 4 — completed, same fingerprint → the stored response, every time (G2).
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let fence = claim_executes(&store, &id, &fp, at(0));
    assert_eq!(complete(&store, &id, fence, "paid", at(1)), Fenced::Applied);
    for second in [2, 100, 3000] {
        let replay = Decision::Replay { response: response("paid"), expires_at: at(3601) };
        assert_eq!(claim(&store, &id, &fp, at(second)), replay);
    }
}

#[test]
fn mismatch_while_in_flight_or_completed() {
    // Goal: row 5 — a different fingerprint never executes, in flight (valid or lapsed) or completed (G5).
    let store = MemoryStore::default();
    let (id, fp, other) = (id("alice", "k1"), fingerprint("a"), fingerprint("b"));
    let fence = claim_executes(&store, &id, &fp, at(0));
    let in_flight = Decision::Mismatch { expires_at: at(3600) };
    assert_eq!(claim(&store, &id, &other, at(1)), in_flight, "in flight, valid lease");
    assert_eq!(claim(&store, &id, &other, at(61)), in_flight, "in flight, lapsed lease");
    assert_eq!(complete(&store, &id, fence, "r", at(2)), Fenced::Applied, "the mismatches did not disturb the claim");
    assert_eq!(claim(&store, &id, &other, at(3)), Decision::Mismatch { expires_at: at(3602) }, "completed");
}

#[test]
fn mismatch_leaves_the_record_untouched() {
    // Goal: G5 at the level of writes — a mismatching claim writes nothing.
    let (fp, other) = (fingerprint("a"), fingerprint("b"));
    let put = transition::claim(None, &fp.into(), at(0), &policy(), Fence::FIRST);
    let Write::Put(record) = put.write else { panic!("a claim on an absent record writes it") };
    let mismatch = transition::claim(Some(&record), &other.into(), at(1), &policy(), Fence::new(2));
    assert_eq!(mismatch.outcome, Decision::Mismatch { expires_at: at(3600) });
    assert_eq!(mismatch.write, Write::Unchanged);
}

#[test]
fn at_most_one_execution_per_record_id() {
    // Goal: G1 within one store — of many claims for one id, one executes until the claim ends.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let executions = (0..50).filter(|i| claim(&store, &id, &fp, at(i / 2)).claim().is_some()).count();
    assert_eq!(executions, 1);
}

#[test]
fn stale_fence_is_refused() {
    // Goal: G3 — after a take-over, the first holder can neither complete nor release, and the record is untouched.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let stale = claim_executes(&store, &id, &fp, at(0));
    let current = claim_executes(&store, &id, &fp, at(61));
    let before = block_on(store.get(&id)).expect("available");
    let refusal = Fenced::Refused(Refusal::StaleFence { presented: stale, current });
    assert_eq!(complete(&store, &id, stale, "stale", at(62)), refusal);
    assert_eq!(block_on(store.release(&id, stale)).expect("available"), refusal);
    assert_eq!(block_on(store.get(&id)).expect("available"), before);
    assert_eq!(complete(&store, &id, current, "current", at(63)), Fenced::Applied);
    assert_eq!(claim(&store, &id, &fp, at(64)).replayed(), Some(&response("current")));
}

#[test]
fn completion_after_completion_is_refused_unless_same_fence() {
    // Goal: G2/G3 — a repeated completion with the same fence is accepted without change; no other fence can overwrite.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let stale = claim_executes(&store, &id, &fp, at(0));
    let current = claim_executes(&store, &id, &fp, at(61));
    assert_eq!(complete(&store, &id, current, "first", at(62)), Fenced::Applied);
    assert_eq!(complete(&store, &id, current, "retried", at(63)), Fenced::Applied);
    let refused = Fenced::Refused(Refusal::AlreadyCompleted { completed_by: current });
    assert_eq!(complete(&store, &id, stale, "stale", at(64)), refused);
    assert_eq!(claim(&store, &id, &fp, at(65)).replayed(), Some(&response("first")));
}

#[test]
fn release_lets_a_retry_execute_with_a_newer_fence() {
    // Goal: release returns the key, and fences are never reused after it.
    let store = MemoryStore::default();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = claim_executes(&store, &id, &fp, at(0));
    assert_eq!(block_on(store.release(&id, first)).expect("available"), Fenced::Applied);
    assert!(store.is_empty());
    let second = claim_executes(&store, &id, &fp, at(1));
    assert!(second > first);
    assert_eq!(
        complete(&store, &id, first, "stale", at(2)),
        Fenced::Refused(Refusal::StaleFence { presented: first, current: second })
    );
}

#[test]
fn completion_of_unknown_record_is_refused() {
    // Goal: G3 — no record, no completion (it was purged or never claimed).
    let store = MemoryStore::default();
    assert_eq!(complete(&store, &id("alice", "k1"), Fence::FIRST, "r", at(0)), Fenced::Refused(Refusal::NoRecord));
    assert!(store.is_empty(), "a refused completion writes nothing");
}

#[test]
fn principals_never_share_a_record() {
    // Goal: G4 — the same key string from two principals makes two records; neither sees the other's response.
    let store = MemoryStore::default();
    let fp = fingerprint("a");
    let (alice, bob) = (id("alice", "k1"), id("bob", "k1"));
    let alice_fence = claim_executes(&store, &alice, &fp, at(0));
    let bob_fence = claim_executes(&store, &bob, &fp, at(0));
    assert_eq!(complete(&store, &alice, alice_fence, "alice's", at(1)), Fenced::Applied);
    assert_eq!(complete(&store, &bob, bob_fence, "bob's", at(1)), Fenced::Applied);
    assert_eq!(claim(&store, &alice, &fp, at(2)).replayed(), Some(&response("alice's")));
    assert_eq!(claim(&store, &bob, &fp, at(2)).replayed(), Some(&response("bob's")));
    let anonymous = RecordId::new(Principal::anonymous(), Key::try_from("k1").expect("valid"));
    assert!(
        matches!(claim(&store, &anonymous, &fp, at(2)), Decision::Execute(_)),
        "anonymous is a principal of its own"
    );
}

#[test]
fn purge_forgets_only_expired_records_in_bounded_batches() {
    // Goal: purge removes expired records (completed past retention, abandoned claims) and nothing live.
    let store = MemoryStore::default();
    let fp = fingerprint("a");
    for n in 0..5 {
        let id = id("alice", &format!("done{n}"));
        let fence = claim_executes(&store, &id, &fp, at(0));
        assert_eq!(complete(&store, &id, fence, "r", at(0)), Fenced::Applied);
    }
    claim_executes(&store, &id("alice", "abandoned"), &fp, at(0));
    claim_executes(&store, &id("alice", "fresh"), &fp, at(3590));
    let purge = |now, batch| block_on(store.purge_expired(now, batch)).expect("available");
    assert_eq!(purge(at(3599), 10), 0, "nothing has expired yet");
    assert_eq!(purge(at(3600), 4), 4, "a batch is bounded");
    assert_eq!(purge(at(3600), 4), 2);
    assert_eq!(purge(at(3600), 4), 0);
    assert_eq!(store.len(), 1, "the claim taken at 3590 s is live");
    assert!(matches!(claim(&store, &id("alice", "fresh"), &fp, at(3601)), Decision::Conflict { .. }));
}

#[test]
fn full_store_refuses_new_claims_and_keeps_live_records() {
    // Goal: bounded store — at the limit new ids are refused with Full; held records still replay and complete.
    let store = MemoryStore::new(idem_core::Limits { records_max: 2, stored_bytes_max: 1 << 20 });
    let fp = fingerprint("a");
    let (a, b, c) = (id("alice", "a"), id("alice", "b"), id("alice", "c"));
    let fence_a = claim_executes(&store, &a, &fp, at(0));
    claim_executes(&store, &b, &fp, at(0));
    let refused = block_on(store.claim(&c, &fp, at(0), &policy()));
    assert!(matches!(refused, Err(idem_core::StoreError::Full { .. })), "got {refused:?}");
    assert_eq!(complete(&store, &a, fence_a, "kept", at(1)), Fenced::Applied, "a granted claim always completes");
    assert_eq!(claim(&store, &a, &fp, at(2)).replayed(), Some(&response("kept")));
    assert_eq!(store.len(), 2);
}

#[test]
fn byte_limit_refuses_new_claims() {
    // Goal: the byte budget is enforced at claim time and counts responses.
    let store = MemoryStore::new(idem_core::Limits { records_max: 100, stored_bytes_max: 200 });
    let fp = fingerprint("a");
    let big = id("alice", "big");
    let fence = claim_executes(&store, &big, &fp, at(0));
    assert_eq!(
        block_on(store.complete(&big, fence, StoredResponse::new(201, vec![0u8; 300]), at(0), &policy())).expect("ok"),
        Fenced::Applied
    );
    assert!(store.usage().stored_bytes > 200);
    let refused = block_on(store.claim(&id("alice", "next"), &fp, at(1), &policy()));
    assert!(matches!(refused, Err(idem_core::StoreError::Full { .. })), "got {refused:?}");
    assert_eq!(block_on(store.purge_expired(at(3600), 10)).expect("ok"), 1);
    assert_eq!(store.usage().stored_bytes, 0, "purging gives every byte back");
}

#[test]
fn policy_rejects_retention_not_longer_than_lease() {
    // Goal: a configuration whose retention could end before a valid lease is refused.
    assert!(Policy::new(Duration::from_secs(60), Duration::from_secs(60)).is_err());
    assert!(Policy::new(Duration::ZERO, Duration::from_secs(60)).is_err());
    assert!(Policy::new(Duration::from_secs(1), Duration::from_secs(2)).is_ok());
}

#[test]
fn in_flight_record_is_not_written_by_a_refused_completion() {
    // Goal: the pure function never writes on refusal, whatever the record's state.
    let fp = fingerprint("a");
    let Write::Put(in_flight) = transition::claim(None, &fp.into(), at(0), &policy(), Fence::new(7)).write else {
        panic!("claim writes")
    };
    assert!(matches!(in_flight.state, RecordState::InFlight { .. }));
    for fence in [Fence::new(6), Fence::new(8)] {
        let t = transition::complete(Some(&in_flight), fence, response("x"), at(1), &policy());
        assert_eq!(t.write, Write::Unchanged);
        let t = transition::release(Some(&in_flight), fence);
        assert_eq!(t.write, Write::Unchanged);
    }
}
