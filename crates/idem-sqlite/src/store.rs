//! [`SqliteStore`]: idem-core's store step, read and written in SQLite transactions.
//!
//! Every read-decide-write here has the same shape: read the record and the store-wide
//! counters, call [`idem_core::step::step`], write exactly what the [`Step`] names. In the
//! group commit the reading and writing go through the batch's view ([`crate::batch`]);
//! in a caller's own transaction ([`SqliteStore::complete_in`]) [`decide`] and [`write`]
//! do it statement by statement. The store has no rule of its own about the protocol.

use idem_core::step::{self, Counters, Operation, Step, StoreView, op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Limits, Policy, Record, RecordId, Renewal, Store, StoreError,
    StoredResponse, Timestamp, Usage, UsageDelta, Write,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};

use std::sync::Arc;

use idem_core::{AtomicStore, CommitError, WritesFuture};
use tokio_util::sync::CancellationToken;

use crate::batch;
use crate::codec::{self, record_columns};
use crate::error::{OpenError, corrupt, store_error};
use crate::options::{ClaimSync, SqliteOptions};
use crate::replay_cache::ReplayCache;
use crate::writer::{self, Access, GroupCommitStats, Ran, Writer, WriterConfig};

/// The table in which sqlx's migrator notes idem's applied migrations. It is not the
/// migrator's default (`_sqlx_migrations`), so an application that runs its own
/// `sqlx::migrate!` on the same file keeps its own list and neither sees the other's
/// migrations as unknown.
pub const MIGRATIONS_TABLE: &str = "_idem_migrations";

/// The statement every read-decide-write starts with. `IMMEDIATE` takes the write lock
/// first: a deferred transaction that reads and then writes fails with `SQLITE_BUSY` in
/// WAL mode when another writer committed in between, instead of waiting its turn.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A write transaction on a pooled connection, started with `BEGIN IMMEDIATE` by
/// [`SqliteStore::begin_write`]. It commits with `commit()`; dropped, it rolls back.
pub type WriteTransaction = Transaction<'static, Sqlite>;

/// The store-wide counters, named apart from the record's columns, for `concat!`.
macro_rules! counter_columns {
    () => {
        "f.next_fence AS next_fence, u.records AS usage_records, u.stored_bytes AS usage_stored_bytes"
    };
}

/// The two one-row counter tables, joined; `WHERE f.id = 1` completes it.
macro_rules! counter_tables {
    () => {
        "idem_fence AS f JOIN idem_usage AS u ON u.id = 1"
    };
}

/// Everything a step reads for one record id, in one statement: the counters, and the
/// record if one is held (`held` tells a missing record from a row of NULLs).
const READ_VIEW: &str = concat!(
    "SELECT ",
    counter_columns!(),
    ", r.principal IS NOT NULL AS held, ",
    record_columns!(),
    " FROM ",
    counter_tables!(),
    " LEFT JOIN idem_records AS r ON r.principal = ?1 AND r.idem_key = ?2 WHERE f.id = 1"
);

/// The counters alone.
const READ_COUNTERS: &str = concat!("SELECT ", counter_columns!(), " FROM ", counter_tables!(), " WHERE f.id = 1");

/// The durable store: records in a SQLite file, in WAL mode, written by one group-commit
/// writer.
///
/// Cloning is cheap and shares the pool and the writer. See the crate docs for the schema,
/// atomic mode, group commit and what each failure means.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    limits: Limits,
    writer: Arc<Writer>,
    stop_writer: CancellationToken,
    /// How claims, renewals and releases are synced ([`ClaimSync`]).
    claim_sync: writer::Sync,
    /// Completed records this process has seen, for replays that read no row.
    replays: ReplayCache,
}

impl SqliteStore {
    /// Opens (or creates) the store in `options.path()`: switches the file to WAL, runs
    /// idem's migrations, and opens a pool whose connections use `synchronous=FULL` and
    /// the busy timeout.
    ///
    /// # Errors
    /// [`OpenError`], whose message names the file and the reason.
    pub async fn open(options: SqliteOptions) -> Result<SqliteStore, OpenError> {
        let path = options.path.clone();
        if let Some(detail) = options.problem() {
            return Err(OpenError::InvalidOptions { path, detail });
        }
        let connect = SqliteConnectOptions::new()
            .filename(&options.path)
            .create_if_missing(options.create_if_missing)
            .busy_timeout(options.busy_timeout)
            .synchronous(SqliteSynchronous::Full);
        // A named VFS (a crash harness's power-loss layer) applies to every connection.
        let connect = match &options.vfs {
            Some(vfs) => connect.vfs(vfs.clone()),
            None => connect,
        };

        // WAL is a property of the file, and switching to it needs the file to itself, so
        // one connection sets it and migrates before the pool opens; pool connections
        // then find the file in WAL already.
        let mut setup = SqliteConnection::connect_with(&connect.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(|error| OpenError::from_sqlx(path.clone(), error))?;
        let prepared = prepare(&mut setup, &options).await;
        // Closing only flushes a connection that is dropped anyway; its failure changes nothing.
        let _ = setup.close().await;
        prepared?;

        // The group-commit writer's own connection: every write of the store goes through it.
        let write_connection = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|error| OpenError::from_sqlx(path.clone(), error))?;
        let stop_writer = CancellationToken::new();
        let deferred_claims = options.claim_sync == ClaimSync::Deferred;
        let config = WriterConfig {
            deferred_claims,
            enqueue_timeout: options.acquire_timeout,
            job_timeout: options.busy_timeout,
        };
        let writer = Arc::new(
            Writer::start(write_connection, config, stop_writer.clone())
                .await
                .map_err(|error| OpenError::from_sqlx(path.clone(), error))?,
        );
        let claim_sync = if deferred_claims { writer::Sync::Deferred } else { writer::Sync::Full };

        let pool = SqlitePoolOptions::new()
            .max_connections(options.connections_max)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            // A connection that comes back still inside a transaction is in a state nobody
            // knows: SQLite rolls a transaction back by itself on some errors (SQLITE_FULL,
            // SQLITE_IOERR), after which sqlx's own ROLLBACK fails and its transaction count
            // stays above zero, so every later `BEGIN` on that connection would fail. Such a
            // connection is closed, never handed out again; the pool opens a fresh one.
            .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
            .connect_with(connect)
            .await
            .map_err(|error| OpenError::from_sqlx(path, error))?;
        let replays = ReplayCache::new(options.replay_cache_bytes);
        Ok(SqliteStore { pool, limits: options.limits(), writer, stop_writer, claim_sync, replays })
    }

    /// The connection pool, for an application's own migrations and queries on the same
    /// file (its tables must not start with `idem_`).
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the store: the writer finishes the batch it is committing and refuses what is
    /// still queued; the pool waits for connections in use to come back and closes them.
    /// Later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.stop_writer.cancel();
        self.writer.stopped().await;
        self.pool.close().await;
    }

    /// Runs `writes` in the next group commit, without a completion: the application's own
    /// writes (outside a claim, or in separate mode) sharing the store's `fsync`s. They are
    /// committed and synced when this returns `Ok`; on `Err` nothing of them was.
    ///
    /// Like [`AtomicStore::complete_with`], `writes` runs under the write lock: prepare
    /// before, write here. It must not run `BEGIN`, `COMMIT` or `ROLLBACK` itself.
    ///
    /// # Errors
    /// [`CommitError::Writes`] with the driver's error, or [`CommitError::Store`].
    pub async fn write<T, W>(&self, writes: W) -> Result<T, CommitError<sqlx::Error>>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(&'c mut SqliteConnection) -> WritesFuture<'c, sqlx::Error, T> + Send + 'static,
    {
        self.writer
            .submit(writer::Sync::Full, Access::Savepoint, None, move |batch| {
                Box::pin(async move {
                    let answer = writes(&mut batch.connection).await.map_err(CommitError::Writes)?;
                    Ok(Ran { answer, keep: true })
                })
            })
            .await
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`) on a pooled connection, for the
    /// atomic-mode recipe: business writes, then [`SqliteStore::complete_in`], then commit.
    ///
    /// It holds SQLite's single write lock until it commits or rolls back, so start it
    /// when the handler is ready to write, not before slow work.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection comes free within the acquire
    /// timeout or another writer holds the lock past the busy timeout.
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.pool.begin_with(BEGIN_WRITE).await.map_err(store_error)
    }

    /// Completes the claim `fence` inside the caller's transaction (atomic mode): the
    /// fence check and the completion commit or roll back with the caller's business writes.
    ///
    /// On [`Fenced::Applied`], commit; on [`Fenced::Refused`], roll back: the claim is no
    /// longer the caller's, and its business writes must not land (G1). The transaction
    /// must come from [`SqliteStore::begin_write`] (or otherwise hold the write lock), so
    /// that no take-over slips in between this check and the commit.
    ///
    /// This is idem-core's [`op::CompleteInTransaction`]: unlike [`Store::complete`], a
    /// second completion with the fence that already completed the record is refused
    /// (`Refused(AlreadyCompleted)` naming that very fence), because its transaction's
    /// business writes would repeat the first one's.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for driver errors, [`StoreError::Corrupt`] for a row it
    /// cannot read. Either way, roll back.
    pub async fn complete_in(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let operation = op::CompleteInTransaction { fence, response, now, policy: *policy };
        let step = decide(transaction, self.limits, id, operation).await?;
        // The caller commits (or rolls back) with its business writes.
        write(transaction, id, step).await
    }

    /// The replay cache, for the forget in [`crate::admin`].
    pub(crate) fn replay_cache(&self) -> &ReplayCache {
        &self.replays
    }

    /// How the group-commit writer has done so far: commits, jobs in them, jobs queued.
    #[must_use]
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.writer.stats()
    }

    /// What the store holds, as its size limits count it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        Ok(read_counters(&mut connection).await?.usage)
    }

    /// One operation as one job of the next group commit, decided on the batch's view of
    /// the tables and written with the batch (see [`crate::batch`]).
    pub(crate) async fn run<O>(&self, id: &RecordId, operation: O, sync: writer::Sync) -> Result<O::Answer, StoreError>
    where
        O: Operation + Send + 'static,
        O::Answer: Send + 'static,
    {
        // Taken before the batch reads the record, so a forget that commits after that
        // read keeps this record out of the cache (see ReplayCache::remember).
        let epoch = self.replays.epoch();
        let (job_id, limits) = (id.clone(), self.limits);
        let (answer, completed) = self
            .writer
            .submit(sync, Access::View, Some(id.clone()), move |batch| {
                Box::pin(async move {
                    let answer = batch.view.step(&mut batch.connection, limits, &job_id, operation).await?;
                    let completed = batch.view.completed(&job_id).cloned();
                    Ok::<_, StoreError>(Ran { answer: (answer, completed), keep: true })
                })
            })
            .await?;
        // Committed: the record is as the batch left it.
        if let Some(record) = completed {
            self.replays.remember(id, &record, epoch);
        }
        Ok(answer)
    }

    /// Decides first on a snapshot, without the write lock; takes the lock only if the
    /// step must write. A step that writes nothing on a consistent snapshot (one `SELECT`
    /// reads record and counters together) is a valid answer at the instant of that
    /// snapshot: a replay of a completed record (which never changes until it expires), a
    /// conflict, a mismatch. So replays and conflicts take no write transaction, no lock
    /// and no fsync, and never queue behind writers. A claim that must write decides
    /// again on what it reads under the lock.
    async fn run_read_first<O>(&self, id: &RecordId, operation: O, sync: writer::Sync) -> Result<O::Answer, StoreError>
    where
        O: Operation + Clone + Send + 'static,
        O::Answer: Send + 'static,
    {
        {
            let epoch = self.replays.epoch();
            let mut connection = self.pool.acquire().await.map_err(store_error)?;
            let (counters, record) = read_view(&mut connection, id).await?;
            let view = StoreView { record: record.as_ref(), counters, limits: self.limits };
            let step = step::step(id, &view, operation.clone())?;
            if step.writes_nothing() {
                if let Some(record) = &record {
                    self.replays.remember(id, record, epoch);
                }
                return Ok(step.answer);
            }
        }
        self.run(id, operation, sync).await
    }

    async fn get_now(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        batch::read_record(&mut connection, id).await
    }

    /// Purges up to `batch_max` due records in one transaction: candidates come from the
    /// `due_at` index, each goes through [`op::Expire`] (which forgets it, or shrinks a
    /// completed record that leaves a tombstone to that tombstone), and the usage deltas of
    /// the whole batch are written once. A step error (a fence counter not past a due
    /// record's fence) fails the batch as `Corrupt` and keeps the record: forgetting it
    /// would let a new claim reuse its fence. Only a row that cannot be read at all is
    /// forgotten as damage ([`forget_damaged`]).
    async fn purge_now(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        if batch_max == 0 {
            return Ok(0);
        }
        let limits = self.limits;
        // Purges are synced: a purge lost in a crash is harmless (the records come back
        // expired and are purged again), but a synced one keeps the model's assumption.
        self.writer
            .submit(writer::Sync::Full, Access::Tables, None, move |batch| {
                Box::pin(async move {
                    let answer = purge_batch(&mut batch.connection, limits, now, batch_max).await?;
                    Ok(Ran { answer, keep: true })
                })
            })
            .await
    }
}

/// One purge batch on `transaction` (the writer's, inside its group commit).
async fn purge_batch(
    transaction: &mut SqliteConnection,
    limits: Limits,
    now: Timestamp,
    batch_max: usize,
) -> Result<usize, StoreError> {
    {
        let limit = i64::try_from(batch_max).unwrap_or(i64::MAX);
        let counters = read_counters(&mut *transaction).await?;
        let rows = sqlx::query(concat!(
            "SELECT r.principal AS principal, r.idem_key AS idem_key, r.stored_bytes AS stored_bytes, ",
            record_columns!(),
            " FROM idem_records AS r WHERE r.due_at <= ?1",
            " ORDER BY r.due_at, r.fence LIMIT ?2"
        ))
        .bind(codec::time_to_sql(now))
        .bind(limit)
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;
        let mut purged = 0;
        let mut batch = UsageDelta::NONE;
        for row in &rows {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            let read = codec::id_from_sql(&principal, &key)
                .and_then(|id| codec::decode_record(row).map(|record| (id, record)));
            let delta = match read {
                Ok((id, record)) => {
                    // Expiry issues no fence and admits nothing, so every step of the batch
                    // reads the counters as the batch found them.
                    let view = StoreView { record: Some(&record), counters, limits };
                    let step = step::step(&id, &view, op::Expire { now })?;
                    debug_assert!(step.next_fence.is_none(), "expiry issues no fence");
                    // The index and the record agree (decode_record checks the column), so
                    // every candidate is due: forgotten, or shrunk to its tombstone.
                    debug_assert!(step.answer, "the due_at index lists only due records");
                    if !step.answer {
                        continue;
                    }
                    write_record(&mut *transaction, &id, step.write).await?;
                    step.usage
                }
                Err(error) => forget_damaged(&mut *transaction, row, &principal, &key, &error).await?,
            };
            batch = sum(batch, delta)?;
            purged += 1;
        }
        add_usage(&mut *transaction, batch).await?;
        Ok(purged)
    }
}

/// Sets the file up: WAL verified, idem's tables migrated.
async fn prepare(connection: &mut SqliteConnection, options: &SqliteOptions) -> Result<(), OpenError> {
    let path = || options.path.clone();
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *connection)
        .await
        .map_err(|error| OpenError::from_sqlx(path(), error))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal { path: path(), journal_mode });
    }
    migrator().run(&mut *connection).await.map_err(|error| OpenError::from_migrate(path(), error))?;
    if options.claim_sync == ClaimSync::Deferred {
        // A crash may have lost claims committed without a sync, and the fences they were
        // issued with: skip past all of them (this connection commits synced).
        sqlx::query("UPDATE idem_fence SET next_fence = next_fence + ?1, unsynced_fences = 0 WHERE id = 1")
            .bind(writer::FENCE_GAP)
            .execute(&mut *connection)
            .await
            .map_err(|error| OpenError::from_sqlx(path(), error))?;
    }
    Ok(())
}

/// idem's migrations (the crate's `migrations/` folder), noted in [`MIGRATIONS_TABLE`].
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Reads what [`step::step`] needs for `id` on `connection` (inside a write transaction)
/// and decides `operation`: the record, the counters and the store's limits.
async fn decide<O: Operation>(
    connection: &mut SqliteConnection,
    limits: Limits,
    id: &RecordId,
    operation: O,
) -> Result<Step<O::Answer>, StoreError> {
    let (counters, record) = read_view(connection, id).await?;
    Ok(step::step(id, &StoreView { record: record.as_ref(), counters, limits }, operation)?)
}

/// The counters and the record of `id`, in one statement (one snapshot).
async fn read_view(connection: &mut SqliteConnection, id: &RecordId) -> Result<(Counters, Option<Record>), StoreError> {
    let row = sqlx::query(READ_VIEW)
        .bind(id.principal.as_str())
        .bind(id.key.as_str())
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .ok_or_else(missing_counters)?;
    let counters = decode_counters(&row)?;
    let held: bool = row.try_get("held").map_err(store_error)?;
    let record = if held { Some(codec::decode_record(&row)?) } else { None };
    Ok((counters, record))
}

/// Writes what `step` names on `connection` (the caller commits): the record, the fence
/// counter, the usage delta, each only if it changes. Returns the step's answer.
async fn write<A>(connection: &mut SqliteConnection, id: &RecordId, step: Step<A>) -> Result<A, StoreError> {
    let Step { answer, write, next_fence, usage } = step;
    write_record(connection, id, write).await?;
    if let Some(next_fence) = next_fence {
        let next_fence = codec::fence_to_sql(next_fence).map_err(|_| corrupt("the fence counter is exhausted"))?;
        let done = sqlx::query("UPDATE idem_fence SET next_fence = ?1 WHERE id = 1")
            .bind(next_fence)
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
        one_row(&done, "idem_fence")?;
    }
    add_usage(connection, usage).await?;
    Ok(answer)
}

/// Puts or deletes the record row of `id`. A put stores the cost idem-core counts the
/// record at ([`usage::stored_bytes`]) in the row's `stored_bytes` column.
async fn write_record(connection: &mut SqliteConnection, id: &RecordId, write: Write) -> Result<(), StoreError> {
    match write {
        Write::Unchanged => Ok(()),
        Write::Put(record) => batch::put_records(connection, &[(id, &record)]).await,
        Write::Delete => batch::delete_records(connection, &[id]).await,
    }
}

/// Adds `delta` to the usage row, if it changes anything. The row's `CHECK`s refuse a
/// total below zero, which only totals edited by hand can cause: that is `Corrupt`, and
/// the transaction rolls back.
async fn add_usage(connection: &mut SqliteConnection, delta: UsageDelta) -> Result<(), StoreError> {
    if delta.is_none() {
        return Ok(());
    }
    let done =
        sqlx::query("UPDATE idem_usage SET records = records + ?1, stored_bytes = stored_bytes + ?2 WHERE id = 1")
            .bind(delta.records)
            .bind(delta.stored_bytes)
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
    one_row(&done, "idem_usage")
}

/// Damage recovery, not a protocol rule: a row the index calls due that cannot be read
/// back (a hand-edited row, a row from another version) is forgotten anyway. Refusing
/// would leave it first in every later batch, and purging would stall for good (and the
/// store fill up). Forgetting a record is always safe: its fence stops being current, so
/// a late completion is refused (G3); the fence counter is not touched. Its usage is given
/// back as its `stored_bytes` column says (nothing, if that is unreadable too).
async fn forget_damaged(
    connection: &mut SqliteConnection,
    row: &SqliteRow,
    principal: &str,
    key: &str,
    error: &StoreError,
) -> Result<UsageDelta, StoreError> {
    tracing::warn!(principal, key, %error, "expired record cannot be read; purging it");
    sqlx::query("DELETE FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
        .bind(principal)
        .bind(key)
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    let stored_bytes = row.try_get::<i64, _>("stored_bytes").ok().filter(|bytes| *bytes >= 0).unwrap_or(0);
    Ok(UsageDelta { records: -1, stored_bytes: -stored_bytes })
}

/// Two deltas as one; a sum past `i64` is damage (no batch frees that much).
fn sum(a: UsageDelta, b: UsageDelta) -> Result<UsageDelta, StoreError> {
    let records = a.records.checked_add(b.records);
    let stored_bytes = a.stored_bytes.checked_add(b.stored_bytes);
    match (records, stored_bytes) {
        (Some(records), Some(stored_bytes)) => Ok(UsageDelta { records, stored_bytes }),
        _ => Err(corrupt("a purge batch frees more than an SQLite integer counts")),
    }
}

pub(crate) async fn read_counters(connection: &mut SqliteConnection) -> Result<Counters, StoreError> {
    let row = sqlx::query(READ_COUNTERS)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .ok_or_else(missing_counters)?;
    decode_counters(&row)
}

fn decode_counters(row: &SqliteRow) -> Result<Counters, StoreError> {
    let column = |name: &str| row.try_get::<i64, _>(name).map_err(store_error);
    Ok(Counters {
        next_fence: codec::fence_from_sql("idem_fence.next_fence", column("next_fence")?)?,
        usage: Usage {
            records: codec::count_from_sql("idem_usage.records", column("usage_records")?)?,
            stored_bytes: codec::count_from_sql("idem_usage.stored_bytes", column("usage_stored_bytes")?)?,
        },
    })
}

fn missing_counters() -> StoreError {
    corrupt("the counter rows (idem_fence, idem_usage) are missing")
}

/// A statement on a one-row table must have changed that row.
pub(crate) fn one_row(done: &SqliteQueryResult, table: &str) -> Result<(), StoreError> {
    match done.rows_affected() {
        1 => Ok(()),
        _ => Err(corrupt(format!("the {table} row is missing"))),
    }
}

impl Store for SqliteStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let claim = op::Claim { request: request.into(), now, policy: *policy };
        if let Some(decision) = self.replays.claim(id, &claim, self.limits) {
            return Ok(decision);
        }
        if self.replays.is_enabled() {
            // A replay the cache missed (a record completed by another process, before a
            // restart, or evicted) is decided once in the next group commit, which then
            // caches it; a fresh key, the common miss, skips a read on the pool.
            return self.run(id, claim, self.claim_sync).await;
        }
        self.run_read_first(id, claim, self.claim_sync).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.run(id, op::Complete { fence, response, now, policy: *policy }, writer::Sync::Full).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.run(id, op::Release { fence }, self.claim_sync).await
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.run(id, op::Renew { fence, now, policy: *policy }, self.claim_sync).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.get_now(id).await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.purge_now(now, batch_max).await
    }

    /// [`op::CountReplay`] as one job of the next group commit. Best effort, so it never
    /// asks for a sync of its own: a batch of counts alone commits with
    /// `synchronous=NORMAL` and reaches the disk with the next synced commit (a machine
    /// crash may lose a few counts, never a record). It issues no fence and is never
    /// refused for room.
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.run(id, op::CountReplay { now }, writer::Sync::Deferred).await
    }
}

impl AtomicStore for SqliteStore {
    type Connection = SqliteConnection;
    type WriteError = sqlx::Error;

    /// Runs `writes` and the completion in one savepoint of the next group commit: both
    /// commit, synced, or neither does (the savepoint is rolled back when the writes fail or
    /// the completion is refused). Other requests' writes in the same commit are not touched.
    async fn complete_with<W>(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
        writes: W,
    ) -> Result<Fenced, CommitError<sqlx::Error>>
    where
        W: for<'c> FnOnce(&'c mut SqliteConnection) -> WritesFuture<'c, sqlx::Error> + Send + 'static,
    {
        let (job_id, limits, epoch) = (id.clone(), self.limits, self.replays.epoch());
        let operation = op::CompleteInTransaction { fence, response, now, policy: *policy };
        let (fenced, completed) = self
            .writer
            .submit(writer::Sync::Full, Access::Savepoint, Some(id.clone()), move |batch| {
                Box::pin(async move {
                    writes(&mut batch.connection).await.map_err(CommitError::Writes)?;
                    let fenced = batch.view.step(&mut batch.connection, limits, &job_id, operation).await?;
                    let completed = batch.view.completed(&job_id).cloned();
                    // A refused completion rolls the business writes back with it (G1).
                    Ok::<_, CommitError<sqlx::Error>>(Ran {
                        keep: fenced == Fenced::Applied,
                        answer: (fenced, completed),
                    })
                })
            })
            .await?;
        if let (Fenced::Applied, Some(record)) = (fenced, completed) {
            self.replays.remember(id, &record, epoch);
        }
        Ok(fenced)
    }
}
