//! Readiness that does not flap: `/healthz` answers 503 from the first failed store write
//! until a real write succeeds again, on SQLite made full without root (`max_page_count`),
//! on the memory store at its record limit, and on a Redis that refuses writes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use idem_core::{Clock, CommitError, MemoryStore, Policy, Store};
use idem_server::{AppState, MemoryLedger, SeededIds};
use idem_sqlite::SqliteStore;
use support::{PAYMENT, Reply, Server, Setup, manual_clock};

/// Most payments a test sends to fill a store: far more than the few pages left fit.
const FILL_PAYMENTS_MAX: usize = 2_000;

/// Sets `PRAGMA max_page_count` on the store's writer connection, through which every write
/// of the store goes (claims, completions with their payments, `/healthz`'s probes); returns
/// the limit SQLite took. A limit under the file's size is taken as the file's size: no
/// write that needs a new page fits, and it fails with SQLITE_FULL, as on a full disk.
async fn set_max_page_count(store: &SqliteStore, pages: i64) -> i64 {
    let set = store
        .write(move |connection| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
                    .fetch_one(&mut *connection)
                    .await
            })
        })
        .await;
    match set {
        Ok(limit) => limit,
        Err(CommitError::Writes(error)) => panic!("PRAGMA max_page_count: {error}"),
        Err(CommitError::Store(error)) => panic!("the store's writer: {error}"),
    }
}

/// Pays with fresh keys until one is refused with 503; returns the refusal.
async fn pay_until_refused(server: &Server, prefix: &str) -> Reply {
    for n in 0..FILL_PAYMENTS_MAX {
        let reply = server.post("/payments", Some(&format!("{prefix}-{n}")), PAYMENT).await;
        if reply.status == 503 {
            return reply;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    panic!("no payment was refused within {FILL_PAYMENTS_MAX}");
}

/// `/healthz`, checked to be the 503 `not-ready` problem.
async fn assert_not_ready(server: &Server, when: &str) {
    let health = server.get("/healthz", None).await;
    assert_eq!(health.status, 503, "{when}: {health:?}");
    assert_eq!(health.header("content-type"), Some("application/problem+json"), "{when}");
    assert!(health.json()["type"].as_str().is_some_and(|kind| kind.ends_with("#not-ready")), "{health:?}");
}

#[tokio::test]
async fn a_full_sqlite_file_keeps_healthz_at_503_until_a_write_fits_again() {
    // Goal: once payments fail with SQLITE_FULL, every /healthz probe answers 503, also
    // those that come after reads and failed payments (the everyday probe rewrites a row in
    // place, which still fits); once the file may grow again, /healthz finds out by itself
    // and payments succeed.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let server = Server::sqlite(&dir.path().join("idem.db"), Setup::default()).await;
    let store = Arc::clone(server.store.as_ref().expect("a SQLite server has its store"));
    let first = server.post("/payments", Some("before-full"), PAYMENT).await;
    assert_eq!(first.status, 201);
    assert_eq!(server.get("/healthz", None).await.status, 200);

    let pages = set_max_page_count(&store, 1).await;
    assert!(pages > 1, "the limit is the file's size, {pages} pages");
    let refused = pay_until_refused(&server, "while-full").await;
    assert_eq!(refused.header("content-type"), Some("application/problem+json"), "{refused:?}");
    for probe in 0..5 {
        assert_not_ready(&server, &format!("probe {probe} while full")).await;
        let replay = server.post("/payments", Some("before-full"), PAYMENT).await;
        assert!(replay.status == 201 && replay.is_replay(), "a replay needs no write: {replay:?}");
        let refused = server.post("/payments", Some(&format!("still-full-{probe}")), PAYMENT).await;
        assert_eq!(refused.status, 503, "{refused:?}");
    }
    assert!(!server.readiness.is_ready());

    set_max_page_count(&store, 1_073_741_823).await;
    let health = server.get("/healthz", None).await;
    assert_eq!(health.status, 200, "the recovery probe's write fits again: {health:?}");
    let after = server.post("/payments", Some("after-room"), PAYMENT).await;
    assert_eq!(after.status, 201, "{after:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_memory_store_at_its_limit_is_not_ready_until_a_real_write_succeeds() {
    // Goal: a claim refused because the store is full puts readiness down; /healthz stays
    // 503 while its own claim cannot fit either; a payment that succeeds after a purge puts
    // readiness back up by itself, before any probe.
    let clock = manual_clock();
    let limits = idem_core::Limits { records_max: 3, ..idem_core::Limits::default() };
    let store = Arc::new(MemoryStore::new(limits));
    let ledger = Arc::new(MemoryLedger::new(Arc::clone(&store), 1_000));
    let policy = Policy::new(Duration::from_secs(10), Duration::from_secs(60)).expect("a valid policy");
    let state = AppState::new(ledger, Arc::new(clock.clone()), Arc::new(SeededIds::new(1)));
    let setup = Setup { policy: Some(policy), clock: Some(clock.clone()), ..Setup::default() };
    let server = Server::start(state, setup).await;

    let refused = pay_until_refused(&server, "memory").await;
    assert!(refused.json()["type"].as_str().is_some_and(|kind| kind.ends_with("#store-full")), "{refused:?}");
    assert!(!server.readiness.is_ready(), "a refused claim puts readiness down");
    for probe in 0..3 {
        assert_not_ready(&server, &format!("probe {probe} at the limit")).await;
    }

    clock.advance(Duration::from_secs(61));
    let purged = store.purge_expired(clock.now(), 100).await.expect("the memory store purges");
    assert_eq!(purged, 3);
    let paid = server.post("/payments", Some("after-purge"), PAYMENT).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    assert!(server.readiness.is_ready(), "the payment's claim and completion put readiness up");
    assert_eq!(server.get("/healthz", None).await.status, 200);
    server.stop().await;
}
