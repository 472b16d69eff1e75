//! Messages per second through a message consumer with idem and without it, in one run,
//! on two brokers: NATS JetStream with SQLite (`consumer_load/nats.rs`) and RabbitMQ with
//! PostgreSQL (`consumer_load/rabbitmq.rs`).
//!
//! Per broker: same broker, same transport (idem-nats's `NatsTransport`, idem-rabbitmq's
//! `RabbitTransport`, so pulling and acking cost the same), same handler body (insert the
//! payment row), same durable store (SQLite in WAL with `synchronous=FULL`; PostgreSQL with
//! its defaults), same bound on messages in flight:
//!
//! * **bare**: takes each delivery, inserts its payment row in a transaction of its own,
//!   acks. No deduplication at all: the baseline a consumer without idem pays.
//! * **idem**: `idem_consumer::Consumer` in atomic mode on `SqliteStore` / `PostgresStore`
//!   (the same database and durability): claim, the payment row and the completion in one
//!   transaction (SQLite: group commit), then the ack.
//!
//! Each round pre-publishes `IDEM_BENCH_MESSAGES` (default 3000) messages with unique ids to
//! a fresh stream or queue (not timed), then times from starting the consumer to the last
//! payment row. `IDEM_BENCH_BROKERS` picks `nats`, `rabbitmq` or both (default). Rounds
//! alternate bare, idem, bare, idem… (`IDEM_BENCH_ROUNDS`, default 3 each); the table gives
//! medians and the ratio idem/bare.
//!
//! ```sh
//! cargo bench -p idem-benches --bench consumer_load
//! ```

#![allow(clippy::print_stdout)] // the report is the point of a harness

#[path = "consumer_load/nats.rs"]
mod nats;
#[path = "consumer_load/rabbitmq.rs"]
mod rabbitmq;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_consumer::{Delivery, DeliveryInfo, Transport};
use tokio::sync::Semaphore;

/// Messages handled at once, bare and idem alike.
const IN_FLIGHT_MAX: usize = 64;
/// Longest one round may take before the bench gives up on it.
const ROUND_MAX: Duration = Duration::from_secs(300);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bare,
    Idem,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages = env_usize("IDEM_BENCH_MESSAGES", 3000);
    let rounds = env_usize("IDEM_BENCH_ROUNDS", 3);
    let brokers = std::env::var("IDEM_BENCH_BROKERS").unwrap_or_else(|_| "nats,rabbitmq".to_owned());
    let mut tables = Vec::new();
    if brokers.contains("nats") {
        let js = nats::connect().await;
        let rates = interleaved(rounds, |round, kind| nats::round(&js, messages, round, kind)).await;
        tables.push(("JetStream + SQLite", rates));
    }
    if brokers.contains("rabbitmq") {
        let rates = interleaved(rounds, |round, kind| rabbitmq::round(messages, round, kind)).await;
        tables.push(("RabbitMQ + PostgreSQL", rates));
    }
    println!(
        "\n| {messages} messages, {IN_FLIGHT_MAX} in flight, median of {rounds} rounds | bare msgs/s | idem msgs/s | idem / bare |"
    );
    println!("|---|---:|---:|---:|");
    for (name, (bare, idem)) in tables {
        println!("| {name} | {bare:.0} | {idem:.0} | {:.2}x |", idem / bare);
    }
}

/// Runs bare, idem, bare, idem… `rounds` times each; the median messages/s of each.
async fn interleaved<F, Fut>(rounds: usize, mut round: F) -> (f64, f64)
where
    F: FnMut(usize, Kind) -> Fut,
    Fut: Future<Output = f64>,
{
    let (mut bare, mut idem) = (Vec::new(), Vec::new());
    for n in 0..rounds {
        bare.push(round(n, Kind::Bare).await);
        idem.push(round(n, Kind::Idem).await);
    }
    (median(&mut bare), median(&mut idem))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Messages per second of one round, logged.
fn rate(what: &str, round: usize, kind: Kind, messages: usize, elapsed: Duration) -> f64 {
    let rate = messages as f64 / elapsed.as_secs_f64();
    eprintln!("{what} round {round} {kind:?}: {messages} messages in {elapsed:?} = {rate:.0} msgs/s");
    rate
}

/// A payment as published: `{"id": "...", "amount": N}`.
fn payment(n: usize) -> String {
    format!("{{\"id\":\"payment-{n}\",\"amount\":{}}}", 100 + n % 900)
}

/// The payment a message carries.
fn parse(payload: &[u8]) -> Option<(String, i64)> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((value["id"].as_str()?.to_owned(), value["amount"].as_i64()?))
}

/// The bare consumer: the same transport and bound in flight as idem's, no idempotency:
/// `insert` writes the payment row in a transaction of its own, then the delivery is acked.
async fn bare_consume<T, F, Fut>(mut transport: T, messages: usize, insert: F)
where
    T: Transport,
    F: Fn(String, i64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let permits = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let done = Arc::new(Semaphore::new(0));
    let deadline = Instant::now() + ROUND_MAX;
    for _ in 0..messages {
        assert!(Instant::now() < deadline, "the bare round took longer than {ROUND_MAX:?}");
        let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
        let delivery = transport.next().await.expect("the transport runs").expect("a delivery");
        let (insert, done) = (insert.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let (id, amount) = parse(delivery.payload()).expect("a payment");
            insert(id, amount).await;
            delivery.ack().await.expect("acked");
            done.add_permits(1);
            drop(permit);
        });
    }
    let all = u32::try_from(messages).expect("fits");
    tokio::time::timeout(ROUND_MAX, done.acquire_many(all))
        .await
        .expect("the bare round ended")
        .expect("open")
        .forget();
    transport.stop().await;
}

/// Resolves once `count()` reaches `messages` (checked every 20 ms, at most [`ROUND_MAX`]).
async fn until_rows<F, Fut>(messages: usize, count: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let step = Duration::from_millis(20);
    for _ in 0..(ROUND_MAX.as_millis() / step.as_millis()) {
        if count().await >= messages {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("the idem round did not write {messages} rows within {ROUND_MAX:?}");
}
