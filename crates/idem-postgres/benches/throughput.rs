//! Claim + complete per second against a plain baseline, at 1 and 16 concurrent clients,
//! side by side in one run on the same PostgreSQL.
//!
//! * `baseline`: one write per operation, `INSERT … ON CONFLICT DO NOTHING` into a table
//!   shaped like `idem_records` (autocommit: one round trip, one commit).
//! * `claim+complete`: [`Store::claim`] then [`Store::complete`] (separate mode): three
//!   autocommit statements (read, guarded write; guarded completion), two commits.
//! * `atomic baseline`: a business transaction alone (`BEGIN`, insert, `COMMIT`).
//! * `atomic claim+complete_in`: `claim`, then the business transaction with
//!   [`PostgresStore::complete_in`] inside it.
//!
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/idem-ci-target
//! cargo bench -p idem-postgres --bench throughput            # 3 s per measurement
//! IDEM_BENCH_SECONDS=5 cargo bench -p idem-postgres --bench throughput
//! IDEM_BENCH_ROUNDS=1 cargo bench -p idem-postgres --bench throughput   # no taking turns
//! ```
//!
//! Each measurement is split into rounds (`IDEM_BENCH_ROUNDS`, default 6) in which the
//! four workloads take turns, so a change in load or fsync time during the run weighs on
//! each workload alike; a figure is all its rounds' operations over all their time.
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); works in a fresh schema, dropped at the end.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idem_core::{
    Bytes, Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId, Store, StoredResponse, Timestamp,
};
use idem_postgres::{PostgresOptions, PostgresStore};
use sqlx::AssertSqlSafe;

const CLIENTS: [usize; 2] = [1, 16];

#[derive(Clone, Copy, Debug)]
enum Workload {
    Baseline,
    ClaimComplete,
    AtomicBaseline,
    AtomicClaimComplete,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Baseline => "baseline (1 INSERT … ON CONFLICT DO NOTHING)",
            Workload::ClaimComplete => "claim + complete",
            Workload::AtomicBaseline => "atomic baseline (BEGIN, INSERT, COMMIT)",
            Workload::AtomicClaimComplete => "atomic claim + (BEGIN, INSERT, complete_in, COMMIT)",
        }
    }
}

struct Bench {
    store: PostgresStore,
    schema: String,
    next: AtomicU64,
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))],
        body: Bytes::from_static(b"{\"payment_id\":\"pay_1\",\"amount\":100}"),
    }
}

impl Bench {
    async fn one(&self, workload: Workload) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("k{n}");
        let s = &self.schema;
        let policy = Policy::default();
        let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
        let id = RecordId::new(Principal::new("bench").expect("valid"), Key::parse(key.as_bytes()).expect("valid"));
        let baseline = format!(
            "INSERT INTO \"{s}\".baseline (principal, idem_key, fingerprint, fence, state, expires_at, body) \
             VALUES ('bench', $1, $2, $3, 'completed', 0, $4) ON CONFLICT DO NOTHING"
        );
        let business = format!("INSERT INTO \"{s}\".payments (key, amount) VALUES ($1, 100)");
        match workload {
            Workload::Baseline => {
                sqlx::query(AssertSqlSafe(baseline))
                    .bind(&key)
                    .bind(fingerprint.to_stored())
                    .bind(i64::try_from(n).expect("fits"))
                    .bind(&response().body[..])
                    .execute(self.store.pool())
                    .await
                    .expect("baseline insert");
            }
            Workload::ClaimComplete => {
                let Decision::Execute(claim) =
                    self.store.claim(&id, &fingerprint, Timestamp::EPOCH, &policy).await.expect("claim")
                else {
                    panic!("fresh keys execute")
                };
                let done = self.store.complete(&id, claim.fence, response(), Timestamp::EPOCH, &policy).await;
                assert_eq!(done.expect("complete"), Fenced::Applied);
            }
            Workload::AtomicBaseline => {
                let mut tx = self.store.begin_write().await.expect("begin");
                sqlx::query(AssertSqlSafe(business)).bind(&key).execute(&mut *tx).await.expect("insert");
                tx.commit().await.expect("commit");
            }
            Workload::AtomicClaimComplete => {
                let Decision::Execute(claim) =
                    self.store.claim(&id, &fingerprint, Timestamp::EPOCH, &policy).await.expect("claim")
                else {
                    panic!("fresh keys execute")
                };
                let mut tx = self.store.begin_write().await.expect("begin");
                sqlx::query(AssertSqlSafe(business)).bind(&key).execute(&mut *tx).await.expect("insert");
                let done = self.store.complete_in(&mut tx, &id, claim.fence, response(), Timestamp::EPOCH, &policy);
                assert_eq!(done.await.expect("complete_in"), Fenced::Applied);
                tx.commit().await.expect("commit");
            }
        }
    }
}

/// Runs `workload` on `clients` concurrent clients for `seconds`: operations done, seconds taken.
async fn measure(bench: &Arc<Bench>, workload: Workload, clients: usize, seconds: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (bench, done) = (Arc::clone(bench), Arc::clone(&done));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    bench.one(workload).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no client panicked");
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let ops = done.load(Ordering::Relaxed) as f64;
    (ops, started.elapsed().as_secs_f64())
}

fn main() {
    let url = std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let seconds: f64 = std::env::var("IDEM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: u32 = std::env::var("IDEM_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let schema = format!("idem_bench_{}", std::process::id());
        let options = PostgresOptions::new(&url).schema(&schema).connections_max(16).records_max(u64::MAX >> 2);
        let store = PostgresStore::open(options).await.unwrap_or_else(|error| {
            panic!("the bench needs PostgreSQL at {url} (`pg_ctlcluster 15 main start`): {error}")
        });
        let s = &schema;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE \"{s}\".baseline (principal TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint BYTEA NOT NULL, \
             fence BIGINT NOT NULL, state TEXT NOT NULL, expires_at BIGINT NOT NULL, body BYTEA, \
             PRIMARY KEY (principal, idem_key));
             CREATE TABLE \"{s}\".payments (key TEXT PRIMARY KEY, amount BIGINT NOT NULL);"
        )))
        .execute(store.pool())
        .await
        .expect("bench tables");
        let bench = Arc::new(Bench { store: store.clone(), schema: schema.clone(), next: AtomicU64::new(0) });
        println!("{seconds} s per measurement in {rounds} rounds taking turns, PostgreSQL at {url}");
        for clients in CLIENTS {
            // Warm the pool up to this many connections.
            let _ = measure(&bench, Workload::Baseline, clients, 0.3).await;
            // The workloads take turns in short rounds, so a change in the machine's load or
            // the disk's fsync time during the run weighs on all of them alike.
            let workloads =
                [Workload::Baseline, Workload::ClaimComplete, Workload::AtomicBaseline, Workload::AtomicClaimComplete];
            let mut totals = [(0.0, 0.0); 4];
            for _ in 0..rounds {
                for (workload, total) in workloads.iter().zip(totals.iter_mut()) {
                    let (ops, elapsed) = measure(&bench, *workload, clients, seconds / f64::from(rounds)).await;
                    *total = (total.0 + ops, total.1 + elapsed);
                }
            }
            let figures: Vec<(Workload, f64)> =
                workloads.iter().zip(totals).map(|(workload, (ops, elapsed))| (*workload, ops / elapsed)).collect();
            println!("clients = {clients}");
            let (plain, atomic_plain) = (figures[0].1, figures[2].1);
            for (workload, per_second) in figures {
                let reference = match workload {
                    Workload::Baseline | Workload::ClaimComplete => plain,
                    Workload::AtomicBaseline | Workload::AtomicClaimComplete => atomic_plain,
                };
                println!("  {:<55} {per_second:>8.0} ops/s  {:.2} of its baseline", workload.name(), per_second / reference);
            }
        }
        store.close().await;
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(&mut admin)
            .await
            .expect("drop the bench schema");
    });
}
