//! Where payments and users are kept, and how their writes meet the idempotency record.
//!
//! [`Ledger`] is the one store-specific piece of the app. Its implementations:
//!
//! | ledger | idempotency store | mode | what holds |
//! |---|---|---|---|
//! | [`SqliteLedger`] | [`idem_sqlite::SqliteStore`], same file | atomic: the payment row and the completion commit in one transaction | G1-G8 |
//! | [`PostgresLedger`](crate::PostgresLedger) | [`idem_postgres::PostgresStore`], same database and schema | atomic: the payment row and the completion commit in one PostgreSQL transaction | G1-G8, for any number of replicas |
//! | [`SeparateLedger`](crate::SeparateLedger) | any store (Redis) beside a SQLite or PostgreSQL ledger | separate: the layer completes after the handler | all but G1 across lease lapses and crashes after the side effect; G7 as the store keeps its records |
//! | [`MemoryLedger`] | [`idem_core::MemoryStore`] | separate: the layer completes after the handler | all but G1 across lease lapses, and nothing survives a restart (no G7) |

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_core::{
    AtomicStore, CommitError, Fenced, MemoryStore, Principal, Store, StoreError, StoredResponse, Timestamp,
    WritesFuture,
};
use idem_http::ClaimContext;
use idem_sqlite::SqliteStore;

use crate::domain::{Payment, User};
use crate::rows::{page_after_cursor, payment_of_row, user_of_row};

/// The most rows listed by `GET /payments` or `GET /users` in one page.
pub const LIST_LIMIT_MAX: usize = 100;

/// Which page of a caller's rows to list, in Stripe's shape: at most `limit` rows, the
/// ones written before the row `starting_after` (a payment or user id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows in the page, 1..=[`LIST_LIMIT_MAX`] (larger values are cut to it).
    pub limit: usize,
    /// The last id of the previous page; `None` for the first page.
    pub starting_after: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` rows.
    #[must_use]
    pub fn first(limit: usize) -> PageRequest {
        PageRequest { limit, starting_after: None }
    }

    fn limit(&self) -> usize {
        self.limit.clamp(1, LIST_LIMIT_MAX)
    }

    /// The limit plus one, as SQL binds it: one row more than the page tells `has_more`.
    pub(crate) fn probe(&self) -> i64 {
        i64::try_from(self.limit() + 1).expect("the list limit is small")
    }
}

/// One page of a caller's rows, newest first.
///
/// Rows are ordered by when they were written (a sequence number the ledger assigns), and
/// a page starts after a row, not at an offset, so paging is stable under concurrent
/// inserts: a walk from the first page to `has_more == false` sees every row that existed
/// when it started exactly once (rows written during the walk are newer than its cursor
/// and appear in a later walk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Whether older rows follow the last one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read newest first.
    pub(crate) fn from_probe(mut rows: Vec<T>, request: &PageRequest) -> Page<T> {
        let has_more = rows.len() > request.limit();
        rows.truncate(request.limit());
        Page { items: rows, has_more }
    }
}

/// Why the ledger could not do what was asked. Nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed or was busy; the caller may retry later.
    #[error("ledger unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// The ledger is at its size limit.
    #[error("ledger is full ({what})")]
    Full {
        /// Which limit.
        what: String,
    },
    /// A stored row cannot be read back.
    #[error("ledger holds a row it cannot read: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// When a client might try again, if the error is passing.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LedgerError::Unavailable(StoreError::Unavailable { retry_after, .. }) => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            LedgerError::Unavailable(_) | LedgerError::Corrupt(_) => None,
            LedgerError::Full { .. } => Some(Duration::from_secs(60)),
        }
    }
}

pub(crate) fn unavailable(error: sqlx::Error) -> LedgerError {
    LedgerError::Unavailable(StoreError::unavailable(error))
}

/// What a handler running under a claim hands to the ledger, so that a ledger in atomic
/// mode completes the record in the same transaction as its write.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The claim the handler runs under.
    pub claim: &'a ClaimContext,
    /// The response to record, as the layer would store it.
    pub response: &'a StoredResponse,
}

/// A write and, in atomic mode, the completion that went with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the ledger did not touch the idempotency record (separate mode, or no claim).
    Alone,
    /// The completion was applied and the write committed with it.
    Completed,
    /// The claim is no longer this execution's: nothing was written (atomic mode, G1).
    Superseded(Fenced),
}

/// Where payments and users live; see the module docs for the two implementations.
pub trait Ledger: Send + Sync + 'static {
    /// The idempotency store the layer uses with this ledger.
    type Store: Store + 'static;

    /// The idempotency store, shared with the layer.
    fn idempotency_store(&self) -> Arc<Self::Store>;

    /// Whether writes complete the claim in their own transaction (atomic mode). When
    /// false, handlers need not build the stored response: the layer records it.
    fn completes_in_transaction(&self) -> bool;

    /// Records `payment`; with a `completion`, an atomic-mode ledger completes the claim in
    /// the same transaction and writes nothing if the completion is refused.
    fn insert_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion<'_>>,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send;

    /// The payment `payment_id` if it belongs to `principal`.
    fn payment(
        &self,
        principal: &Principal,
        payment_id: &str,
    ) -> impl Future<Output = Result<Option<Payment>, LedgerError>> + Send;

    /// A page of `principal`'s payments (see [`Page`]), or `None` when
    /// `page.starting_after` names no payment of theirs.
    fn payments(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Option<Page<Payment>>, LedgerError>> + Send;

    /// Records `user`, like [`Ledger::insert_payment`].
    fn insert_user(
        &self,
        user: &User,
        completion: Option<Completion<'_>>,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send;

    /// The user `user_id` if `principal` created it.
    fn user(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<User>, LedgerError>> + Send;

    /// A page of the users `principal` created, like [`Ledger::payments`].
    fn users(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Option<Page<User>>, LedgerError>> + Send;

    /// Whether the ledger can take a write now: `Ok` after a write transaction committed
    /// (for `/healthz`), the failure otherwise. A cheap probe that may rewrite a row in
    /// place, so its success does not prove that new rows fit: it never makes a server
    /// ready again ([`crate::readiness`]).
    fn check_writable(&self) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Whether the ledger has room for new rows now: `Ok` after a write that needs what a
    /// new payment needs (fresh storage, under the ledger's bounds) committed. `/healthz`
    /// runs it while the readiness latch is down; its success makes the server ready again
    /// ([`crate::readiness`]). By default, [`Ledger::check_writable`], for a ledger whose
    /// every write takes the same room.
    fn check_room(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.check_writable()
    }
}

/// Payments and users in memory, beside a [`MemoryStore`] (separate mode). For benches,
/// simulations and trying the API out; nothing survives a restart.
#[derive(Debug)]
pub struct MemoryLedger {
    store: Arc<MemoryStore>,
    rows_max: usize,
    tables: Mutex<MemoryTables>,
}

#[derive(Debug, Default)]
struct MemoryTables {
    rows: usize,
    payments: MemoryTable<Payment>,
    users: MemoryTable<User>,
}

/// Rows by id, and each principal's ids by write order (a sequence number), so that a
/// page is a range scan like the SQL ledgers' `seq < cursor ORDER BY seq DESC`.
#[derive(Debug)]
struct MemoryTable<T> {
    next_seq: u64,
    rows: BTreeMap<String, (u64, T)>,
    by_principal: BTreeMap<Principal, BTreeMap<u64, String>>,
}

impl<T> Default for MemoryTable<T> {
    fn default() -> Self {
        MemoryTable { next_seq: 0, rows: BTreeMap::new(), by_principal: BTreeMap::new() }
    }
}

impl<T: Clone> MemoryTable<T> {
    fn insert(&mut self, principal: &Principal, id: &str, row: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_principal.entry(principal.clone()).or_default().insert(seq, id.to_owned());
        self.rows.insert(id.to_owned(), (seq, row));
    }

    /// The row `id` if `principal` wrote it.
    fn get(&self, principal: &Principal, id: &str) -> Option<T> {
        let (seq, row) = self.rows.get(id)?;
        self.by_principal.get(principal)?.contains_key(seq).then(|| row.clone())
    }

    fn page(&self, principal: &Principal, request: &PageRequest) -> Option<Page<T>> {
        let Some(ids) = self.by_principal.get(principal) else {
            return request.starting_after.is_none().then(|| Page { items: Vec::new(), has_more: false });
        };
        let before = match &request.starting_after {
            None => u64::MAX,
            Some(cursor) => *self.rows.get(cursor).map(|(seq, _)| seq).filter(|seq| ids.contains_key(seq))?,
        };
        let newest_first = ids.range(..before).rev().take(request.limit() + 1);
        let rows = newest_first.filter_map(|(_, id)| self.rows.get(id).map(|(_, row)| row.clone())).collect();
        Some(Page::from_probe(rows, request))
    }
}

impl MemoryLedger {
    /// Default bound on payments plus users held.
    pub const ROWS_MAX_DEFAULT: usize = 1_000_000;

    /// An empty ledger over `store`, holding at most `rows_max` payments and users.
    #[must_use]
    pub fn new(store: Arc<MemoryStore>, rows_max: usize) -> MemoryLedger {
        MemoryLedger { store, rows_max, tables: Mutex::new(MemoryTables::default()) }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, MemoryTables> {
        // Every update below is a single insert after its checks, so a panic elsewhere
        // cannot leave the tables half-written: a poisoned lock is safe to use.
        self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_row(&self, tables: &mut MemoryTables) -> Result<(), LedgerError> {
        if tables.rows >= self.rows_max {
            return Err(LedgerError::Full { what: format!("{} rows", self.rows_max) });
        }
        tables.rows += 1;
        Ok(())
    }
}

impl Ledger for MemoryLedger {
    type Store = MemoryStore;

    fn idempotency_store(&self) -> Arc<MemoryStore> {
        Arc::clone(&self.store)
    }

    fn completes_in_transaction(&self) -> bool {
        false
    }

    async fn insert_payment(
        &self,
        payment: &Payment,
        _completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        let mut tables = self.tables();
        self.take_row(&mut tables)?;
        tables.payments.insert(&payment.principal, &payment.payment_id, payment.clone());
        Ok(Written::Alone)
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        Ok(self.tables().payments.get(principal, payment_id))
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        Ok(self.tables().payments.page(principal, page))
    }

    async fn insert_user(&self, user: &User, _completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        let mut tables = self.tables();
        self.take_row(&mut tables)?;
        tables.users.insert(&user.principal, &user.user_id, user.clone());
        Ok(Written::Alone)
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        Ok(self.tables().users.get(principal, user_id))
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        Ok(self.tables().users.page(principal, page))
    }

    async fn check_writable(&self) -> Result<(), LedgerError> {
        // Memory always takes a write; a full ledger still serves replays and reads.
        Ok(())
    }

    /// Room for one more row under `rows_max`.
    async fn check_room(&self) -> Result<(), LedgerError> {
        if self.tables().rows >= self.rows_max {
            return Err(LedgerError::Full { what: format!("{} rows", self.rows_max) });
        }
        Ok(())
    }
}

/// The app's tables, beside idem's `idem_*` tables in the same file. `seq` keeps the order
/// of writes, so "newest first" does not depend on two payments' timestamps differing.
const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS payments (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_id   TEXT    NOT NULL UNIQUE,
        principal    TEXT    NOT NULL,
        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency     TEXT    NOT NULL,
        destination  TEXT    NOT NULL,
        status       TEXT    NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS payments_by_principal ON payments (principal, seq)",
    "CREATE TABLE IF NOT EXISTS users (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL UNIQUE,
        principal  TEXT    NOT NULL,
        name       TEXT    NOT NULL,
        email      TEXT    NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS users_by_principal ON users (principal, seq)",
    // One row that `/healthz` rewrites: proof that a write transaction commits.
    "CREATE TABLE IF NOT EXISTS server_health (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at INTEGER NOT NULL
    ) STRICT",
    // Rows of `ROOM_PROBE_BYTES` that the recovery probe writes: proof of fresh storage.
    "CREATE TABLE IF NOT EXISTS server_room (
        seq    INTEGER PRIMARY KEY,
        filler BLOB    NOT NULL
    ) STRICT",
];

/// The recovery probe's row ([`Ledger::check_room`]): 64 KiB, sixteen 4 KiB pages, more
/// than a payment and its record take. A row over a page goes to overflow pages, taken from
/// the free list or by growing the file, so the probe fails where a payment's new pages
/// would not fit. Random bytes, so no layer compresses them away.
pub(crate) const ROOM_PROBE_BYTES: i64 = 64 * 1024;

/// A page of `table` (payments or users) for a principal: the rows before the cursor's
/// `seq`, newest first, one more than the limit to tell `has_more`.
struct PageSql {
    cursor: &'static str,
    page: &'static str,
}

const PAYMENTS_PAGE: PageSql = PageSql {
    cursor: "SELECT seq FROM payments WHERE payment_id = ? AND principal = ?",
    page: "SELECT * FROM payments WHERE principal = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
};

const USERS_PAGE: PageSql = PageSql {
    cursor: "SELECT seq FROM users WHERE user_id = ? AND principal = ?",
    page: "SELECT * FROM users WHERE principal = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
};

/// Payments and users in the SQLite file that holds the idempotency records (atomic mode):
/// a payment row and its completion commit in one `BEGIN IMMEDIATE` transaction, so a
/// handler whose claim was taken over writes nothing (G1), and both survive a crash (G7).
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    store: Arc<SqliteStore>,
}

impl SqliteLedger {
    /// The ledger in `store`'s file; creates the app's tables if they are missing.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] if the tables cannot be created.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteLedger, LedgerError> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(store.pool()).await.map_err(unavailable)?;
        }
        Ok(SqliteLedger { store })
    }

    /// The number of payments held, over every principal (for tests and operators).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`].
    pub async fn payment_count(&self) -> Result<u64, LedgerError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(self.store.pool())
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// With a completion, runs `write` and completes the claim in one transaction of the
    /// store's next group commit ([`AtomicStore::complete_with`]): both or neither.
    async fn write_with(&self, write: SqliteWrite, completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        let Some(Completion { claim, response }) = completion else {
            // No claim: a write of its own, as an application without idem would make it (one
            // transaction, one fsync). The load bench's bare baseline is this path.
            let mut transaction = self.store.begin_write().await.map_err(LedgerError::Unavailable)?;
            write.execute(&mut *transaction).await.map_err(unavailable)?;
            transaction.commit().await.map_err(unavailable)?;
            return Ok(Written::Alone);
        };
        let fenced = self
            .store
            .complete_with(
                claim.id(),
                claim.fence(),
                response.clone(),
                claim.now(),
                claim.policy(),
                one_statement(write),
            )
            .await
            .map_err(commit_error)?;
        Ok(match fenced {
            Fenced::Applied => Written::Completed,
            refused @ Fenced::Refused(_) => Written::Superseded(refused),
        })
    }
}

/// One business statement with its arguments bound, ready to run in the store's writer.
type SqliteWrite = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// `write` as the business writes of a group commit.
fn one_statement(
    write: SqliteWrite,
) -> impl for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> WritesFuture<'c, sqlx::Error> + Send + 'static {
    move |connection| Box::pin(async move { write.execute(&mut *connection).await.map(drop) })
}

/// A failed group commit: nothing of it was written.
fn commit_error(error: CommitError<sqlx::Error>) -> LedgerError {
    match error {
        CommitError::Writes(error) => unavailable(error),
        CommitError::Store(error) => LedgerError::Unavailable(error),
    }
}

pub(crate) fn sql_time(t: Timestamp) -> i64 {
    i64::try_from(t.unix_ms()).unwrap_or(i64::MAX)
}

pub(crate) fn principal_of_row(text: &str) -> Result<Principal, LedgerError> {
    if text.is_empty() {
        return Ok(Principal::anonymous());
    }
    Principal::new(text).map_err(|error| LedgerError::Corrupt(format!("principal {text:?}: {error}")))
}

pub(crate) fn time_of_row(ms: i64) -> Result<Timestamp, LedgerError> {
    u64::try_from(ms).map(Timestamp::from_unix_ms).map_err(|_| LedgerError::Corrupt(format!("created_at {ms}")))
}

impl Ledger for SqliteLedger {
    type Store = SqliteStore;

    fn idempotency_store(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }

    fn completes_in_transaction(&self) -> bool {
        true
    }

    async fn insert_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        let amount_minor =
            i64::try_from(payment.request.amount.minor()).expect("amounts are bounded far below i64::MAX");
        let insert = sqlx::query(
            "INSERT INTO payments (payment_id, principal, amount_minor, currency, destination, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(payment.payment_id.clone())
        .bind(payment.principal.as_str().to_owned())
        .bind(amount_minor)
        .bind(payment.request.currency.clone())
        .bind(payment.request.destination.clone())
        .bind(payment.status.as_str())
        .bind(sql_time(payment.created_at));
        self.write_with(insert, completion).await
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        let row = sqlx::query("SELECT * FROM payments WHERE payment_id = ? AND principal = ?")
            .bind(payment_id)
            .bind(principal.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(unavailable)?;
        row.as_ref().map(payment_of_row).transpose()
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        self.page(&PAYMENTS_PAGE, principal, page, payment_of_row).await
    }

    async fn insert_user(&self, user: &User, completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        let insert =
            sqlx::query("INSERT INTO users (user_id, principal, name, email, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(user.user_id.clone())
                .bind(user.principal.as_str().to_owned())
                .bind(user.request.name.clone())
                .bind(user.request.email.clone())
                .bind(sql_time(user.created_at));
        self.write_with(insert, completion).await
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        let row = sqlx::query("SELECT * FROM users WHERE user_id = ? AND principal = ?")
            .bind(user_id)
            .bind(principal.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(unavailable)?;
        row.as_ref().map(user_of_row).transpose()
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        self.page(&USERS_PAGE, principal, page, user_of_row).await
    }

    async fn check_writable(&self) -> Result<(), LedgerError> {
        let check = sqlx::query(
            "INSERT OR REPLACE INTO server_health (id, checked_at) VALUES (1, CAST(strftime('%s', 'now') AS INTEGER) * 1000)",
        );
        self.store.write(one_statement(check)).await.map_err(commit_error)
    }

    /// Writes a new [`ROOM_PROBE_BYTES`] row and deletes the older ones, in one transaction
    /// of the store's writer (the connection every write of the store goes through). The new
    /// row is written before the old one is freed, so it cannot take the old one's pages.
    async fn check_room(&self) -> Result<(), LedgerError> {
        self.store
            .write(|connection| {
                Box::pin(async move {
                    let seq: i64 =
                        sqlx::query_scalar("INSERT INTO server_room (filler) VALUES (randomblob(?)) RETURNING seq")
                            .bind(ROOM_PROBE_BYTES)
                            .fetch_one(&mut *connection)
                            .await?;
                    sqlx::query("DELETE FROM server_room WHERE seq < ?").bind(seq).execute(&mut *connection).await?;
                    Ok(())
                })
            })
            .await
            .map_err(commit_error)
    }
}

impl SqliteLedger {
    async fn page<T>(
        &self,
        sql: &PageSql,
        principal: &Principal,
        request: &PageRequest,
        decode: fn(&sqlx::sqlite::SqliteRow) -> Result<T, LedgerError>,
    ) -> Result<Option<Page<T>>, LedgerError> {
        let pool = self.store.pool();
        let cursor_seq = |cursor: String| async move {
            sqlx::query_scalar(sql.cursor)
                .bind(cursor)
                .bind(principal.as_str())
                .fetch_optional(pool)
                .await
                .map_err(unavailable)
        };
        let rows_before = |before: i64, probe: i64| async move {
            let rows = sqlx::query(sql.page)
                .bind(principal.as_str())
                .bind(before)
                .bind(probe)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
            rows.iter().map(decode).collect::<Result<Vec<T>, LedgerError>>()
        };
        page_after_cursor(request, cursor_seq, rows_before).await
    }
}
