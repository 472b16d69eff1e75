//! RedisStore runs idem-core's conformance suite on the real Redis: every rule every store
//! keeps, and the key-lifecycle suite for its KeyAdmin. Each store the suite opens gets a prefix of its own; all are deleted at the end.

mod common;

use common::Cleanup;
use idem_core::Limits;
use idem_core::conformance::{self, CASES, Harness};
use idem_redis::RedisStore;

#[derive(Default)]
struct Redis {
    cleanup: Cleanup,
}

impl Harness for Redis {
    type Store = RedisStore;

    async fn open(&self, limits: Limits) -> RedisStore {
        let options = common::options().records_max(limits.records_max).stored_bytes_max(limits.stored_bytes_max);
        assert_eq!(options.limits(), limits, "the options carry the suite's limits");
        self.cleanup.track(&options);
        common::open(options).await
    }

    async fn break_backend(&self, store: &RedisStore) -> bool {
        store.close();
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    // Goal: every case of idem-core's suite holds for RedisStore against a real Redis, none
    // is skipped, the concurrent-claims case runs through the connection pool on several
    // worker threads, and no key is left behind.
    let harness = Redis::default();
    let report = conformance::run(&harness).await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, CASES, "every case ran and held, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_lifecycle_suite() {
    // Goal: every key-lifecycle case (tombstones, forget moving the fence on, listing with
    // paging and filters, holders and renewals, replay counts, fingerprint versions) holds
    // for RedisStore, its KeyAdmin included, against a real Redis.
    let harness = Redis::default();
    let report = conformance::lifecycle::run(&harness).await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, conformance::lifecycle::CASES, "every case ran and held, in order");
}
