//! The conformance suite every [`Store`] runs: one call, every rule.
//!
//! A store crate implements [`Harness`] (how to open an empty store with given limits,
//! and how to make its backend fail) and calls [`run`] from one test, the way tower-test
//! and sqlx's test macros serve many backends:
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
//!         false // a memory store has no backend to lose
//!     }
//! }
//!
//! let report = pollster::block_on(conformance::run(&Memory));
//! // Every case held, except the backend failure, which a memory store cannot have.
//! assert_eq!(report.passed.len(), conformance::CASES.len() - 1);
//! assert_eq!(report.not_applicable.len(), 1);
//! ```
//!
//! Each case opens a fresh store and checks one rule; [`CASES`] names them. The last two
//! store message outcomes ([`StoredOutcome`]) through the store's ordinary codec. A failing
//! case panics with its name and what differed. Time is an argument of every store call,
//! so the suite moves time by passing later timestamps; nothing sleeps.

pub mod lifecycle;

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;

use crate::consume::{self, Handle, Redelivery, Settle};
use crate::outcome::{ContentType, StoredOutcome};
use crate::{
    Decision, Fence, Fenced, Fingerprint, Holder, Key, Limits, Policy, Principal, RecordId, RecordState, Refusal,
    Renewal, Store, StoreError, StoredResponse, Timestamp,
};

/// How the suite gets stores of one backend.
pub trait Harness {
    /// The store under test.
    type Store: Store;

    /// An empty store with these limits (a fresh file, database schema or key prefix).
    fn open(&self, limits: Limits) -> impl Future<Output = Self::Store>;

    /// Makes `store`'s backend fail from now on (close its pool, stop its connection).
    /// Returns `false` if the store has no backend that can fail (an in-memory store);
    /// the failure case then has nothing to check and says so in the report.
    fn break_backend(&self, store: &Self::Store) -> impl Future<Output = bool>;
}

/// What a run checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Cases that ran and held.
    pub passed: Vec<&'static str>,
    /// Cases with nothing to check on this store, and why.
    pub not_applicable: Vec<(&'static str, &'static str)>,
}

/// Every case, in the order [`run`] runs them.
pub const CASES: [&str; 22] = [
    "absent_record_executes",
    "conflict_while_in_flight",
    "lapsed_claim_is_taken_over",
    "replay_after_completion",
    "mismatch_while_in_flight",
    "mismatch_after_completion",
    "expired_record_executes_again",
    "principals_never_share_a_record",
    "stale_fence_is_refused_after_take_over",
    "fence_is_refused_after_release",
    "renewal_extends_the_lease",
    "renewal_by_a_taken_over_holder_is_refused",
    "repeated_completion_with_the_same_fence",
    "completion_under_another_fence_is_refused",
    "fences_are_never_reused",
    "purge_forgets_only_expired_records",
    "full_store_refuses_claims_and_never_evicts",
    "full_store_accepts_a_granted_completion",
    "concurrent_claims_execute_once",
    "failing_backend_never_executes",
    "outcomes_are_stored_byte_for_byte",
    "a_completed_outcome_replays_equal",
];

/// How many concurrent claims [`CASES`]' `concurrent_claims_execute_once` makes.
pub const CONCURRENT_CLAIMS: usize = 64;

/// Runs every case against fresh stores from `harness`.
///
/// # Panics
/// On the first case that does not hold, naming it.
pub async fn run<H: Harness>(harness: &H) -> Report {
    let mut report = Report::default();
    let mut passed = |name| report.passed.push(name);
    absent_record_executes(harness).await;
    passed(CASES[0]);
    conflict_while_in_flight(harness).await;
    passed(CASES[1]);
    lapsed_claim_is_taken_over(harness).await;
    passed(CASES[2]);
    replay_after_completion(harness).await;
    passed(CASES[3]);
    mismatch_while_in_flight(harness).await;
    passed(CASES[4]);
    mismatch_after_completion(harness).await;
    passed(CASES[5]);
    expired_record_executes_again(harness).await;
    passed(CASES[6]);
    principals_never_share_a_record(harness).await;
    passed(CASES[7]);
    stale_fence_is_refused_after_take_over(harness).await;
    passed(CASES[8]);
    fence_is_refused_after_release(harness).await;
    passed(CASES[9]);
    renewal_extends_the_lease(harness).await;
    passed(CASES[10]);
    renewal_by_a_taken_over_holder_is_refused(harness).await;
    passed(CASES[11]);
    repeated_completion_with_the_same_fence(harness).await;
    passed(CASES[12]);
    completion_under_another_fence_is_refused(harness).await;
    passed(CASES[13]);
    fences_are_never_reused(harness).await;
    passed(CASES[14]);
    purge_forgets_only_expired_records(harness).await;
    passed(CASES[15]);
    full_store_refuses_claims_and_never_evicts(harness).await;
    passed(CASES[16]);
    full_store_accepts_a_granted_completion(harness).await;
    passed(CASES[17]);
    concurrent_claims_execute_once(harness).await;
    passed(CASES[18]);
    if failing_backend_never_executes(harness).await {
        passed(CASES[19]);
    } else {
        report.not_applicable.push((CASES[19], "the store has no backend that can fail"));
    }
    outcomes_are_stored_byte_for_byte(harness).await;
    report.passed.push(CASES[20]);
    a_completed_outcome_replays_equal(harness).await;
    report.passed.push(CASES[21]);
    report
}

const LEASE: Duration = Duration::from_secs(10);
const RETENTION: Duration = Duration::from_secs(3600);

fn policy() -> Policy {
    Policy::new(LEASE, RETENTION).expect("a 10 s lease and 1 h retention are valid")
}

fn id(principal: &str, key: &str) -> RecordId {
    let principal = Principal::new(principal).expect("suite principals are valid");
    RecordId::new(principal, Key::parse(key.as_bytes()).expect("suite keys are valid"))
}

fn fingerprint(amount: u32) -> Fingerprint {
    Fingerprint::of("POST", "/payments", format!("{{\"amount\":{amount}}}").as_bytes())
}

/// `seconds` after a fixed start (not the epoch, so nothing hides behind zero).
fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_ms(1_700_000_000_000 + seconds * 1000)
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), "application/json".into()), ("x-trace".to_owned(), "t1".into())],
        body: body.as_bytes().to_vec().into(),
    }
}

fn ok<T>(case: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|error| panic!("conformance case `{case}`: the store failed: {error}"))
}

async fn claim<S: Store>(case: &str, store: &S, id: &RecordId, amount: u32, now: Timestamp) -> Decision {
    ok(case, store.claim(id, &fingerprint(amount), now, &policy()).await)
}

async fn executes<S: Store>(case: &str, store: &S, id: &RecordId, amount: u32, now: Timestamp) -> Fence {
    match claim(case, store, id, amount, now).await {
        Decision::Execute(claim) => claim.fence,
        other => panic!("conformance case `{case}`: expected Execute, got {other:?}"),
    }
}

async fn complete<S: Store>(case: &str, store: &S, id: &RecordId, fence: Fence, body: &str, now: Timestamp) -> Fenced {
    ok(case, store.complete(id, fence, response(body), now, &policy()).await)
}

async fn renew<S: Store>(case: &str, store: &S, id: &RecordId, fence: Fence, now: Timestamp) -> Renewal {
    ok(case, store.renew(id, fence, now, &policy()).await)
}

async fn record<S: Store>(case: &str, store: &S, id: &RecordId) -> Option<crate::Record> {
    ok(case, store.get(id).await)
}

async fn absent_record_executes<H: Harness>(harness: &H) {
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

async fn conflict_while_in_flight<H: Harness>(harness: &H) {
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

async fn lapsed_claim_is_taken_over<H: Harness>(harness: &H) {
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

async fn replay_after_completion<H: Harness>(harness: &H) {
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

async fn mismatch_while_in_flight<H: Harness>(harness: &H) {
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

async fn mismatch_after_completion<H: Harness>(harness: &H) {
    // Goal: row 5 (completed): a different fingerprint answers Mismatch, not the recorded response (G5).
    let case = CASES[5];
    let store = harness.open(Limits::default()).await;
    let alice = id("alice", "k1");
    let fence = executes(case, &store, &alice, 100, at(0)).await;
    let _ = complete(case, &store, &alice, fence, "pay_1", at(1)).await;
    let mismatch = Decision::Mismatch { expires_at: at(3601) };
    assert_eq!(claim(case, &store, &alice, 700, at(2)).await, mismatch, "conformance case `{case}`");
}

async fn expired_record_executes_again<H: Harness>(harness: &H) {
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

async fn principals_never_share_a_record<H: Harness>(harness: &H) {
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

async fn stale_fence_is_refused_after_take_over<H: Harness>(harness: &H) {
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

async fn fence_is_refused_after_release<H: Harness>(harness: &H) {
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

async fn renewal_extends_the_lease<H: Harness>(harness: &H) {
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

async fn renewal_by_a_taken_over_holder_is_refused<H: Harness>(harness: &H) {
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

async fn repeated_completion_with_the_same_fence<H: Harness>(harness: &H) {
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

async fn completion_under_another_fence_is_refused<H: Harness>(harness: &H) {
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

async fn fences_are_never_reused<H: Harness>(harness: &H) {
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

async fn purge_forgets_only_expired_records<H: Harness>(harness: &H) {
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

async fn full_store_refuses_claims_and_never_evicts<H: Harness>(harness: &H) {
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

async fn full_store_accepts_a_granted_completion<H: Harness>(harness: &H) {
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

async fn concurrent_claims_execute_once<H: Harness>(harness: &H) {
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

async fn failing_backend_never_executes<H: Harness>(harness: &H) -> bool {
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

/// Bytes of the largest outcome the outcome cases store: 1 MiB, the default body limit.
pub const OUTCOME_BYTES_MAX: usize = 1 << 20;

fn message_id(key: &str) -> RecordId {
    let principal = Principal::new("nats:orders/billing").expect("suite principals are valid");
    RecordId::new(principal, Key::from_chars(key).expect("suite message ids are valid keys"))
}

/// The outcomes a message handler may record: nothing, every byte value, 1 MiB, and a
/// content type with a parameter and a space.
fn outcomes() -> Vec<StoredOutcome> {
    let every_byte: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..OUTCOME_BYTES_MAX).map(|n| u8::try_from(n % 251).expect("below 251")).collect();
    let text = ContentType::new("text/plain; charset=utf-8").expect("a valid content type");
    vec![
        StoredOutcome::empty(),
        StoredOutcome::bytes(every_byte.repeat(4)),
        StoredOutcome::bytes(large),
        StoredOutcome::new(text, "paid \u{2713}"),
    ]
}

async fn outcomes_are_stored_byte_for_byte<H: Harness>(harness: &H) {
    // Goal: a message's outcome, stored as status 0 with one content-type header, comes back
    // from the store exactly: empty, every byte value, 1 MiB, its content type kept (G2), with
    // no change to the store's codec.
    let case = CASES[20];
    let store = harness.open(Limits::default()).await;
    for (n, outcome) in outcomes().into_iter().enumerate() {
        let id = message_id(&format!("\"msg-{n}\""));
        let fingerprint = Fingerprint::of_message("orders.created", format!("order {n}").as_bytes());
        let Decision::Execute(claim) = ok(case, store.claim(&id, &fingerprint, at(0), &policy()).await) else {
            panic!("conformance case `{case}`: a new message id must execute")
        };
        let stored = StoredResponse::from(outcome.clone());
        let completed = ok(case, store.complete(&id, claim.fence, stored.clone(), at(1), &policy()).await);
        assert_eq!(completed, Fenced::Applied, "conformance case `{case}`");
        let Some(record) = record(case, &store, &id).await else {
            panic!("conformance case `{case}`: the completed record is gone")
        };
        let RecordState::Completed { response, .. } = &record.state else {
            panic!("conformance case `{case}`: the record is not completed: {:?}", record.state)
        };
        assert!(
            *response == stored,
            "conformance case `{case}`: outcome {n} came back changed (status {})",
            response.status
        );
        let back = StoredOutcome::try_from(response.clone());
        assert!(back.as_ref() == Ok(&outcome), "conformance case `{case}`: outcome {n} does not map back");
    }
}

async fn a_completed_outcome_replays_equal<H: Harness>(harness: &H) {
    // Goal: the redelivery of a completed message replays the recorded outcome, equal byte for
    // byte, and the consumer acks it without running; another payload, or an HTTP request,
    // under the same record id is a mismatch (G5), never a replay across transports.
    let case = CASES[21];
    let store = harness.open(Limits::default()).await;
    let id = message_id("msg-1");
    let fingerprint = Fingerprint::of_message("orders.created", b"{\"order\":1}");
    let Decision::Execute(claim) = ok(case, store.claim(&id, &fingerprint, at(0), &policy()).await) else {
        panic!("conformance case `{case}`: a new message id must execute")
    };
    let outcome = StoredOutcome::new(ContentType::new("application/json").expect("valid"), &b"{\"paid\":1}"[..]);
    let completed = store.complete(&id, claim.fence, outcome.clone().into(), at(1), &policy()).await;
    assert_eq!(ok(case, completed), Fenced::Applied, "conformance case `{case}`");
    for now in [at(2), at(50), at(3000)] {
        let decision = ok(case, store.claim(&id, &fingerprint, now, &policy()).await);
        let expected = Handle::Settle(Settle::Ack(outcome.clone()));
        assert_eq!(consume::handle(decision, &Redelivery::DEFAULT), expected, "conformance case `{case}`");
    }
    let other_payload = Fingerprint::of_message("orders.created", b"{\"order\":2}");
    let decision = ok(case, store.claim(&id, &other_payload, at(3), &policy()).await);
    let mismatch = Decision::Mismatch { expires_at: at(3601) };
    assert_eq!(decision, mismatch, "conformance case `{case}`: another payload under the key");
    let request = Fingerprint::of("POST", "orders.created", b"{\"order\":1}");
    let decision = ok(case, store.claim(&id, &request, at(4), &policy()).await);
    assert_eq!(decision, mismatch, "conformance case `{case}`: an HTTP request under the key");
}
