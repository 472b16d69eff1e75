//! idem-core's differential check (`idem_core::differential`) on a real PostgreSQL: random
//! sequences of claims, completions, releases, renewals, reads, purges and clock steps give
//! the same answers on [`PostgresStore`] as on `MemoryStore` (tombstones, forgets, replay
//! counts and holders included), and the store ends with the
//! usage totals `MemoryStore` counts, which are also its rows' own sums.
//!
//! Shared by `tests/differential.rs` (the store as shipped) and `src/planted.rs` (the store
//! with one rule of its SQL planted wrong, which needs the crate's test-only SQL swap), so
//! it is included by path in both and names only public items.
//!
//! **Fences are renumbered.** `MemoryStore` issues fences 1, 2, 3, … one per claim that
//! executes or takes over; PostgreSQL draws a claim's fence from a sequence in the claim's
//! read, before the step decides, so a claim that conflicts or replays leaves a gap (crate
//! docs, "Concurrency"), and the sequence is shared by every case on the schema. The check
//! therefore compares fences by rank: [`Renumbered`] maps the n-th fence PostgreSQL issued
//! to `n`, both ways, so answers naming fences (claims, take-overs, refusals, records)
//! compare as `MemoryStore`'s. Only order and identity matter to the protocol (G3: fences
//! grow and are never reused), and the map checks both: a fence PostgreSQL issues that is
//! not past every earlier one, or that it never issued, maps to a number `MemoryStore`
//! never uses, and the case fails on it.

#![allow(dead_code, unreachable_pub)] // included by path in a unit-test module and in a test binary

use std::sync::Mutex;
use std::time::Duration;

use idem_core::differential::{self, LIMITS, Op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, KeyAdmin, ListQuery, Page, Policy, Record, RecordId, Refusal, Renewal,
    Store, StoreError, StoredResponse, Timestamp, Usage,
};
use idem_postgres::{PostgresOptions, PostgresStore, TimeSource};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use sqlx::AssertSqlSafe;

/// A `MemoryStore` fence `n` that PostgreSQL has not issued yet is presented to it as
/// `UNISSUED + n`, past every fence a test schema's sequence reaches.
const UNISSUED: u64 = 1 << 40;
/// A PostgreSQL fence the map cannot name (not issued in this case, or issued out of
/// order) comes back as `UNKNOWN | fence`, a number `MemoryStore` never uses.
const UNKNOWN: u64 = 1 << 50;

/// The fences PostgreSQL issued in one case, in the order it issued them.
#[derive(Debug, Default)]
struct Fences {
    issued: Vec<u64>,
}

impl Fences {
    /// The PostgreSQL fence for `MemoryStore`'s fence `memory`.
    fn store_of(&self, memory: Fence) -> Fence {
        let rank = usize::try_from(memory.get()).unwrap_or(usize::MAX);
        match rank.checked_sub(1).and_then(|index| self.issued.get(index)) {
            Some(&store) => Fence::new(store),
            None => Fence::new(UNISSUED + memory.get()),
        }
    }

    /// `MemoryStore`'s number for the PostgreSQL fence `store`.
    fn memory_of(&self, store: Fence) -> Fence {
        let value = store.get();
        if (UNISSUED..UNKNOWN).contains(&value) {
            return Fence::new(value - UNISSUED);
        }
        match self.issued.binary_search(&value) {
            Ok(index) => Fence::new(u64::try_from(index + 1).expect("few fences per case")),
            Err(_) => Fence::new(UNKNOWN | value),
        }
    }

    /// Notes a fence PostgreSQL just issued and returns its number.
    fn issue(&mut self, store: Fence) -> Fence {
        if self.issued.last().is_some_and(|&last| last >= store.get()) {
            return Fence::new(UNKNOWN | store.get()); // not past every earlier fence (G3)
        }
        self.issued.push(store.get());
        Fence::new(u64::try_from(self.issued.len()).expect("few fences per case"))
    }
}

/// A [`PostgresStore`] whose fences read as `MemoryStore`'s (module docs).
pub struct Renumbered<'a> {
    store: &'a PostgresStore,
    fences: Mutex<Fences>,
}

impl<'a> Renumbered<'a> {
    pub fn new(store: &'a PostgresStore) -> Renumbered<'a> {
        Renumbered { store, fences: Mutex::default() }
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, Fences> {
        self.fences.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn store_of(&self, fence: Fence) -> Fence {
        self.fences().store_of(fence)
    }

    fn refusal(&self, refusal: Refusal) -> Refusal {
        let fences = self.fences();
        match refusal {
            Refusal::NoRecord => Refusal::NoRecord,
            Refusal::StaleFence { presented, current } => {
                Refusal::StaleFence { presented: fences.memory_of(presented), current: fences.memory_of(current) }
            }
            Refusal::AlreadyCompleted { completed_by } => {
                Refusal::AlreadyCompleted { completed_by: fences.memory_of(completed_by) }
            }
        }
    }

    fn record(&self, record: Record) -> Record {
        Record { fence: self.fences().memory_of(record.fence), ..record }
    }

    fn fenced(&self, fenced: Fenced) -> Fenced {
        match fenced {
            Fenced::Applied => Fenced::Applied,
            Fenced::Refused(refusal) => Fenced::Refused(self.refusal(refusal)),
        }
    }
}

impl Store for Renumbered<'_> {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let decision = self.store.claim(id, request, now, policy).await?;
        let mut fences = self.fences();
        Ok(match decision {
            Decision::Execute(mut claim) => {
                claim.fence = fences.issue(claim.fence);
                Decision::Execute(claim)
            }
            Decision::TakeOver { mut claim, stale } => {
                let stale = fences.memory_of(stale);
                claim.fence = fences.issue(claim.fence);
                Decision::TakeOver { claim, stale }
            }
            other => other,
        })
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let fenced = self.store.complete(id, self.store_of(fence), response, now, policy).await?;
        Ok(self.fenced(fenced))
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        let fenced = self.store.release(id, self.store_of(fence)).await?;
        Ok(self.fenced(fenced))
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        Ok(match self.store.renew(id, self.store_of(fence), now, policy).await? {
            Renewal::Refused(refusal) => Renewal::Refused(self.refusal(refusal)),
            renewed => renewed,
        })
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self.store.get(id).await?.map(|record| self.record(record)))
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.store.purge_expired(now, batch_max).await
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.store.count_replay(id, now).await
    }
}

impl KeyAdmin for Renumbered<'_> {
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let page = self.store.list(query).await?;
        let records = page.records.into_iter().map(|(id, record)| (id, self.record(record))).collect();
        Ok(Page { records, ..page })
    }

    /// A forget that removed a record moved `MemoryStore`'s counter on by one fence; in
    /// PostgreSQL it drew that fence from the sequence (the sequence's last value, as
    /// operations run one at a time), which takes its rank here.
    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let Some(removed) = self.store.forget(id).await? else {
            return Ok(None);
        };
        let removed = self.record(removed);
        let statement = format!("SELECT last_value FROM \"{}\".idem_fence_seq", self.store.schema());
        let drawn: i64 = sqlx::query_scalar(AssertSqlSafe(statement))
            .fetch_one(self.store.pool())
            .await
            .map_err(StoreError::unavailable)?;
        let _ = self.fences().issue(Fence::new(u64::try_from(drawn).expect("fences are positive")));
        Ok(Some(removed))
    }
}

/// Opens the store the check runs on, in `schema` (created), with the check's limits and
/// time from the caller (the check moves its clock by arguments).
///
/// # Panics
/// When PostgreSQL cannot be reached: these tests never skip.
pub async fn open(url: &str, schema: &str) -> PostgresStore {
    let options = PostgresOptions::new(url)
        .schema(schema)
        .records_max(LIMITS.records_max)
        .stored_bytes_max(LIMITS.stored_bytes_max)
        .connections_max(2)
        .acquire_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_secs(5))
        .time_source(TimeSource::Caller);
    PostgresStore::open(options).await.unwrap_or_else(|error| {
        panic!(
            "the differential check needs PostgreSQL at {url} (start it with `pg_ctlcluster 15 main start`): {error}"
        )
    })
}

/// Empties the store's tables between cases (the fence sequence keeps growing; fences are
/// renumbered per case).
async fn clear(store: &PostgresStore) {
    let s = store.schema();
    let statement =
        format!("DELETE FROM \"{s}\".idem_records; UPDATE \"{s}\".idem_usage SET records = 0, stored_bytes = 0");
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(store.pool()).await.expect("the test schema can be emptied");
}

/// Rows in `idem_records` and the sum of their `stored_bytes` column.
async fn row_totals(store: &PostgresStore) -> Usage {
    let statement =
        format!("SELECT count(*), coalesce(sum(stored_bytes), 0)::int8 FROM \"{}\".idem_records", store.schema());
    let (rows, bytes): (i64, i64) =
        sqlx::query_as(AssertSqlSafe(statement)).fetch_one(store.pool()).await.expect("the records are readable");
    let count = |value: i64| u64::try_from(value).expect("counts are not negative");
    Usage { records: count(rows), stored_bytes: count(bytes) }
}

/// One case: `ops` on a fresh `MemoryStore` and on `store` (emptied first).
async fn one_case(store: &PostgresStore, ops: &[Op]) -> Result<(), TestCaseError> {
    clear(store).await;
    let memory = differential::reference();
    let expected = differential::run(&memory, ops).await;
    let actual = differential::run(&Renumbered::new(store), ops).await;
    differential::assert_same(ops, &expected, &actual)?;
    let reference = memory.snapshot().counters().usage;
    let usage = store.usage().await.map_err(|error| TestCaseError::fail(format!("usage: {error}")))?;
    proptest::prop_assert_eq!(usage, reference, "the usage shards sum to MemoryStore's totals");
    proptest::prop_assert_eq!(row_totals(store).await, reference, "the rows sum to MemoryStore's totals");
    Ok(())
}

/// Runs `cases` random sequences from `seed` (the same sequences on every run with that
/// seed) on `store`; `Err` names the first sequence (shrunk a little) on which it answered
/// unlike `MemoryStore`.
///
/// # Errors
/// The failing sequence, or why the run aborted.
pub fn check(
    runtime: &tokio::runtime::Runtime,
    store: &PostgresStore,
    seed: [u8; 32],
    cases: u32,
) -> Result<(), TestError<Vec<Op>>> {
    let config = Config { cases, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    runner.run(&differential::ops(), |ops| runtime.block_on(one_case(store, &ops)))
}

/// Drops a test schema and everything in it.
pub async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    let Ok(mut connection) = sqlx::PgConnection::connect(url).await else {
        eprintln!("could not drop the test schema {schema}: PostgreSQL is unreachable");
        return;
    };
    let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    if let Err(error) = sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut connection).await {
        eprintln!("could not drop the test schema {schema}: {error}");
    }
}
