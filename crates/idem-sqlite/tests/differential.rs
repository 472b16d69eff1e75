//! SqliteStore against idem-core's MemoryStore (`idem_core::differential`): the same random
//! operations give the same outcomes, records, errors, usage and fence counter. Both are
//! I/O around `idem_core::step`, so this pins what the SQL around it reads and writes.

mod common;

use idem_core::differential::{self, LIMITS};
use idem_sqlite::{SqliteOptions, SqliteStore, Usage};
use proptest::prelude::*;

/// What the SQLite file holds besides the records: the counters, and the rows' own sums.
#[derive(Debug, PartialEq, Eq)]
struct Totals {
    next_fence: u64,
    usage: Usage,
    /// Rows in idem_records and the sum of their stored_bytes column.
    rows: Usage,
}

async fn totals(store: &SqliteStore) -> Totals {
    let next_fence: i64 = sqlx::query_scalar("SELECT next_fence FROM idem_fence")
        .fetch_one(store.pool())
        .await
        .expect("the fence counter is readable");
    let (rows, bytes): (i64, i64) = sqlx::query_as("SELECT count(*), coalesce(sum(stored_bytes), 0) FROM idem_records")
        .fetch_one(store.pool())
        .await
        .expect("the records are readable");
    let count = |value: i64| u64::try_from(value).expect("counts are not negative");
    Totals {
        next_fence: count(next_fence),
        usage: store.usage().await.expect("usage is readable"),
        rows: Usage { records: count(rows), stored_bytes: count(bytes) },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_answers_like_memory_store(ops in differential::ops()) {
        // Goal: for any sequence of claims, completions, releases, renewals, reads, purges and
        // clock steps, SqliteStore answers exactly as the reference MemoryStore does (decisions,
        // fences, refusals, renewals, stored records, Full errors), ends with the same usage
        // and fence counter, and its usage row is the sum of its rows' stored_bytes.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
        let memory = differential::reference();
        let (expected, actual, totals) = runtime.block_on(async {
            let dir = common::temp_dir(true);
            let options = SqliteOptions::new(dir.path().join("idem.db"))
                .records_max(LIMITS.records_max)
                .stored_bytes_max(LIMITS.stored_bytes_max)
                .connections_max(1);
            let sqlite = SqliteStore::open(options).await.expect("a fresh file opens");
            let expected = differential::run(&memory, &ops).await;
            let actual = differential::run(&sqlite, &ops).await;
            let totals = totals(&sqlite).await;
            sqlite.close().await;
            (expected, actual, totals)
        });
        differential::assert_same(&ops, &expected, &actual)?;
        let reference = memory.snapshot().counters();
        prop_assert_eq!(totals, Totals { next_fence: reference.next_fence.get(), usage: reference.usage, rows: reference.usage });
    }
}
