//! PostgresStore runs idem-core's conformance suites: every rule every store keeps, and the
//! key-lifecycle rules of a store with key administration (tombstones, forget, listing,
//! holders, renewal and replay counts, fingerprint versions), on a real PostgreSQL, each
//! case in a fresh schema that is dropped when the run ends.

mod common;

use common::Schemas;
use idem_core::Limits;
use idem_core::conformance::{self, CASES, Harness};
use idem_postgres::{PostgresStore, TimeSource};

/// Opens each store in a fresh schema; the suite moves time by arguments, so the stores
/// take time from the caller.
#[derive(Default)]
struct Postgres {
    schemas: Schemas,
}

impl Harness for Postgres {
    type Store = PostgresStore;

    async fn open(&self, limits: Limits) -> PostgresStore {
        // Cases run one after another: the previous case's pool is done with.
        self.schemas.close_all().await;
        self.schemas
            .open_with(|options| {
                let options = options
                    .records_max(limits.records_max)
                    .stored_bytes_max(limits.stored_bytes_max)
                    .time_source(TimeSource::Caller);
                assert_eq!(options.limits(), limits, "the options carry the suite's limits");
                options
            })
            .await
    }

    async fn break_backend(&self, store: &PostgresStore) -> bool {
        store.close().await;
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    // Goal: every case of idem-core's suite holds for PostgresStore, none is skipped, and the
    // concurrent-claims case runs through a pool of several connections.
    let harness = Postgres::default();
    let report = conformance::run(&harness).await;
    harness.schemas.close_all().await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, CASES, "every case ran and held, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_lifecycle_suite() {
    // Goal: every key-lifecycle case of idem-core's suite holds for PostgresStore's
    // KeyAdmin (the listing's SQL, forget's fence draw, tombstones shrunk by the purge).
    let harness = Postgres::default();
    let report = conformance::lifecycle::run(&harness).await;
    harness.schemas.close_all().await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, conformance::lifecycle::CASES, "every case ran and held, in order");
}
