//! Cases of the decision table (SPEC "The record's life"): what a claim decides, and that
//! principals never share a record (G4).

use std::time::Duration;

use super::steps::{at, claim, complete, executes, id, record, response};
use super::{CASES, Harness};
use crate::{Decision, Fenced, Holder, Limits, RecordState};

pub(super) async fn absent_record_executes<H: Harness>(harness: &H) {
    // Goal: decision table row 1: nothing recorded, so execute under a claim whose lease starts now.
    let case = CASES[0];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let Decision::Execute(claim) = claim(case, &store, &alice, 100, at(0)).await else {
        panic!("conformance case `{case}`: a new key must execute")
    };
    assert_eq!(claim.lease_expires_at, at(10), "conformance case `{case}`: the lease starts at the claim");
    let held = record(case, &store, &alice).await.expect("the claim is recorded");
    assert_eq!(held.fence, claim.fence, "conformance case `{case}`: the record holds the claim's fence");
    let in_flight = RecordState::InFlight { lease_expires_at: at(10), holder: Holder::NONE, renewals: 0 };
    assert_eq!(held.state, in_flight, "conformance case `{case}`");
    assert_eq!((held.created_at, held.expires_at), (at(0), at(3600)), "conformance case `{case}`: created, retention");
}

pub(super) async fn conflict_while_in_flight<H: Harness>(harness: &H) {
    // Goal: row 2: same request while the lease is valid answers "in progress" with the lease left.
    let case = CASES[1];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    executes(case, &store, &alice, 100, at(0)).await;
    let before = record(case, &store, &alice).await;
    let decision = claim(case, &store, &alice, 100, at(4)).await;
    let conflict =
        Decision::Conflict { retry_after: Duration::from_secs(6), expires_at: at(3600), holder: Holder::NONE };
    assert_eq!(decision, conflict, "conformance case `{case}`");
    assert_eq!(record(case, &store, &alice).await, before, "conformance case `{case}`: a conflict writes nothing");
}

pub(super) async fn lapsed_claim_is_taken_over<H: Harness>(harness: &H) {
    // Goal: row 3: same request after the lease lapsed takes over with a newer fence.
    let case = CASES[2];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let first = executes(case, &store, &alice, 100, at(0)).await;
    match claim(case, &store, &alice, 100, at(10)).await {
        Decision::TakeOver { claim, stale } => {
            assert_eq!(stale, first, "conformance case `{case}`: the stale fence is the lapsed claim's");
            assert!(claim.fence > first, "conformance case `{case}`: the take-over's fence is newer");
            assert_eq!(claim.lease_expires_at, at(20), "conformance case `{case}`");
        }
        other => panic!("conformance case `{case}`: expected TakeOver at the lease's end, got {other:?}"),
    }
}

pub(super) async fn replay_after_completion<H: Harness>(harness: &H) {
    // Goal: row 4: after completion every retry replays status, stored headers and body (G2).
    let case = CASES[3];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    assert_eq!(
        complete(case, &store, &alice, fence, "pay_1", at(1)).await,
        Fenced::Applied,
        "conformance case `{case}`"
    );
    for now in [at(2), at(50), at(3000)] {
        let decision = claim(case, &store, &alice, 100, now).await;
        let replay = Decision::Replay { response: response("pay_1"), expires_at: at(3601) };
        assert_eq!(decision, replay, "conformance case `{case}`: the response, and retention from completion");
    }
}

pub(super) async fn mismatch_while_in_flight<H: Harness>(harness: &H) {
    // Goal: row 5 (in flight): a different fingerprint answers Mismatch, never Conflict, never executes (G5).
    let case = CASES[4];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    executes(case, &store, &alice, 100, at(0)).await;
    let mismatch = Decision::Mismatch { expires_at: at(3600) };
    assert_eq!(claim(case, &store, &alice, 700, at(1)).await, mismatch, "conformance case `{case}`");
    // Also once the lease lapsed: a different request never takes the claim over.
    assert_eq!(claim(case, &store, &alice, 700, at(30)).await, mismatch, "conformance case `{case}`");
}

pub(super) async fn mismatch_after_completion<H: Harness>(harness: &H) {
    // Goal: row 5 (completed): a different fingerprint answers Mismatch, not the recorded response (G5).
    let case = CASES[5];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    let _ = complete(case, &store, &alice, fence, "pay_1", at(1)).await;
    let mismatch = Decision::Mismatch { expires_at: at(3601) };
    assert_eq!(claim(case, &store, &alice, 700, at(2)).await, mismatch, "conformance case `{case}`");
}

pub(super) async fn expired_record_executes_again<H: Harness>(harness: &H) {
    // Goal: once retention is over the key is forgotten: it executes again, under a newer fence.
    let case = CASES[6];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let first = executes(case, &store, &alice, 100, at(0)).await;
    let _ = complete(case, &store, &alice, first, "pay_1", at(1)).await;
    assert!(
        matches!(claim(case, &store, &alice, 100, at(3600)).await, Decision::Replay { .. }),
        "conformance case `{case}`"
    );
    let again = executes(case, &store, &alice, 700, at(3601)).await;
    assert!(again > first, "conformance case `{case}`: the new claim's fence is newer");
}

pub(super) async fn principals_never_share_a_record<H: Harness>(harness: &H) {
    // Goal: G4: the same key string from two principals makes two records.
    let case = CASES[7];
    let store = harness.open(Limits::default()).await;
    let (alice, bob) = (id("alice", "k1"), id("bob", "k1"));
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    let _ = complete(case, &store, &alice, fence, "alice-pay", at(1)).await;
    let bob_fence = executes(case, &store, &bob, 100, at(2)).await;
    assert_ne!(bob_fence, fence, "conformance case `{case}`");
    assert_eq!(claim(case, &store, &alice, 100, at(3)).await.replayed(), Some(&response("alice-pay")));
}
