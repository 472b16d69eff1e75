//! Payments and users in the PostgreSQL database (and schema) that holds the idempotency
//! records: [`PostgresLedger`], atomic mode for any number of replicas.

use std::sync::Arc;

use idem_core::{Fenced, Principal};
use idem_postgres::PostgresStore;
use sqlx::AssertSqlSafe;

use crate::domain::{Payment, User};
use crate::ledger::{Completion, Ledger, Written};
use crate::ledger_error::{LedgerError, unavailable};
use crate::page::{Page, PageRequest};
use crate::rows::{bind_payment, bind_user, page_after_cursor, payment_of_row, user_of_row};

/// Serialises the creation of the app's tables among replicas starting at the same
/// moment: concurrent `CREATE TABLE IF NOT EXISTS` of one name can fail in PostgreSQL
/// (a unique violation in its catalog). An arbitrary constant, "idem" + "app".
const TABLES_LOCK: i64 = 0x6964_656d_0061_7070;

/// The statements, with the schema written in (it is a plain identifier, checked by
/// idem-postgres when the store was opened).
#[derive(Debug)]
struct Statements {
    schema: [String; 7],
    insert_payment: String,
    payment: String,
    payments: PageStatements,
    count_payments: String,
    insert_user: String,
    user: String,
    users: PageStatements,
    health: String,
    room: String,
    room_free: String,
}

/// A page of a table for a principal: the cursor row's `seq`, then the rows before it,
/// newest first, one more than the limit to tell `has_more`.
#[derive(Debug)]
struct PageStatements {
    cursor: String,
    page: String,
}

impl PageStatements {
    fn new(table: &str, id_column: &str) -> PageStatements {
        PageStatements {
            cursor: format!("SELECT seq FROM {table} WHERE {id_column} = $1 AND principal = $2"),
            page: format!("SELECT * FROM {table} WHERE principal = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"),
        }
    }
}

impl Statements {
    fn new(schema: &str) -> Statements {
        let s = format!("\"{schema}\"");
        Statements {
            schema: [
                format!(
                    "CREATE TABLE IF NOT EXISTS {s}.payments (
                        seq          BIGSERIAL PRIMARY KEY,
                        payment_id   TEXT   NOT NULL UNIQUE,
                        principal    TEXT   NOT NULL,
                        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
                        currency     TEXT   NOT NULL,
                        destination  TEXT   NOT NULL,
                        status       TEXT   NOT NULL,
                        created_at   BIGINT NOT NULL
                    )"
                ),
                format!("CREATE INDEX IF NOT EXISTS payments_by_principal ON {s}.payments (principal, seq)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {s}.users (
                        seq        BIGSERIAL PRIMARY KEY,
                        user_id    TEXT   NOT NULL UNIQUE,
                        principal  TEXT   NOT NULL,
                        name       TEXT   NOT NULL,
                        email      TEXT   NOT NULL,
                        created_at BIGINT NOT NULL
                    )"
                ),
                format!("CREATE INDEX IF NOT EXISTS users_by_principal ON {s}.users (principal, user_id)"),
                format!("CREATE INDEX IF NOT EXISTS users_by_principal_seq ON {s}.users (principal, seq)"),
                // One row that `/healthz` rewrites: proof that a write commits.
                format!(
                    "CREATE TABLE IF NOT EXISTS {s}.server_health (
                        id         INTEGER PRIMARY KEY CHECK (id = 1),
                        checked_at TIMESTAMPTZ NOT NULL
                    )"
                ),
                // Rows that the recovery probe writes: proof of fresh storage.
                format!(
                    "CREATE TABLE IF NOT EXISTS {s}.server_room (
                        seq    BIGSERIAL PRIMARY KEY,
                        filler BYTEA NOT NULL
                    )"
                ),
            ],
            insert_payment: format!(
                "INSERT INTO {s}.payments (payment_id, principal, amount_minor, currency, destination, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            payment: format!("SELECT * FROM {s}.payments WHERE payment_id = $1 AND principal = $2"),
            payments: PageStatements::new(&format!("{s}.payments"), "payment_id"),
            count_payments: format!("SELECT count(*) FROM {s}.payments"),
            insert_user: format!(
                "INSERT INTO {s}.users (user_id, principal, name, email, created_at) VALUES ($1, $2, $3, $4, $5)"
            ),
            user: format!("SELECT * FROM {s}.users WHERE user_id = $1 AND principal = $2"),
            users: PageStatements::new(&format!("{s}.users"), "user_id"),
            health: format!(
                "INSERT INTO {s}.server_health (id, checked_at) VALUES (1, clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
            ),
            // Random bytes (16 per md5), which TOAST cannot compress away.
            room: format!(
                "INSERT INTO {s}.server_room (filler)
                 SELECT decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, $1)
                 RETURNING seq"
            ),
            room_free: format!("DELETE FROM {s}.server_room WHERE seq < $1"),
        }
    }
}

/// The relations [`Statements::schema`] creates: when all are in the catalog, `open` runs no
/// DDL at all.
const RELATIONS: [&str; 7] = [
    "payments",
    "payments_by_principal",
    "users",
    "users_by_principal",
    "users_by_principal_seq",
    "server_health",
    "server_room",
];

/// Whether every relation of the app is already in `store`'s schema, read from the catalog
/// alone. `CREATE INDEX IF NOT EXISTS` takes a share lock on its table before it finds the
/// index there, so it waits on any open transaction that wrote a row, a dead holder's
/// included (SPEC "A dead holder holds nothing", docs/guarantees.md); reading `pg_class`
/// waits on nobody, so a replica restarting beside such a transaction starts at once.
async fn tables_present(store: &PostgresStore) -> Result<bool, LedgerError> {
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = ANY($2)",
    )
    .bind(store.schema())
    .bind(RELATIONS.as_slice())
    .fetch_one(store.pool())
    .await
    .map_err(unavailable)?;
    Ok(usize::try_from(found).is_ok_and(|found| found == RELATIONS.len()))
}

/// Creates what is missing, once even when replicas start together (under
/// [`TABLES_LOCK`]); bounded by the store's lock timeout where a statement must wait.
async fn create_tables(store: &PostgresStore, statements: &Statements) -> Result<(), LedgerError> {
    let mut transaction = store.pool().begin().await.map_err(unavailable)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(TABLES_LOCK)
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
    for statement in &statements.schema {
        sqlx::query(sql(statement)).execute(&mut *transaction).await.map_err(unavailable)?;
    }
    transaction.commit().await.map_err(unavailable)
}

fn sql(text: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(text.to_owned())
}

/// Payments and users in the PostgreSQL schema that holds the idempotency records (atomic
/// mode): a payment row and its completion commit in one transaction
/// ([`PostgresStore::begin_write`], then [`PostgresStore::complete_in`]), so a handler
/// whose claim was taken over, on this replica or another, writes nothing (G1), and both
/// survive a crash of the server or of PostgreSQL (G7).
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    store: Arc<PostgresStore>,
    sql: Arc<Statements>,
    /// Test knob: a wait between the completion and `COMMIT` ([`PostgresLedger::with_commit_delay`]).
    commit_delay: std::time::Duration,
}

impl PostgresLedger {
    /// The ledger in `store`'s database and schema; creates the app's tables (`payments`,
    /// `users`) there if they are missing, once even when replicas start together. When
    /// they are all there (read from the catalog) it runs no DDL, so it never waits on a
    /// transaction that holds a row lock, a vanished replica's included.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] if the tables cannot be created.
    pub async fn open(store: Arc<PostgresStore>) -> Result<PostgresLedger, LedgerError> {
        let statements = Statements::new(store.schema());
        if !tables_present(&store).await? {
            create_tables(&store, &statements).await?;
        }
        Ok(PostgresLedger { store, sql: Arc::new(statements), commit_delay: std::time::Duration::ZERO })
    }

    /// The number of payments held, over every principal (for tests and operators).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`].
    pub async fn payment_count(&self) -> Result<u64, LedgerError> {
        let count: i64 = sqlx::query_scalar(sql(&self.sql.count_payments))
            .fetch_one(self.store.pool())
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs `write` in a transaction and, with a completion, completes the claim in it.
    async fn write_with(
        &self,
        write: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        let mut transaction = self.store.begin_write().await.map_err(LedgerError::Unavailable)?;
        write.execute(&mut *transaction).await.map_err(unavailable)?;
        let written = match completion {
            None => Written::Alone,
            Some(Completion { claim, response }) => {
                let now = claim.now();
                // On an error the transaction is dropped, which rolls it back: nothing lands.
                let fenced = self
                    .store
                    .complete_in(&mut transaction, claim.id(), claim.fence(), response.clone(), now, claim.policy())
                    .await
                    .map_err(LedgerError::Unavailable)?;
                match fenced {
                    Fenced::Applied => Written::Completed,
                    refused @ Fenced::Refused(_) => {
                        transaction.rollback().await.map_err(unavailable)?;
                        return Ok(Written::Superseded(refused));
                    }
                }
            }
        };
        if !self.commit_delay.is_zero() && written == Written::Completed {
            tokio::time::sleep(self.commit_delay).await;
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(written)
    }

    /// **For testing a test harness only**: each atomic write waits `delay` after its
    /// completion locked the record's row and before `COMMIT` (capped at
    /// [`crate::HANDLER_DELAY_MAX`]), so that a holder frozen, cut off or killed in that
    /// window holds a transaction and a row lock on the server: the fault of
    /// docs/guarantees.md, "A dead holder holds nothing". Zero, the default, waits not at all.
    #[must_use]
    pub fn with_commit_delay(mut self, delay: std::time::Duration) -> PostgresLedger {
        self.commit_delay = delay.min(crate::HANDLER_DELAY_MAX);
        self
    }
}

impl Ledger for PostgresLedger {
    type Store = PostgresStore;

    fn idempotency_store(&self) -> Arc<PostgresStore> {
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
        let insert = bind_payment(sqlx::query(sql(&self.sql.insert_payment)), payment);
        self.write_with(insert, completion).await
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        let row = sqlx::query(sql(&self.sql.payment))
            .bind(payment_id)
            .bind(principal.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(unavailable)?;
        row.as_ref().map(payment_of_row).transpose()
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        self.page(&self.sql.payments, principal, page, payment_of_row).await
    }

    async fn insert_user(&self, user: &User, completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        let insert = bind_user(sqlx::query(sql(&self.sql.insert_user)), user);
        self.write_with(insert, completion).await
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        let row = sqlx::query(sql(&self.sql.user))
            .bind(user_id)
            .bind(principal.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(unavailable)?;
        row.as_ref().map(user_of_row).transpose()
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        self.page(&self.sql.users, principal, page, user_of_row).await
    }

    async fn check_writable(&self) -> Result<(), LedgerError> {
        sqlx::query(sql(&self.sql.health)).execute(self.store.pool()).await.map_err(unavailable).map(drop)
    }

    /// Writes a new row of `ROOM_PROBE_BYTES` random bytes and deletes the
    /// older ones, in one transaction: the new row needs new heap and TOAST space.
    async fn check_room(&self) -> Result<(), LedgerError> {
        let md5s = crate::ledger::ROOM_PROBE_BYTES / 16;
        let mut transaction = self.store.pool().begin().await.map_err(unavailable)?;
        let seq: i64 = sqlx::query_scalar(sql(&self.sql.room))
            .bind(md5s)
            .fetch_one(&mut *transaction)
            .await
            .map_err(unavailable)?;
        sqlx::query(sql(&self.sql.room_free)).bind(seq).execute(&mut *transaction).await.map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)
    }
}

impl PostgresLedger {
    async fn page<T>(
        &self,
        statements: &PageStatements,
        principal: &Principal,
        request: &PageRequest,
        decode: fn(&sqlx::postgres::PgRow) -> Result<T, LedgerError>,
    ) -> Result<Option<Page<T>>, LedgerError> {
        let pool = self.store.pool();
        let cursor_seq = |cursor: String| async move {
            sqlx::query_scalar(sql(&statements.cursor))
                .bind(cursor)
                .bind(principal.as_str())
                .fetch_optional(pool)
                .await
                .map_err(unavailable)
        };
        let rows_before = |before: i64, probe: i64| async move {
            let rows = sqlx::query(sql(&statements.page))
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
