//! [`PostgresStore`]: idem-core's store step, read and written in PostgreSQL statements.
//!
//! Every read-decide-write here has the same shape: [`decide`] reads the record (with its
//! row version), the counters and the database's clock in one statement and calls
//! [`idem_core::step::step`]; [`write`] writes exactly what the [`Step`] names in one
//! statement, guarded by what the read found. [`complete_guarded`] is a completion of the
//! claim in flight in one statement, checked against the step afterwards. The store has
//! no rule of its own about the protocol.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use idem_core::step::{self, Counters, Operation, Step, StoreView, op};
use idem_core::{
    AtomicStore, CommitError, Decision, Fence, Fenced, Fingerprint, Limits, Policy, Record, RecordId, RecordState,
    Renewal, Store, StoreError, StoredResponse, Timestamp, Usage, UsageDelta, Write, WritesFuture, usage,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Transaction};

use crate::codec::{self, RECORD_COLUMNS, STATE_IN_FLIGHT, usage_shard};
use crate::error::{Failure, INTEGRITY_CLASS, OpenError, corrupt, sqlstate, store_error};
use crate::options::{PostgresOptions, TimeSource};
use crate::planting::PlantedBug;
use crate::{schema, session};

/// A transaction on a pooled connection from [`PostgresStore::begin_write`]. It commits
/// with `commit()`; dropped, it rolls back.
pub type WriteTransaction = Transaction<'static, Postgres>;

/// The database's clock in unix milliseconds.
const DB_NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::int8";

/// Backoff after contention: 2 ms doubling per retry up to 64 ms, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// How a step reads the record and the fence counter (the sequence `idem_fence_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadKind {
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

/// Every statement, with the schema spelled out, built once at open.
#[derive(Debug, Clone)]
struct Statements {
    read_view_draw: Arc<str>,
    read_view_peek: Arc<str>,
    read_view_locked: Arc<str>,
    complete_guarded: Arc<str>,
    read_counters: Arc<str>,
    read_record: Arc<str>,
    insert_record: Arc<str>,
    update_record: Arc<str>,
    delete_record: Arc<str>,
    purge_due: Arc<str>,
    purge_delete: Arc<str>,
    purge_usage: Arc<str>,
    usage_totals: Arc<str>,
}

impl Statements {
    #[allow(clippy::too_many_lines)] // one statement after another, each with its comment
    fn new(schema: &str) -> Statements {
        // `schema` is a plain identifier (checked by the options), safe between quotes.
        let s = format!("\"{schema}\"");
        let usage_sums = format!(
            "(SELECT coalesce(sum(records), 0)::int8 FROM {s}.idem_usage) AS usage_records, \
             (SELECT coalesce(sum(stored_bytes), 0)::int8 FROM {s}.idem_usage) AS usage_stored_bytes"
        );
        let peek =
            format!("(SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {s}.idem_fence_seq)");
        // The record's row version: the id of the transaction that wrote it (`xmin`). A
        // later write of the row is another transaction's, so the version differs; a write
        // guarded by the version read applies only to the row as read (see the crate docs).
        let version = "r.xmin::text::int8";
        // The record is read in a lateral subquery (locked, for the locked read); the outer
        // projection (the fence counter, the clock) is evaluated at the join, after the
        // record was read (and its lock granted), so a claim draws a fence after the fence
        // of the record it read was drawn, and reads the time after that record was
        // written. The usage sums read the statement's snapshot (see the crate docs).
        let read_view = |fence: &str, lock: &str| {
            format!(
                "SELECT x.held IS NOT NULL AS held, x.version, x.fingerprint, x.fence, x.state, \
                 x.lease_expires_at, x.expires_at, x.forgettable_at, x.status, x.headers, x.body, \
                 {fence} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL \
                 (SELECT true AS held, {version} AS version, {RECORD_COLUMNS} FROM {s}.idem_records AS r \
                 WHERE r.principal = $1 AND r.idem_key = $2{lock}) AS x ON true"
            )
        };
        // The usage delta goes to the record's shard, only when the record write happened
        // and the delta changes something.
        let usage_cte = |first: u32| {
            let (records, bytes, shard) = (first, first + 1, first + 2);
            format!(
                "u AS (UPDATE {s}.idem_usage SET records = records + ${records}, \
                 stored_bytes = stored_bytes + ${bytes} WHERE shard = ${shard} \
                 AND (${records} <> 0 OR ${bytes} <> 0) AND EXISTS (SELECT 1 FROM w) RETURNING 1)"
            )
        };
        let counts = "SELECT (SELECT count(*) FROM w) AS written, (SELECT count(*) FROM u) AS counted";
        let columns = "fingerprint, fence, state, lease_expires_at, expires_at, forgettable_at, status, headers, \
                       body, stored_bytes";
        let arc = |sql: String| Arc::<str>::from(sql);
        Statements {
            read_view_draw: arc(read_view(&format!("nextval('{s}.idem_fence_seq')"), "")),
            read_view_peek: arc(read_view(&peek, "")),
            read_view_locked: arc(read_view(&peek, " FOR UPDATE")),
            // Atomic mode's completion in one statement (PostgresStore::complete_in): `old`
            // locks the record's row if it is the claim `$3` in flight and reads the view
            // around it (counters, clock) after the lock is granted; `w` writes the completion
            // the store step names for that view (columns `$4`.., bound from the step), its
            // times counted from the view's clock (`$9`: the caller's time under
            // TimeSource::Caller, else the clock; `$10`: the retention in ms), only if the
            // fence counter is past the record's fence (the step's check); `u` adds the usage
            // delta. The view and what was written come back for the step to check.
            complete_guarded: arc(format!(
                "WITH old AS (SELECT x.*, {peek} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now \
                 FROM (SELECT {version} AS version, {RECORD_COLUMNS} FROM {s}.idem_records AS r \
                 WHERE r.principal = $1 AND r.idem_key = $2 AND r.state = '{STATE_IN_FLIGHT}' AND r.fence = $3 \
                 FOR UPDATE) AS x), \
                 t AS (SELECT LEAST(coalesce($9::int8, old.db_now)::numeric + $10::int8, 9223372036854775807)::int8 \
                 AS at FROM old), \
                 w AS (UPDATE {s}.idem_records AS r SET state = $4, lease_expires_at = $5, expires_at = t.at, \
                 forgettable_at = t.at, status = $6, headers = $7, body = $8, stored_bytes = $11 FROM old, t \
                 WHERE r.principal = $1 AND r.idem_key = $2 AND r.state = '{STATE_IN_FLIGHT}' AND r.fence = $3 \
                 AND old.next_fence > old.fence \
                 RETURNING r.expires_at AS written_expires_at, r.forgettable_at AS written_forgettable_at), {}, \
                 counts AS ({counts}) \
                 SELECT old.*, w.written_expires_at, w.written_forgettable_at, counts.written, counts.counted \
                 FROM old CROSS JOIN counts LEFT JOIN w ON true",
                usage_cte(12)
            )),
            read_counters: arc(format!("SELECT {peek} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now")),
            read_record: arc(format!(
                "SELECT {RECORD_COLUMNS} FROM {s}.idem_records AS r WHERE r.principal = $1 AND r.idem_key = $2"
            )),
            // A new record id: two operations that both found it absent race here, and the
            // unique key lets exactly one insert; the other inserts nothing and runs again.
            insert_record: arc(format!(
                "WITH w AS (INSERT INTO {s}.idem_records (principal, idem_key, {columns}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (principal, idem_key) DO NOTHING RETURNING 1), {} {counts}",
                usage_cte(13)
            )),
            // A held record: only the row version the step read (`$16`); a row another
            // operation wrote (or deleted) since is left alone, and this one runs again.
            update_record: arc(format!(
                "WITH w AS (UPDATE {s}.idem_records AS r SET fingerprint = $3, fence = $4, state = $5, \
                 lease_expires_at = $6, expires_at = $7, forgettable_at = $8, status = $9, headers = $10, \
                 body = $11, stored_bytes = $12 WHERE r.principal = $1 AND r.idem_key = $2 AND {version} = $16 \
                 RETURNING 1), {} {counts}",
                usage_cte(13)
            )),
            delete_record: arc(format!(
                "WITH w AS (DELETE FROM {s}.idem_records AS r WHERE r.principal = $1 AND r.idem_key = $2 \
                 AND {version} = $6 RETURNING 1), {} {counts}",
                usage_cte(3)
            )),
            // Rows other transactions hold are skipped: they are being worked on, and the
            // next batch finds them if they are still due.
            purge_due: arc(format!(
                "SELECT r.principal AS principal, r.idem_key AS idem_key, r.stored_bytes AS stored_bytes, \
                 {RECORD_COLUMNS} FROM {s}.idem_records AS r WHERE r.forgettable_at <= $1 \
                 ORDER BY r.forgettable_at, r.fence LIMIT $2 FOR UPDATE SKIP LOCKED"
            )),
            purge_delete: arc(format!(
                "DELETE FROM {s}.idem_records WHERE (principal, idem_key) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[]))"
            )),
            purge_usage: arc(format!(
                "UPDATE {s}.idem_usage AS u SET records = u.records + d.records, \
                 stored_bytes = u.stored_bytes + d.stored_bytes \
                 FROM unnest($1::int4[], $2::int8[], $3::int8[]) AS d(shard, records, stored_bytes) \
                 WHERE u.shard = d.shard"
            )),
            usage_totals: arc(format!("SELECT count(*) AS shards, {usage_sums} FROM {s}.idem_usage")),
        }
    }
}

/// The durable, shared store: records in PostgreSQL, decided by idem-core's store step.
///
/// Cloning is cheap and shares the pool. See the crate docs for the schema, the atomic-mode
/// recipe, time, concurrency and what each failure means.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    time: TimeSource,
    retries_max: u32,
    schema: String,
    sql: Statements,
    /// Whether the guarded completion checks what it wrote against the store step: always,
    /// but in a store with a bug planted for testing ([`PostgresStore::with_planted_bug`]).
    self_check: bool,
}

/// A query on one of the prebuilt statements.
fn query<'q>(sql: &Arc<str>) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
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
        let statements = [
            &mut sql.read_view_draw,
            &mut sql.read_view_peek,
            &mut sql.read_view_locked,
            &mut sql.complete_guarded,
            &mut sql.read_counters,
            &mut sql.read_record,
            &mut sql.insert_record,
            &mut sql.update_record,
            &mut sql.delete_record,
            &mut sql.purge_due,
            &mut sql.purge_delete,
            &mut sql.purge_usage,
            &mut sql.usage_totals,
        ];
        let mut planted = 0;
        for statement in statements.into_iter().filter(|statement| statement.contains(right)) {
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
    async fn run<O: Operation>(
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

    /// Forgets up to `batch_max` due records in one transaction, skipping rows other
    /// transactions hold: candidates come from the `forgettable_at` index, each goes
    /// through [`op::Expire`], the batch is deleted in one statement and its usage deltas
    /// are added per shard in another.
    async fn purge_attempt(&self, now: Timestamp, batch_max: usize) -> Result<usize, Failure> {
        let sql = &self.inner.sql;
        let limit = i64::try_from(batch_max).unwrap_or(i64::MAX);
        let mut transaction = self.pool.begin().await?;
        let counters_row = query(&sql.read_counters).fetch_one(&mut *transaction).await?;
        let (counters, db_now) = decode_counters(&counters_row)?;
        let now = self.now(now, db_now);
        let rows = query(&sql.purge_due).bind(codec::time_to_sql(now)).bind(limit).fetch_all(&mut *transaction).await?;
        let (mut principals, mut keys) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        let mut deltas: BTreeMap<i32, UsageDelta> = BTreeMap::new();
        for row in &rows {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            let read = codec::id_from_sql(&principal, &key)
                .and_then(|id| codec::decode_record(row).map(|record| (id, record)));
            let (shard, delta) = match read {
                Ok((id, record)) => {
                    let view = StoreView { record: Some(&record), counters, limits: self.inner.limits };
                    let step = step::step(&id, &view, op::Expire { now })?;
                    debug_assert!(step.next_fence.is_none(), "expiry issues no fence");
                    // The index and the record agree (decode_record checks the column), so
                    // every candidate has expired.
                    debug_assert!(step.answer, "the forgettable_at index lists only expired records");
                    if !step.answer {
                        continue;
                    }
                    debug_assert_eq!(step.write, Write::Delete, "an expired record is deleted");
                    (usage_shard(&id), step.usage)
                }
                Err(error) => forget_damaged(row, &principal, &key, &error),
            };
            let total = deltas.entry(shard).or_insert(UsageDelta::NONE);
            *total = sum(*total, delta)?;
            principals.push(principal);
            keys.push(key);
        }
        if principals.is_empty() {
            return Ok(0);
        }
        let deleted = query(&sql.purge_delete).bind(&principals).bind(&keys).execute(&mut *transaction).await?;
        // Every row was locked by this transaction, so every one is deleted.
        debug_assert_eq!(deleted.rows_affected(), u64::try_from(principals.len()).unwrap_or(u64::MAX));
        let shards: Vec<i32> = deltas.keys().copied().collect();
        let records: Vec<i64> = deltas.values().map(|delta| delta.records).collect();
        let bytes: Vec<i64> = deltas.values().map(|delta| delta.stored_bytes).collect();
        query(&sql.purge_usage).bind(&shards).bind(&records).bind(&bytes).execute(&mut *transaction).await?;
        transaction.commit().await?;
        Ok(principals.len())
    }

    fn now(&self, caller: Timestamp, database: Timestamp) -> Timestamp {
        pick_now(self.inner.time, caller, database)
    }
}

fn pick_now(time: TimeSource, caller: Timestamp, database: Timestamp) -> Timestamp {
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
            let statement = query(statement)
                .bind(principal)
                .bind(key)
                .bind(values.fingerprint)
                .bind(values.fence)
                .bind(values.state)
                .bind(values.lease_expires_at)
                .bind(values.expires_at)
                .bind(values.forgettable_at)
                .bind(values.status)
                .bind(values.headers)
                .bind(values.body)
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

/// Atomic mode's completion in one statement ([`Statements`]' `complete_guarded`) on the
/// caller's transaction: decide the step on the record as the claim `fence` in flight would
/// be (its fingerprint and times do not change a completion: the statement keeps the one
/// and counts the other from the view's clock), write it if the row is that claim, then run
/// the step again on the view the statement read and check it names exactly what was
/// written. Returns `None`, having written nothing, when the row is not that claim (or the
/// fence counter is not past it): then the locked read and the step answer.
async fn complete_guarded<O: Operation<Answer = Fenced>>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    fence: Fence,
    now: Timestamp,
    operation: impl Fn(Timestamp) -> O,
) -> Result<Option<Fenced>, Failure> {
    // The record the guard admits, at time zero: times are added in the statement.
    let presumed = Record {
        fingerprint: Fingerprint::from_bytes([0; 32]),
        fence,
        expires_at: Timestamp::EPOCH,
        state: RecordState::InFlight { lease_expires_at: Timestamp::EPOCH },
    };
    let view = StoreView {
        record: Some(&presumed),
        counters: Counters { next_fence: fence.next(), usage: Usage::default() },
        limits: inner.limits,
    };
    let planned = step::step(id, &view, operation(Timestamp::EPOCH))?;
    let Write::Put(completed) = &planned.write else {
        unreachable!("the step completes the claim in flight that it was shown")
    };
    debug_assert!(planned.answer == Fenced::Applied && planned.next_fence.is_none());
    let values = codec::encode_record(completed)?;
    // The retention, as the step counted it from time zero.
    let retention_ms = values.expires_at;
    let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(id, completed))?;
    let base = match inner.time {
        TimeSource::Database => None,
        TimeSource::Caller => Some(codec::time_to_sql(now)),
    };
    let shard = usage_shard(id);
    let row = query(&inner.sql.complete_guarded)
        .bind(id.principal.as_str())
        .bind(id.key.as_str())
        .bind(values.fence)
        .bind(values.state)
        .bind(values.lease_expires_at)
        .bind(values.status)
        .bind(values.headers.as_deref())
        .bind(values.body.as_deref())
        .bind(base)
        .bind(retention_ms)
        .bind(stored_bytes)
        .bind(planned.usage.records)
        .bind(planned.usage.stored_bytes)
        .bind(shard)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let written: i64 = row.try_get("written").map_err(store_error)?;
    let counted: i64 = row.try_get("counted").map_err(store_error)?;
    if written == 0 {
        return Ok(None);
    }
    if !inner.self_check {
        // A bug planted for testing: the SQL is trusted, wrong as it may be.
        return Ok(Some(planned.answer));
    }
    if counted != i64::from(!planned.usage.is_none()) {
        return Err(corrupt(format!("the idem_usage row of shard {shard} is missing")).into());
    }
    // The step on the view as read, at the view's time, must name what was written.
    let (counters, db_now) = decode_counters(&row)?;
    let old = codec::decode_record(&row)?;
    let now = pick_now(inner.time, now, db_now);
    let view = StoreView { record: Some(&old), counters, limits: inner.limits };
    let step = step::step(id, &view, operation(now))?;
    let expires_at: Option<i64> = row.try_get("written_expires_at").map_err(store_error)?;
    let forgettable_at: Option<i64> = row.try_get("written_forgettable_at").map_err(store_error)?;
    let agrees = match &step.write {
        Write::Put(record) => {
            let expected = codec::encode_record(record)?;
            let as_written = codec::RecordRow {
                fingerprint: expected.fingerprint.clone(), // the statement keeps the row's
                fence: codec::fence_to_sql(old.fence)?,    // and its fence
                expires_at: expires_at.unwrap_or(-1),
                forgettable_at: forgettable_at.unwrap_or(-1),
                ..values
            };
            record.fingerprint == old.fingerprint
                && expected == as_written
                && usage::stored_bytes(id, record) == usage::stored_bytes(id, completed)
        }
        Write::Unchanged | Write::Delete => false,
    };
    if !agrees || step.answer != planned.answer || step.usage != planned.usage || step.next_fence.is_some() {
        debug_assert!(false, "the guarded completion wrote what the step does not name: {step:?}");
        return Err(corrupt(format!("the guarded completion disagrees with the store step ({:?})", step.write)).into());
    }
    Ok(Some(step.answer))
}

/// Damage recovery, not a protocol rule: a row the index calls due that cannot be read
/// back (a hand-edited row, a row from another version) is forgotten anyway. Refusing
/// would leave it first in every later batch, and purging would stall for good (and the
/// store fill up). Forgetting a record is always safe: its fence stops being current, so
/// a late completion is refused (G3); the fence counter is not touched. Its usage is given
/// back as its `stored_bytes` column says (nothing, if that is unreadable too), to the
/// shard of its id (shard 0 if the id is unreadable too).
fn forget_damaged(row: &PgRow, principal: &str, key: &str, error: &StoreError) -> (i32, UsageDelta) {
    tracing::warn!(principal, key, %error, "expired record cannot be read; purging it");
    let shard = codec::id_from_sql(principal, key).map_or(0, |id| usage_shard(&id));
    let stored_bytes = row.try_get::<i64, _>("stored_bytes").ok().filter(|bytes| *bytes >= 0).unwrap_or(0);
    (shard, UsageDelta { records: -1, stored_bytes: -stored_bytes })
}

/// Two deltas as one; a sum past `i64` is damage (no batch frees that much).
fn sum(a: UsageDelta, b: UsageDelta) -> Result<UsageDelta, StoreError> {
    let records = a.records.checked_add(b.records);
    let stored_bytes = a.stored_bytes.checked_add(b.stored_bytes);
    match (records, stored_bytes) {
        (Some(records), Some(stored_bytes)) => Ok(UsageDelta { records, stored_bytes }),
        _ => Err(corrupt("a purge batch frees more than a PostgreSQL bigint counts")),
    }
}

/// The counters and the database's clock from a row with `next_fence`, the usage sums
/// and `db_now`.
fn decode_counters(row: &PgRow) -> Result<(Counters, Timestamp), StoreError> {
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
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let (fingerprint, policy) = (*fingerprint, *policy);
        self.run(id, ReadKind::Draw, now, |now| op::Claim { fingerprint, now, policy }).await
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
