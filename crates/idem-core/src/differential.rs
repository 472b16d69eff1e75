//! The differential check every store runs next to the conformance suite (feature
//! `testing`): random sequences of claims, completions, releases, renewals, reads, purges
//! and clock steps, applied to the store under test and to [`MemoryStore`], must give the
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
    Bytes, Decision, Fence, Fenced, Fingerprint, Key, Limits, MemoryStore, Policy, Principal, Record, RecordId,
    Renewal, Store, StoreError, StoredResponse, Timestamp,
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
    /// Claim with one of two fingerprints.
    Claim {
        /// Index of the record id.
        id: usize,
        /// Index of the fingerprint.
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
    /// Move the clock forward by `ms` milliseconds.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
}

/// One operation. Fences 1..=10 cover current, stale, future and (after releases) absent
/// claims; clock steps of 0.4, 1 and 4 s cross the 1 s lease and the 3 s retention.
pub fn op() -> impl Strategy<Value = Op> {
    let id = 0..6usize;
    prop_oneof![
        4 => (id.clone(), 0..2usize).prop_map(|(id, fingerprint)| Op::Claim { id, fingerprint }),
        3 => (id.clone(), 1..=10u64, 0..300usize).prop_map(|(id, fence, body_bytes)| Op::Complete { id, fence, body_bytes }),
        2 => (id.clone(), 1..=10u64).prop_map(|(id, fence)| Op::Release { id, fence }),
        2 => (id.clone(), 1..=10u64).prop_map(|(id, fence)| Op::Renew { id, fence }),
        1 => id.prop_map(|id| Op::Get { id }),
        1 => prop_oneof![Just(1usize), Just(2), Just(PURGE_ALL)].prop_map(|batch_max| Op::Purge { batch_max }),
        2 => prop_oneof![Just(0u64), Just(400), Just(1_000), Just(4_000)].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A sequence of 1 to 39 operations.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// The policy every run uses: a 1 s lease and a 3 s retention.
#[must_use]
pub fn policy() -> Policy {
    Policy::new(Duration::from_millis(1_000), Duration::from_millis(3_000)).expect("lease < retention")
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
    /// How many records a purge forgot.
    Purged(usize),
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
pub async fn run<S: Store>(store: &S, ops: &[Op]) -> Vec<Answer> {
    let ids = ids();
    let policy = policy();
    let fingerprints = [b"a", b"b"].map(|body| Fingerprint::of("POST", "/payments", body));
    let mut now = Timestamp::from_unix_ms(START_MS);
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            Op::Claim { id, fingerprint } => {
                answer(store.claim(&ids[*id], &fingerprints[*fingerprint], now, &policy).await, Answer::Decision)
            }
            Op::Complete { id, fence, body_bytes } => answer(
                store.complete(&ids[*id], Fence::new(*fence), response_of(*body_bytes), now, &policy).await,
                Answer::Fenced,
            ),
            Op::Release { id, fence } => answer(store.release(&ids[*id], Fence::new(*fence)).await, Answer::Fenced),
            Op::Renew { id, fence } => {
                answer(store.renew(&ids[*id], Fence::new(*fence), now, &policy).await, Answer::Renewal)
            }
            Op::Get { id } => answer(store.get(&ids[*id]).await, Answer::Record),
            Op::Purge { batch_max } => answer(store.purge_expired(now, *batch_max).await, Answer::Purged),
            Op::Advance { ms } => {
                now = Timestamp::from_unix_ms(now.unix_ms() + ms);
                Answer::Advanced
            }
        };
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
