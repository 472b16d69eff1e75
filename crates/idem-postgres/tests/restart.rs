//! PostgreSQL restarted under retrying load (G1, G7, G8): the store answers Unavailable
//! during the outage, its pool recovers by itself, nothing executes twice and no
//! acknowledged completion is lost.
//!
//! This stops the test's PostgreSQL, holds it down until a worker has been answered
//! Unavailable (at most [`DOWN_MAX`]), and starts it again. Holding it down matters: a bare
//! `restart` can be shorter than the pool's acquire timeout, and the pool then rides
//! through it without a worker ever seeing the outage.
//!
//! Which server: the throw-away cluster idem-testkit started for this process (not root:
//! [`PostgresCluster::stop`] and `start`, on the same port and data directory), or, as root
//! (the URL is then the machine's server), the machine's cluster through `pg_ctlcluster
//! <version> main stop`, which interrupts every other client of that server for a few
//! seconds.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Schemas, fingerprint, id, response};
use idem_core::{Decision, Fenced, Policy, Store, StoreError};
use idem_postgres::PostgresStore;
use idem_testkit::PostgresCluster;
use sqlx::AssertSqlSafe;

/// Longest the cluster is held down waiting for a worker to see the outage.
const DOWN_MAX: Duration = Duration::from_secs(15);

/// The server the test stops and starts.
#[derive(Clone, Copy)]
enum Server {
    /// The throw-away cluster idem-testkit started for this process.
    ThrowAway(&'static PostgresCluster),
    /// The machine's cluster, as root.
    Machine,
}

impl Server {
    /// The cluster behind `common::url()`; a server this test cannot restart fails it.
    fn of_this_test() -> Server {
        if let Some(cluster) = idem_testkit::postgres_cluster() {
            return Server::ThrowAway(cluster);
        }
        assert!(
            idem_testkit::is_root(),
            "this test restarts its PostgreSQL: idem-testkit's throw-away cluster, or as root the machine's \
             (pg_ctlcluster); {} names a server it cannot restart: unset {}",
            common::url(),
            idem_testkit::POSTGRES_URL_VAR
        );
        Server::Machine
    }

    /// Stops (`"stop"`) or starts (`"start"`) it, on a blocking thread.
    async fn act(self, action: &'static str) {
        let acted = tokio::task::spawn_blocking(move || match self {
            Server::ThrowAway(cluster) if action == "stop" => cluster.stop(),
            Server::ThrowAway(cluster) => cluster.start(),
            Server::Machine => pg_ctlcluster(action),
        });
        let outcome = acted.await.expect("the stop or start task ran");
        outcome.unwrap_or_else(|error| panic!("PostgreSQL {action} failed: {error}"));
    }
}

/// Runs `pg_ctlcluster <version> main <action>`.
fn pg_ctlcluster(action: &str) -> Result<(), String> {
    let version = cluster_version();
    let status = Command::new("pg_ctlcluster")
        .args([&version, "main", action])
        .status()
        .map_err(|error| format!("pg_ctlcluster runs (as root or postgres): {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("pg_ctlcluster {version} main {action}: {status}")) }
}

/// The cluster's version: the one directory under /etc/postgresql.
fn cluster_version() -> String {
    let entries = std::fs::read_dir("/etc/postgresql").unwrap_or_else(|error| {
        panic!("this test restarts the local PostgreSQL cluster and needs /etc/postgresql ({error})")
    });
    let mut versions: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    versions.sort();
    versions.pop().expect("a cluster is installed under /etc/postgresql")
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Keys whose business transaction (payment row + completion) committed.
    acknowledged: Vec<String>,
}

/// Pays `keys` one after another through the atomic-mode recipe, retrying each key until
/// it replays, the way a client with one Idempotency-Key per payment would.
async fn worker(
    store: PostgresStore,
    payments: String,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    unavailable: Arc<AtomicUsize>,
) -> Tally {
    let policy = Policy::new(Duration::from_millis(500), Duration::from_secs(60)).expect("lease < retention");
    let now = idem_core::Timestamp::EPOCH; // ignored: time comes from the database
    let insert = format!("INSERT INTO {payments} (key) VALUES ($1)");
    let mut tally = Tally::default();
    for key in keys {
        let record_id = id("alice", &key);
        loop {
            if stop.load(Ordering::Relaxed) {
                return tally;
            }
            let claim = match store.claim(&record_id, &fingerprint("pay"), now, &policy).await {
                Ok(Decision::Execute(claim) | Decision::TakeOver { claim, .. }) => claim,
                Ok(Decision::Replay { .. }) => break,
                Ok(Decision::Conflict { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Ok(other) => panic!("{key}: unexpected {other:?}"),
                Err(StoreError::Unavailable { .. }) => {
                    unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => panic!("{key}: only Unavailable is expected during a restart, got {error}"),
            };
            let paid = async {
                let mut tx = store.begin_write().await?;
                sqlx::query(AssertSqlSafe(insert.clone()))
                    .bind(&key)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::unavailable)?;
                match store.complete_in(&mut tx, &record_id, claim.fence, response(&key), now, &policy).await? {
                    Fenced::Applied => tx.commit().await.map_err(StoreError::unavailable).map(|()| true),
                    Fenced::Refused(_) => Ok(false),
                }
            };
            match paid.await {
                Ok(true) => tally.acknowledged.push(key.clone()),
                Ok(false) => {}
                Err(StoreError::Unavailable { .. }) => {
                    unavailable.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => panic!("{key}: only Unavailable is expected during a restart, got {error}"),
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_loses_nothing_and_runs_nothing_twice() {
    // Goal: G8 and recovery: while PostgreSQL restarts, four retrying workers get
    // Unavailable (never another error, never an execution without a claim); afterwards the
    // pool reconnects by itself and they finish. G1: every key's payment row exists at most
    // once. G7: every acknowledged payment has its row and a completed record.
    let schemas = Schemas::default();
    let store =
        schemas.open_with(|options| options.connections_max(4).acquire_timeout(Duration::from_millis(300))).await;
    let payments = format!("\"{}\".payments", store.schema());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE TABLE {payments} (key TEXT NOT NULL)")))
        .execute(store.pool())
        .await
        .expect("the payments table is created");

    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let keys = (0..100_000).map(|n| format!("w{w}-{n}")).collect();
            tokio::spawn(worker(store.clone(), payments.clone(), keys, Arc::clone(&stop), Arc::clone(&unavailable)))
        })
        .collect();

    let server = Server::of_this_test();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.act("stop").await;
    // Held down until a worker has seen the outage, so the Unavailable path is exercised
    // every run; bounded, so a pool that hid the outage fails the assertion below instead.
    let down = Instant::now();
    while unavailable.load(Ordering::Relaxed) == 0 && down.elapsed() < DOWN_MAX {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.act("start").await;

    // After the restart, the pool recovers by itself: a claim succeeds within a few seconds.
    let recovered = Instant::now();
    let probe = id("probe", "after-restart");
    let policy = Policy::new(Duration::from_secs(1), Duration::from_secs(60)).expect("lease < retention");
    let probes = AtomicUsize::new(0);
    loop {
        probes.fetch_add(1, Ordering::Relaxed);
        match store.claim(&probe, &fingerprint("probe"), idem_core::Timestamp::EPOCH, &policy).await {
            Ok(_) => break,
            Err(StoreError::Unavailable { .. }) if recovered.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the pool did not recover within 10 s: {error}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.expect("no worker panicked").acknowledged);
    }
    let unavailable = unavailable.load(Ordering::Relaxed);
    assert!(unavailable > 0, "the outage was seen as Unavailable");

    let rows: Vec<(String, i64)> =
        sqlx::query_as(AssertSqlSafe(format!("SELECT key, count(*) FROM {payments} GROUP BY key")))
            .fetch_all(store.pool())
            .await
            .expect("the payments read");
    let paid: BTreeMap<String, i64> = rows.into_iter().collect();
    assert!(paid.values().all(|count| *count == 1), "a payment ran twice: {paid:?}");
    assert!(acknowledged.len() > 10, "the workers made progress: {}", acknowledged.len());
    for key in &acknowledged {
        assert_eq!(paid.get(key), Some(&1), "{key}: an acknowledged payment is kept");
        let record = store.get(&id("alice", key)).await.expect("the record reads").expect("the record is kept");
        assert!(matches!(record.state, idem_core::RecordState::Completed { .. }), "{key}: {record:?}");
    }
    // Atomic mode: no payment row without its completion.
    for key in paid.keys() {
        let record = store.get(&id("alice", key)).await.expect("the record reads");
        assert!(
            matches!(record.map(|r| r.state), Some(idem_core::RecordState::Completed { .. })),
            "{key}: a payment row without its completion"
        );
    }
    eprintln!(
        "restart: {} payments acknowledged, {unavailable} Unavailable answers, recovered after {} probes",
        acknowledged.len(),
        probes.load(Ordering::Relaxed)
    );
    schemas.close_all().await;
}
