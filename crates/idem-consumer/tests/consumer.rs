//! The consumer's state machine end to end, on the in-memory broker and the real in-memory
//! store, in paused tokio time: SPEC "Message consumers", row by row.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ACK_WAIT, FlakyStore, LEASE, Payments, clock, policy, until_settled};
use idem_consumer::testing::{MemoryBroker, State};
use idem_consumer::{ConfigError, Consumer, Drained, KeyFrom, OnConflict};
use idem_core::consume::DeadLetterReason;
use idem_core::{RecordState, Store};

/// Runs one consumer over `broker` until every message is settled (at most `limit`).
async fn consume(broker: &MemoryBroker, store: Arc<FlakyStore>, payments: Arc<Payments>, limit: Duration) -> Drained {
    let consumer = Consumer::builder(store, broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .handler(payments)
        .expect("valid settings");
    consumer.run_until(until_settled(broker, limit)).await
}

fn acked(broker: &MemoryBroker) -> usize {
    broker.messages().values().filter(|m| m.state == State::Acked).count()
}

#[tokio::test(start_paused = true)]
async fn duplicates_run_once_and_every_copy_is_acked_with_the_first_outcome() {
    // G1 and G2 across duplicate publishes: one side effect per key, each copy acked, the
    // replays given the first execution's outcome.
    let broker = MemoryBroker::new(ACK_WAIT);
    for key in ["a", "b", "a", "c", "a", "b"] {
        broker.publish(Some(key), "orders", format!("pay {key}"));
    }
    let payments = Arc::new(Payments::default());
    let drained = consume(&broker, Arc::default(), Arc::clone(&payments), Duration::from_secs(30)).await;
    let effects = payments.effects();
    assert_eq!(effects.values().copied().collect::<Vec<_>>(), [1, 1, 1], "one side effect per key: {effects:?}");
    assert_eq!(acked(&broker), 6, "every copy acked");
    assert_eq!(drained, Drained { settled: 6, abandoned: 0 });
    let replayed = payments.replayed.lock().expect("not poisoned").clone();
    assert_eq!(replayed.len(), 3, "three copies were replays");
    for (key, outcome) in replayed {
        assert_eq!(outcome.bytes, format!("receipt for {key}: pay {key}"), "a replay gets the first outcome (G2)");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reused_key_is_dead_lettered_and_never_runs() {
    // G5: same id, other payload.
    let broker = MemoryBroker::new(ACK_WAIT);
    broker.publish(Some("k"), "orders", "pay 5");
    let reused = broker.publish(Some("k"), "orders", "pay 500");
    let missing = broker.publish(None, "orders", "pay 7");
    let invalid = broker.publish(Some("a key with spaces"), "orders", "pay 8");
    let payments = Arc::new(Payments::default());
    consume(&broker, Arc::default(), Arc::clone(&payments), Duration::from_secs(30)).await;
    let messages = broker.messages();
    assert_eq!(messages[&reused].state, State::DeadLettered(DeadLetterReason::KeyReused));
    assert_eq!(messages[&missing].state, State::DeadLettered(DeadLetterReason::KeyMissing));
    assert_eq!(messages[&invalid].state, State::DeadLettered(DeadLetterReason::KeyInvalid));
    assert_eq!(payments.runs.load(Ordering::SeqCst), 1, "only the first message ran");
}

#[tokio::test(start_paused = true)]
async fn a_failed_handler_releases_and_the_redelivery_runs_it() {
    // SPEC row "handler error before a durable write": release, nak, run again.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("k"), "orders", "pay");
    let payments = Arc::new(Payments::default());
    payments.failures_left.store(2, Ordering::SeqCst);
    consume(&broker, Arc::default(), Arc::clone(&payments), Duration::from_secs(30)).await;
    assert_eq!(payments.runs.load(Ordering::SeqCst), 3, "two failures, then success");
    assert_eq!(payments.effects()["k"], 1);
    let message = &broker.messages()[&seq];
    assert_eq!((message.state, message.delivered), (State::Acked, 3), "naked twice, acked on the third delivery");
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_keeps_its_message_by_progress() {
    // The lease and the broker's timer move together: a handler running four ack waits
    // is never redelivered, so it never meets a conflict or a second run.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("slow"), "orders", "pay");
    let payments = Arc::new(Payments::default());
    *payments.delay.lock().expect("not poisoned") = ACK_WAIT * 4;
    consume(&broker, Arc::default(), Arc::clone(&payments), Duration::from_secs(60)).await;
    let message = &broker.messages()[&seq];
    assert_eq!((message.state, message.delivered), (State::Acked, 1), "delivered once: progress kept it");
    assert_eq!(payments.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_ack_is_redelivered_and_acked_as_a_replay() {
    let broker = MemoryBroker::new(ACK_WAIT);
    broker.lose_acks(2);
    for key in ["a", "b", "c"] {
        broker.publish(Some(key), "orders", "pay");
    }
    let payments = Arc::new(Payments::default());
    consume(&broker, Arc::default(), Arc::clone(&payments), Duration::from_secs(60)).await;
    assert_eq!(payments.effects().values().sum::<u32>(), 3, "one side effect each");
    assert_eq!(payments.replayed.lock().expect("not poisoned").len(), 2, "the two lost acks came back as replays");
    assert_eq!(acked(&broker), 3);
}

#[tokio::test(start_paused = true)]
async fn two_consumers_racing_on_duplicates_run_each_key_once() {
    // G1 with concurrent duplicates: the store's claim decides, one runs, the other naks
    // (conflict) or waits, then acks the replay.
    let broker = MemoryBroker::new(ACK_WAIT);
    for n in 0..40 {
        let key = format!("k{}", n % 15);
        broker.publish(Some(&key), "orders", format!("pay {key}"));
    }
    let store = Arc::new(FlakyStore::default());
    let payments = Arc::new(Payments::default());
    *payments.delay.lock().expect("not poisoned") = Duration::from_millis(700);
    let consumer = |source: &str, on_conflict| {
        Consumer::builder(Arc::clone(&store), broker.transport(source))
            .policy(policy())
            .clock(clock())
            .in_flight_max(4)
            .on_conflict(on_conflict)
            .handler(Arc::clone(&payments))
            .expect("valid settings")
    };
    let first = consumer("memory:orders/app", OnConflict::Redeliver);
    let second = consumer("memory:orders/app", OnConflict::Wait { max: LEASE });
    let limit = Duration::from_secs(120);
    tokio::join!(first.run_until(until_settled(&broker, limit)), second.run_until(until_settled(&broker, limit)));
    let effects = payments.effects();
    assert_eq!(effects.len(), 15);
    assert!(effects.values().all(|&n| n == 1), "one side effect per key: {effects:?}");
    assert_eq!(acked(&broker), 40, "every copy acked");
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_runs_nothing_and_the_message_comes_back() {
    // G8: no claim, no run; the message is naked and runs once the store is back.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("k"), "orders", "pay");
    let store = Arc::new(FlakyStore::default());
    store.down.store(true, Ordering::SeqCst);
    let payments = Arc::new(Payments::default());
    let healing = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(payments.runs.load(Ordering::SeqCst), 0, "nothing ran while the store was down");
        store.down.store(false, Ordering::SeqCst);
    };
    let (_, ()) =
        tokio::join!(consume(&broker, Arc::clone(&store), Arc::clone(&payments), Duration::from_secs(30)), healing);
    let message = &broker.messages()[&seq];
    assert!(message.delivered >= 2, "naked while the store was down: {message:?}");
    assert_eq!(message.state, State::Acked);
    assert_eq!(payments.runs.load(Ordering::SeqCst), 1, "ran once, after the store came back");
}

#[tokio::test(start_paused = true)]
async fn no_ack_while_the_completion_is_not_recorded() {
    // SPEC: an ack only after the completion committed. Separate mode, the completion
    // fails: the message is naked, not acked, and the record stays in flight.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("k"), "orders", "pay");
    let store = Arc::new(FlakyStore::default());
    store.complete_down.store(true, Ordering::SeqCst);
    let payments = Arc::new(Payments::default());
    let consumer = Consumer::builder(Arc::clone(&store), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .handler(Arc::clone(&payments))
        .expect("valid settings");
    consumer.run_until(tokio::time::sleep(Duration::from_secs(2))).await;
    let message = &broker.messages()[&seq];
    assert_ne!(message.state, State::Acked, "acked without a completion: {message:?}");
    let record = store.inner.get(&broker_id()).await.expect("reads").expect("claimed");
    assert!(matches!(record.state, RecordState::InFlight { .. }), "{record:?}");
}

fn broker_id() -> idem_core::RecordId {
    idem_core::RecordId::new(
        idem_core::Principal::new("memory:orders/app").expect("a principal"),
        idem_core::Key::from_chars("k").expect("a key"),
    )
}

#[tokio::test(start_paused = true)]
async fn a_key_function_guards_messages_without_an_id() {
    let broker = MemoryBroker::new(ACK_WAIT);
    for _ in 0..3 {
        broker.publish(None, "orders", "order-9");
    }
    let payments = Arc::new(Payments::default());
    let consumer = Consumer::builder(Arc::new(FlakyStore::default()), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .key_from(KeyFrom::Fn(|info| Some(String::from_utf8_lossy(info.payload()).into_owned())))
        .handler(Arc::clone(&payments))
        .expect("valid settings");
    consumer.run_until(until_settled(&broker, Duration::from_secs(30))).await;
    assert_eq!(payments.effects()["order-9"], 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_handlers_finish_and_settle() {
    let broker = MemoryBroker::new(ACK_WAIT);
    for n in 0..8 {
        broker.publish(Some(&format!("k{n}")), "orders", "pay");
    }
    let payments = Arc::new(Payments::default());
    *payments.delay.lock().expect("not poisoned") = Duration::from_secs(2);
    let consumer = Consumer::builder(Arc::new(FlakyStore::default()), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .handler(Arc::clone(&payments))
        .expect("valid settings");
    let drained = consumer.run_until(tokio::time::sleep(Duration::from_millis(100))).await;
    assert_eq!(drained, Drained { settled: 8, abandoned: 0 }, "the eight in flight finished");
    assert_eq!(acked(&broker), 8);
}

#[test]
fn timers_that_do_not_fit_the_lease_are_refused() {
    let broker = MemoryBroker::new(Duration::from_secs(1));
    let built = Consumer::builder(Arc::new(FlakyStore::default()), broker.transport("memory:orders/app"))
        .policy(policy())
        .handler(Arc::new(Payments::default()));
    assert!(matches!(built, Err(ConfigError::Timers(_))), "ack_wait 1 s under a 3 s lease is refused");
    let built = Consumer::builder(Arc::new(FlakyStore::default()), MemoryBroker::new(ACK_WAIT).transport("m:o/a"))
        .policy(policy())
        .in_flight_max(0)
        .handler(Arc::new(Payments::default()));
    assert!(matches!(built, Err(ConfigError::InFlightMax(0))));
    let too_long = format!("memory:{}", "q".repeat(300));
    let built = Consumer::builder(Arc::new(FlakyStore::default()), MemoryBroker::new(ACK_WAIT).transport(&too_long))
        .policy(policy())
        .handler(Arc::new(Payments::default()));
    assert!(matches!(built, Err(ConfigError::Source { .. })), "a source that is no principal is refused at build");
}

/// A handler whose `replayed` hook panics once.
struct PanicsOnReplay(std::sync::atomic::AtomicBool, Arc<Payments>);

impl idem_consumer::Handler for PanicsOnReplay {
    type Error = common::PaymentFailed;

    async fn handle(
        &self,
        message: &idem_consumer::Message<'_>,
        claim: &idem_consumer::ClaimScope,
    ) -> Result<idem_core::StoredOutcome, Self::Error> {
        idem_consumer::Handler::handle(&*self.1, message, claim).await
    }

    async fn replayed(&self, _message: &idem_consumer::Message<'_>, _outcome: &idem_core::StoredOutcome) {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("the replay hook panics once");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_outside_the_handler_naks_the_delivery_instead_of_leaving_it_unsettled() {
    // A delivery left unsettled would sit unacked on RabbitMQ until its consumer timeout;
    // the panic is caught and the delivery naked, and the next delivery is acked. The ack
    // wait is an hour, like a broker with no timer, so only the nak can bring it back in time.
    let broker = MemoryBroker::new(Duration::from_secs(3600));
    broker.publish(Some("k"), "orders", "pay");
    let duplicate = broker.publish(Some("k"), "orders", "pay");
    let payments = Arc::new(Payments::default());
    let handler = PanicsOnReplay(std::sync::atomic::AtomicBool::new(false), Arc::clone(&payments));
    let consumer = Consumer::builder(Arc::new(FlakyStore::default()), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .handler(handler)
        .expect("valid settings");
    let drained = consumer.run_until(until_settled(&broker, Duration::from_secs(30))).await;
    let message = &broker.messages()[&duplicate];
    assert_eq!(message.state, State::Acked, "{message:?}");
    assert!(message.delivered >= 2, "the panicking delivery was naked, then redelivered: {message:?}");
    assert_eq!(payments.runs.load(Ordering::SeqCst), 1);
    assert_eq!(drained.abandoned, 0);
}

#[tokio::test(start_paused = true)]
async fn handlers_still_running_after_the_drain_time_are_aborted_and_their_claims_lapse() {
    // Shutdown ends a hung handler as a crash would: it is not acked, its lease is no
    // longer renewed, and the message is left for the broker to redeliver.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("hung"), "orders", "pay");
    let store = Arc::new(FlakyStore::default());
    let payments = Arc::new(Payments::default());
    *payments.delay.lock().expect("not poisoned") = Duration::from_secs(120);
    let clock = clock();
    let consumer = Consumer::builder(Arc::clone(&store), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(Arc::clone(&clock))
        .drain_max(Duration::from_secs(1))
        .handler(Arc::clone(&payments))
        .expect("valid settings");
    let drained = consumer.run_until(tokio::time::sleep(Duration::from_millis(100))).await;
    assert_eq!(drained.abandoned, 1, "{drained:?}");
    tokio::time::sleep(LEASE * 2).await;
    let record = store.inner.get(&broker_id_of("hung")).await.expect("reads").expect("claimed");
    let RecordState::InFlight { lease_expires_at, .. } = record.state else { panic!("{record:?}") };
    assert!(lease_expires_at <= clock.now(), "the aborted handler's lease lapsed instead of being renewed: {record:?}");
    assert_ne!(broker.messages()[&seq].state, State::Acked);
    assert!(payments.effects().is_empty(), "the aborted handler never finished");
}

fn broker_id_of(key: &str) -> idem_core::RecordId {
    idem_core::RecordId::new(
        idem_core::Principal::new("memory:orders/app").expect("a principal"),
        idem_core::Key::from_chars(key).expect("a key"),
    )
}

/// Numbers its runs; the first run is slow, later ones quick.
#[derive(Default)]
struct NumberedRuns {
    runs: std::sync::atomic::AtomicU32,
    replayed: std::sync::Mutex<Vec<String>>,
}

impl idem_consumer::Handler for NumberedRuns {
    type Error = common::PaymentFailed;

    async fn handle(
        &self,
        _message: &idem_consumer::Message<'_>,
        _claim: &idem_consumer::ClaimScope,
    ) -> Result<idem_core::StoredOutcome, Self::Error> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let slow = if run == 1 { LEASE * 3 } else { Duration::from_millis(500) };
        tokio::time::sleep(slow).await;
        Ok(idem_core::StoredOutcome::bytes(format!("run {run}")))
    }

    async fn replayed(&self, _message: &idem_consumer::Message<'_>, outcome: &idem_core::StoredOutcome) {
        self.replayed.lock().expect("not poisoned").push(String::from_utf8_lossy(&outcome.bytes).into_owned());
    }
}

#[tokio::test(start_paused = true)]
async fn an_execution_that_lost_its_claim_settles_by_the_record_not_its_own_outcome() {
    // G2 and G3 for a lost claim: the first run stops renewing at its execution ceiling,
    // its lease lapses, the redelivery takes over and completes; the first run's completion
    // is refused, and it settles with the record's outcome ("run 2"), never its own.
    let broker = MemoryBroker::new(ACK_WAIT);
    let seq = broker.publish(Some("k"), "orders", "pay");
    let handler = Arc::new(NumberedRuns::default());
    let consumer = Consumer::builder(Arc::new(FlakyStore::default()), broker.transport("memory:orders/app"))
        .policy(policy())
        .clock(clock())
        .execution_max(Duration::from_secs(1))
        .handler(Arc::clone(&handler))
        .expect("valid settings");
    // Until the first run has settled too (it ends at three leases).
    consumer.run_until(tokio::time::sleep(LEASE * 3 + Duration::from_secs(1))).await;
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2, "the lapsed claim was taken over once");
    assert_eq!(broker.messages()[&seq].state, State::Acked);
    let replayed = handler.replayed.lock().expect("not poisoned").clone();
    assert_eq!(replayed, ["run 2"], "the superseded run settled with the record's outcome");
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_past_retention_under_a_tombstone_is_dead_lettered_key_expired() {
    // SPEC "Key lifecycle": past retention a completed key leaves a tombstone; a copy that
    // arrives then must not run again (the outcome is gone, so it cannot be replayed
    // either): dead-lettered `key-expired`, both before and after a purge shrank the record.
    const RETENTION: Duration = Duration::from_secs(3600);
    let broker = MemoryBroker::new(ACK_WAIT);
    let store = Arc::new(FlakyStore::default());
    let payments = Arc::new(Payments::default());
    // One clock for every run: paused time moves it, a fresh clock would start over.
    let clock = clock();
    let run = |limit: Duration| {
        let consumer = Consumer::builder(Arc::clone(&store), broker.transport("memory:orders/app"))
            .policy(policy().with_tombstone(Duration::from_secs(86_400)).expect("a tombstone period in range"))
            .clock(Arc::clone(&clock))
            .handler(Arc::clone(&payments))
            .expect("valid settings");
        let broker = &broker;
        async move { consumer.run_until(until_settled(broker, limit)).await }
    };
    let first = broker.publish(Some("k"), "orders", "pay 5");
    run(Duration::from_secs(30)).await;
    assert_eq!(broker.messages()[&first].state, State::Acked);

    tokio::time::advance(RETENTION).await;
    let unpurged = broker.publish(Some("k"), "orders", "pay 5");
    run(Duration::from_secs(30)).await;
    assert_eq!(broker.messages()[&unpurged].state, State::DeadLettered(DeadLetterReason::KeyExpired));

    let purged = store.inner.purge_expired(clock.now(), 10).await.expect("purges");
    assert_eq!(purged, 1, "the completed record shrank to its tombstone");
    let after_purge = broker.publish(Some("k"), "orders", "pay 5");
    run(Duration::from_secs(30)).await;
    assert_eq!(broker.messages()[&after_purge].state, State::DeadLettered(DeadLetterReason::KeyExpired));
    assert_eq!(payments.runs.load(Ordering::SeqCst), 1, "the handler ran once, for the first copy only");
}
