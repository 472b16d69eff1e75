//! [`SqliteStore`]: idem-core's transitions applied in SQLite transactions.

use idem_core::transition::{self, Transition, Write};
use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Policy, Record, RecordId, Refusal, Store, StoreError, StoredResponse,
    Timestamp,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};

use crate::codec::{self, StoredRecord, record_columns};
use crate::error::{OpenError, corrupt, store_error};
use crate::options::SqliteOptions;

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

/// What a store holds, as its size limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Records held, live or expired but not yet purged.
    pub records: u64,
    /// Bytes of ids, responses and bookkeeping, counted as [`idem_core::MemoryStore`] counts them.
    pub stored_bytes: u64,
}

/// The durable store: records in a SQLite file, in WAL mode with `synchronous=FULL`.
///
/// Cloning is cheap and shares the pool. See the crate docs for the schema, the atomic-mode
/// recipe and what each failure means.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    records_max: u64,
    stored_bytes_max: u64,
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

        let pool = SqlitePoolOptions::new()
            .max_connections(options.connections_max)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|error| OpenError::from_sqlx(path, error))?;
        Ok(SqliteStore { pool, records_max: options.records_max, stored_bytes_max: options.stored_bytes_max })
    }

    /// The connection pool, for an application's own migrations and queries on the same
    /// file (its tables must not start with `idem_`).
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    /// Later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
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
    /// Unlike [`Store::complete`], a second completion with the fence that already
    /// completed the record is refused (`Refused(AlreadyCompleted)` naming that very fence):
    /// its transaction's business writes would repeat the first one's.
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
        let (outcome, wrote) = complete_on(transaction, id, fence, response, now, policy).await?;
        match outcome {
            Fenced::Applied if !wrote => Ok(Fenced::Refused(Refusal::AlreadyCompleted { completed_by: fence })),
            outcome => Ok(outcome),
        }
    }

    /// What the store holds, as its size limits count it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        read_usage(&mut connection).await
    }

    async fn claim_now(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let mut transaction = self.begin_write().await?;
        let current = read_record(&mut transaction, id).await?;
        let fresh_fence = read_next_fence(&mut transaction).await?;
        if let Some(current) = &current
            && current.record.fence >= fresh_fence
        {
            // idem-core would panic on a reused fence; a counter behind a record is damage.
            return Err(corrupt(format!(
                "the fence counter ({fresh_fence:?}) is not past the record's fence ({:?})",
                current.record.fence
            )));
        }
        let Transition { outcome, write } =
            transition::claim(current.as_ref().map(|c| &c.record), fingerprint, now, policy, fresh_fence);
        if let Write::Put(_) = write {
            self.check_room(&mut transaction, current.is_some()).await?;
            write_next_fence(&mut transaction, fresh_fence.next()).await?;
        }
        apply(&mut transaction, id, current.as_ref(), write).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(outcome)
    }

    /// Refuses a new claim at a size limit, as [`idem_core::MemoryStore`] does: a claim
    /// that replaces a held (expired) record adds no record, only bytes.
    async fn check_room(&self, connection: &mut SqliteConnection, replaces_a_record: bool) -> Result<(), StoreError> {
        let usage = read_usage(connection).await?;
        if !replaces_a_record && usage.records >= self.records_max {
            return Err(StoreError::Full { what: format!("{} records", self.records_max) });
        }
        if usage.stored_bytes >= self.stored_bytes_max {
            return Err(StoreError::Full { what: format!("{} bytes", self.stored_bytes_max) });
        }
        Ok(())
    }

    async fn complete_now(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let mut transaction = self.begin_write().await?;
        let (outcome, wrote) = complete_on(&mut transaction, id, fence, response, now, policy).await?;
        if wrote {
            transaction.commit().await.map_err(store_error)?;
        }
        Ok(outcome)
    }

    async fn release_now(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        let mut transaction = self.begin_write().await?;
        let current = read_record(&mut transaction, id).await?;
        let Transition { outcome, write } = transition::release(current.as_ref().map(|c| &c.record), fence);
        if write != Write::Unchanged {
            apply(&mut transaction, id, current.as_ref(), write).await?;
            transaction.commit().await.map_err(store_error)?;
        }
        Ok(outcome)
    }

    async fn get_now(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        Ok(read_record(&mut connection, id).await?.map(|stored| stored.record))
    }

    async fn purge_now(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        if batch_max == 0 {
            return Ok(0);
        }
        let limit = i64::try_from(batch_max).unwrap_or(i64::MAX);
        let mut transaction = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            "SELECT principal, idem_key, ",
            record_columns!(),
            " FROM idem_records WHERE forgettable_at <= ?1 ORDER BY forgettable_at, principal, idem_key LIMIT ?2"
        ))
        .bind(codec::time_to_sql(now))
        .bind(limit)
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;
        let mut freed_bytes: u64 = 0;
        for row in &rows {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            // A row the index calls expired is forgotten even if it cannot be read back:
            // refusing would leave it first in every later batch, and purging would stall
            // for good (and the store fill up). Forgetting a record is always safe: its
            // fence stops being current, so a late completion is refused (G3).
            let freed = match codec::decode_record(row) {
                Ok(stored) if transition::expire(&stored.record, now) == Write::Delete => stored.stored_bytes,
                Ok(stored) => {
                    tracing::warn!(principal, key, "record is indexed as expired but is not; purging it as indexed");
                    stored.stored_bytes
                }
                Err(error) => {
                    tracing::warn!(principal, key, %error, "expired record cannot be read; purging it");
                    row.try_get::<i64, _>("stored_bytes").ok().and_then(|bytes| u64::try_from(bytes).ok()).unwrap_or(0)
                }
            };
            sqlx::query("DELETE FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
                .bind(&principal)
                .bind(&key)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            freed_bytes = freed_bytes.saturating_add(freed);
        }
        let purged = u64::try_from(rows.len()).expect("a batch of rows in memory counts within u64");
        add_usage(&mut transaction, -signed(purged)?, -signed(freed_bytes)?).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(rows.len())
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
    migrator().run(&mut *connection).await.map_err(|error| OpenError::from_migrate(path(), error))
}

/// idem's migrations (the crate's `migrations/` folder), noted in [`MIGRATIONS_TABLE`].
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The record transition for a completion, applied on `connection` (inside a transaction
/// the caller commits). Returns the outcome and whether anything was written.
async fn complete_on(
    connection: &mut SqliteConnection,
    id: &RecordId,
    fence: Fence,
    response: StoredResponse,
    now: Timestamp,
    policy: &Policy,
) -> Result<(Fenced, bool), StoreError> {
    let current = read_record(connection, id).await?;
    let Transition { outcome, write } =
        transition::complete(current.as_ref().map(|c| &c.record), fence, response, now, policy);
    let wrote = write != Write::Unchanged;
    apply(connection, id, current.as_ref(), write).await?;
    Ok((outcome, wrote))
}

async fn read_record(connection: &mut SqliteConnection, id: &RecordId) -> Result<Option<StoredRecord>, StoreError> {
    let row =
        sqlx::query(concat!("SELECT ", record_columns!(), " FROM idem_records WHERE principal = ?1 AND idem_key = ?2"))
            .bind(id.principal.as_str())
            .bind(id.key.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)?;
    row.as_ref().map(codec::decode_record).transpose()
}

async fn read_next_fence(connection: &mut SqliteConnection) -> Result<Fence, StoreError> {
    let next: Option<i64> = sqlx::query_scalar("SELECT next_fence FROM idem_fence WHERE id = 1")
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    codec::fence_from_sql("idem_fence.next_fence", next.ok_or_else(|| corrupt("the fence counter row is missing"))?)
}

async fn write_next_fence(connection: &mut SqliteConnection, next: Fence) -> Result<(), StoreError> {
    let next = codec::fence_to_sql(next).map_err(|_| corrupt("the fence counter is exhausted"))?;
    sqlx::query("UPDATE idem_fence SET next_fence = ?1 WHERE id = 1 AND next_fence < ?1")
        .bind(next)
        .execute(&mut *connection)
        .await
        .map_err(store_error)
        .and_then(|done| match done.rows_affected() {
            1 => Ok(()),
            _ => Err(corrupt("the fence counter did not grow")),
        })
}

async fn read_usage(connection: &mut SqliteConnection) -> Result<Usage, StoreError> {
    let row = sqlx::query("SELECT records, stored_bytes FROM idem_usage WHERE id = 1")
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .ok_or_else(|| corrupt("the usage row is missing"))?;
    Ok(Usage {
        records: codec::count_from_sql("idem_usage.records", row.try_get("records").map_err(store_error)?)?,
        stored_bytes: codec::count_from_sql(
            "idem_usage.stored_bytes",
            row.try_get("stored_bytes").map_err(store_error)?,
        )?,
    })
}

async fn add_usage(connection: &mut SqliteConnection, records: i64, stored_bytes: i64) -> Result<(), StoreError> {
    if records == 0 && stored_bytes == 0 {
        return Ok(());
    }
    sqlx::query("UPDATE idem_usage SET records = records + ?1, stored_bytes = stored_bytes + ?2 WHERE id = 1")
        .bind(records)
        .bind(stored_bytes)
        .execute(&mut *connection)
        .await
        .map_err(store_error)
        .and_then(|done| match done.rows_affected() {
            1 => Ok(()),
            _ => Err(corrupt("the usage row is missing")),
        })
}

fn signed(count: u64) -> Result<i64, StoreError> {
    codec::count_to_sql("a usage change", count)
}

/// Writes what a transition decided, and keeps the usage row in step.
async fn apply(
    connection: &mut SqliteConnection,
    id: &RecordId,
    current: Option<&StoredRecord>,
    write: Write,
) -> Result<(), StoreError> {
    let old_bytes = current.map_or(0, |c| c.stored_bytes);
    match write {
        Write::Unchanged => Ok(()),
        Write::Put(record) => {
            let new_bytes = u64::try_from(id.stored_bytes() + record.stored_bytes())
                .map_err(|_| corrupt("a record's size does not fit u64"))?;
            put_record(connection, id, &record, new_bytes).await?;
            let added_records = i64::from(current.is_none());
            add_usage(connection, added_records, signed(new_bytes)? - signed(old_bytes)?).await
        }
        Write::Delete => {
            let deleted = sqlx::query("DELETE FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
                .bind(id.principal.as_str())
                .bind(id.key.as_str())
                .execute(&mut *connection)
                .await
                .map_err(store_error)?
                .rows_affected();
            debug_assert_eq!(deleted, u64::from(current.is_some()), "transitions delete only held records");
            add_usage(connection, -signed(deleted)?, -signed(old_bytes)?).await
        }
    }
}

async fn put_record(
    connection: &mut SqliteConnection,
    id: &RecordId,
    record: &Record,
    stored_bytes: u64,
) -> Result<(), StoreError> {
    let row = codec::encode_record(record)?;
    sqlx::query(
        "INSERT INTO idem_records (principal, idem_key, fingerprint, fence, state, lease_expires_at, \
         expires_at, forgettable_at, status, headers, body, stored_bytes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (principal, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         fence = excluded.fence, state = excluded.state, lease_expires_at = excluded.lease_expires_at, \
         expires_at = excluded.expires_at, forgettable_at = excluded.forgettable_at, \
         status = excluded.status, headers = excluded.headers, body = excluded.body, \
         stored_bytes = excluded.stored_bytes",
    )
    .bind(id.principal.as_str())
    .bind(id.key.as_str())
    .bind(row.fingerprint)
    .bind(row.fence)
    .bind(row.state)
    .bind(row.lease_expires_at)
    .bind(row.expires_at)
    .bind(row.forgettable_at)
    .bind(row.status)
    .bind(row.headers)
    .bind(row.body)
    .bind(signed(stored_bytes)?)
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    Ok(())
}

impl Store for SqliteStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.claim_now(id, fingerprint, now, policy).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.complete_now(id, fence, response, now, policy).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.release_now(id, fence).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.get_now(id).await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.purge_now(now, batch_max).await
    }
}
