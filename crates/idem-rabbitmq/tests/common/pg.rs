//! A private PostgreSQL schema per test (dropped by a guard, also when the test panics),
//! the store in it, and the business table the handlers write their payment rows to.

use std::time::Duration;

use idem_postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use idem_postgres::{PostgresOptions, PostgresStore};

/// The database the tests use: `IDEM_TEST_POSTGRES_URL`, else a throw-away cluster of this
/// test process (as root, the local server on port 5432); see idem-testkit. A child process
/// is given this URL in the variable, so that it uses the parent's cluster.
pub fn url() -> String {
    idem_testkit::postgres_url()
}

/// A schema of the test's own, dropped with everything in it when the guard is dropped.
pub struct Schema {
    pub name: String,
    /// Whether this process made it (a child consumer process only opens it).
    owned: bool,
}

impl Schema {
    /// A fresh schema name: the test's name and the process id.
    pub fn fresh(test: &str) -> Schema {
        Schema { name: format!("idem_t_{test}_{}", std::process::id()), owned: true }
    }

    /// A schema another process made (and drops).
    pub fn borrowed(name: String) -> Schema {
        Schema { name, owned: false }
    }

    /// The store in this schema (made on first open), and the payments table beside it.
    pub async fn open(&self) -> PostgresStore {
        let options = PostgresOptions::new(url())
            .schema(&self.name)
            .connections_max(8)
            .acquire_timeout(Duration::from_secs(5))
            .statement_timeout(Duration::from_secs(5));
        let store = PostgresStore::open(options)
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL at {} is needed for these tests: {error}", url()));
        // No unique constraint on purpose: a second execution must show as a second row,
        // not be hidden by a refused insert.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS \"{}\".payments (message_id TEXT NOT NULL, body BYTEA NOT NULL)",
            self.name
        );
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(store.pool()).await.expect("the payments table is created");
        store
    }
}

/// The payment rows per message id, sorted by id.
pub async fn payments(store: &PostgresStore) -> Vec<(String, i64)> {
    let sql = format!(
        "SELECT message_id, count(*) FROM \"{}\".payments GROUP BY message_id ORDER BY message_id",
        store.schema()
    );
    sqlx::query_as(AssertSqlSafe(sql)).fetch_all(store.pool()).await.expect("the payments read")
}

/// The insert a handler's commit runs, in the store's transaction.
pub fn insert_payment(schema: &str) -> String {
    format!("INSERT INTO \"{schema}\".payments (message_id, body) VALUES ($1, $2)")
}

impl Drop for Schema {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime does the I/O.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
            runtime.block_on(async move {
                let mut connection = PgConnection::connect(&url()).await.map_err(|e| e.to_string())?;
                let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut connection).await.map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test schema: {error}");
        }
    }
}
