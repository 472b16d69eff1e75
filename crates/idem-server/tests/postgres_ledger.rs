//! [`PostgresLedger`] over real HTTP on loopback against a real PostgreSQL: the API round
//! trip, and atomic mode's G1 across a lapsed lease (the stale handler's payment rolls back
//! with its refused completion), as `http.rs` checks it for SQLite.
//!
//! Needs PostgreSQL: `IDEM_TEST_POSTGRES_URL`, else a throw-away cluster idem-testkit starts
//! (as root, the local server at `postgres://postgres@127.0.0.1:5432/test`); fails saying
//! how to start it, never skips. Each test works in
//! a schema of its own, dropped at the end.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::{Clock, ManualClock, Policy};
use idem_postgres::{PostgresOptions, PostgresStore, TimeSource};
use idem_server::{AppState, BeforeWriteHook, PostgresLedger, SeededIds, app};
use support::{PAYMENT, Reply, manual_clock, post_as};
use tokio::sync::{Notify, Semaphore, oneshot};

fn postgres_url() -> String {
    idem_testkit::postgres_url()
}

/// A server on a PostgreSQL schema of its own, on the caller's clock (so a test can move
/// leases by hand, as with SQLite).
struct PgServer {
    addr: std::net::SocketAddr,
    ledger: Arc<PostgresLedger>,
    store: Arc<PostgresStore>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl PgServer {
    async fn start(clock: ManualClock, hook: Option<BeforeWriteHook>) -> PgServer {
        PgServer::start_timed(clock, hook, TimeSource::Caller).await
    }

    /// [`PgServer::start`] with the store's `now` from `time`.
    async fn start_timed(clock: ManualClock, hook: Option<BeforeWriteHook>, time: TimeSource) -> PgServer {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos());
        let schema = format!("idem_srv_{}_{}", std::process::id(), nanos % 1_000_000_000_000);
        let options = PostgresOptions::new(postgres_url()).schema(schema).time_source(time);
        let store = match PostgresStore::open(options).await {
            Ok(store) => Arc::new(store),
            Err(error) => panic!(
                "these tests need PostgreSQL at {} (set IDEM_TEST_POSTGRES_URL to use another); as root \
                 that is the local one: start it with `pg_ctlcluster 15 main start` or `.ci/run`: {error}",
                postgres_url()
            ),
        };
        let ledger = Arc::new(PostgresLedger::open(Arc::clone(&store)).await.expect("the tables are created"));
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let mut state =
            AppState::new(Arc::clone(&ledger), clock, Arc::new(SeededIds::new(5))).with_policy(Policy::DEFAULT);
        if let Some(hook) = hook {
            state = state.with_before_write_hook(hook);
        }
        let router = app(state).expect("a valid configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback has free ports");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(idem_server::serve(listener, router, async move {
            let _ = stop.await;
        }));
        PgServer { addr, ledger, store, shutdown, task }
    }

    async fn payment_count(&self) -> u64 {
        self.ledger.payment_count().await.expect("the database answers")
    }

    /// Stops the server and drops its schema.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("the server task does not panic").expect("the server stops cleanly");
        let drop = format!("DROP SCHEMA \"{}\" CASCADE", self.store.schema());
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(self.store.pool()).await.expect("the test schema is dropped");
        self.store.close().await;
    }
}

fn assert_identical(first: &Reply, second: &Reply) {
    assert_eq!(first.status, second.status);
    assert_eq!(first.body, second.body);
    assert_eq!(first.lasting_headers(), second.lasting_headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_and_users_round_trip_and_replay_on_postgres() {
    // Goal: the API works on PostgresLedger: created, replayed byte for byte, read back,
    // listed newest first, scoped to the principal.
    let server = PgServer::start(manual_clock(), None).await;
    let first = post_as(server.addr, "gina", "/payments", "pg-1", PAYMENT).await;
    let retry = post_as(server.addr, "gina", "/payments", "pg-1", PAYMENT).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(!first.is_replay() && retry.is_replay());
    assert_identical(&first, &retry);
    let second = post_as(server.addr, "gina", "/payments", "pg-2", PAYMENT).await;
    assert_eq!(second.status, 201);
    assert_eq!(server.payment_count().await, 2);

    let location = first.header("location").expect("a Location").to_owned();
    let auth = [("authorization", &b"Bearer gina"[..])];
    let read = support::send(server.addr, http::Method::GET, &location, &auth, "").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), first.json());
    let listed = support::send(server.addr, http::Method::GET, "/payments", &auth, "").await.json();
    let ids: Vec<&str> =
        listed["data"].as_array().expect("a list").iter().filter_map(|p| p["payment_id"].as_str()).collect();
    assert_eq!(ids, [second.json()["payment_id"].as_str().unwrap(), first.json()["payment_id"].as_str().unwrap()]);
    let other = [("authorization", &b"Bearer hal"[..])];
    assert_eq!(support::send(server.addr, http::Method::GET, &location, &other, "").await.status, 404);

    let user = post_as(server.addr, "gina", "/users", "pg-u", r#"{"name": "Gina", "email": "gina@example.com"}"#).await;
    assert_eq!(user.status, 201, "{:?}", user.body);
    let user_at = user.header("location").expect("a Location").to_owned();
    let read = support::send(server.addr, http::Method::GET, &user_at, &auth, "").await;
    assert_eq!(read.json(), user.json());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_databases_clock_the_first_answer_states_the_expiry_every_replay_states() {
    // Goal: SPEC "Key lifecycle", expiry on the wire (G2): under TimeSource::Database the
    // record's retention counts from the database's clock, not the server's (here years
    // apart: the server's clock is 2023's), and the first answer's Idempotency-Expires is
    // the record's, equal to the replay's. Planted: stating the server's `now` + retention
    // on the first answer gives a 2023 date against the replay's.
    let server = PgServer::start_timed(manual_clock(), None, TimeSource::Database).await;
    let first = post_as(server.addr, "gina", "/payments", "pg-expiry", PAYMENT).await;
    let retry = post_as(server.addr, "gina", "/payments", "pg-expiry", PAYMENT).await;
    assert_eq!((first.status, retry.is_replay()), (201, true), "{:?}", first.body);
    let stated = first.header("idempotency-expires").expect("the first answer states its expiry");
    assert_eq!(retry.header("idempotency-expires"), Some(stated), "the replay states the same");
    // The server's clock reads 14 Nov 2023 and the retention is 24 h: a date in 2023 would be
    // the server's `now` + retention, not the record's.
    assert!(!stated.contains(" 2023 "), "the database's clock decided, not the server's: {stated}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_its_lease_is_taken_over_and_its_postgres_write_rolls_back() {
    // Goal: atomic mode on PostgreSQL keeps G1 across a lapsed lease: the take-over
    // executes, the stale completion is refused with its payment row, and both callers get
    // the one payment.
    let clock = manual_clock();
    let (entered, gate, calls) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let hook: BeforeWriteHook = {
        let (entered, gate, calls) = (Arc::clone(&entered), Arc::clone(&gate), Arc::clone(&calls));
        Arc::new(move || {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let (entered, gate) = (Arc::clone(&entered), Arc::clone(&gate));
            Box::pin(async move {
                if first {
                    entered.notify_one();
                    let _permit = gate.acquire().await.expect("the gate is never closed");
                }
            })
        })
    };
    let server = PgServer::start(clock.clone(), Some(hook)).await;

    let addr = server.addr;
    let slow = tokio::spawn(async move { post_as(addr, "frank", "/payments", "slow", PAYMENT).await });
    entered.notified().await;
    clock.advance(Policy::DEFAULT.lease() + Duration::from_secs(1));

    let take_over = post_as(server.addr, "frank", "/payments", "slow", PAYMENT).await;
    assert_eq!(take_over.status, 201);
    assert!(!take_over.is_replay(), "the take-over executes");
    assert_eq!(server.payment_count().await, 1);

    gate.add_permits(1);
    let stale = slow.await.expect("the client task does not panic");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "both executions reached the write");
    assert_eq!(stale.status, 201);
    assert!(stale.is_replay(), "the stale execution answers the recorded response");
    assert_identical(&take_over, &stale);
    assert_eq!(server.payment_count().await, 1, "the stale execution's payment rolled back");
    server.stop().await;
}

#[tokio::test]
async fn a_replica_opens_beside_a_transaction_that_holds_a_written_payment() {
    // Goal: a replica (re)starting while another replica's transaction has written a
    // payment and not committed (a holder whose host vanished mid transaction) opens its
    // ledger without waiting on that transaction: `CREATE INDEX IF NOT EXISTS` would wait
    // for its share lock, then fail at the store's lock timeout (issue 20, item 8).
    let server = PgServer::start(manual_clock(), None).await;
    let mut holder = server.store.pool().begin().await.expect("a transaction begins");
    let insert = format!(
        "INSERT INTO \"{}\".payments (payment_id, principal, amount_minor, currency, destination, status, created_at)
         VALUES ('pay_held', 'user:frank', 100, 'USD', 'merchant', 'succeeded', 0)",
        server.store.schema()
    );
    sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&mut *holder).await.expect("the row is written, not committed");

    let reopened = PostgresLedger::open(Arc::clone(&server.store)).await;

    assert!(reopened.is_ok(), "the ledger opens beside the open transaction: {:?}", reopened.err());
    holder.rollback().await.expect("the holder rolls back");
    server.stop().await;
}
