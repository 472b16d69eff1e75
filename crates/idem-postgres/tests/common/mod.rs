//! Helpers shared by the integration tests: stores in fresh schemas of a real PostgreSQL.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{Bytes, Fingerprint, Key, Policy, Principal, RecordId, StoredResponse, Timestamp};
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

pub fn id(principal: &str, key: &str) -> RecordId {
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).expect("test principals are valid")
    };
    RecordId::new(principal, Key::parse(key.as_bytes()).expect("test keys are valid"))
}

pub fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of("POST", "/payments", body.as_bytes())
}

pub fn at(unix_ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(unix_ms)
}

/// The test process's clock, for comparing with the database's (same machine).
pub fn wall_clock() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    Timestamp::from_unix_ms(u64::try_from(ms).expect("ms since 1970 fit u64"))
}

/// A 1 s lease and a 10 s retention.
pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(1), Duration::from_secs(10)).expect("lease is shorter than retention")
}

/// A response with headers, including a binary value, and a body.
pub fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), Bytes::from_static(b"application/json")),
            ("x-trace".to_owned(), Bytes::from_static(&[0, 1, 254, 255])),
        ],
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}
