//! RedisStore against idem-core's MemoryStore (`idem_core::differential`): the same random
//! operations give the same outcomes, records, errors, usage and fence counter. MemoryStore
//! is I/O around `idem_core::step`; RedisStore runs `src/store.lua`, a copy of `step`'s rules
//! in Lua, so this is what pins the script to the core (src/planted.rs shows it catches a
//! rule planted wrong in the script).

mod common;

use common::Cleanup;
use idem_core::differential::{self, LIMITS};
use idem_core::{Fence, KeyAdmin, ListQuery, Page, Principal, StateFilter, Timestamp};
use idem_redis::{FenceSeed, RedisStore};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn redis_store_answers_like_memory_store(ops in differential::ops()) {
        // Goal: for any sequence of claims (byte and semantic fingerprints, holders),
        // completions, releases, renewals, reads, purges, forgets, replay counts and clock
        // steps under a policy with tombstones, RedisStore answers exactly as the reference
        // MemoryStore does (decisions, fences, refusals, renewals, stored records, Full
        // errors), and ends with the same usage, fence counter and listings. (Every record
        // written here has at least 200 ms of Redis expiry left, the clock's steps being
        // multiples of 200 ms, more than a case takes, so Redis forgets nothing by itself.)
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
        let memory = differential::reference();
        let cleanup = Cleanup::default();
        let (expected, actual, usage, next_fence, listings) = runtime.block_on(async {
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
            let listings = (listings(&memory).await, listings(&redis).await);
            (expected, actual, usage, next_fence, listings)
        });
        drop(cleanup);
        differential::assert_same(&ops, &expected, &actual)?;
        let reference = memory.snapshot().counters();
        prop_assert_eq!(usage, reference.usage);
        // A run without any claim never created the counter; memory's is then at its start.
        prop_assert_eq!(next_fence.unwrap_or(Fence::FIRST), reference.next_fence);
        // The listing (Redis's lexicographic index against ListQuery::select) agrees for
        // every filter, page by page.
        prop_assert_eq!(listings.0, listings.1);
    }
}

/// Every page of a listing under each filter the query has, two records a page.
async fn listings<S: KeyAdmin>(store: &S) -> Vec<Page> {
    let all = ListQuery::new(2).expect("a valid limit");
    let middle = Timestamp::from_unix_ms(1_700_000_006_000);
    let alice = Principal::new("alice").expect("a valid principal");
    let with = |change: &dyn Fn(&mut ListQuery)| {
        let mut query = all.clone();
        change(&mut query);
        query
    };
    let mut queries = vec![
        all.clone(),
        with(&|query| query.principal = Some(alice.clone())),
        with(&|query| query.principal = Some(Principal::anonymous())),
        with(&|query| query.created_before = Some(middle)),
        with(&|query| query.created_after = Some(middle)),
    ];
    for state in [StateFilter::InFlight, StateFilter::Completed, StateFilter::Tombstone] {
        queries.push(with(&|query| query.state = Some(state)));
    }
    let mut pages = Vec::new();
    for mut query in queries {
        // Six ids at most: four pages of two end every walk.
        for _ in 0..4 {
            let page = store.list(&query).await.expect("the store lists");
            let (last, more) = (page.records.last().map(|(id, _)| id.clone()), page.has_more);
            pages.push(page);
            if !more {
                break;
            }
            query.starting_after = last;
        }
    }
    pages
}
