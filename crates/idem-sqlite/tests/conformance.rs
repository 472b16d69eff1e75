//! SqliteStore runs idem-core's conformance suite: every rule every store keeps, on real
//! SQLite files.

mod common;

use std::sync::Mutex;

use idem_core::Limits;
use idem_core::conformance::{self, CASES, Harness};
use idem_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

/// Opens each store in a fresh directory and keeps the directories until the run ends.
#[derive(Default)]
struct Sqlite {
    dirs: Mutex<Vec<TempDir>>,
}

impl Harness for Sqlite {
    type Store = SqliteStore;

    async fn open(&self, limits: Limits) -> SqliteStore {
        let dir = common::temp_dir(true);
        let options = SqliteOptions::new(dir.path().join("idem.db"))
            .records_max(limits.records_max)
            .stored_bytes_max(limits.stored_bytes_max);
        assert_eq!(options.limits(), limits, "the options carry the suite's limits");
        let store = SqliteStore::open(options).await.expect("a fresh file in a temp dir opens");
        self.dirs.lock().expect("no test thread panicked holding the list").push(dir);
        store
    }

    async fn break_backend(&self, store: &SqliteStore) -> bool {
        store.close().await;
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    // Goal: every case of idem-core's suite holds for SqliteStore, none is skipped, and the
    // concurrent-claims case runs through the pool on several worker threads.
    let report = conformance::run(&Sqlite::default()).await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, CASES, "every case ran and held, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_lifecycle_suite() {
    // Goal: every key-lifecycle case of idem-core (tombstones, forget, listing, holder,
    // renewals, replay counts, fingerprint versions) holds for SqliteStore on real files,
    // through its SQL listing and its group-committed forget and counts.
    let report = conformance::lifecycle::run(&Sqlite::default()).await;
    assert!(report.not_applicable.is_empty(), "cases skipped: {:?}", report.not_applicable);
    assert_eq!(report.passed, conformance::lifecycle::CASES, "every case ran and held, in order");
}
