//! A dead holder holds nothing (docs/guarantees.md): a replica whose host freezes after its
//! atomic-mode completion locked the record's row, and before its `COMMIT`, frees the row
//! and the key once PostgreSQL's idle-in-transaction timeout ends its session; meanwhile a
//! fresh `open` on the same schema neither waits nor fails; and `open` waits for a server
//! that is still starting or refusing connections, within its open timeout.
//!
//! The holder reaches the real PostgreSQL through a proxy of the test's (`common/proxy.rs`)
//! that freezes: it stops forwarding and keeps every socket open, so PostgreSQL sees a
//! client that went silent inside a transaction, as with a frozen VM or a host cut off.
//! Every wait here is bounded by the stores' own timeouts and a tokio timeout around them.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Schemas, fingerprint, id, response};
use idem_core::{Decision, Fenced, Policy, RecordId, Store, StoreError, Timestamp};
use idem_postgres::{OpenError, PostgresOptions, PostgresStore, WriteTransaction};
use proxy::Proxy;

/// Time comes from the database; the `now` passed is ignored.
const NOW: Timestamp = Timestamp::EPOCH;

/// Where the test's PostgreSQL listens, for the proxy.
fn upstream() -> SocketAddr {
    let connect: sqlx::postgres::PgConnectOptions = common::url().parse().expect("the test URL parses");
    let host = if connect.get_host() == "localhost" { "127.0.0.1" } else { connect.get_host() };
    format!("{host}:{}", connect.get_port()).parse().expect("the test URL names an IP address and a port")
}

/// A 1 s lease, so the holder's lease has lapsed long before the bounds below.
fn policy() -> Policy {
    Policy::new(Duration::from_secs(1), Duration::from_secs(60)).expect("lease < retention")
}

fn options(url: &str, schema: &str) -> PostgresOptions {
    PostgresOptions::new(url).schema(schema).connections_max(2).open_timeout(Duration::from_secs(10))
}

/// Opens a store, failing the test (never hanging) if that takes more than a minute.
async fn open(options: PostgresOptions) -> PostgresStore {
    match tokio::time::timeout(Duration::from_secs(60), PostgresStore::open(options)).await {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => common::unreachable_database(&error),
        Err(_) => panic!("opening the store did not return within a minute"),
    }
}

/// The holder's side: claims `key`, begins a transaction, completes the claim in it (the
/// record's row is now locked until the transaction ends) and returns the transaction,
/// the claim's fence and the backend pid of the transaction's session.
async fn complete_without_commit(holder: &PostgresStore, key: &RecordId) -> (WriteTransaction, idem_core::Fence, i32) {
    let Ok(Decision::Execute(claim)) = holder.claim(key, &fingerprint("pay"), NOW, &policy()).await else {
        panic!("a fresh key executes")
    };
    let mut transaction = holder.begin_write().await.expect("a transaction begins");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *transaction).await.expect("a pid");
    let completed = holder.complete_in(&mut transaction, key, claim.fence, response("{}"), NOW, &policy()).await;
    assert_eq!(completed.expect("the completion runs"), Fenced::Applied);
    (transaction, claim.fence, pid)
}

/// Claims `key` on `store` until the claim is not a conflict (the holder's lease lapsing),
/// at most 30 times.
async fn claim_after_the_lease(store: &PostgresStore, key: &RecordId) -> Result<Decision, StoreError> {
    for _ in 0..30 {
        match store.claim(key, &fingerprint("pay"), NOW, &policy()).await {
            Ok(Decision::Conflict { retry_after, .. }) => tokio::time::sleep(retry_after).await,
            other => return other,
        }
    }
    panic!("the holder's 1 s lease did not lapse in 30 conflicts")
}

/// The state of backend `pid` in `pg_stat_activity`, if it is still there.
async fn backend_state(store: &PostgresStore, pid: i32) -> Option<String> {
    sqlx::query_scalar("SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_optional(store.pool())
        .await
        .expect("pg_stat_activity is readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_before_its_commit_frees_the_key_after_the_idle_timeout() {
    // Goal: the holder's host freezes after its completion locked the row, before COMMIT;
    // PostgreSQL ends its session after the idle-in-transaction timeout (1 s here), the
    // completion rolls back, and another replica takes the key over (G6), its take-over
    // waiting for the lock inside one claim instead of failing.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let proxy = Proxy::start(upstream()).await;
    let idle = Duration::from_secs(1);
    let holder = open(options(&proxy.url(&common::url()), &schema).idle_in_transaction_timeout(idle)).await;
    // The other replica waits for row locks up to 20 s, far past the bound (lease, 1 s,
    // plus statement timeout and idle timeout, 6 s), so only a lock that outlives the
    // bound fails it.
    let wait = Duration::from_secs(20);
    let other = open(options(&common::url(), &schema).lock_timeout(wait).statement_timeout(wait)).await;
    let shown: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(holder.pool())
        .await
        .expect("the setting is readable");
    assert_eq!(shown, "1s", "the holder's connections carry its idle-in-transaction timeout");

    let key = id("alice", "frozen-before-commit");
    let (transaction, fence, pid) = complete_without_commit(&holder, &key).await;
    proxy.freeze();
    let frozen = Instant::now();
    let decision = tokio::time::timeout(Duration::from_secs(90), claim_after_the_lease(&other, &key))
        .await
        .expect("the take-over returns within its own timeouts");
    let took = frozen.elapsed();
    match decision {
        Ok(Decision::TakeOver { stale, .. }) => assert_eq!(stale, fence, "the frozen holder's claim is taken over"),
        other => panic!("the key is still held {took:?} after the holder froze: {other:?}"),
    }
    eprintln!("taken over {took:?} after the holder froze (lease 1 s, idle-in-transaction timeout {idle:?})");
    assert_eq!(backend_state(&other, pid).await, None, "PostgreSQL ended the frozen holder's session");
    let record = other.get(&key).await.expect("the record is readable").expect("the take-over's claim");
    assert!(matches!(record.state, idem_core::RecordState::InFlight { .. }), "the frozen completion rolled back");
    drop(transaction);
    drop(proxy);
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_idle_timeout_the_frozen_holder_keeps_its_key_but_opens_do_not_wait() {
    // Goal: the control, and the startup side. With an idle-in-transaction timeout of an
    // hour the frozen holder keeps the row locked: a take-over fails after its lock
    // timeout (the fault is real, and the setting is what frees the key). Meanwhile a
    // fresh `open` on the same schema returns (its DDL checks read the catalog and take no
    // lock the frozen transaction holds) and serves other keys; once the session ends
    // (terminated here, as the timeout would), the key is taken over.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let proxy = Proxy::start(upstream()).await;
    let hour = Duration::from_secs(3600);
    let holder = open(options(&proxy.url(&common::url()), &schema).idle_in_transaction_timeout(hour)).await;
    let key = id("alice", "frozen-for-an-hour");
    let (transaction, fence, pid) = complete_without_commit(&holder, &key).await;
    proxy.freeze();

    let fresh = open(options(&common::url(), &schema).lock_timeout(Duration::from_secs(1))).await;
    assert_eq!(backend_state(&fresh, pid).await.as_deref(), Some("idle in transaction"), "the holder still holds");
    let other_key = id("bob", "unrelated");
    let Ok(Decision::Execute(claim)) = fresh.claim(&other_key, &fingerprint("pay"), NOW, &policy()).await else {
        panic!("another key executes beside the frozen holder")
    };
    let completed = fresh.complete(&other_key, claim.fence, response("{}"), NOW, &policy()).await;
    assert_eq!(completed.expect("the completion commits"), Fenced::Applied);

    match claim_after_the_lease(&fresh, &key).await {
        Err(StoreError::Unavailable { retry_after, .. }) => {
            assert!(retry_after.is_some(), "a busy store hints a retry")
        }
        other => panic!("the frozen holder's row lock should still block its key: {other:?}"),
    }
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(fresh.pool())
        .await
        .expect("the test may end a session");
    assert!(ended, "the frozen session was there to end");
    // pg_terminate_backend only signals; the take-over's lock wait covers the session's exit.
    let patient = open(options(&common::url(), &schema).lock_timeout(Duration::from_secs(20))).await;
    match claim_after_the_lease(&patient, &key).await {
        Ok(Decision::TakeOver { stale, .. }) => assert_eq!(stale, fence),
        other => panic!("the key should be free once the session ended: {other:?}"),
    }
    drop(transaction);
    drop(proxy);
    fresh.close().await;
    patient.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_waits_for_a_server_that_is_starting_up() {
    // Goal: `open` tries again while the server answers "the database system is starting
    // up" (57P03), and opens once it accepts connections.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let proxy = Proxy::start(upstream()).await;
    proxy.starting_for(3);
    let store = open(options(&proxy.url(&common::url()), &schema)).await;
    assert_eq!(proxy.refused(), 3, "every 'starting up' answer was met with another attempt");
    store.get(&id("alice", "after-start")).await.expect("the store answers");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_waits_for_a_server_that_refuses_connections() {
    // Goal: `open` tries again while nothing listens on the port (connection refused, as
    // between a PostgreSQL's stop and its start), and opens once something does.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port is free");
    let address = reserved.local_addr().expect("a bound address");
    drop(reserved);
    let url = format!("postgres://postgres@{address}/test");
    let starting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = tokio::net::TcpListener::bind(address).await.expect("the reserved port is still free");
        Proxy::on(listener, upstream())
    });
    let store = open(options(&url, &schema)).await;
    store.get(&id("alice", "after-refusals")).await.expect("the store answers");
    store.close().await;
    drop(starting.await.expect("the proxy started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gives_up_at_once_on_what_waiting_cannot_fix_and_at_its_timeout_on_what_it_can() {
    // Goal: a database that does not exist is final (no retries); a server that keeps
    // answering "starting up" is given up at the open timeout, with the last reason.
    let missing = options(&format!("{}_no_such_database", common::url()), "public");
    match PostgresStore::open(missing).await {
        Err(OpenError::Connect { .. }) => {}
        other => panic!("a missing database fails at once, unretried: {other:?}"),
    }
    let schemas = Schemas::default();
    let proxy = Proxy::start(upstream()).await;
    proxy.starting_for(u32::MAX);
    let never = options(&proxy.url(&common::url()), &schemas.fresh()).open_timeout(Duration::from_secs(2));
    match tokio::time::timeout(Duration::from_secs(60), PostgresStore::open(never)).await {
        Ok(Err(error @ OpenError::NotReady { .. })) => {
            let message = error.to_string();
            assert!(message.contains("starting up") && message.contains("open timeout"), "{message}");
        }
        other => panic!("a server that never finishes starting fails at the open timeout: {other:?}"),
    }
    assert!(proxy.refused() >= 2, "it was tried more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_schema_is_reported_not_waited_for() {
    // Goal: a session holding an exclusive lock on idem's migrations table (a migration of
    // another replica, frozen half-way) makes `open` fail after its open timeout with
    // SchemaLocked, each attempt waiting only the schema lock timeout; once the lock is
    // gone, `open` succeeds.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    open(options(&common::url(), &schema)).await.close().await;
    let mut locker = common::connect().await;
    let lock = format!("BEGIN; LOCK TABLE \"{schema}\"._idem_migrations IN ACCESS EXCLUSIVE MODE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock)).execute(&mut locker).await.expect("the lock is taken");
    let locked = options(&common::url(), &schema)
        .schema_lock_timeout(Duration::from_millis(200))
        .open_timeout(Duration::from_secs(2));
    match tokio::time::timeout(Duration::from_secs(60), PostgresStore::open(locked.clone())).await {
        Ok(Err(OpenError::NotReady { last, .. })) => assert!(matches!(*last, OpenError::SchemaLocked { .. }), "{last}"),
        other => panic!("a locked schema is reported at the open timeout: {other:?}"),
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.expect("the lock is released");
    open(locked).await.close().await;
}

/// Each session setting as `SHOW` prints it on every connection of `pool` (held at once,
/// so each is a different connection).
async fn shown_settings(pool: &sqlx::PgPool, connections: usize) -> Vec<Vec<String>> {
    let names = [
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "lock_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "tcp_user_timeout",
    ];
    let mut held = Vec::new();
    for _ in 0..connections {
        held.push(pool.acquire().await.expect("a pooled connection"));
    }
    let mut shown = Vec::new();
    for connection in &mut held {
        let mut values = Vec::new();
        for name in names {
            let statement = format!("SHOW {name}");
            let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
                .fetch_one(&mut **connection)
                .await
                .expect("the setting is readable");
            values.push(value);
        }
        shown.push(values);
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_carries_the_session_settings() {
    // Goal: the options' session settings reach PostgreSQL on every pooled connection of a
    // store `open` made, and of a service's pool built from `connect_options` for
    // `with_pool`, as PostgreSQL shows them (the TCP settings in seconds and milliseconds,
    // without units).
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let options = options(&common::url(), &schema)
        .statement_timeout(Duration::from_millis(4500))
        .idle_in_transaction_timeout(Duration::from_secs(7))
        .lock_timeout(Duration::from_millis(1500))
        .tcp_keepalive(Duration::from_secs(4), Duration::from_secs(2), 3)
        .tcp_user_timeout(Duration::from_secs(9));
    let expected: Vec<String> = ["4500ms", "7s", "1500ms", "4", "2", "3", "9000"].map(str::to_owned).to_vec();
    let store = open(options.clone()).await;
    assert_eq!(shown_settings(store.pool(), 2).await, vec![expected.clone(); 2]);
    let connect = options.connect_options().expect("valid options");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_with(connect).await.expect("a pool");
    let service = PostgresStore::with_pool(pool, options).await.expect("the store opens on the service's pool");
    assert_eq!(shown_settings(service.pool(), 2).await, vec![expected; 2]);
    store.close().await;
    service.close().await;
}
