//! Lease renewal over real HTTP on loopback, on tokio's paused clock: the layer's `now`
//! ([`support::TokioClock`]) and its renewal ticks both follow tokio's time, so a handler
//! can run for several leases in a test that takes milliseconds.
//!
//! Paused time advances to the next timer whenever the runtime is idle, also while bytes
//! are on their way through loopback, so these tests never rely on an exact moment: they
//! wait for events (a handler started, a request answered) and for whole renewal periods.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idem_core::{Clock, Policy, RecordState, Timestamp};
use idem_http::Outcome;
use support::{TestStore, TokioClock, anonymous, serve};
use tokio::time::Instant;

/// Where the layer's clock starts.
const T0: Timestamp = Timestamp::from_unix_ms(1_700_000_000_000);

fn lease() -> Duration {
    Policy::DEFAULT.lease()
}

fn renew_every() -> Duration {
    Policy::DEFAULT.renew_every()
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_keeps_its_claim_for_three_leases() {
    // Goal: a handler that runs for three default leases keeps its claim through renewals:
    // a concurrent retry after three leases gets 409 (no take-over), the claim's lease
    // reaches past that moment, and the handler runs once.
    let store = Arc::new(TestStore::default());
    let clock = TokioClock::new(T0);
    let start = Instant::now();
    let (server, counters, mut started) = serve(&store, |b| b.clock(clock.clone())).await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-gated", "slow", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1), "the first request holds the claim at the gate");

    tokio::time::sleep_until(start + 3 * lease()).await;
    let retry = server.post("/first-run-gated", "slow", "{}").await;
    assert_eq!(retry.status, 409, "{retry:?}");
    assert_eq!(retry.problem()["type"], support::problem_type("in-progress"));
    assert_eq!(retry.header("retry-after"), Some("1"), "the lease left, capped at the default 1 s");
    let record = store.record(&anonymous("slow")).await.expect("the claim is held");
    let RecordState::InFlight { lease_expires_at, .. } = record.state else { panic!("still in flight: {record:?}") };
    assert!(lease_expires_at > clock.now(), "renewals carried the lease past three leases: {lease_expires_at:?}");
    let renewals = store.renewals.load(Ordering::SeqCst);
    assert!(renewals >= 9, "a renewal every third of a lease: {renewals} in three leases");
    assert_eq!(store.renewed.load(Ordering::SeqCst), renewals, "every renewal was granted");

    counters.gate.add_permits(1);
    let first = holder.await.expect("request tasks do not panic");
    let replay = server.post("/first-run-gated", "slow", "{}").await;

    assert_eq!((first.status, first.text(), first.is_replay()), (http::StatusCode::CREATED, "run 1", false));
    assert!(replay.is_replay());
    assert_eq!(replay.text(), "run 1");
    assert_eq!(counters.runs(), 1);
    assert_eq!(server.outcomes(), [Outcome::Conflict, Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_tried_again_at_the_next_tick() {
    // Goal: a store error on renewal does not give the claim up: the renewal is tried
    // again at each tick, and once one succeeds the claim outlasts its first lease (a
    // request after it gets 409, not a take-over).
    let store = Arc::new(TestStore::default());
    store.fail_renewals.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let (server, counters, mut started) = serve(&store, |b| b.clock(TokioClock::new(T0))).await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-gated", "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1));

    tokio::time::sleep(2 * renew_every() + Duration::from_millis(1)).await;
    assert!(store.renewals.load(Ordering::SeqCst) >= 2, "two ticks passed");
    assert_eq!(store.renewed.load(Ordering::SeqCst), 0, "both renewals failed");
    store.fail_renewals.store(false, Ordering::SeqCst);
    tokio::time::sleep_until(start + lease() + renew_every()).await;
    assert!(store.renewed.load(Ordering::SeqCst) >= 1, "a later tick renewed the claim");
    let retry = server.post("/first-run-gated", "k", "{}").await;

    assert_eq!(retry.status, 409, "the claim outlived its first lease: {retry:?}");
    counters.gate.add_permits(1);
    let first = holder.await.expect("request tasks do not panic");
    assert_eq!((first.status, first.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(counters.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_answers_the_recorded_response_not_its_own() {
    // Goal: renewals fail for a whole lease, a retry takes the lapsed claim over and
    // completes; the first execution's next renewal is refused, so when its handler ends
    // the layer neither records nor answers its response: it replays the recorded one.
    let store = Arc::new(TestStore::default());
    store.fail_renewals.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let (server, counters, mut started) = serve(&store, |b| b.clock(TokioClock::new(T0))).await;
    let server = Arc::new(server);
    let stale = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-gated", "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1), "run 1 holds the claim at the gate");

    tokio::time::sleep_until(start + lease() + Duration::from_secs(1)).await;
    let take_over = server.post("/first-run-gated", "k", "{}").await;
    assert_eq!(
        (take_over.status, take_over.text(), take_over.is_replay()),
        (http::StatusCode::CREATED, "run 2", false)
    );
    store.fail_renewals.store(false, Ordering::SeqCst);
    // One whole period: run 1's next renewal reaches the store and is refused.
    tokio::time::sleep(renew_every() + Duration::from_millis(1)).await;
    assert_eq!(store.renewed.load(Ordering::SeqCst), 0, "run 1's renewal was refused");
    assert_eq!(store.completes.load(Ordering::SeqCst), 1, "run 2's completion");

    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");

    assert!(stale.is_replay(), "{stale:?}");
    assert_eq!((stale.status, stale.text()), (http::StatusCode::CREATED, "run 2"));
    assert_eq!(store.completes.load(Ordering::SeqCst), 1, "run 1 did not even try to record its response");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_answers_409_while_the_take_over_runs() {
    // Goal: as above, but the take-over is still running when the first handler ends: the
    // first execution answers 409 with the core's Retry-After, never its own 201, and the
    // take-over's response is the one recorded and replayed.
    let store = Arc::new(TestStore::default());
    store.fail_renewals.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let (server, counters, mut started) = serve(&store, |b| b.clock(TokioClock::new(T0))).await;
    let server = Arc::new(server);
    let post = |server: &Arc<support::Harness>| {
        let server = Arc::clone(server);
        tokio::spawn(async move { server.post("/gated", "k", "{}").await })
    };
    let stale = post(&server);
    assert_eq!(started.recv().await, Some(1), "run 1 holds the claim at the gate");
    tokio::time::sleep_until(start + lease() + Duration::from_secs(1)).await;
    let take_over = post(&server);
    assert_eq!(started.recv().await, Some(2), "run 2 took the lapsed claim over and waits at the gate");
    store.fail_renewals.store(false, Ordering::SeqCst);
    tokio::time::sleep(renew_every() + Duration::from_millis(1)).await;

    // The gate is fair: the first permit goes to run 1, which waited first.
    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");
    assert_eq!(stale.status, 409, "{stale:?}");
    assert_eq!(stale.problem()["type"], support::problem_type("in-progress"));
    assert_eq!(stale.header("retry-after"), Some("1"));
    assert_eq!(store.completes.load(Ordering::SeqCst), 0, "run 1 did not try to record its response");

    counters.gate.add_permits(1);
    let take_over = take_over.await.expect("request tasks do not panic");
    let replay = server.post("/gated", "k", "{}").await;
    assert_eq!(
        (take_over.status, take_over.text(), take_over.is_replay()),
        (http::StatusCode::CREATED, "run 2", false)
    );
    assert!(replay.is_replay());
    assert_eq!(replay.text(), "run 2");
    assert_eq!(server.outcomes(), [Outcome::Superseded, Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test(start_paused = true)]
async fn a_request_handed_to_a_task_keeps_renewing_its_claim() {
    // Goal: when the client goes away mid-handler, the work handed to a task keeps renewing
    // the claim: three leases later a retry still gets 409, and once the handler ends the
    // record holds its response, which the retry replays.
    use tokio::io::AsyncWriteExt;
    let store = Arc::new(TestStore::default());
    let start = Instant::now();
    let (server, counters, mut started) = serve(&store, |b| b.clock(TokioClock::new(T0))).await;

    let mut client = tokio::net::TcpStream::connect(server.addr).await.expect("the server listens");
    let request =
        "POST /first-run-gated HTTP/1.1\r\nhost: test\r\nidempotency-key: gone\r\ncontent-length: 2\r\n\r\n{}";
    client.write_all(request.as_bytes()).await.expect("the server reads");
    assert_eq!(started.recv().await, Some(1));
    drop(client);
    server.dropped.notified().await;

    tokio::time::sleep_until(start + 3 * lease()).await;
    let during = server.post("/first-run-gated", "gone", "{}").await;
    assert_eq!(during.status, 409, "the handed-over work still holds the claim: {during:?}");

    counters.gate.add_permits(1);
    let id = anonymous("gone");
    for _ in 0..1000 {
        if matches!(store.record(&id).await.map(|record| record.state), Some(RecordState::Completed { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = server.post("/first-run-gated", "gone", "{}").await;

    assert!(after.is_replay(), "{after:?}");
    assert_eq!((after.status, after.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(counters.runs(), 1);
}
