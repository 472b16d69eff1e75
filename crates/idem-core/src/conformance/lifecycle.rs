//! The key-lifecycle cases (SPEC "Key lifecycle"), for stores that also implement
//! [`KeyAdmin`]: tombstones, forget, listing, what a claim keeps about its holder, replay
//! counts, and fingerprints of two versions. Run them beside [`super::run`]:
//!
//! ```
//! use idem_core::conformance::{self, Harness};
//! use idem_core::{Limits, MemoryStore};
//!
//! struct Memory;
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!     async fn open(&self, limits: Limits) -> MemoryStore {
//!         MemoryStore::new(limits)
//!     }
//!     async fn break_backend(&self, _: &MemoryStore) -> bool {
//!         false
//!     }
//! }
//!
//! let report = pollster::block_on(conformance::lifecycle::run(&Memory));
//! assert_eq!(report.passed, conformance::lifecycle::CASES);
//! ```

use std::time::Duration;

use super::steps::{at, claim, complete, executes, fingerprint, id, ok, policy, record, response};
use super::{Harness, Report};
use crate::{
    ClaimRequest, Decision, Fenced, Fingerprint, Holder, KeyAdmin, Limits, ListQuery, Policy, RecordState, Refusal,
    Renewal, SemanticParts, StateFilter, Store,
};

/// Every lifecycle case, in the order [`run`] runs them.
pub const CASES: [&str; 7] = [
    "tombstone_answers_gone_and_never_executes",
    "tombstones_count_toward_the_limits",
    "forget_moves_the_fence_on",
    "list_pages_in_order_with_filters",
    "claims_keep_their_holder_and_count_renewals",
    "replays_are_counted",
    "fingerprint_versions_compare_correctly",
];

/// Runs every lifecycle case against fresh stores from `harness`.
///
/// # Panics
/// On the first case that does not hold, naming it.
pub async fn run<H>(harness: &H) -> Report
where
    H: Harness,
    H::Store: KeyAdmin,
{
    let mut report = Report::default();
    tombstone_answers_gone_and_never_executes(harness).await;
    report.passed.push(CASES[0]);
    tombstones_count_toward_the_limits(harness).await;
    report.passed.push(CASES[1]);
    forget_moves_the_fence_on(harness).await;
    report.passed.push(CASES[2]);
    list_pages_in_order_with_filters(harness).await;
    report.passed.push(CASES[3]);
    claims_keep_their_holder_and_count_renewals(harness).await;
    report.passed.push(CASES[4]);
    replays_are_counted(harness).await;
    report.passed.push(CASES[5]);
    fingerprint_versions_compare_correctly(harness).await;
    report.passed.push(CASES[6]);
    report
}

/// The record held for `id`, or a failure of `case` saying what was expected.
async fn must_hold<S: Store>(case: &str, store: &S, id: &crate::RecordId, what: &str) -> crate::Record {
    record(case, store, id).await.unwrap_or_else(|| panic!("conformance case `{case}`: no record ({what})"))
}

const TOMBSTONE: Duration = Duration::from_secs(3600);

fn tombstone_policy() -> Policy {
    policy().with_tombstone(TOMBSTONE).expect("a 1 h tombstone is valid")
}

async fn claim_with<S: Store>(
    case: &str,
    store: &S,
    id: &crate::RecordId,
    amount: u32,
    now: crate::Timestamp,
) -> Decision {
    ok(case, store.claim(id, &fingerprint(amount), now, &tombstone_policy()).await)
}

async fn tombstone_answers_gone_and_never_executes<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: after retention a completed record answers Gone (never executes), before and
    // after a purge shrinks it to a tombstone; a different request is a mismatch; the old
    // fence stays refused; once the tombstone ends the key executes again, newer fence.
    let case = CASES[0];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let Decision::Execute(claim) = claim_with(case, &store, &alice, 100, at(0)).await else {
        panic!("conformance case `{case}`: a new key must execute")
    };
    let completed = ok(case, store.complete(&alice, claim.fence, response("pay_1"), at(1), &tombstone_policy()).await);
    assert_eq!(completed, Fenced::Applied, "conformance case `{case}`");
    let replay = claim_with(case, &store, &alice, 100, at(3600)).await;
    assert_eq!(
        replay,
        Decision::Replay { response: response("pay_1"), expires_at: at(3601) },
        "conformance case `{case}`"
    );
    let gone = Decision::Gone { expires_at: at(7201) };
    assert_eq!(
        claim_with(case, &store, &alice, 100, at(3601)).await,
        gone,
        "conformance case `{case}`: before a purge"
    );
    assert_eq!(ok(case, store.purge_expired(at(3601), 10).await), 1, "conformance case `{case}`: the purge shrinks it");
    let held = must_hold(case, &store, &alice, "the tombstone is held").await;
    assert_eq!((held.state, held.expires_at), (RecordState::Tombstone, at(7201)), "conformance case `{case}`");
    assert_eq!(held.fingerprint, fingerprint(100), "conformance case `{case}`: the tombstone keeps the fingerprint");
    assert_eq!(claim_with(case, &store, &alice, 100, at(5000)).await, gone, "conformance case `{case}`: after a purge");
    let mismatch = Decision::Mismatch { expires_at: at(7201) };
    assert_eq!(claim_with(case, &store, &alice, 700, at(5000)).await, mismatch, "conformance case `{case}`");
    // A repeated completion by the fence that completed it is answered as before (the first
    // completion stands, G2) and leaves the tombstone as it is.
    let late = store.complete(&alice, claim.fence, response("again"), at(5001), &tombstone_policy()).await;
    assert_eq!(ok(case, late), Fenced::Applied, "conformance case `{case}`");
    let after = must_hold(case, &store, &alice, "the tombstone is held").await;
    assert_eq!(after.state, RecordState::Tombstone, "conformance case `{case}`: a tombstone takes no completion");
    let other = crate::Fence::new(claim.fence.get() + 100);
    let refused = Fenced::Refused(Refusal::AlreadyCompleted { completed_by: claim.fence });
    let stale = store.complete(&alice, other, response("again"), at(5001), &tombstone_policy()).await;
    assert_eq!(ok(case, stale), refused, "conformance case `{case}`");
    assert_eq!(ok(case, store.purge_expired(at(7200), 10).await), 0, "conformance case `{case}`: not due yet");
    let Decision::Execute(again) = claim_with(case, &store, &alice, 100, at(7201)).await else {
        panic!("conformance case `{case}`: once the tombstone ends the key executes again")
    };
    assert!(again.fence > claim.fence, "conformance case `{case}`: under a newer fence");
}

async fn tombstones_count_toward_the_limits<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: a tombstone holds its place in the store's bounds until it is purged in turn.
    let case = CASES[1];
    let store = harness.open(Limits { records_max: 1, stored_bytes_max: 1 << 20 }).await;
    let (k1, k2) = (id("alice", "k1"), id("alice", "k2"));
    let Decision::Execute(claim) = claim_with(case, &store, &k1, 100, at(0)).await else {
        panic!("conformance case `{case}`: a new key must execute")
    };
    let _ = ok(case, store.complete(&k1, claim.fence, response("pay_1"), at(0), &tombstone_policy()).await);
    assert_eq!(ok(case, store.purge_expired(at(3600), 10).await), 1, "conformance case `{case}`: shrunk");
    let full = store.claim(&k2, &fingerprint(100), at(3601), &tombstone_policy()).await;
    assert!(matches!(full, Err(crate::StoreError::Full { .. })), "conformance case `{case}`: got {full:?}");
    assert_eq!(ok(case, store.purge_expired(at(7200), 10).await), 1, "conformance case `{case}`: forgotten");
    assert!(record(case, &store, &k1).await.is_none(), "conformance case `{case}`");
    assert!(matches!(claim_with(case, &store, &k2, 100, at(7200)).await, Decision::Execute(_)));
}

async fn forget_moves_the_fence_on<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: forget removes a record in any state and moves the fence counter on: the
    // forgotten claim's completion, renewal and release are refused (G3), and the next
    // claim executes under a fence newer than one issued after the forgotten one.
    let case = CASES[2];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let forgotten = executes(case, &store, &alice, 100, at(0)).await;
    let removed = ok(case, store.forget(&alice).await)
        .unwrap_or_else(|| panic!("conformance case `{case}`: forget removed nothing"));
    assert_eq!(removed.fence, forgotten, "conformance case `{case}`: forget answers the removed record");
    assert_eq!(ok(case, store.forget(&alice).await), None, "conformance case `{case}`: a second forget finds nothing");
    let refused = Fenced::Refused(Refusal::NoRecord);
    assert_eq!(complete(case, &store, &alice, forgotten, "late", at(1)).await, refused, "conformance case `{case}`");
    assert_eq!(
        ok(case, store.renew(&alice, forgotten, at(1), &policy()).await),
        Renewal::Refused(Refusal::NoRecord),
        "conformance case `{case}`"
    );
    let next = executes(case, &store, &alice, 100, at(2)).await;
    assert!(next.get() >= forgotten.get() + 2, "conformance case `{case}`: the forget moved the counter ({next:?})");
    let stale = Fenced::Refused(Refusal::StaleFence { presented: forgotten, current: next });
    assert_eq!(complete(case, &store, &alice, forgotten, "late", at(3)).await, stale, "conformance case `{case}`");
    assert_eq!(complete(case, &store, &alice, next, "pay_2", at(3)).await, Fenced::Applied);
    assert!(ok(case, store.forget(&alice).await).is_some(), "conformance case `{case}`: a completed record too");
    assert!(matches!(claim(case, &store, &alice, 100, at(4)).await, Decision::Execute(_)));
}

async fn list_pages_in_order_with_filters<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: a listing walks (principal, key) order page by page with `starting_after`,
    // and each filter (caller, state, age) admits exactly what `ListQuery::admits` says.
    let case = CASES[3];
    let store = harness.open(Limits::default()).await;
    let ids = [id("alice", "k1"), id("alice", "k2"), id("alice", "k3"), id("bob", "k1"), id("bob", "k0")];
    for (n, id) in ids.iter().enumerate() {
        let fence = executes(case, &store, id, 100, at(n as u64)).await;
        if n % 2 == 0 {
            let _ = complete(case, &store, id, fence, "done", at(n as u64)).await;
        }
    }
    let mut walked = Vec::new();
    let mut query = ListQuery::new(2).expect("a valid limit");
    for pages in 1.. {
        assert!(pages <= 3, "conformance case `{case}`: five records take three pages of two");
        let page = ok(case, store.list(&query).await);
        assert!(page.records.len() <= 2, "conformance case `{case}`");
        walked.extend(page.records.iter().map(|(id, _)| id.clone()));
        if !page.has_more {
            break;
        }
        query.starting_after = page.records.last().map(|(id, _)| id.clone());
    }
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(walked, expected, "conformance case `{case}`: every record once, in order");
    let all = ListQuery::new(100).expect("a valid limit");
    let store = &store;
    let only = |query: ListQuery| async move { ok(case, store_list(store, &query).await) };
    let with = |change: fn(&mut ListQuery)| {
        let mut query = all.clone();
        change(&mut query);
        query
    };
    let bob = only(with(|query| query.principal = Some(id("bob", "x").principal))).await;
    assert_eq!(bob, vec![id("bob", "k0"), id("bob", "k1")], "conformance case `{case}`: by caller");
    let in_flight = only(with(|query| query.state = Some(StateFilter::InFlight))).await;
    assert_eq!(in_flight, vec![id("alice", "k2"), id("bob", "k1")], "conformance case `{case}`: by state");
    let old = only(with(|query| query.created_before = Some(at(2)))).await;
    assert_eq!(old, vec![id("alice", "k1"), id("alice", "k2")], "conformance case `{case}`: older than");
    let young = only(with(|query| query.created_after = Some(at(3)))).await;
    assert_eq!(young, vec![id("bob", "k0"), id("bob", "k1")], "conformance case `{case}`: younger than");
}

async fn store_list<S: KeyAdmin>(store: &S, query: &ListQuery) -> Result<Vec<crate::RecordId>, crate::StoreError> {
    let page = store.list(query).await?;
    assert!(!page.has_more, "a limit of 100 holds every record of the case");
    Ok(page.records.into_iter().map(|(id, _)| id).collect())
}

async fn claims_keep_their_holder_and_count_renewals<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: the claim keeps its holder's request id and trace id, a duplicate's conflict
    // names them, each renewal that extends the lease is counted, and a take-over's
    // record belongs to its own holder.
    let case = CASES[4];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let holder = Holder::new(Some("req-1"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    let request = ClaimRequest { holder: holder.clone(), ..ClaimRequest::new(fingerprint(100)) };
    let Decision::Execute(claim) = ok(case, store.claim(&alice, &request, at(0), &policy()).await) else {
        panic!("conformance case `{case}`: a new key must execute")
    };
    let conflict =
        Decision::Conflict { retry_after: Duration::from_secs(10), expires_at: at(3600), holder: holder.clone() };
    assert_eq!(super::steps::claim(case, &store, &alice, 100, at(0)).await, conflict, "conformance case `{case}`");
    for now in [at(3), at(6)] {
        assert!(matches!(ok(case, store.renew(&alice, claim.fence, now, &policy()).await), Renewal::Renewed { .. }));
    }
    let held = must_hold(case, &store, &alice, "held").await;
    let in_flight = RecordState::InFlight { lease_expires_at: at(16), holder, renewals: 2 };
    assert_eq!(held.state, in_flight, "conformance case `{case}`");
    let other = ClaimRequest { holder: Holder::new(Some("req-2"), None), ..ClaimRequest::new(fingerprint(100)) };
    let Decision::TakeOver { .. } = ok(case, store.claim(&alice, &other, at(16), &policy()).await) else {
        panic!("conformance case `{case}`: the lapsed claim is taken over")
    };
    let held = must_hold(case, &store, &alice, "held").await;
    let taken =
        RecordState::InFlight { lease_expires_at: at(26), holder: Holder::new(Some("req-2"), None), renewals: 0 };
    assert_eq!((held.state, held.created_at), (taken, at(16)), "conformance case `{case}`: the take-over's own");
}

async fn replays_are_counted<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: count_replay counts replays of a completed record within its retention, and
    // nothing else (in flight, absent, past retention); the response stays as it was.
    let case = CASES[5];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    assert!(!ok(case, store.count_replay(&alice, at(0)).await), "conformance case `{case}`: in flight");
    assert!(!ok(case, store.count_replay(&id("alice", "none"), at(0)).await), "conformance case `{case}`: absent");
    let _ = complete(case, &store, &alice, fence, "pay_1", at(1)).await;
    for now in [at(2), at(3)] {
        assert!(ok(case, store.count_replay(&alice, now).await), "conformance case `{case}`");
    }
    assert!(!ok(case, store.count_replay(&alice, at(3601)).await), "conformance case `{case}`: past retention");
    let held = must_hold(case, &store, &alice, "held").await;
    let counted = RecordState::Completed { response: response("pay_1"), replays: 2, tombstone_until: None };
    assert_eq!(held.state, counted, "conformance case `{case}`");
}

async fn fingerprint_versions_compare_correctly<H: Harness>(harness: &H)
where
    H::Store: KeyAdmin,
{
    // Goal: a semantic fingerprint is kept with its version; a record written with the byte
    // fingerprint replays for a request that names it as its earlier fingerprint (the
    // upgrade path), and never for one that does not.
    let case = CASES[6];
    let store = harness.open(Limits::default()).await;
    let (old, new) = (id("alice", "before-upgrade"), id("alice", "after-upgrade"));
    let bytes = fingerprint(100);
    let parts =
        SemanticParts { method: "POST", path: "/payments", query: &[], headers: &[], body: b"{\"amount\":100}" };
    let semantic = Fingerprint::semantic(&parts);
    let upgraded = ClaimRequest { earlier: Some(bytes), ..ClaimRequest::new(semantic) };
    let fence = executes(case, &store, &old, 100, at(0)).await;
    let _ = complete(case, &store, &old, fence, "old", at(1)).await;
    let replay = ok(case, store.claim(&old, &upgraded, at(2), &policy()).await);
    assert_eq!(replay.replayed(), Some(&response("old")), "conformance case `{case}`: the upgrade path replays");
    let Decision::Execute(claim) = ok(case, store.claim(&new, &upgraded, at(2), &policy()).await) else {
        panic!("conformance case `{case}`: a new key must execute")
    };
    let held = must_hold(case, &store, &new, "held").await;
    assert_eq!(held.fingerprint, semantic, "conformance case `{case}`: kept with its version");
    let _ = complete(case, &store, &new, claim.fence, "new", at(3)).await;
    let bytes_only = ok(case, store.claim(&new, &bytes, at(4), &policy()).await);
    assert!(matches!(bytes_only, Decision::Mismatch { .. }), "conformance case `{case}`: got {bytes_only:?}");
    let replay = ok(case, store.claim(&new, &upgraded, at(4), &policy()).await);
    assert_eq!(replay.replayed(), Some(&response("new")), "conformance case `{case}`");
}
