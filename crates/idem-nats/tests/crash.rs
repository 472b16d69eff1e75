//! A consumer process killed (SIGKILL) at the two worst moments: inside its handler's
//! transaction, and after its completion committed but before its ack. The test binary
//! re-runs itself as the doomed consumer (env `IDEM_NATS_TEST_CHILD`), waits until the child
//! says it reached the moment (a marker file), kills it, and lets an in-test consumer on the
//! same durable and the same SQLite file take over.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Fixture;
use idem_consumer::{Delivery, DeliveryInfo, Transport, TransportError};
use idem_core::{DeadLetterReason, RedeliveryTimer};
use idem_nats::{NatsDelivery, NatsOptions, NatsTransport};
use support::{ACK_WAIT, Payments, assert_one_row_each, open_store, rows, run};

const CHILD: &str = "IDEM_NATS_TEST_CHILD";
const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn killed_mid_message_is_taken_over() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec, false).await;
    }
    let (fixture, dir) = setup("killed_mid").await;
    let (db, marker) = (dir.path().join("idem.db"), dir.path().join("in-transaction"));
    kill_when_there(spawn_child("killed_mid_message_is_taken_over", &fixture, &db, &marker), &marker).await;

    // The child's insert died with its transaction; its claim lapses with its lease, and
    // the message returns one ack wait after the child's last in-progress ack.
    let store = open_store(&db).await;
    assert!(rows(&store).await.is_empty(), "the killed transaction left no row");
    let payments = Arc::new(Payments::default());
    let transport = NatsTransport::open(&fixture.js, &fixture.stream, "app", NatsOptions::default()).await;
    let running = run(Arc::clone(&store), transport.expect("transport"), Arc::clone(&payments), |b| b);
    fixture.until_settled("app", SETTLE).await;
    running.stop().await;

    let runs = payments.log.runs();
    assert_eq!(runs.len(), 1, "the survivor ran it once: {runs:?}");
    assert!(runs[0].1 >= Some(2), "on a redelivery: {runs:?}");
    assert_one_row_each(&rows(&store).await, ["k-1".to_owned()]);
}

#[tokio::test]
async fn killed_after_commit_before_ack_is_replayed() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec, true).await;
    }
    let (fixture, dir) = setup("killed_acking").await;
    let (db, marker) = (dir.path().join("idem.db"), dir.path().join("acking"));
    kill_when_there(spawn_child("killed_after_commit_before_ack_is_replayed", &fixture, &db, &marker), &marker).await;

    let store = open_store(&db).await;
    assert_one_row_each(&rows(&store).await, ["k-1".to_owned()]);
    let payments = Arc::new(Payments::default());
    let transport = NatsTransport::open(&fixture.js, &fixture.stream, "app", NatsOptions::default()).await;
    let running = run(Arc::clone(&store), transport.expect("transport"), Arc::clone(&payments), |b| b);
    fixture.until_settled("app", SETTLE).await;
    running.stop().await;

    assert_eq!(payments.log.runs(), Vec::new(), "the redelivery did not run the handler");
    assert_eq!(payments.log.replays(), vec!["k-1".to_owned()], "the redelivery was replayed and acked");
    assert_one_row_each(&rows(&store).await, ["k-1".to_owned()]);
}

async fn setup(test: &str) -> (Fixture, tempfile::TempDir) {
    let fixture = Fixture::new(test).await;
    fixture.consumer("app", ACK_WAIT).await;
    fixture.publish(&fixture.subject("payments"), b"100", Some("k-1")).await;
    (fixture, tempfile::tempdir().expect("tempdir"))
}

fn spawn_child(test: &str, fixture: &Fixture, db: &Path, marker: &Path) -> Child {
    let spec = format!("{}\n{}\n{}", fixture.stream, db.display(), marker.display());
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .spawn()
        .expect("start the child consumer")
}

/// Waits (at most 20 s) for the child's marker, then SIGKILLs it.
async fn kill_when_there(mut child: Child, marker: &Path) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut exited = None;
    while !marker.exists() && exited.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        exited = child.try_wait().expect("child status");
    }
    if !marker.exists() || exited.is_some() {
        let _ = child.kill();
        panic!("the child did not reach its marker {} within {SETTLE:?} (exit: {exited:?})", marker.display());
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
}

/// The doomed consumer: it blocks inside its handler's transaction, or in its first ack.
async fn child(spec: &str, in_ack: bool) {
    let mut parts = spec.lines();
    let (stream, db, marker) = match (parts.next(), parts.next(), parts.next()) {
        (Some(stream), Some(db), Some(marker)) => (stream, PathBuf::from(db), PathBuf::from(marker)),
        _ => panic!("{CHILD} must be stream, database and marker on three lines"),
    };
    let js = common::connect().await;
    let transport = NatsTransport::open(&js, stream, "app", NatsOptions::default()).await.expect("child transport");
    let store = open_store(&db).await;
    let _running = if in_ack {
        run(store, HoldAcks { inner: transport, marker }, Payments::default(), |b| b)
    } else {
        run(store, transport, Payments { block_in_writes: Some(marker), ..Payments::default() }, |b| b)
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the child was not killed within 60 s");
}

/// A transport whose acks never happen: the first one writes the marker and blocks.
struct HoldAcks {
    inner: NatsTransport,
    marker: PathBuf,
}

struct Held {
    inner: NatsDelivery,
    marker: PathBuf,
}

impl Transport for HoldAcks {
    type Delivery = Held;

    async fn next(&mut self) -> Option<Result<Held, TransportError>> {
        let next = self.inner.next().await?;
        Some(next.map(|inner| Held { inner, marker: self.marker.clone() }))
    }

    async fn stop(&mut self) {
        self.inner.stop().await;
    }

    fn redelivery_timer(&self) -> RedeliveryTimer {
        self.inner.redelivery_timer()
    }
}

impl DeliveryInfo for Held {
    fn subject(&self) -> &str {
        self.inner.subject()
    }
    fn payload(&self) -> &Bytes {
        self.inner.payload()
    }
    fn message_id(&self) -> Option<&str> {
        self.inner.message_id()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }
    fn source(&self) -> &str {
        self.inner.source()
    }
    fn attempt(&self) -> Option<u32> {
        self.inner.attempt()
    }
    fn redelivered(&self) -> bool {
        self.inner.redelivered()
    }
}

impl Delivery for Held {
    async fn ack(self) -> Result<(), TransportError> {
        std::fs::write(&self.marker, b"acking").expect("write the marker");
        std::future::pending().await
    }
    async fn nak(self, after: Duration) -> Result<(), TransportError> {
        self.inner.nak(after).await
    }
    async fn dead_letter(self, reason: DeadLetterReason) -> Result<(), TransportError> {
        self.inner.dead_letter(reason).await
    }
    async fn in_progress(&self) -> Result<(), TransportError> {
        self.inner.in_progress().await
    }
}
