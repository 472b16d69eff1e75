//! RedisStore against idem-core's MemoryStore (`idem_core::differential`): the same random
//! operations give the same outcomes, records, errors, usage and fence counter. MemoryStore
//! is I/O around `idem_core::step`; RedisStore runs `src/store.lua`, a copy of `step`'s rules
//! in Lua, so this is what pins the script to the core (src/planted.rs shows it catches a
//! rule planted wrong in the script).

mod common;

use common::Cleanup;
use idem_core::Fence;
use idem_core::differential::{self, LIMITS};
use idem_redis::{FenceSeed, RedisStore};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn redis_store_answers_like_memory_store(ops in differential::ops()) {
        // Goal: for any sequence of claims, completions, releases, renewals, reads, purges and
        // clock steps, RedisStore answers exactly as the reference MemoryStore does (decisions,
        // fences, refusals, renewals, stored records, Full errors), and ends with the same
        // usage and fence counter. (Every record written here has at least a second of Redis
        // expiry left, far more than a case takes, so Redis forgets nothing by itself.)
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
        let memory = differential::reference();
        let cleanup = Cleanup::default();
        let (expected, actual, usage, next_fence) = runtime.block_on(async {
            let options = common::options()
                .records_max(LIMITS.records_max)
                .stored_bytes_max(LIMITS.stored_bytes_max)
                .fence_seed(FenceSeed::First);
            cleanup.track(&options);
            let redis: RedisStore = common::open(options).await;
            let expected = differential::run(&memory, &ops).await;
            let actual = differential::run(&redis, &ops).await;
            let usage = redis.usage().await.expect("usage is readable");
            let next_fence = redis.next_fence().await.expect("the counter is readable");
            (expected, actual, usage, next_fence)
        });
        drop(cleanup);
        differential::assert_same(&ops, &expected, &actual)?;
        let reference = memory.snapshot().counters();
        prop_assert_eq!(usage, reference.usage);
        // A run without any claim never created the counter; memory's is then at its start.
        prop_assert_eq!(next_fence.unwrap_or(Fence::FIRST), reference.next_fence);
    }
}
