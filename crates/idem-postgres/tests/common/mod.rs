//! Helpers shared by the integration tests: stores in fresh schemas of a real PostgreSQL, and
//! idem-core's fixtures (ids, fingerprints, the policy, responses) every store's tests share.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[allow(unused_imports)] // each test binary uses its own subset
pub use idem_core::conformance::fixtures::{at, fingerprint, id, policy, response, wall_clock};
use idem_postgres::{OpenError, PostgresOptions, PostgresStore};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The database the tests use: `IDEM_TEST_POSTGRES_URL`, else a throw-away cluster of this
/// test process (as root, the machine's server on port 5432); see idem-testkit.
pub fn url() -> String {
    idem_testkit::postgres_url()
}

/// A schema name no other test run uses: process id, a counter and the clock.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("idem_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Schemas made by one test; dropped (with everything in them) when the value is dropped,
/// also when the test panics.
#[derive(Default)]
pub struct Schemas {
    names: Mutex<Vec<String>>,
    stores: Mutex<Vec<PostgresStore>>,
}

impl Schemas {
    /// Opens a store in a fresh schema with `options_of` applied to the test defaults
    /// (4 connections, 2 s timeouts).
    pub async fn open_with(&self, options_of: impl FnOnce(PostgresOptions) -> PostgresOptions) -> PostgresStore {
        let schema = fresh_schema();
        self.names.lock().expect("no panic while holding the list").push(schema.clone());
        let options = PostgresOptions::new(url())
            .schema(&schema)
            .connections_max(4)
            .acquire_timeout(Duration::from_secs(2))
            .statement_timeout(Duration::from_secs(2));
        let store = PostgresStore::open(options_of(options)).await.unwrap_or_else(|error| unreachable_database(&error));
        self.stores.lock().expect("no panic while holding the list").push(store.clone());
        store
    }

    /// A fresh schema name, dropped with the others; for stores the test opens itself.
    pub fn fresh(&self) -> String {
        let schema = fresh_schema();
        self.names.lock().expect("no panic while holding the list").push(schema.clone());
        schema
    }

    /// Closes every store opened so far (their pools give their connections back).
    pub async fn close_all(&self) {
        let stores: Vec<PostgresStore> = std::mem::take(&mut *self.stores.lock().expect("no panic while holding"));
        for store in stores {
            store.close().await;
        }
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if names.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime; a thread with its own runtime does the I/O.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
            runtime.block_on(async move {
                let mut connection = PgConnection::connect(&url()).await.map_err(|e| e.to_string())?;
                for name in names {
                    let statement = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                    sqlx::raw_sql(AssertSqlSafe(statement))
                        .execute(&mut connection)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test schemas: {error}");
        }
    }
}

/// Fails the test saying how to start PostgreSQL: these tests never skip.
pub fn unreachable_database(error: &OpenError) -> ! {
    panic!(
        "the PostgreSQL tests need a server at {} (set IDEM_TEST_POSTGRES_URL to use another). \
         As root that is the local one: start it with `pg_ctlcluster 15 main start` (see `ls /etc/postgresql` \
         for the version) or `.ci/run`. Opening failed: {error}",
        url()
    )
}

/// A connection of the test's own, outside any store's pool.
pub async fn connect() -> PgConnection {
    PgConnection::connect(&url()).await.unwrap_or_else(|error| {
        panic!("cannot reach PostgreSQL at {} (start it with `pg_ctlcluster 15 main start`): {error}", url())
    })
}
