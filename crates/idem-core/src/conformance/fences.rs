//! Cases of fencing and renewal: a stale holder can neither renew, complete nor release
//! (G3), a lost completion answer may be repeated with the first response kept (G2), and
//! fences are never reused.

use std::time::Duration;

use super::steps::{at, claim, complete, executes, id, ok, record, renew, response};
use super::{CASES, Harness};
use crate::{Decision, Fenced, Holder, Limits, Refusal, Renewal, Store};

pub(super) async fn stale_fence_is_refused_after_take_over<H: Harness>(harness: &H) {
    // Goal: G3: after a take-over the old fence's completion, release and renewal are refused
    // and leave the record as it was.
    let case = CASES[8];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let stale = executes(case, &store, &alice, 100, at(0)).await;
    let Decision::TakeOver { claim: current, .. } = claim(case, &store, &alice, 100, at(11)).await else {
        panic!("conformance case `{case}`: expected a take-over")
    };
    let before = record(case, &store, &alice).await;
    let refused = Refusal::StaleFence { presented: stale, current: current.fence };
    assert_eq!(complete(case, &store, &alice, stale, "stale", at(12)).await, Fenced::Refused(refused));
    assert_eq!(ok(case, store.release(&alice, stale).await), Fenced::Refused(refused), "conformance case `{case}`");
    assert_eq!(
        renew(case, &store, &alice, stale, at(12)).await,
        Renewal::Refused(refused),
        "conformance case `{case}`"
    );
    assert_eq!(record(case, &store, &alice).await, before, "conformance case `{case}`: refusals change nothing");
    assert_eq!(complete(case, &store, &alice, current.fence, "pay_2", at(13)).await, Fenced::Applied);
}

pub(super) async fn fence_is_refused_after_release<H: Harness>(harness: &H) {
    // Goal: G3: a released claim's fence completes nothing, and the next claim gets a newer fence.
    let case = CASES[9];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let released = executes(case, &store, &alice, 100, at(0)).await;
    assert_eq!(ok(case, store.release(&alice, released).await), Fenced::Applied, "conformance case `{case}`");
    assert_eq!(record(case, &store, &alice).await, None, "conformance case `{case}`: release forgets the record");
    let refused = Fenced::Refused(Refusal::NoRecord);
    assert_eq!(complete(case, &store, &alice, released, "late", at(1)).await, refused, "conformance case `{case}`");
    let next = executes(case, &store, &alice, 100, at(2)).await;
    assert!(next > released, "conformance case `{case}`: fences are not reused after a release");
    let refused = Fenced::Refused(Refusal::StaleFence { presented: released, current: next });
    assert_eq!(complete(case, &store, &alice, released, "late", at(3)).await, refused, "conformance case `{case}`");
}

pub(super) async fn renewal_extends_the_lease<H: Harness>(harness: &H) {
    // Goal: the holder's renewal moves its lease to a whole lease from now, so a retry at the
    // old lease's end gets a conflict, not a take-over; renewal never shortens a lease.
    let case = CASES[10];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    let renewed = Renewal::Renewed { lease_expires_at: at(17) };
    assert_eq!(renew(case, &store, &alice, fence, at(7)).await, renewed, "conformance case `{case}`");
    let decision = claim(case, &store, &alice, 100, at(10)).await;
    let conflict =
        Decision::Conflict { retry_after: Duration::from_secs(7), expires_at: at(3600), holder: Holder::NONE };
    assert_eq!(decision, conflict, "conformance case `{case}`");
    // A renewal stamped earlier (a lagging clock) keeps the longer lease.
    assert_eq!(renew(case, &store, &alice, fence, at(3)).await, renewed, "conformance case `{case}`");
    // After a lapse, as long as nobody took over, the holder may still renew.
    let late = Renewal::Renewed { lease_expires_at: at(30) };
    assert_eq!(renew(case, &store, &alice, fence, at(20)).await, late, "conformance case `{case}`");
    assert_eq!(complete(case, &store, &alice, fence, "pay_1", at(21)).await, Fenced::Applied);
    let done = Renewal::Refused(Refusal::AlreadyCompleted { completed_by: fence });
    assert_eq!(
        renew(case, &store, &alice, fence, at(22)).await,
        done,
        "conformance case `{case}`: completed records do not renew"
    );
}

pub(super) async fn renewal_by_a_taken_over_holder_is_refused<H: Harness>(harness: &H) {
    // Goal: G3 for renewals: once another request took the claim over, the old holder's
    // renewal is refused and the new holder's lease is untouched.
    let case = CASES[11];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let old = executes(case, &store, &alice, 100, at(0)).await;
    let Decision::TakeOver { claim: new, .. } = claim(case, &store, &alice, 100, at(10)).await else {
        panic!("conformance case `{case}`: expected a take-over")
    };
    let refused = Renewal::Refused(Refusal::StaleFence { presented: old, current: new.fence });
    assert_eq!(renew(case, &store, &alice, old, at(15)).await, refused, "conformance case `{case}`");
    let decision = claim(case, &store, &alice, 100, at(20)).await;
    assert!(
        matches!(decision, Decision::TakeOver { .. }),
        "conformance case `{case}`: the refused renewal did not extend the new lease: {decision:?}"
    );
}

pub(super) async fn repeated_completion_with_the_same_fence<H: Harness>(harness: &H) {
    // Goal: a completion whose answer was lost may be repeated: applied again, the first response stays (G2).
    let case = CASES[12];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    assert_eq!(complete(case, &store, &alice, fence, "first", at(1)).await, Fenced::Applied);
    assert_eq!(
        complete(case, &store, &alice, fence, "second", at(2)).await,
        Fenced::Applied,
        "conformance case `{case}`"
    );
    assert_eq!(
        claim(case, &store, &alice, 100, at(3)).await.replayed(),
        Some(&response("first")),
        "conformance case `{case}`"
    );
}

pub(super) async fn completion_under_another_fence_is_refused<H: Harness>(harness: &H) {
    // Goal: G3: a fence that did not complete the record cannot overwrite it, nor release it.
    let case = CASES[13];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let first = executes(case, &store, &alice, 100, at(0)).await;
    let Decision::TakeOver { claim: second, .. } = claim(case, &store, &alice, 100, at(10)).await else {
        panic!("conformance case `{case}`: expected a take-over")
    };
    assert_eq!(complete(case, &store, &alice, second.fence, "second", at(11)).await, Fenced::Applied);
    let refused = Fenced::Refused(Refusal::AlreadyCompleted { completed_by: second.fence });
    assert_eq!(complete(case, &store, &alice, first, "first", at(12)).await, refused, "conformance case `{case}`");
    assert_eq!(ok(case, store.release(&alice, first).await), refused, "conformance case `{case}`");
    assert_eq!(claim(case, &store, &alice, 100, at(13)).await.replayed(), Some(&response("second")));
}

pub(super) async fn fences_are_never_reused<H: Harness>(harness: &H) {
    // Goal: fences only grow across records, releases, take-overs and purges.
    let case = CASES[14];
    let store = harness.open(Limits::default()).await;
    let (alice, bob) = (id("alice", "k1"), id("bob", "k1"));
    let mut fences = vec![executes(case, &store, &alice, 100, at(0)).await];
    fences.push(executes(case, &store, &bob, 100, at(0)).await);
    let _ = ok(case, store.release(&alice, fences[0]).await);
    fences.push(executes(case, &store, &alice, 100, at(1)).await);
    if let Decision::TakeOver { claim, .. } = claim(case, &store, &bob, 100, at(10)).await {
        fences.push(claim.fence);
    }
    let purged = ok(case, store.purge_expired(at(10_000), 100).await);
    assert_eq!(purged, 2, "conformance case `{case}`: both lapsed, expired claims are purged");
    fences.push(executes(case, &store, &alice, 100, at(10_001)).await);
    assert_eq!(fences.len(), 5, "conformance case `{case}`: the take-over happened");
    assert!(fences.windows(2).all(|pair| pair[0] < pair[1]), "conformance case `{case}`: fences {fences:?}");
}
