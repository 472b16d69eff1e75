//! [`SqliteLedger`]: payments and users in the SQLite file that holds the idempotency
//! records (atomic mode). Its schema, its SQL and its group-commit writes live here, apart
//! from the trait ([`crate::ledger`]) and the other ledgers.

use std::sync::Arc;

use idem_core::{AtomicStore, CommitError, Fenced, Principal, WritesFuture};
use idem_sqlite::SqliteStore;

use crate::domain::{Payment, User};
use crate::ledger::{Completion, Ledger, ROOM_PROBE_BYTES, Written};
use crate::ledger_error::{LedgerError, unavailable};
use crate::page::{Page, PageRequest};
use crate::rows::{bind_payment, bind_user, page_after_cursor, payment_of_row, user_of_row};

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
        let insert = bind_payment(
            sqlx::query(
                "INSERT INTO payments (payment_id, principal, amount_minor, currency, destination, status, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            ),
            payment,
        );
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
        let insert = bind_user(
            sqlx::query("INSERT INTO users (user_id, principal, name, email, created_at) VALUES (?, ?, ?, ?, ?)"),
            user,
        );
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

    /// Writes a new `ROOM_PROBE_BYTES` row and deletes the older ones, in one transaction
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
