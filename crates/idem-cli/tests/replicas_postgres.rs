//! Several replicas of the real `idem serve` on one PostgreSQL (atomic mode): concurrent
//! requests with one key, spread over both, make one payment, and every final answer is
//! the same bytes (G1, G2 across replicas).
//!
//! Needs PostgreSQL: `IDEM_TEST_POSTGRES_URL`, else a throw-away cluster idem-testkit starts
//! (as root, the local server at `postgres://postgres@127.0.0.1:5432/test`); without it the
//! test fails saying how to start it. Each run
//! works in a schema of its own (`?schema=` in the store URL), dropped at the end.

mod replicas;
mod support;

use std::time::{Duration, Instant};

use replicas::{Schema, assert_one_execution, payments_listed, same_key_burst};
use support::ServerProcess;

/// Requests in the burst, half to each replica.
const REQUESTS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_make_one_payment_from_64_same_key_requests() {
    // Goal: G1 and G2 hold across two server processes sharing one PostgreSQL database:
    // 64 concurrent identical requests (same key, body, principal) spread over both
    // replicas create exactly one payment, and every 201 is byte-identical.
    let started = Instant::now();
    let schema = Schema::fresh();
    let store = schema.url();
    let replicas = [ServerProcess::start(&store, &[]), ServerProcess::start(&store, &[])];
    for replica in &replicas {
        let log = replica.startup_log.join("\n");
        assert!(log.contains("mode: atomic") && log.contains("G1-G8"), "{log}");
        assert!(log.contains("PostgreSQL") && log.contains(&schema.name), "{log}");
    }
    let addrs = [replicas[0].addr, replicas[1].addr];

    let token = "Bearer replica-payer";
    let headers =
        [("idempotency-key", "replicas-pg-1"), ("authorization", token), ("content-type", "application/json")];
    let body = r#"{"amount": 42.50, "currency": "EUR", "destination": "merchant-replicas"}"#;
    let answers = same_key_burst(&addrs, REQUESTS, "/payments", &headers, body, Duration::from_secs(15)).await;
    assert_eq!(answers.len(), REQUESTS);
    let created = assert_one_execution(&answers);

    // Both replicas read the same single payment from the shared database.
    let created: serde_json::Value = serde_json::from_slice(&created).expect("the payment is JSON");
    for addr in addrs {
        let listed = payments_listed(addr, token).await;
        assert_eq!(listed.len(), 1, "payments listed by {addr}: {listed:?}");
        assert_eq!(listed[0]["payment_id"], created["payment_id"]);
    }
    eprintln!("two PostgreSQL replicas, {REQUESTS} same-key requests: one payment, in {:?}", started.elapsed());
}
