//! A consumer process SIGKILLed while its handler is in the middle of a message: RabbitMQ
//! sees the connection close and requeues the message at once, so the copy meets the dead
//! holder's claim while its lease is still valid. With `OnConflict::Wait`, the surviving
//! consumer waits for that lease to lapse, takes the message over and pays it: one row,
//! queue empty, nothing unacked.
//!
//! The child is this test binary run again with [`CHILD`] set (the queue and the schema):
//! it runs the same test function, which sees the variable and plays the consumer that
//! dies.

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::pg::{Schema, payments};
use common::{Broker, unique, until, until_counts, uri, within};
use idem_core::{Key, Principal, RecordId, RecordState, Store};
use idem_rabbitmq::RabbitTransport;
use idem_rabbitmq::lapin::types::{AMQPValue, FieldTable};
use support::{Gate, Payments, Running};

/// Set in the child: `<queue> <schema>`.
const CHILD: &str = "IDEM_RABBITMQ_TEST_CHILD";
/// What the child prints once its handler holds the message.
const ENTERED: &str = "idem-child: handler entered";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_message_is_taken_over() {
    if let Ok(names) = std::env::var(CHILD) {
        return child(&names).await;
    }
    let handler = killed_then_taken_over("killed_mid_message_is_taken_over", "killed", FieldTable::default()).await;
    assert_eq!(handler.attempts(), [None], "a classic queue does not count deliveries");
}

/// Plan B7: a quorum queue counts the requeue the kill causes; a delivery limit of 1 drops
/// the message at its next requeue. Waiting on the dead holder's lease (rather than nacking
/// on the conflict) costs no delivery, so the copy survives and is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_message_on_a_quorum_queue_costs_one_delivery() {
    if let Ok(names) = std::env::var(CHILD) {
        return child(&names).await;
    }
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(1));
    let handler =
        killed_then_taken_over("killed_mid_message_on_a_quorum_queue_costs_one_delivery", "killed_q", arguments).await;
    assert_eq!(handler.attempts(), [Some(2)], "the survivor ran the second delivery, the only requeue");
}

/// Publishes one payment, lets a child consumer (test `test`) take it and SIGKILLs it
/// mid-handler, then runs a consumer here until the payment is made; checks one row, one
/// run on the requeued copy, the queue empty. Returns the survivor's handler.
async fn killed_then_taken_over(test: &str, name: &str, arguments: FieldTable) -> Payments {
    let mut broker = Broker::connect().await;
    let queue = broker.queue_with(&unique(name), arguments).await;
    let schema = Schema::fresh(name);
    let store = schema.open().await;
    broker.publish(&queue, Some("pay-000"), b"amount 0", &[]).await;

    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dying = KillOnDrop(
        Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{queue} {}", schema.name))
            // The schema is in this process's database, not in a cluster of the child's own.
            .env("IDEM_TEST_POSTGRES_URL", common::pg::url())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the child consumer starts"),
    );
    let stdout = dying.0.stdout.take().expect("piped");
    let entered = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.contains(ENTERED))
    });
    let entered = within(WAIT, "the child's handler to take the message", entered).await.expect("reader task");
    assert!(entered, "the child exited before its handler took the message");
    dying.0.kill().expect("SIGKILL the child");
    let status = dying.0.wait().expect("the child is reaped");
    assert!(status.code().is_none(), "the child died by the signal, not by itself: {status:?}");
    // The dead child's claim still holds the record: the requeued copy must wait for its
    // lease rather than run beside it.
    let principal = Principal::new(&format!("amqp://{queue}")).expect("the source is a principal");
    let id = RecordId::new(principal, Key::from_chars("pay-000").expect("a key"));
    let record = store.get(&id).await.expect("the record reads").expect("the child claimed it");
    assert!(matches!(record.state, RecordState::InFlight { .. }), "held by the dead child: {record:?}");

    let handler = Payments::new(&schema.name);
    let transport = RabbitTransport::builder(uri(), &queue).prefetch(4).connect().await.expect("transport");
    let running = Running::start(&store, transport, handler.clone(), 4);
    until(WAIT, "the taken-over payment", || async {
        let rows = payments(&store).await;
        if rows.is_empty() { Err("no row yet".to_owned()) } else { Ok(()) }
    })
    .await;
    until_counts(&queue, 0, 0, WAIT).await;
    running.stop().await;
    assert_eq!(payments(&store).await, [("pay-000".to_owned(), 1)], "exactly one payment");
    assert_eq!(handler.runs(), 1, "the survivor ran it once, after the dead holder's lease");
    assert_eq!(handler.redelivered_runs(), 1, "the run was on the copy requeued by the kill");
    handler
}

/// The child, killed if the test fails before it does (no orphan outlives the test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The consumer that dies: its handler takes the message, says so, and waits to be killed.
async fn child(names: &str) {
    let (queue, schema) = names.split_once(' ').expect("`<queue> <schema>`");
    let schema = Schema::borrowed(schema.to_owned());
    let store = schema.open().await;
    let gate = Arc::new(Gate::default());
    let transport = RabbitTransport::builder(uri(), queue).prefetch(1).connect().await.expect("transport");
    let _running = Running::start(&store, transport, Payments::gated(&schema.name, gate.clone()), 1);
    gate.entered.notified().await;
    #[allow(clippy::print_stdout)] // the parent reads the child's stdout for this line
    {
        println!("{ENTERED}");
    }
    // Killed here; the bound only keeps an orphan from lingering if the parent died first.
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the child was not killed within 60 s");
}
