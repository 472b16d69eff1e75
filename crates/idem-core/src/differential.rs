//! The differential check every store runs next to the conformance suite (feature
//! `testing`): random sequences of claims (byte and semantic fingerprints, with and
//! without a holder), completions, releases, renewals, reads, purges, forgets, replay
//! counts and clock steps, under a policy with tombstones, applied to the store under test and to [`MemoryStore`], must give the
//! same answers (decisions, fences, refusals, renewals, records, `Full` errors) and end with
//! the same counters. Both are I/O around [`crate::step()`], so this pins what a store's
//! reads and writes around the step do.
//!
//! ```text
//! proptest! {
//!     #[test]
//!     fn my_store_answers_like_memory_store(ops in differential::ops()) {
//!         let memory = MemoryStore::new(differential::LIMITS);
//!         let mine = /* open a store with differential::LIMITS */;
//!         let expected = block_on(differential::run(&memory, &ops));
//!         let actual = block_on(differential::run(&mine, &ops));
//!         differential::assert_same(&ops, &expected, &actual)?;
//!     }
//! }
//! ```

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::{
    Bytes, ClaimRequest, Decision, Fence, Fenced, Fingerprint, Holder, Key, KeyAdmin, Limits, MemoryStore, Policy,
    Principal, Record, RecordId, Renewal, SemanticParts, StoreError, StoredResponse, Timestamp,
};

/// Small limits, so admission at capacity is reached often.
pub const LIMITS: Limits = Limits { records_max: 4, stored_bytes_max: 700 };
/// Larger than the number of ids, so a purge with it takes every due record.
const PURGE_ALL: usize = 100;
/// Where the clock starts: a real Unix time, so stores that hand time to a server (Redis
/// expiries) see plausible values.
const START_MS: u64 = 1_700_000_000_000;

/// One operation on one of six record ids (two principals, one of them anonymous, times
/// three keys).
#[derive(Debug, Clone)]
pub enum Op {
    /// Claim with one of four requests: byte fingerprints `a` and `b`, `a` with a
    /// holder, and `a`'s semantic fingerprint naming byte `a` as its earlier one.
    Claim {
        /// Index of the record id.
        id: usize,
        /// Index of the request.
        fingerprint: usize,
    },
    /// Complete with a response of `body_bytes` bytes.
    Complete {
        /// Index of the record id.
        id: usize,
        /// The fence presented.
        fence: u64,
        /// The response body's length.
        body_bytes: usize,
    },
    /// Complete with the fence of the latest claim this run's store granted for the id
    /// (fence 1 if none), so the holder's own completion, and its repeat after it applied
    /// (which must change nothing, G2), are common; [`Op::Complete`]'s random fence rarely
    /// meets them once forgets move the fence counter on.
    CompleteLatest {
        /// Index of the record id.
        id: usize,
        /// The response body's length.
        body_bytes: usize,
    },
    /// Release.
    Release {
        /// Index of the record id.
        id: usize,
        /// The fence presented.
        fence: u64,
    },
    /// Renew the lease.
    Renew {
        /// Index of the record id.
        id: usize,
        /// The fence presented.
        fence: u64,
    },
    /// Read the record.
    Get {
        /// Index of the record id.
        id: usize,
    },
    /// Purge up to `batch_max` due records (earliest first, ties by fence, so partial
    /// batches agree too).
    Purge {
        /// The batch bound.
        batch_max: usize,
    },
    /// Forget the record (an operator's forget; moves the fence counter on).
    Forget {
        /// Index of the record id.
        id: usize,
    },
    /// Count a replay.
    CountReplay {
        /// Index of the record id.
        id: usize,
    },
    /// Move the clock forward by `ms` milliseconds.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
}

/// One operation. Fences 1..=10 cover current, stale, future and (after releases) absent
/// claims; clock steps of 0.4, 1 and 4 s cross the 1 s lease and the 3 s retention, and a
/// step of exactly 3 s lands on a record's due time (a purge at that very millisecond).
pub fn op() -> impl Strategy<Value = Op> {
    let id = 0..6usize;
    prop_oneof![
        4 => (id.clone(), 0..4usize).prop_map(|(id, fingerprint)| Op::Claim { id, fingerprint }),
        3 => (id.clone(), 1..=10u64, 0..300usize).prop_map(|(id, fence, body_bytes)| Op::Complete { id, fence, body_bytes }),
        2 => (id.clone(), 0..300usize).prop_map(|(id, body_bytes)| Op::CompleteLatest { id, body_bytes }),
        2 => (id.clone(), 1..=10u64).prop_map(|(id, fence)| Op::Release { id, fence }),
        2 => (id.clone(), 1..=10u64).prop_map(|(id, fence)| Op::Renew { id, fence }),
        1 => id.clone().prop_map(|id| Op::Get { id }),
        1 => id.clone().prop_map(|id| Op::Forget { id }),
        1 => id.clone().prop_map(|id| Op::CountReplay { id }),
        1 => prop_oneof![Just(1usize), Just(2), Just(PURGE_ALL)].prop_map(|batch_max| Op::Purge { batch_max }),
        2 => prop_oneof![Just(0u64), Just(400), Just(1_000), Just(3_000), Just(4_000)].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A sequence of 1 to 39 operations.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// The policy every run uses: a 1 s lease, a 3 s retention and a 2 s tombstone.
#[must_use]
pub fn policy() -> Policy {
    let policy = Policy::new(Duration::from_millis(1_000), Duration::from_millis(3_000)).expect("lease < retention");
    policy.with_tombstone(Duration::from_millis(2_000)).expect("a valid tombstone")
}

/// The four requests of [`Op::Claim`].
fn requests() -> [ClaimRequest; 4] {
    let [a, b] = [b"a", b"b"].map(|body| Fingerprint::of("POST", "/payments", body));
    let parts = SemanticParts { method: "POST", path: "/payments", query: &[], headers: &[], body: b"a" };
    let semantic = ClaimRequest { earlier: Some(a), ..ClaimRequest::new(Fingerprint::semantic(&parts)) };
    let held = ClaimRequest { holder: Holder::new(Some("req-1"), Some("trace-1")), ..ClaimRequest::new(a) };
    [ClaimRequest::new(a), ClaimRequest::new(b), held, semantic]
}

/// What one operation answered, comparable across stores.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A claim's decision.
    Decision(Decision),
    /// A completion's or release's outcome.
    Fenced(Fenced),
    /// A renewal's outcome.
    Renewal(Renewal),
    /// What a read found.
    Record(Option<Record>),
    /// How many records a purge forgot or shrank.
    Purged(usize),
    /// What a forget removed.
    Forgot(Option<Record>),
    /// Whether a replay was counted.
    Counted(bool),
    /// `StoreError::Full`, with what was full.
    Full(String),
    /// The clock moved.
    Advanced,
}

fn ids() -> Vec<RecordId> {
    let principals = [Principal::new("alice").expect("a valid principal"), Principal::anonymous()];
    let keys = ["k1", "k2", "k3"].map(|key| Key::parse(key.as_bytes()).expect("a valid key"));
    principals
        .iter()
        .flat_map(|principal| keys.iter().map(|key| RecordId::new(principal.clone(), key.clone())))
        .collect()
}

fn answer<T>(result: Result<T, StoreError>, wrap: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(value) => wrap(value),
        Err(StoreError::Full { what }) => Answer::Full(what),
        Err(error) => panic!("the stores only refuse for size here, got {error:?}"),
    }
}

fn response_of(body_bytes: usize) -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"text/plain"))],
        body: Bytes::from(vec![b'x'; body_bytes]),
    }
}

/// Applies `ops` to `store` in order, the clock starting at a fixed time, and returns what
/// each answered.
///
/// # Panics
/// If the store fails with anything but `StoreError::Full`: these runs give no other
/// reason to refuse.
pub async fn run<S: KeyAdmin>(store: &S, ops: &[Op]) -> Vec<Answer> {
    let ids = ids();
    let policy = policy();
    let requests = requests();
    let mut now = Timestamp::from_unix_ms(START_MS);
    let mut answers = Vec::with_capacity(ops.len());
    // The latest fence the store granted per id ([`Op::CompleteLatest`]): taken from the
    // store's own answers, so two stores that answered alike so far present the same fence.
    let mut latest = vec![Fence::new(1); ids.len()];
    for op in ops {
        let result = match op {
            Op::Claim { id, fingerprint } => {
                answer(store.claim(&ids[*id], &requests[*fingerprint], now, &policy).await, Answer::Decision)
            }
            Op::Complete { id, fence, body_bytes } => answer(
                store.complete(&ids[*id], Fence::new(*fence), response_of(*body_bytes), now, &policy).await,
                Answer::Fenced,
            ),
            Op::CompleteLatest { id, body_bytes } => answer(
                store.complete(&ids[*id], latest[*id], response_of(*body_bytes), now, &policy).await,
                Answer::Fenced,
            ),
            Op::Release { id, fence } => answer(store.release(&ids[*id], Fence::new(*fence)).await, Answer::Fenced),
            Op::Renew { id, fence } => {
                answer(store.renew(&ids[*id], Fence::new(*fence), now, &policy).await, Answer::Renewal)
            }
            Op::Get { id } => answer(store.get(&ids[*id]).await, Answer::Record),
            Op::Purge { batch_max } => answer(store.purge_expired(now, *batch_max).await, Answer::Purged),
            Op::Forget { id } => answer(store.forget(&ids[*id]).await, Answer::Forgot),
            Op::CountReplay { id } => answer(store.count_replay(&ids[*id], now).await, Answer::Counted),
            Op::Advance { ms } => {
                now = Timestamp::from_unix_ms(now.unix_ms() + ms);
                Answer::Advanced
            }
        };
        if let (Op::Claim { id, .. }, Answer::Decision(Decision::Execute(claim) | Decision::TakeOver { claim, .. })) =
            (op, &result)
        {
            latest[*id] = claim.fence;
        }
        answers.push(result);
    }
    answers
}

/// Fails the case at the first operation whose answers differ, naming it.
///
/// # Errors
/// A proptest failure naming the operation's index and the operation.
pub fn assert_same(ops: &[Op], expected: &[Answer], actual: &[Answer]) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.len(), actual.len());
    for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
        prop_assert_eq!(expected, actual, "operation {} ({:?})", index, ops[index]);
    }
    Ok(())
}

/// The reference store for a run: a `MemoryStore` with [`LIMITS`].
#[must_use]
pub fn reference() -> MemoryStore {
    MemoryStore::new(LIMITS)
}
