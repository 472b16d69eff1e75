//! Group commit: one writer task owns the write connection and commits every pending
//! write (claims, completions, atomic-mode business writes) in one transaction with one
//! `fsync`.
//!
//! Callers hand the writer a job (a closure over the [`Batch`]) and await its answer. The
//! writer takes everything that is queued (up to [`BATCH_MAX`]), runs `BEGIN IMMEDIATE`,
//! runs each job, flushes the batch's [`BatchView`] and commits once. The store's own
//! operations ([`Access::View`]) decide in the view and write no SQL themselves; a job
//! that writes SQL of its own (business writes, a purge) runs inside its own savepoint. A
//! job that fails, or whose answer says its writes must not land (a refused atomic
//! completion), is rolled back to its savepoint (and leaves the view as it was), so one
//! request's failure never reaches another's writes. Answers are sent only after the
//! commit returned: no caller hears "done" for a write that is not durable. While one
//! batch waits for the disk, the next one queues: the more concurrent writers, the more of
//! them share each `fsync`.
//!
//! If the transaction itself breaks (SQLite rolls it back on its own after `SQLITE_FULL`,
//! `SQLITE_IOERR` and a few others; a rollback hook tells the writer), or the flush or the
//! commit fails, every job of the batch is answered with the same
//! [`StoreError::Unavailable`]: none of them committed.
//!
//! Durability per batch: a batch is committed with `synchronous=FULL` (the `-wal` file is
//! synced before the commit returns) if any of its jobs asks for it, otherwise with
//! `NORMAL` (synced at the next `FULL` commit or checkpoint). See the crate docs on
//! deferred claim sync, and `idem_fence.unsynced_fences`, which bounds how many fences a
//! crash can lose.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use idem_core::{RecordId, StoreError};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::batch::BatchView;
pub(crate) use crate::batch_decision::BATCH_MAX;
use crate::error::BatchFailure;

/// Most jobs waiting for the writer; past it callers wait for room (up to the acquire
/// timeout), so queued memory is bounded.
const QUEUE_MAX: usize = 4 * BATCH_MAX;

/// A deferred batch that leaves more unsynced fences than this makes the next batch sync.
/// With [`FENCE_GAP`] far above it, a crash loses fewer fences than a reopen skips.
pub(crate) const SYNC_AFTER_UNSYNCED_FENCES: i64 = 1 << 14;

/// How far the fence counter jumps when a store with deferred claim sync opens: past every
/// fence a crash can have lost (at most [`SYNC_AFTER_UNSYNCED_FENCES`] plus a few batches
/// per process), so no fence is ever issued twice.
pub(crate) const FENCE_GAP: i64 = 1 << 20;

/// Whether a job's commit must be on disk before its caller hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// The batch commits with `synchronous=FULL`.
    Full,
    /// The job may commit with `synchronous=NORMAL` (a claim, renewal or release in a
    /// store with deferred claim sync).
    Deferred,
}

/// What a job does with the tables, which says how the writer runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Decides through [`Batch::view`] and writes no SQL itself (claims, completions,
    /// renewals, releases): no savepoint needed, the view changes only on success.
    View,
    /// Writes SQL of its own that does not touch idem's tables (business writes), in its
    /// own savepoint; may also decide through the view.
    Savepoint,
    /// Reads and writes idem's tables in SQL (a purge): the view is flushed first, so the
    /// tables are current, and the job runs in its own savepoint.
    Tables,
}

/// What a job works on: the writer's connection, inside the batch's transaction, and the
/// batch's view of idem's tables.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) connection: SqliteConnection,
    pub(crate) view: BatchView,
}

/// What a job's closure returns: its answer, and whether its writes are kept.
pub(crate) struct Ran<T> {
    pub(crate) answer: T,
    pub(crate) keep: bool,
}

type BoxFuture<'c, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'c>>;

/// One caller's work, type-erased so a batch can hold jobs with different answers.
trait Job: Send {
    fn sync(&self) -> Sync;
    fn access(&self) -> Access;
    /// The record the job will decide on, read with the others' before any job runs.
    fn record(&self) -> Option<&RecordId>;
    /// Runs the work; returns whether its writes are kept (false: roll back its savepoint).
    fn run<'a>(&'a mut self, batch: &'a mut Batch) -> BoxFuture<'a, bool>;
    /// Answers the caller: its own answer if the batch committed, the batch's failure if not.
    fn finish(self: Box<Self>, batch: Result<(), &BatchFailure>);
}

struct Pending<T, E, F> {
    sync: Sync,
    access: Access,
    record: Option<RecordId>,
    work: Option<F>,
    answer: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: for<'c> FnOnce(&'c mut Batch) -> BoxFuture<'c, Result<Ran<T>, E>> + Send + 'static,
{
    fn sync(&self) -> Sync {
        self.sync
    }

    fn access(&self) -> Access {
        self.access
    }

    fn record(&self) -> Option<&RecordId> {
        self.record.as_ref()
    }

    fn run<'a>(&'a mut self, batch: &'a mut Batch) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else { return false };
            // A panicking job must not take the writer (and every later caller) with it.
            let ran = AssertUnwindSafe(work(batch)).catch_unwind().await;
            match ran {
                Ok(Ok(Ran { answer, keep })) => {
                    self.answer = Some(Ok(answer));
                    keep
                }
                Ok(Err(error)) => {
                    self.answer = Some(Err(error));
                    false
                }
                Err(_panic) => {
                    tracing::error!("a write job panicked; its writes are rolled back");
                    self.answer = Some(Err(E::from(StoreError::unavailable("the write panicked"))));
                    false
                }
            }
        })
    }

    fn finish(self: Box<Self>, batch: Result<(), &BatchFailure>) {
        let answer = match (batch, self.answer) {
            // A job's own error stands whatever became of the batch: it wrote nothing.
            (_, Some(Err(error))) => Err(error),
            (Ok(()), Some(Ok(answer))) => Ok(answer),
            (Err(failure), _) => Err(E::from(failure.to_store_error())),
            (Ok(()), None) => Err(E::from(StoreError::unavailable("the write did not run"))),
        };
        // The caller may have gone away (its request was cancelled); the outcome stands.
        let _ = self.reply.send(answer);
    }
}

/// The handle callers submit jobs through; cloned with the store.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    enqueue_timeout: Duration,
    tally: Arc<Tally>,
}

/// What the writer has done so far: how well writes share commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Transactions committed.
    pub commits: u64,
    /// Jobs in those transactions (claims, completions, atomic writes, purges), whether
    /// their own writes were kept or rolled back to their savepoint.
    pub jobs: u64,
    /// Transactions that failed as a whole (every job in them was answered with the error).
    pub failed_batches: u64,
    /// Jobs waiting for the writer now.
    pub queued: usize,
}

#[derive(Debug, Default)]
struct Tally {
    commits: AtomicU64,
    jobs: AtomicU64,
    failed_batches: AtomicU64,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("sync", &self.sync()).field("access", &self.access()).finish_non_exhaustive()
    }
}

/// How the writer runs: the store's options that concern it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterConfig {
    /// Whether claims may commit without a sync ([`Sync::Deferred`] jobs exist at all).
    pub(crate) deferred_claims: bool,
    /// How long a caller waits for room in the queue.
    pub(crate) enqueue_timeout: Duration,
    /// How long one job may run before its writes are abandoned (the write lock is held
    /// meanwhile, for every job of the batch).
    pub(crate) job_timeout: Duration,
}

impl Writer {
    /// Starts the writer task on `connection` (in WAL mode, with `synchronous=FULL`).
    /// It stops when every [`Writer`] is dropped, or when `close` is signalled.
    ///
    /// # Errors
    /// When the connection's rollback hook cannot be set (its thread is gone).
    pub(crate) async fn start(
        mut connection: SqliteConnection,
        config: WriterConfig,
        close: tokio_util::sync::CancellationToken,
    ) -> Result<Writer, sqlx::Error> {
        // SQLite rolls a transaction back by itself after some errors; statements after
        // that would each commit on their own. The hook tells the writer it happened.
        let rolled_back = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&rolled_back);
        connection.lock_handle().await?.set_rollback_hook(move || flag.store(true, Ordering::SeqCst));
        let (jobs, queue) = mpsc::channel(QUEUE_MAX);
        let tally = Arc::new(Tally::default());
        let batch = Batch { connection, view: BatchView::default() };
        tokio::spawn(run(batch, rolled_back, queue, config, close, Arc::clone(&tally)));
        Ok(Writer { jobs, enqueue_timeout: config.enqueue_timeout, tally })
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.tally.commits.load(Ordering::Relaxed),
            jobs: self.tally.jobs.load(Ordering::Relaxed),
            failed_batches: self.tally.failed_batches.load(Ordering::Relaxed),
            queued: self.jobs.max_capacity() - self.jobs.capacity(),
        }
    }

    /// Resolves once the writer task has stopped (closed, its connection closed).
    pub(crate) async fn stopped(&self) {
        self.jobs.closed().await;
    }

    /// Runs `work` in the next group commit and waits for the commit. `record` names the
    /// record `work` decides on in the view, if any, so the batch reads it up front.
    pub(crate) async fn submit<T, E, F>(
        &self,
        sync: Sync,
        access: Access,
        record: Option<RecordId>,
        work: F,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> FnOnce(&'c mut Batch) -> BoxFuture<'c, Result<Ran<T>, E>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending { sync, access, record, work: Some(work), answer: None, reply });
        match self.jobs.send_timeout(job, self.enqueue_timeout).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(E::from(StoreError::Unavailable {
                    source: "the store's write queue stayed full".into(),
                    retry_after: Some(Duration::from_secs(1)),
                }));
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(E::from(closed())),
        }
        // The writer answers every job it took, unless the store closed under it.
        answer.await.unwrap_or_else(|_| Err(E::from(closed())))
    }
}

fn closed() -> StoreError {
    StoreError::unavailable("the store is closed")
}

/// The writer task: batch, commit, answer, until closed.
async fn run(
    mut batch: Batch,
    rolled_back: Arc<AtomicBool>,
    mut queue: mpsc::Receiver<Box<dyn Job>>,
    config: WriterConfig,
    close: tokio_util::sync::CancellationToken,
    tally: Arc<Tally>,
) {
    let mut state = WriterState { synchronous: Sync::Full, sync_next: false, unsynced_fences: true, rolled_back };
    let mut jobs = Vec::with_capacity(BATCH_MAX);
    loop {
        let received = tokio::select! {
            biased;
            () = close.cancelled() => 0,
            received = queue.recv_many(&mut jobs, BATCH_MAX) => received,
        };
        if received == 0 {
            break;
        }
        let committed = commit_batch(&mut batch, &mut jobs, config, &mut state).await;
        let counter = if committed { &tally.commits } else { &tally.failed_batches };
        counter.fetch_add(1, Ordering::Relaxed);
        tally.jobs.fetch_add(u64::try_from(received).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    // Closed: whatever is still queued is refused, never half-done.
    queue.close();
    while let Ok(job) = queue.try_recv() {
        job.finish(Err(&BatchFailure::closed()));
    }
    let _ = batch.connection.close().await;
    // Dropping the queue last tells `Writer::stopped` the connection is closed.
    drop(queue);
}

struct WriterState {
    /// The connection's `synchronous` setting now.
    synchronous: Sync,
    /// The last deferred batch left too many unsynced fences: sync the next one.
    sync_next: bool,
    /// Whether `idem_fence.unsynced_fences` may be above zero (unknown at start), so a
    /// synced batch must reset it; a batch that writes nothing else then writes nothing.
    unsynced_fences: bool,
    /// Set by the connection's rollback hook: the transaction has ended.
    rolled_back: Arc<AtomicBool>,
}

impl WriterState {
    /// Fails when SQLite ended the batch's transaction on its own: nothing more may be
    /// written, as it would commit outside the batch.
    fn check_open(&self) -> Result<(), BatchFailure> {
        if self.rolled_back.load(Ordering::SeqCst) {
            return Err(BatchFailure::rolled_back());
        }
        Ok(())
    }
}

/// One group commit: every job in its savepoint, one `COMMIT`, then every answer.
/// Returns whether it committed.
async fn commit_batch(
    batch: &mut Batch,
    jobs: &mut Vec<Box<dyn Job>>,
    config: WriterConfig,
    state: &mut WriterState,
) -> bool {
    let outcome = run_batch(batch, jobs, config, state).await;
    if outcome.is_err() {
        batch.view.clear();
        // Leave no transaction open for the next batch; it may be gone already.
        let _ = batch.connection.execute("ROLLBACK").await;
    }
    let outcome = outcome.as_ref().map(|_| ());
    for job in jobs.drain(..) {
        job.finish(outcome);
    }
    outcome.is_ok()
}

async fn run_batch(
    batch: &mut Batch,
    jobs: &mut [Box<dyn Job>],
    config: WriterConfig,
    state: &mut WriterState,
) -> Result<(), BatchFailure> {
    let wanted =
        if state.sync_next || jobs.iter().any(|job| job.sync() == Sync::Full) { Sync::Full } else { Sync::Deferred };
    let connection = &mut batch.connection;
    if wanted != state.synchronous {
        let pragma = match wanted {
            Sync::Full => "PRAGMA synchronous = FULL",
            Sync::Deferred => "PRAGMA synchronous = NORMAL",
        };
        connection.execute(pragma).await.map_err(BatchFailure::from)?;
        state.synchronous = wanted;
    }
    connection.execute("BEGIN IMMEDIATE").await.map_err(BatchFailure::from)?;
    state.rolled_back.store(false, Ordering::SeqCst);
    // Every record the batch decides on, in one read: a job then costs no statement.
    let records: Vec<&RecordId> = jobs.iter().filter_map(|job| job.record()).collect();
    if !records.is_empty() {
        batch.view.load(&mut batch.connection, &records).await?;
    }
    for job in jobs.iter_mut() {
        state.check_open()?;
        match job.access() {
            Access::View => {
                run_with_timeout(batch, job.as_mut(), config.job_timeout).await;
            }
            Access::Savepoint => run_in_savepoint(batch, job.as_mut(), config.job_timeout).await?,
            Access::Tables => {
                batch.view.flush(&mut batch.connection).await?;
                state.check_open()?;
                run_in_savepoint(batch, job.as_mut(), config.job_timeout).await?;
            }
        }
    }
    state.check_open()?;
    batch.view.flush(&mut batch.connection).await?;
    let connection = &mut batch.connection;
    if config.deferred_claims && (wanted == Sync::Deferred || state.unsynced_fences) {
        state.sync_next = count_unsynced_fences(connection, wanted, jobs.len()).await?;
        state.unsynced_fences = wanted == Sync::Deferred;
    }
    state.check_open()?;
    connection.execute("COMMIT").await.map_err(BatchFailure::from)?;
    Ok(())
}

/// Runs `job` for at most `timeout`; returns whether its writes are kept.
async fn run_with_timeout(batch: &mut Batch, job: &mut dyn Job, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, job.run(batch)).await {
        Ok(keep) => keep,
        Err(_elapsed) => {
            // The job's answer stays unset: it is told the write did not run.
            tracing::error!(?timeout, "a write job held the write lock too long; its writes are rolled back");
            false
        }
    }
}

/// One job in its own savepoint. A savepoint that cannot be released or rolled back to
/// means SQLite ended the whole transaction itself: the batch failed.
async fn run_in_savepoint(batch: &mut Batch, job: &mut dyn Job, timeout: Duration) -> Result<(), BatchFailure> {
    batch.connection.execute("SAVEPOINT idem_job").await.map_err(BatchFailure::from)?;
    let keep = run_with_timeout(batch, job, timeout).await;
    if !keep {
        batch.connection.execute("ROLLBACK TO idem_job").await.map_err(BatchFailure::from)?;
    }
    batch.connection.execute("RELEASE idem_job").await.map_err(BatchFailure::from)?;
    Ok(())
}

/// Deferred claim sync: counts the fences this batch may have issued without a sync (an
/// upper bound: one per job), or resets the count on a synced batch. Returns whether the
/// next batch must sync.
async fn count_unsynced_fences(
    connection: &mut SqliteConnection,
    sync: Sync,
    jobs: usize,
) -> Result<bool, BatchFailure> {
    let added = match sync {
        Sync::Full => {
            connection.execute("UPDATE idem_fence SET unsynced_fences = 0 WHERE id = 1").await?;
            return Ok(false);
        }
        Sync::Deferred => i64::try_from(jobs).unwrap_or(i64::MAX),
    };
    let unsynced: i64 = sqlx::query_scalar(
        "UPDATE idem_fence SET unsynced_fences = unsynced_fences + ?1 WHERE id = 1 RETURNING unsynced_fences",
    )
    .bind(added)
    .fetch_one(&mut *connection)
    .await?;
    Ok(unsynced >= SYNC_AFTER_UNSYNCED_FENCES)
}
