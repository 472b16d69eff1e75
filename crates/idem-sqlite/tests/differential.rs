//! SqliteStore against idem-core's MemoryStore: the same random operations give the same
//! outcomes, records, errors and usage.

mod common;

use std::time::Duration;

use common::{at, fingerprint, id};
use idem_core::{
    Bytes, Decision, Fence, Fenced, MemoryLimits, MemoryStore, Policy, Record, RecordId, Store, StoreError,
    StoredResponse, Timestamp,
};
use idem_sqlite::{SqliteOptions, SqliteStore, Usage};
use proptest::prelude::*;

const RECORDS_MAX: usize = 4;
const STORED_BYTES_MAX: usize = 700;
/// Larger than the number of ids, so a purge with it takes every due record.
const PURGE_ALL: usize = 100;

#[derive(Debug, Clone)]
enum Op {
    Claim {
        id: usize,
        fingerprint: usize,
    },
    Complete {
        id: usize,
        fence: u64,
        body_bytes: usize,
    },
    Release {
        id: usize,
        fence: u64,
    },
    Get {
        id: usize,
    },
    /// Purge every due record: which of several records due at the same instant goes first
    /// is not specified by the `Store` trait, so partial batches are tested on their own.
    Purge,
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..6usize;
    // Fences 1..=10 cover current, stale, future and (after releases) absent claims.
    prop_oneof![
        4 => (id.clone(), 0..2usize).prop_map(|(id, fingerprint)| Op::Claim { id, fingerprint }),
        3 => (id.clone(), 1..=10u64, 0..300usize).prop_map(|(id, fence, body_bytes)| Op::Complete { id, fence, body_bytes }),
        2 => (id.clone(), 1..=10u64).prop_map(|(id, fence)| Op::Release { id, fence }),
        1 => id.prop_map(|id| Op::Get { id }),
        1 => Just(Op::Purge),
        2 => prop_oneof![Just(0u64), Just(400), Just(1_000), Just(4_000)].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn ids() -> Vec<RecordId> {
    ["alice", ""].iter().flat_map(|principal| ["k1", "k2", "k3"].map(|key| id(principal, key))).collect()
}

/// What one operation answered, comparable across stores.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Decision(Decision),
    Fenced(Fenced),
    Record(Option<Record>),
    Purged(usize),
    Full(String),
    Advanced,
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

async fn run<S: Store>(store: &S, ops: &[Op], policy: &Policy) -> Vec<Answer> {
    let ids = ids();
    let fingerprints = [fingerprint("a"), fingerprint("b")];
    let mut now: Timestamp = at(0);
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            Op::Claim { id, fingerprint } => {
                answer(store.claim(&ids[*id], &fingerprints[*fingerprint], now, policy).await, Answer::Decision)
            }
            Op::Complete { id, fence, body_bytes } => answer(
                store.complete(&ids[*id], Fence::new(*fence), response_of(*body_bytes), now, policy).await,
                Answer::Fenced,
            ),
            Op::Release { id, fence } => answer(store.release(&ids[*id], Fence::new(*fence)).await, Answer::Fenced),
            Op::Get { id } => answer(store.get(&ids[*id]).await, Answer::Record),
            Op::Purge => answer(store.purge_expired(now, PURGE_ALL).await, Answer::Purged),
            Op::Advance { ms } => {
                now = Timestamp::from_unix_ms(now.unix_ms() + ms);
                Answer::Advanced
            }
        };
        answers.push(result);
    }
    answers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_answers_like_memory_store(ops in proptest::collection::vec(op(), 1..40)) {
        // Goal: for any sequence of claims, completions, releases, reads, purges and clock
        // steps, SqliteStore answers exactly as the reference MemoryStore does (decisions,
        // fences, refusals, stored records, Full errors) and counts the same usage.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
        let policy = Policy::new(Duration::from_millis(1_000), Duration::from_millis(3_000)).expect("lease < retention");
        let memory = MemoryStore::new(MemoryLimits { records_max: RECORDS_MAX, stored_bytes_max: STORED_BYTES_MAX });
        let (expected, actual, usage) = runtime.block_on(async {
            let dir = common::temp_dir(true);
            let options = SqliteOptions::new(dir.path().join("idem.db"))
                .records_max(RECORDS_MAX as u64)
                .stored_bytes_max(STORED_BYTES_MAX as u64)
                .connections_max(1);
            let sqlite = SqliteStore::open(options).await.expect("a fresh file opens");
            let expected = run(&memory, &ops, &policy).await;
            let actual = run(&sqlite, &ops, &policy).await;
            let usage = sqlite.usage().await.expect("usage is readable");
            sqlite.close().await;
            (expected, actual, usage)
        });
        for (index, (expected, actual)) in expected.iter().zip(&actual).enumerate() {
            prop_assert_eq!(expected, actual, "operation {} ({:?})", index, ops[index]);
        }
        prop_assert_eq!(usage, Usage { records: memory.len() as u64, stored_bytes: memory.stored_bytes() as u64 });
    }
}
