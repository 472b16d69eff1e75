//! [`SqliteStore`]: idem-core's store step, read and written in SQLite transactions.
//!
//! Every read-decide-write here has the same shape: read the record and the store-wide
//! counters, call [`idem_core::step::step`], write exactly what the [`Step`] names. In the
//! group commit the reading and writing go through the batch's view ([`crate::batch`]);
//! in a caller's own transaction ([`SqliteStore::complete_in`]) [`decide`] and [`write`]
//! do it statement by statement. The store has no rule of its own about the protocol.

use std::sync::Arc;

use idem_core::step::{self, Operation, Step, StoreView, op};
use idem_core::{
    AtomicStore, ClaimRequest, CommitError, Decision, Fence, Fenced, Limits, Policy, Record, RecordId, Renewal, Store,
    StoreError, StoredResponse, Timestamp, Usage, WritesFuture,
};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Sqlite, Transaction};
use tokio_util::sync::CancellationToken;

use crate::error::{OpenError, store_error};
use crate::open::{self, Opened};
use crate::options::SqliteOptions;
use crate::purge;
use crate::replay_cache::ReplayCache;
use crate::rows::{self, add_usage, read_counters, read_view, set_next_fence, write_record};
use crate::writer::{self, Access, GroupCommitStats, Ran, Writer};

/// The statement every read-decide-write starts with. `IMMEDIATE` takes the write lock
/// first: a deferred transaction that reads and then writes fails with `SQLITE_BUSY` in
/// WAL mode when another writer committed in between, instead of waiting its turn.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A write transaction on a pooled connection, started with `BEGIN IMMEDIATE` by
/// [`SqliteStore::begin_write`]. It commits with `commit()`; dropped, it rolls back.
pub type WriteTransaction = Transaction<'static, Sqlite>;

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
        let Opened { pool, writer, stop_writer, claim_sync } = open::open_file(&options).await?;
        let replays = ReplayCache::new(options.replay_cache_bytes);
        Ok(SqliteStore { pool, limits: options.limits(), writer: Arc::new(writer), stop_writer, claim_sync, replays })
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
        rows::read_record(&mut connection, id).await
    }

    /// Purges up to `batch_max` due records in one transaction: candidates come from the
    /// `due_at` index, each goes through [`op::Expire`] (which forgets it, or shrinks a
    /// completed record that leaves a tombstone to that tombstone), and the usage deltas of
    /// the whole batch are written once. A step error (a fence counter not past a due
    /// record's fence) fails the batch as `Corrupt` and keeps the record: forgetting it
    /// would let a new claim reuse its fence. Only a row that cannot be read at all is
    /// forgotten as damage (see [`crate::purge`]).
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
                    let answer = purge::purge_batch(&mut batch.connection, limits, now, batch_max).await?;
                    Ok(Ran { answer, keep: true })
                })
            })
            .await
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

/// Writes what `step` names on `connection` (the caller commits): the record, the fence
/// counter, the usage delta, each only if it changes. Returns the step's answer.
async fn write<A>(connection: &mut SqliteConnection, id: &RecordId, step: Step<A>) -> Result<A, StoreError> {
    let Step { answer, write, next_fence, usage } = step;
    write_record(connection, id, write).await?;
    if let Some(next_fence) = next_fence {
        set_next_fence(connection, next_fence).await?;
    }
    add_usage(connection, usage).await?;
    Ok(answer)
}
