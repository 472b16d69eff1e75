//! What RabbitMQ's consumer timeout does (plan B5), under a running handler: the broker
//! closes the consumer's channel with PRECONDITION_FAILED and requeues the delivery. The
//! handler is not cancelled: it completes its record with its payment; its ack fails and is
//! counted; the transport consumes again on a new channel; the requeued copy is replayed
//! and acked. One row, one run, queue empty.
//!
//! Alone in its test binary: it installs the process's metrics recorder to read the count.

mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::pg::{Schema, payments};
use common::{Broker, unique, until_counts, uri, within};
use idem_consumer::observe::{MESSAGES_TOTAL, TRANSPORT_ERRORS_TOTAL};
use idem_rabbitmq::RabbitTransport;
use idem_rabbitmq::lapin::options::BasicAckOptions;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::{Gate, Payments, Running};

const WAIT: Duration = Duration::from_secs(20);

/// A counter: its name, its labels and its value.
type Counter = (String, Vec<(String, String)>, u64);

/// The sum of the counters named `name` that carry all of `labels`.
fn counter(snapshot: &[Counter], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|(_, _, value)| value)
        .sum()
}

fn counters(snapshotter: &Snapshotter) -> Vec<Counter> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(value) => {
                let key = key.key();
                let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
                Some((key.name().to_owned(), labels, value))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_closed_under_a_running_handler() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder in this binary");
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("closed_under")).await;
    let schema = Schema::fresh("closed_under");
    let store = schema.open().await;
    broker.publish(&queue, Some("pay-000"), b"amount 0", &[]).await;

    let gate = Arc::new(Gate::default());
    let handler = Payments::gated(&schema.name, gate.clone());
    let transport = RabbitTransport::builder(uri(), &queue).prefetch(4).connect().await.expect("transport");
    let channel = transport.channel().expect("consuming").clone();
    let running = Running::start(&store, transport, handler.clone(), 4);
    within(WAIT, "the handler to take the message", gate.entered.notified()).await;
    // The broker closes the channel with PRECONDITION_FAILED, as the consumer timeout
    // does; an ack of a tag it never sent draws that same close.
    let _ = channel.basic_ack(1_000_000, BasicAckOptions::default()).await;
    within(WAIT, "the broker to close the channel", async {
        while channel.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gate.release.notify_one();

    until_counts(&queue, 0, 0, WAIT).await;
    running.stop().await;
    assert_eq!(payments(&store).await, [("pay-000".to_owned(), 1)], "the handler's payment, once");
    assert_eq!(handler.runs(), 1, "the requeued copy was replayed, not run again");
    let seen = counters(&snapshotter);
    let failed_acks = counter(&seen, TRANSPORT_ERRORS_TOTAL, &[("operation", "ack"), ("error", "closed")]);
    assert_eq!(failed_acks, 1, "the first delivery's ack failed on the closed channel: {seen:?}");
    assert_eq!(counter(&seen, MESSAGES_TOTAL, &[("outcome", "replayed")]), 1, "{seen:?}");
}
