//! Several replicas of the real `idem serve` sharing Redis (idempotency records) and
//! PostgreSQL (payments and users): separate mode. Without faults (no lapsed lease, no
//! crash between the payment and the completion) it keeps G1 too: concurrent same-key
//! requests over both replicas make one payment.
//!
//! Needs Redis and PostgreSQL: `IDEM_TEST_REDIS_URL` and `IDEM_TEST_POSTGRES_URL`, else
//! throw-away servers idem-testkit starts (as root, PostgreSQL is the local server at
//! `postgres://postgres@127.0.0.1:5432/test`); without them the test fails saying how to
//! start them. Each run has its own Redis key prefix and
//! PostgreSQL schema, cleared and dropped at the end.

mod replicas;
mod support;

use std::time::{Duration, Instant};

use replicas::{RedisPrefix, Schema, assert_one_execution, payments_listed, same_key_burst};
use support::ServerProcess;

/// Requests in the burst, half to each replica.
const REQUESTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_and_postgres_make_one_payment_from_16_same_key_requests() {
    // Goal: with records in Redis and rows in PostgreSQL, 16 concurrent identical requests
    // over two replicas create one payment and every 201 is byte-identical; the start log
    // says the mode is separate and what that costs.
    let started = Instant::now();
    let schema = Schema::fresh();
    let prefix = RedisPrefix::fresh();
    let (store, db) = (prefix.url(), schema.url());
    let replicas = [ServerProcess::start(&store, &["--db", &db]), ServerProcess::start(&store, &["--db", &db])];
    for replica in &replicas {
        let log = replica.startup_log.join("\n");
        assert!(log.contains("mode: separate"), "{log}");
        assert!(log.contains("G1 (at most once) holds only while each holder keeps its lease"), "{log}");
        assert!(log.contains("Redis") && log.contains(&prefix.name), "{log}");
    }
    let addrs = [replicas[0].addr, replicas[1].addr];

    let token = "Bearer replica-redis-payer";
    let headers = [("idempotency-key", "replicas-redis-1"), ("authorization", token)];
    let body = r#"{"amount": 7.25, "currency": "USD", "destination": "merchant-redis"}"#;
    let answers = same_key_burst(&addrs, REQUESTS, "/payments", &headers, body, Duration::from_secs(15)).await;
    let created = assert_one_execution(&answers);

    let created: serde_json::Value = serde_json::from_slice(&created).expect("the payment is JSON");
    for addr in addrs {
        let listed = payments_listed(addr, token).await;
        assert_eq!(listed.len(), 1, "payments listed by {addr}: {listed:?}");
        assert_eq!(listed[0]["payment_id"], created["payment_id"]);
    }
    eprintln!("two Redis+PostgreSQL replicas, {REQUESTS} same-key requests: one payment, in {:?}", started.elapsed());
}
