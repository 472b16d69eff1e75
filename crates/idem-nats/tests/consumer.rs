//! The consumer over the real server with a real SQLite store in atomic mode: every test
//! ends with exactly one payment row per message key and every message acked (the durable
//! has nothing pending and nothing unacked).

mod common;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::RetentionPolicy;
use common::{Fixture, poll_until};
use idem_nats::{NatsOptions, NatsTransport, dead_letter};
use support::{ACK_WAIT, Payments, assert_one_row_each, open_store, rows, run};
use tokio::sync::Semaphore;

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn duplicate_publishes_run_once() {
    let fixture = Fixture::new("duplicates").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("idem.db")).await;
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let transport = NatsTransport::new(&fixture.js, consumer, NatsOptions::default()).await.expect("transport");
    let payments = Arc::new(Payments::default());
    let running = run(Arc::clone(&store), transport, Arc::clone(&payments), |b| b);

    let subject = fixture.subject("payments");
    let mut keys = Vec::new();
    for n in 0..20 {
        // Nats-Msg-Id twice: the stream drops the second inside its duplicate window.
        let id = format!("hdr-{n}");
        assert!(fixture.publish(&subject, format!("{n}").as_bytes(), Some(&id)).await);
        assert!(!fixture.publish(&subject, format!("{n}").as_bytes(), Some(&id)).await, "the stream dedups {id}");
        // The key in the payload, no header, twice: both are stored; idem must dedup.
        let key = format!("body-{n}");
        let payload = format!("{key}:{n}");
        assert!(fixture.publish(&subject, payload.as_bytes(), None).await);
        assert!(fixture.publish(&subject, payload.as_bytes(), None).await, "the stream cannot dedup {key}");
        keys.extend([id, key]);
    }

    fixture.until_settled("app", SETTLE).await;
    let drained = running.stop().await;
    assert_eq!(drained.abandoned, 0);
    assert_one_row_each(&rows(&store).await, keys.clone());
    assert_eq!(payments.log.runs().len(), 40, "the handler ran once per key");
    let mut replays = payments.log.replays();
    replays.sort();
    let mut body_keys: Vec<_> = keys.into_iter().filter(|k| k.starts_with("body-")).collect();
    body_keys.sort();
    assert_eq!(replays, body_keys, "each payload-keyed duplicate was replayed, not run");
}

#[tokio::test]
async fn slow_handler_keeps_its_message() {
    let fixture = Fixture::new("slow").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("idem.db")).await;
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let transport = NatsTransport::new(&fixture.js, consumer, NatsOptions::default()).await.expect("transport");
    let payments = Arc::new(Payments { hold: ACK_WAIT * 3, ..Payments::default() });
    let running = run(Arc::clone(&store), transport, Arc::clone(&payments), |b| b);

    fixture.publish(&fixture.subject("p"), b"slow", Some("slow-1")).await;
    fixture.until_settled("app", SETTLE).await;
    running.stop().await;
    assert_eq!(payments.log.runs(), vec![("slow-1".to_owned(), Some(1))], "one run, on the first delivery");
    // The durable's delivery count (its consumer sequence): redeliveries would add to it.
    // (`num_redelivered` would not do: it counts only redelivered messages still unacked.)
    let info = fixture.consumer_info("app").await;
    assert_eq!(info.delivered.consumer_sequence, 1, "in-progress acks kept the message for 3 ack waits");
    assert_one_row_each(&rows(&store).await, ["slow-1".to_owned()]);
}

#[tokio::test]
async fn two_consumers_race_on_one_durable() {
    let fixture = Fixture::new("race").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("idem.db");
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let mut runners = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..2 {
        // Each consumer has its own connection and its own store on the one file.
        let js = common::connect().await;
        let options = NatsOptions::default().in_flight_max(16);
        let transport = NatsTransport::new(&js, consumer.clone(), options).await.expect("transport");
        let payments = Arc::new(Payments { hold: Duration::from_millis(20), ..Payments::default() });
        logs.push(Arc::clone(&payments.log));
        runners.push(run(open_store(&path).await, transport, payments, |b| b.in_flight_max(16)));
    }

    let subject = fixture.subject("payments");
    let mut keys = Vec::new();
    for n in 0..150 {
        let key = format!("race-{n}");
        let payload = format!("{key}:{n}");
        fixture.publish(&subject, payload.as_bytes(), None).await;
        if n % 5 == 0 {
            fixture.publish(&subject, payload.as_bytes(), None).await;
        }
        keys.push(key);
    }

    fixture.until_settled("app", SETTLE).await;
    for runner in runners {
        assert_eq!(runner.stop().await.abandoned, 0);
    }
    let store = open_store(&path).await;
    assert_one_row_each(&rows(&store).await, keys);
    let ran: Vec<usize> = logs.iter().map(|log| log.runs().len()).collect();
    assert!(ran.iter().all(|n| *n > 0), "both consumers took messages: {ran:?}");
}

#[tokio::test]
async fn a_reused_key_with_another_payload_is_dead_lettered() {
    let mut fixture = Fixture::new("mismatch").await;
    let dlq = format!("idem_t_mismatch_dlq_{}", std::process::id());
    fixture.add_stream(&dlq, RetentionPolicy::Limits).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("idem.db")).await;
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let options = NatsOptions::default().dead_letter_subject(format!("{dlq}.payments"));
    let transport = NatsTransport::new(&fixture.js, consumer, options).await.expect("transport");
    let payments = Arc::new(Payments::default());
    let running = run(Arc::clone(&store), transport, Arc::clone(&payments), |b| b);

    fixture.publish(&fixture.subject("p"), b"m-1:100", None).await;
    fixture.until_settled("app", SETTLE).await;
    fixture.publish(&fixture.subject("p"), b"m-1:999", None).await;
    fixture.until_settled("app", SETTLE).await;
    running.stop().await;

    let dlq = fixture.js.get_stream(&dlq).await.expect("dlq stream");
    let copy = dlq.get_raw_message(1).await.expect("the mismatch was dead-lettered");
    assert_eq!(copy.payload.as_ref(), b"m-1:999");
    let reason = copy.headers.get(dead_letter::REASON_HEADER).map(|v| v.as_str().to_owned());
    assert_eq!(reason.as_deref(), Some("key-reused"));
    assert_eq!(payments.log.runs().len(), 1, "the mismatch never ran");
    assert_one_row_each(&rows(&store).await, ["m-1".to_owned()]);
}

#[tokio::test]
async fn a_handler_error_releases_and_naks_then_it_runs_once() {
    let fixture = Fixture::new("failure").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("idem.db")).await;
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let transport = NatsTransport::new(&fixture.js, consumer, NatsOptions::default()).await.expect("transport");
    let fail_first = HashSet::from(["e-1".to_owned()]);
    let payments = Arc::new(Payments { fail_first, ..Payments::default() });
    let running = run(Arc::clone(&store), transport, Arc::clone(&payments), |b| b);

    fixture.publish(&fixture.subject("p"), b"e", Some("e-1")).await;
    fixture.until_settled("app", SETTLE).await;
    running.stop().await;
    let runs = payments.log.runs();
    assert_eq!(runs, vec![("e-1".to_owned(), Some(1)), ("e-1".to_owned(), Some(2))], "failed, naked, ran again");
    assert_one_row_each(&rows(&store).await, ["e-1".to_owned()]);
}

#[tokio::test]
async fn shutdown_drains_running_handlers() {
    let fixture = Fixture::new("drain").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("idem.db")).await;
    let consumer = fixture.consumer("app", ACK_WAIT).await;
    let transport = NatsTransport::new(&fixture.js, consumer, NatsOptions::default()).await.expect("transport");
    let gate = Arc::new(Semaphore::new(0));
    let payments = Arc::new(Payments { gate: Some(Arc::clone(&gate)), ..Payments::default() });
    let running = run(Arc::clone(&store), transport, Arc::clone(&payments), |b| b);

    let keys: Vec<String> = (0..8).map(|n| format!("d-{n}")).collect();
    for key in &keys {
        fixture.publish(&fixture.subject("p"), b"d", Some(key)).await;
    }
    let all_running = poll_until(SETTLE, || async { payments.log.runs().len() == 8 }).await;
    assert!(all_running, "8 handlers running within {SETTLE:?}: {:?}", payments.log.runs());

    // Shut down while all 8 wait at the gate; open it once shutdown has begun.
    let stopping = tokio::spawn(running.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(8);
    let drained = stopping.await.expect("stop");
    assert_eq!((drained.settled, drained.abandoned), (8, 0), "all 8 finished and settled in the drain");
    fixture.until_settled("app", SETTLE).await;
    assert_one_row_each(&rows(&store).await, keys);
    assert_eq!(payments.log.runs().len(), 8);
}
