//! Cases of a store's bounds and failures: purge forgets only what expired, a full store
//! refuses claims but never evicts and always records a granted claim (the rule of
//! [`crate::Limits`]), concurrent claims execute once (G1), and a failing
//! backend never answers Execute (G8).

use futures::future::join_all;

use super::steps::{at, claim, complete, executes, fingerprint, id, ok, policy, record, response};
use super::{CASES, CONCURRENT_CLAIMS, Harness};
use crate::{Decision, Fenced, Limits, RecordId, Store, StoreError};

pub(super) async fn purge_forgets_only_expired_records<H: Harness>(harness: &H) {
    // Goal: purge forgets exactly what idem-core calls expired, earliest first, in bounded batches.
    let case = CASES[15];
    let store = harness.open(Limits::default()).await;
    let ids: Vec<RecordId> = (0..5).map(|n| id("alice", &format!("k{n}"))).collect();
    for (n, id) in ids.iter().enumerate() {
        let n = u64::try_from(n).expect("five records");
        let fence = executes(case, &store, id, 100, at(n)).await;
        if n != 4 {
            let _ = complete(case, &store, id, fence, "done", at(n)).await;
        }
    }
    // k0..k3 completed at 0..3 s expire at 3600..3603 s; k4 is in flight (lease lapsed at 14 s,
    // retention over at 3604 s).
    assert_eq!(ok(case, store.purge_expired(at(3599), 10).await), 0, "conformance case `{case}`: nothing is due yet");
    assert_eq!(ok(case, store.purge_expired(at(3601), 10).await), 2, "conformance case `{case}`: k0 and k1 are due");
    assert_eq!(record(case, &store, &ids[0]).await, None, "conformance case `{case}`");
    assert!(record(case, &store, &ids[2]).await.is_some(), "conformance case `{case}`: k2 is kept until 3602 s");
    assert_eq!(ok(case, store.purge_expired(at(4000), 2).await), 2, "conformance case `{case}`: a batch is bounded");
    assert_eq!(ok(case, store.purge_expired(at(4000), 2).await), 1, "conformance case `{case}`: the rest");
    assert_eq!(ok(case, store.purge_expired(at(4000), 2).await), 0, "conformance case `{case}`");
    assert_eq!(ok(case, store.purge_expired(at(4000), 0).await), 0, "conformance case `{case}`: an empty batch");
}

pub(super) async fn full_store_refuses_claims_and_never_evicts<H: Harness>(harness: &H) {
    // Goal: at records_max a new claim is refused as Full; held records keep replaying; an
    // expired record is replaced in place; purging makes room again.
    let case = CASES[16];
    let store = harness.open(Limits { records_max: 2, stored_bytes_max: 1 << 20 }).await;
    let (k1, k2, k3) = (id("alice", "k1"), id("alice", "k2"), id("alice", "k3"));
    let fence = executes(case, &store, &k1, 100, at(0)).await;
    let _ = complete(case, &store, &k1, fence, "pay_1", at(0)).await;
    executes(case, &store, &k2, 100, at(0)).await;
    let full = store.claim(&k3, &fingerprint(100), at(1), &policy()).await;
    assert!(matches!(full, Err(StoreError::Full { .. })), "conformance case `{case}`: expected Full, got {full:?}");
    assert_eq!(
        claim(case, &store, &k1, 100, at(1)).await.replayed(),
        Some(&response("pay_1")),
        "conformance case `{case}`: nothing was evicted"
    );
    // k1 expired at 3600 s: a claim on it replaces it without adding a record.
    executes(case, &store, &k1, 100, at(3600)).await;
    assert_eq!(
        ok(case, store.purge_expired(at(3611), 10).await),
        1,
        "conformance case `{case}`: k2 (lapsed and past retention) goes"
    );
    executes(case, &store, &k3, 100, at(3611)).await;
}

pub(super) async fn full_store_accepts_a_granted_completion<H: Harness>(harness: &H) {
    // Goal: a store full by bytes refuses new claims but always records a granted claim's
    // response, even one that takes it past the limit.
    let case = CASES[17];
    let store = harness.open(Limits { records_max: 100, stored_bytes_max: 200 }).await;
    let (k1, k2) = (id("alice", "k1"), id("alice", "k2"));
    let fence = executes(case, &store, &k1, 100, at(0)).await;
    let big = "x".repeat(1000);
    assert_eq!(complete(case, &store, &k1, fence, &big, at(1)).await, Fenced::Applied, "conformance case `{case}`");
    let full = store.claim(&k2, &fingerprint(100), at(2), &policy()).await;
    assert!(matches!(full, Err(StoreError::Full { .. })), "conformance case `{case}`: expected Full, got {full:?}");
    assert_eq!(
        claim(case, &store, &k1, 100, at(3)).await.replayed(),
        Some(&response(&big)),
        "conformance case `{case}`"
    );
}

pub(super) async fn concurrent_claims_execute_once<H: Harness>(harness: &H) {
    // Goal: G1 within the store: concurrent claims on one record id give exactly one execution.
    let case = CASES[18];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let policy = policy();
    let fingerprint = fingerprint(100);
    let claims = (0..CONCURRENT_CLAIMS).map(|_| store.claim(&alice, &fingerprint, at(0), &policy));
    let decisions: Vec<Decision> = join_all(claims).await.into_iter().map(|result| ok(case, result)).collect();
    let executions = decisions.iter().filter(|decision| decision.claim().is_some()).count();
    let conflicts = decisions.iter().filter(|decision| matches!(decision, Decision::Conflict { .. })).count();
    assert_eq!((executions, conflicts), (1, CONCURRENT_CLAIMS - 1), "conformance case `{case}`: {decisions:?}");
}

pub(super) async fn failing_backend_never_executes<H: Harness>(harness: &H) -> bool {
    // Goal: G8: a store whose backend fails answers an error, never a false Execute.
    let case = CASES[19];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    if !harness.break_backend(&store).await {
        return false;
    }
    let decision = store.claim(&id("alice", "k2"), &fingerprint(100), at(1), &policy()).await;
    assert!(decision.is_err(), "conformance case `{case}`: a failed backend must not decide: {decision:?}");
    let decision = store.claim(&alice, &fingerprint(100), at(20), &policy()).await;
    assert!(decision.is_err(), "conformance case `{case}`: a failed backend must not take over: {decision:?}");
    let completion = store.complete(&alice, fence, response("pay_1"), at(2), &policy()).await;
    assert!(
        completion.is_err(),
        "conformance case `{case}`: a failed backend must not confirm a completion: {completion:?}"
    );
    true
}
