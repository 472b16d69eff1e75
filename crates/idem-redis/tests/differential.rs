//! RedisStore against idem-core's MemoryStore: the same random operations give the same
//! outcomes, records, errors, usage and fence counter. Both are I/O around
//! `idem_core::step`, so this pins what the Redis commands around it read and write.

mod common;

use std::time::Duration;

use common::{Cleanup, at, fingerprint, id};
use idem_core::{
    Bytes, Decision, Fence, Fenced, Limits, MemoryStore, Policy, Record, RecordId, Renewal, Store, StoreError,
    StoredResponse, Timestamp,
};
use idem_redis::{FenceSeed, RedisStore};
use proptest::prelude::*;

const LIMITS: Limits = Limits { records_max: 4, stored_bytes_max: 700 };
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
    Renew {
        id: usize,
        fence: u64,
    },
    Get {
        id: usize,
    },
    /// Both stores purge earliest first, ties by fence, so partial batches agree too.
    Purge {
        batch_max: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
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

fn ids() -> Vec<RecordId> {
    ["alice", ""].iter().flat_map(|principal| ["k1", "k2", "k3"].map(|key| id(principal, key))).collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Decision(Decision),
    Fenced(Fenced),
    Renewal(Renewal),
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
    let mut now: Timestamp = at(1_700_000_000_000);
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
            Op::Renew { id, fence } => {
                answer(store.renew(&ids[*id], Fence::new(*fence), now, policy).await, Answer::Renewal)
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn redis_store_answers_like_memory_store(ops in proptest::collection::vec(op(), 1..40)) {
        // Goal: for any sequence of claims, completions, releases, renewals, reads, purges and
        // clock steps, RedisStore answers exactly as the reference MemoryStore does (decisions,
        // fences, refusals, renewals, stored records, Full errors), and ends with the same
        // usage and fence counter. (Every record written here has at least a second of Redis
        // expiry left, far more than a case takes, so Redis forgets nothing by itself.)
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
        let policy = Policy::new(Duration::from_millis(1_000), Duration::from_millis(3_000)).expect("lease < retention");
        let memory = MemoryStore::new(LIMITS);
        let cleanup = Cleanup::default();
        let (expected, actual, usage, next_fence) = runtime.block_on(async {
            let options = common::options()
                .records_max(LIMITS.records_max)
                .stored_bytes_max(LIMITS.stored_bytes_max)
                .fence_seed(FenceSeed::First);
            cleanup.track(&options);
            let redis: RedisStore = common::open(options).await;
            let expected = run(&memory, &ops, &policy).await;
            let actual = run(&redis, &ops, &policy).await;
            let usage = redis.usage().await.expect("usage is readable");
            let next_fence = redis.next_fence().await.expect("the counter is readable");
            (expected, actual, usage, next_fence)
        });
        drop(cleanup);
        for (index, (expected, actual)) in expected.iter().zip(&actual).enumerate() {
            prop_assert_eq!(expected, actual, "operation {} ({:?})", index, ops[index]);
        }
        let reference = memory.snapshot().counters();
        prop_assert_eq!(usage, reference.usage);
        // A run without any claim never created the counter; memory's is then at its start.
        prop_assert_eq!(next_fence.unwrap_or(Fence::FIRST), reference.next_fence);
    }
}
