//! [`PostgresStore`]: idem-core's store step, read and written in PostgreSQL statements.
//!
//! Every read-decide-write here has the same shape: [`decide`] reads the record (with its
//! row version), the counters and the database's clock in one statement and calls
//! [`idem_core::step::step`]; [`write`] writes exactly what the [`Step`] names in one
//! statement, guarded by what the read found. [`complete_guarded`] is a completion of the
//! claim in flight in one statement, checked against the step afterwards. The store has
//! no rule of its own about the protocol.

use std::sync::Arc;
use std::time::Duration;

use idem_core::step::{self, Counters, Operation, Step, StoreView, op};
use idem_core::{
    AtomicStore, ClaimRequest, CommitError, Decision, Fence, Fenced, Limits, Policy, Record, RecordId, Renewal, Store,
    StoreError, StoredResponse, Timestamp, Usage, Write, WritesFuture, usage,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Transaction};

use crate::codec::{self, usage_shard};
use crate::error::{Failure, INTEGRITY_CLASS, OpenError, corrupt, sqlstate, store_error};
use crate::guarded::complete_guarded;
use crate::options::{PostgresOptions, TimeSource};
use crate::planting::PlantedBug;
use crate::statements::Statements;
use crate::{schema, session};

/// A transaction on a pooled connection from [`PostgresStore::begin_write`]. It commits
/// with `commit()`; dropped, it rolls back.
pub type WriteTransaction = Transaction<'static, Postgres>;

/// Backoff after contention: 2 ms doubling per retry up to 64 ms, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// How a step reads the record and the fence counter (the sequence `idem_fence_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// A claim, without a lock: `nextval`, the value a claim issues if its step puts a new
    /// claim. Drawing reserves it for this operation (so the write has nothing left to
    /// advance); a draw the step does not use leaves a gap.
    Draw,
    /// Any other operation, without a lock: the next value without drawing it, read only
    /// for idem-core's check that the counter is past the record's fence.
    Peek,
    /// As [`ReadKind::Peek`], locking the record's row (`FOR UPDATE`) until the enclosing
    /// transaction ends: [`PostgresStore::complete_in`]'s fallback, inside the caller's
    /// transaction.
    PeekLocked,
}

/// The durable, shared store: records in PostgreSQL, decided by idem-core's store step.
///
/// Cloning is cheap and shares the pool. See the crate docs for the schema, the atomic-mode
/// recipe, time, concurrency and what each failure means.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) limits: Limits,
    pub(crate) time: TimeSource,
    pub(crate) retries_max: u32,
    pub(crate) schema: String,
    pub(crate) sql: Statements,
    /// Whether the guarded completion checks what it wrote against the store step: always,
    /// but in a store with a bug planted for testing ([`PostgresStore::with_planted_bug`]).
    pub(crate) self_check: bool,
}

/// A query on one of the prebuilt statements.
pub(crate) fn query<'q>(sql: &Arc<str>) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

impl PostgresStore {
    /// Connects to `options`' database, creates the schema if missing, runs idem's
    /// migrations in it (on one connection whose `search_path` is the schema, under
    /// sqlx's migration lock, so replicas starting together migrate once), checks the
    /// usage shards, and opens the pool.
    ///
    /// # Errors
    /// [`OpenError`], whose message names the database and the reason (for an unreachable
    /// server, how to start one).
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, OpenError> {
        let connect = options.connect_options()?;
        let target = session::target(&connect);
        let attempt = || async {
            let mut setup = PgConnection::connect_with(&connect)
                .await
                .map_err(|source| OpenError::Connect { target: target.clone(), source })?;
            let prepared = schema::prepare(&mut setup, &options, &target).await;
            // Closing only says goodbye on a connection that is dropped anyway.
            let _ = setup.close().await;
            prepared?;
            PgPoolOptions::new()
                .max_connections(options.connections_max)
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(true)
                .connect_with(connect.clone())
                .await
                .map_err(|source| OpenError::Connect { target: target.clone(), source })
        };
        let pool = session::retrying(options.session.open, &target, attempt).await?;
        Ok(PostgresStore::on(pool, options))
    }

    /// Opens the store on the service's own pool: creates the schema if missing and runs
    /// idem's migrations in it, as [`PostgresStore::open`] does, then shares `pool` for
    /// every operation. The service's queries and idem's then draw from one pool, and
    /// [`PostgresStore::begin_write`] transactions are the service's connections.
    ///
    /// From `options` this takes the schema, the size limits, the retries and the time
    /// source; the URL and the pool settings (`connections_max`, `acquire_timeout`,
    /// `statement_timeout`, and the session settings that bound a dead holder) are the
    /// pool's business and are not used: build the pool from
    /// [`PostgresOptions::connect_options`] to give its connections idem's settings. A
    /// schema that is locked or a server that is starting is tried again within
    /// [`PostgresOptions::open_timeout`], as in `open`. The migrations run
    /// on one connection taken from `pool` and detached from it (the pool opens a
    /// replacement), because they set that connection's `search_path`; the connections the
    /// pool keeps are never changed. idem's migrations are noted in [`crate::MIGRATIONS_TABLE`],
    /// not sqlx's default table, so the service's own `sqlx::migrate!` on the same pool and
    /// schema keeps its own list. [`PostgresStore::close`] closes `pool`.
    ///
    /// ```no_run
    /// use idem_postgres::sqlx::postgres::PgPoolOptions;
    /// use idem_postgres::{PostgresOptions, PostgresStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "postgres://postgres@127.0.0.1:5432/test";
    /// let pool = PgPoolOptions::new().max_connections(20).connect(url).await?;
    /// let store = PostgresStore::with_pool(pool.clone(), PostgresOptions::new(url).schema("idem")).await?;
    /// assert_eq!(store.schema(), "idem");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`] for options that cannot work (a schema name that is
    /// not a plain identifier, zero limits), [`OpenError::Connect`] when `pool` gives no
    /// connection, and [`OpenError::NewerSchema`] or [`OpenError::Migrate`] as for `open`.
    pub async fn with_pool(pool: PgPool, options: PostgresOptions) -> Result<PostgresStore, OpenError> {
        let target = session::target(&pool.connect_options());
        if let Some(detail) = options.problem() {
            return Err(OpenError::InvalidOptions { target, detail });
        }
        let attempt = || async {
            let setup = pool.acquire().await.map_err(|source| OpenError::Connect { target: target.clone(), source });
            let mut setup = setup?.detach();
            let prepared = schema::prepare(&mut setup, &options, &target).await;
            // Closing only says goodbye on a connection that is dropped anyway.
            let _ = setup.close().await;
            prepared
        };
        session::retrying(options.session.open, &target, attempt).await?;
        Ok(PostgresStore::on(pool, options))
    }

    /// The store on `pool`, whose database is prepared for `options`.
    fn on(pool: PgPool, options: PostgresOptions) -> PostgresStore {
        let inner = Inner {
            limits: options.limits,
            time: options.time,
            retries_max: options.retries_max,
            sql: Statements::new(&options.schema),
            schema: options.schema,
            self_check: true,
        };
        PostgresStore { pool, inner: Arc::new(inner) }
    }

    /// **For testing the tests only.** This store (same pool, same schema) with `bug`
    /// planted in its SQL ([`PlantedBug`]), so that a check that claims to catch such a bug
    /// can show it does. Never use it for real data: the planted rule is wrong on purpose.
    ///
    /// The planted store also stops checking its guarded completion against idem-core's
    /// store step after writing (the check that turns a completion the step does not name
    /// into [`StoreError::Corrupt`], and a panic in debug builds): that check would catch
    /// every completion bug at once, and what is planted is "the SQL is wrong and nothing
    /// in the store notices", for the check under test to notice by what the store does
    /// (`src/planted.rs`: idem-core's differential check catches each; `tests/planted_bug.rs`:
    /// the completion-guard bugs accept a stale fence's completion).
    ///
    /// # Panics
    /// Never for a [`PlantedBug`]: each names SQL found in exactly one statement (checked).
    #[must_use]
    pub fn with_planted_bug(&self, bug: PlantedBug) -> PostgresStore {
        let (right, wrong) = bug.replacement();
        let mut sql = self.inner.sql.clone();
        let mut planted = 0;
        for statement in sql.all().into_iter().filter(|statement| statement.contains(right)) {
            *statement = Arc::from(statement.replace(right, wrong));
            planted += 1;
        }
        assert_eq!(planted, 1, "the SQL to plant {bug} in is in exactly one statement: {right}");
        let inner = Inner { sql, schema: self.inner.schema.clone(), self_check: false, ..*self.inner };
        PostgresStore { pool: self.pool.clone(), inner: Arc::new(inner) }
    }

    /// The connection pool, for an application's own queries on the same database (the
    /// service's own pool, for a store opened with [`PostgresStore::with_pool`]).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema idem's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    /// Later calls fail with [`StoreError::Unavailable`]. For a store opened with
    /// [`PostgresStore::with_pool`] that is the service's pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction (`BEGIN`, read committed) on a pooled connection, for the
    /// atomic-mode recipe: business writes, then [`PostgresStore::complete_in`], then commit.
    /// Any other transaction on the same database works as well (see `complete_in`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection comes within the acquire timeout.
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    /// Completes the claim `fence` inside the caller's transaction (atomic mode): the
    /// fence check and the completion commit or roll back with the caller's business writes.
    ///
    /// On [`Fenced::Applied`], commit; on [`Fenced::Refused`], roll back: the claim is no
    /// longer the caller's, and its business writes must not land (G1). The record's row
    /// stays locked (`FOR UPDATE`) until the caller's transaction ends, so no take-over
    /// slips in between this check and the commit.
    ///
    /// One statement in the caller's transaction when the claim is still the caller's (the
    /// usual case): it locks the record's row if it is the claim `fence` in flight, reads
    /// the counters and the clock, and writes the completion idem-core's step names for
    /// that record; the view it read comes back and the step checks it decided exactly
    /// what was written (crate docs, "Round trips"). Otherwise (the claim was taken over,
    /// released, purged, or completed already) that statement writes nothing, and a second
    /// one reads the locked record for the step to answer the refusal.
    ///
    /// `now` is ignored under [`TimeSource::Database`] (the default): retention counts from
    /// the database's clock, read in the caller's transaction.
    ///
    /// This is idem-core's [`op::CompleteInTransaction`]: unlike [`Store::complete`], a
    /// second completion with the fence that already completed the record is refused
    /// (`Refused(AlreadyCompleted)` naming that very fence), because its transaction's
    /// business writes would repeat the first one's.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for driver errors (including a serialization failure or
    /// deadlock in the caller's transaction, which is not retried here: the caller's
    /// transaction is aborted and only the caller can run it again), [`StoreError::Corrupt`]
    /// for a row it cannot read. Either way, roll back.
    pub async fn complete_in(
        &self,
        transaction: &mut Transaction<'_, Postgres>,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let policy = *policy;
        let operation = |now| op::CompleteInTransaction { fence, response: response.clone(), now, policy };
        let inner = &self.inner;
        let attempt = async {
            if let Some(answer) = complete_guarded(transaction, inner, id, fence, now, operation).await? {
                return Ok(answer);
            }
            let (step, seen) = decide(transaction, inner, id, ReadKind::PeekLocked, now, operation).await?;
            // The caller commits (or rolls back) with its business writes.
            match write(transaction, inner, id, seen, step).await? {
                Some(answer) => Ok(answer),
                // The row is locked by this transaction's read, so it cannot have changed.
                None => Err(corrupt("the record row changed under its lock").into()),
            }
        };
        attempt.await.map_err(Failure::into_store_error)
    }

    /// What the store holds, as its size limits count it (the sums over the usage shards).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let row = query(&self.inner.sql.usage_totals).fetch_one(&self.pool).await.map_err(store_error)?;
        decode_usage(&row)
    }

    /// One operation, run again after contention (bounded, with backoff).
    pub(crate) async fn run<O: Operation>(
        &self,
        id: &RecordId,
        read: ReadKind,
        now: Timestamp,
        operation: impl Fn(Timestamp) -> O,
    ) -> Result<O::Answer, StoreError> {
        debug_assert!(read != ReadKind::PeekLocked, "a lock outlives an autocommit read");
        let operation = &operation;
        self.retrying(|| async move {
            let mut connection = self.pool.acquire().await?;
            self.attempt(&mut connection, id, read, now, operation).await
        })
        .await
    }

    /// Runs `attempt` until it is not contention, at most [`PostgresOptions::retries_max`]
    /// times more, with backoff.
    async fn retrying<A, F>(&self, attempt: impl Fn() -> F) -> Result<A, StoreError>
    where
        F: Future<Output = Result<A, Failure>>,
    {
        let mut retries = 0;
        loop {
            match attempt().await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Contention(source)) if retries < self.inner.retries_max => {
                    tracing::debug!(retries, error = %source, "store operation lost to contention; running it again");
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// One attempt, optimistic, on one pooled connection and without a transaction:
    /// [`decide`] on an unlocked read (one autocommit statement), then [`write`] guarded by
    /// what was read (one autocommit statement, which commits), or nothing when the step
    /// writes nothing. A guard that fails (another operation wrote the record in between)
    /// is contention: nothing was applied, and the operation runs again from its read.
    async fn attempt<O: Operation>(
        &self,
        connection: &mut PgConnection,
        id: &RecordId,
        read: ReadKind,
        now: Timestamp,
        operation: &impl Fn(Timestamp) -> O,
    ) -> Result<O::Answer, Failure> {
        let (step, seen) = decide(connection, &self.inner, id, read, now, operation).await?;
        if step.writes_nothing() {
            return Ok(step.answer);
        }
        match write(connection, &self.inner, id, seen, step).await? {
            Some(answer) => Ok(answer),
            None => Err(Failure::Contention(match seen {
                Seen::Absent => "a concurrent claim inserted the same record id first".into(),
                Seen::Held { .. } => "a concurrent operation wrote the record after it was read".into(),
            })),
        }
    }

    pub(crate) fn now(&self, caller: Timestamp, database: Timestamp) -> Timestamp {
        pick_now(self.inner.time, caller, database)
    }
}

pub(crate) fn pick_now(time: TimeSource, caller: Timestamp, database: Timestamp) -> Timestamp {
    match time {
        TimeSource::Database => database,
        TimeSource::Caller => caller,
    }
}

/// How long to wait before retry number `retries` (0-based): doubling from
/// [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], then a random point in its upper half, so
/// transactions that collided do not collide again in step.
fn backoff(retries: u32) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << retries.min(10)).min(BACKOFF_MAX);
    ceiling.mul_f64(rand::random_range(0.5..=1.0))
}

/// What a read found of the record: what a write must find for the step to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// No row: the write inserts, and inserts nothing if a row appeared.
    Absent,
    /// A row of this version (its `xmin`): the write updates or deletes that version only.
    Held {
        /// The row version.
        version: i64,
    },
}

/// Reads what [`step::step`] needs for `id` (record, counters, clock) in one statement on
/// `connection` (for [`ReadKind::PeekLocked`], locking the record's row in the enclosing
/// transaction) and decides the operation made for the decision's time. Returns the step
/// and what was read of the record.
async fn decide<O: Operation>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    read: ReadKind,
    now: Timestamp,
    operation: impl Fn(Timestamp) -> O,
) -> Result<(Step<O::Answer>, Seen), Failure> {
    let sql = match read {
        ReadKind::Draw => &inner.sql.read_view_draw,
        ReadKind::Peek => &inner.sql.read_view_peek,
        ReadKind::PeekLocked => &inner.sql.read_view_locked,
    };
    let row = query(sql).bind(id.principal.as_str()).bind(id.key.as_str()).fetch_one(&mut *connection).await?;
    let (counters, db_now) = decode_counters(&row)?;
    let held: bool = row.try_get("held").map_err(store_error)?;
    let (record, seen) = if held {
        let version: i64 = row.try_get("version").map_err(store_error)?;
        (Some(codec::decode_record(&row)?), Seen::Held { version })
    } else {
        (None, Seen::Absent)
    };
    let now = pick_now(inner.time, now, db_now);
    let view = StoreView { record: record.as_ref(), counters, limits: inner.limits };
    let step = step::step(id, &view, operation(now))?;
    debug_assert!(read == ReadKind::Draw || step.next_fence.is_none(), "only claims issue fences, and claims draw one");
    Ok((step, seen))
}

/// Writes what `step` names on `connection` in one statement, guarded by what the read
/// found (`seen`): the record put (inserted when none was seen, else updated if still the
/// version seen) or deleted (if still the version seen), and the usage delta added to the
/// record id's shard. The fence counter needs no write: the fence a step issues was drawn
/// from the sequence by [`decide`]. Returns the step's answer, or `None` when the guard
/// failed and nothing was written.
async fn write<A>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    seen: Seen,
    step: Step<A>,
) -> Result<Option<A>, Failure> {
    let Step { answer, write, next_fence, usage } = step;
    if let (Some(next_fence), Write::Put(record)) = (next_fence, &write) {
        debug_assert_eq!(record.fence.next(), next_fence, "the step issues the fence it was shown");
    }
    let sql = &inner.sql;
    let shard = usage_shard(id);
    let principal = id.principal.as_str();
    let key = id.key.as_str();
    let row = match (&write, seen) {
        (Write::Unchanged, _) => {
            debug_assert!(usage.is_none(), "a step that writes no record changes no usage");
            return Ok(Some(answer));
        }
        (Write::Put(record), seen) => {
            let values = codec::encode_record(record)?;
            let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(id, record))?;
            let (statement, version) = match seen {
                Seen::Absent => (&sql.insert_record, None),
                Seen::Held { version } => (&sql.update_record, Some(version)),
            };
            let statement = codec::bind_record(query(statement).bind(principal).bind(key), values)
                .bind(stored_bytes)
                .bind(usage.records)
                .bind(usage.stored_bytes)
                .bind(shard);
            match version {
                Some(version) => statement.bind(version),
                None => statement,
            }
            .fetch_one(&mut *connection)
            .await?
        }
        (Write::Delete, Seen::Held { version }) => {
            query(&sql.delete_record)
                .bind(principal)
                .bind(key)
                .bind(usage.records)
                .bind(usage.stored_bytes)
                .bind(shard)
                .bind(version)
                .fetch_one(&mut *connection)
                .await?
        }
        (Write::Delete, Seen::Absent) => unreachable!("the step deletes only a record it was shown"),
    };
    let written: i64 = row.try_get("written").map_err(store_error)?;
    let counted: i64 = row.try_get("counted").map_err(store_error)?;
    if written != 1 {
        debug_assert_eq!(written, 0, "a write names one row by its primary key");
        debug_assert_eq!(counted, 0, "usage is counted only with a record write");
        return Ok(None);
    }
    if counted != i64::from(!usage.is_none()) {
        return Err(corrupt(format!("the idem_usage row of shard {shard} is missing")).into());
    }
    Ok(Some(answer))
}

/// The counters and the database's clock from a row with `next_fence`, the usage sums
/// and `db_now`.
pub(crate) fn decode_counters(row: &PgRow) -> Result<(Counters, Timestamp), StoreError> {
    let next_fence = codec::fence_from_sql("idem_fence_seq", row.try_get("next_fence").map_err(store_error)?)?;
    let db_now: i64 = row.try_get("db_now").map_err(store_error)?;
    let db_now = u64::try_from(db_now).map_err(|_| corrupt(format!("the database's clock reads {db_now} ms")))?;
    Ok((Counters { next_fence, usage: decode_usage(row)? }, Timestamp::from_unix_ms(db_now)))
}

fn decode_usage(row: &PgRow) -> Result<Usage, StoreError> {
    let column = |name: &str| row.try_get::<i64, _>(name).map_err(store_error);
    Ok(Usage {
        records: codec::count_from_sql("idem_usage.records", column("usage_records")?)?,
        stored_bytes: codec::count_from_sql("idem_usage.stored_bytes", column("usage_stored_bytes")?)?,
    })
}

/// `url` without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

impl Store for PostgresStore {
    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let (request, policy) = (request.into(), *policy);
        self.run(id, ReadKind::Draw, now, |now| op::Claim { request: request.clone(), now, policy }).await
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let policy = *policy;
        let operation = |now| op::Complete { fence, response: response.clone(), now, policy };
        // The usual case in one statement (see `complete_in`); otherwise the optimistic read
        // and write on the same connection.
        let operation = &operation;
        self.retrying(|| async move {
            let mut connection = self.pool.acquire().await?;
            if let Some(answer) = complete_guarded(&mut connection, &self.inner, id, fence, now, operation).await? {
                return Ok(answer);
            }
            self.attempt(&mut connection, id, ReadKind::Peek, now, operation).await
        })
        .await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.run(id, ReadKind::Peek, Timestamp::EPOCH, |_| op::Release { fence }).await
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        let policy = *policy;
        self.run(id, ReadKind::Peek, now, |now| op::Renew { fence, now, policy }).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let row = query(&self.inner.sql.read_record)
            .bind(id.principal.as_str())
            .bind(id.key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(codec::decode_record).transpose()
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides what
    /// has expired, so a purger with a fast clock cannot forget live records.
    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        if batch_max == 0 {
            return Ok(0);
        }
        let mut retries = 0;
        loop {
            match self.purge_attempt(now, batch_max).await {
                Ok(purged) => return Ok(purged),
                Err(Failure::Contention(_)) if retries < self.inner.retries_max => {
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// Counts the replay through idem-core's [`op::CountReplay`] step, as every other
    /// operation runs (a read, a guarded write). Best effort by the trait's contract: the
    /// caller ignores a failure, so a full or failing store never stops a replay.
    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.run(id, ReadKind::Peek, now, |now| op::CountReplay { now }).await
    }

    /// Under [`TimeSource::Database`] (the default) the database's clock decides, not the
    /// caller's `now`.
    fn decides_with_callers_now(&self) -> bool {
        self.inner.time == TimeSource::Caller
    }
}

impl AtomicStore for PostgresStore {
    type Connection = PgConnection;
    type WriteError = sqlx::Error;

    /// Atomic mode in one call: [`PostgresStore::begin_write`], `writes` on the
    /// transaction's connection, [`PostgresStore::complete_in`], then `COMMIT` on
    /// [`Fenced::Applied`] and `ROLLBACK` on [`Fenced::Refused`] or any error, so the
    /// business writes and the completion commit together or not at all (G1). The record's
    /// row is locked only by the completion, after the writes, and until the commit.
    ///
    /// Nothing is retried: `writes` runs at most once. A serialization failure or deadlock
    /// in the writes is [`CommitError::Writes`], in the completion or the commit
    /// `StoreError::Unavailable` with a retry hint; the claim is still in flight either way.
    /// An integrity violation reported by `COMMIT` is [`CommitError::Writes`]: idem's own
    /// constraints are checked as its statements run, so it is a deferred constraint of the
    /// business tables. One outcome is unknown, as for any commit: when the connection
    /// breaks during `COMMIT` (`StoreError::Unavailable`), the server may have committed.
    ///
    /// `now` is ignored under [`TimeSource::Database`] (the default).
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
        W: for<'c> FnOnce(&'c mut PgConnection) -> WritesFuture<'c, sqlx::Error> + Send + 'static,
    {
        let mut transaction = self.begin_write().await?;
        if let Err(error) = writes(&mut transaction).await {
            rollback(transaction).await;
            return Err(CommitError::Writes(error));
        }
        let fenced = match self.complete_in(&mut transaction, id, fence, response, now, policy).await {
            Ok(fenced) => fenced,
            Err(error) => {
                rollback(transaction).await;
                return Err(CommitError::Store(error));
            }
        };
        match fenced {
            Fenced::Applied => transaction.commit().await.map_err(|error| {
                if sqlstate(&error).is_some_and(|code| code.starts_with(INTEGRITY_CLASS)) {
                    CommitError::Writes(error)
                } else {
                    CommitError::Store(store_error(error))
                }
            })?,
            // The claim is no longer the caller's: its business writes must not land (G1).
            Fenced::Refused(_) => rollback(transaction).await,
        }
        Ok(fenced)
    }
}

/// Rolls `transaction` back. A rollback that fails leaves nothing committed either: the
/// connection it failed on is broken, and PostgreSQL ends the transaction with it.
async fn rollback(transaction: WriteTransaction) {
    if let Err(error) = transaction.rollback().await {
        tracing::debug!(%error, "rollback failed; the server ends the transaction with the connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        // Goal: every wait lies in the upper half of a ceiling that doubles from 2 ms to 64 ms.
        for retries in 0..30 {
            let ceiling = BACKOFF_FIRST.saturating_mul(1 << retries.min(10)).min(BACKOFF_MAX);
            let wait = backoff(retries);
            assert!(wait <= ceiling && wait >= ceiling / 2, "retry {retries}: {wait:?} of {ceiling:?}");
        }
        assert!(backoff(20) <= BACKOFF_MAX);
    }

    #[test]
    fn urls_lose_their_password() {
        // Goal: messages never carry credentials.
        assert_eq!(redacted("postgres://u:secret@h:5432/d"), "postgres://…@h:5432/d");
        assert_eq!(redacted("postgres://h/d"), "postgres://h/d");
    }
}
