//! The run-once executor on the real in-memory store, on tokio's paused clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{FlakyStore, LEASE, TokioClock, fingerprint, id, policy};
use idem_core::Store;
use idem_core::{Decision, StoredOutcome};
use idem_once::{Executed, Failure, Heartbeat, Once, Ran};

fn once(store: &Arc<FlakyStore>) -> Once<FlakyStore> {
    Once::new(Arc::clone(store), policy()).with_clock(TokioClock::new())
}

/// Counts heartbeats (the broker's in-progress acks).
#[derive(Default)]
struct Beats(AtomicU32);

impl Heartbeat for Beats {
    async fn renewed(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn runs_once_then_replays_the_outcome_and_refuses_another_payload() {
    // G1, G2, G5 through the function wrapper.
    let store = Arc::new(FlakyStore::default());
    let once = once(&store);
    let runs = AtomicU32::new(0);
    let work = |_| async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(StoredOutcome::bytes("receipt-1"))
    };
    let first = once.run(&id("k"), &fingerprint("pay 5"), work).await.expect("the store answers");
    assert!(matches!(first, Ran::Executed { ref outcome, .. } if outcome.bytes == "receipt-1"), "{first:?}");
    let again = once.run(&id("k"), &fingerprint("pay 5"), work).await.expect("the store answers");
    assert!(matches!(again, Ran::Replayed { ref outcome, .. } if outcome.bytes == "receipt-1"), "{again:?}");
    let other = once.run(&id("k"), &fingerprint("pay 6"), work).await.expect("the store answers");
    assert!(matches!(other, Ran::Mismatch { .. }), "{other:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran once");
}

#[tokio::test(start_paused = true)]
async fn a_slow_execution_keeps_its_claim_and_beats_after_each_renewal() {
    // SPEC "renewal": renewed while the work runs, so a duplicate meanwhile is in flight,
    // never a take-over; the heartbeat follows each applied renewal.
    let store = Arc::new(FlakyStore::default());
    let once = once(&store);
    let Decision::Execute(claim) = once.claim(&id("slow"), &fingerprint("p")).await.expect("claims") else {
        panic!("a new key executes")
    };
    let beats = Beats::default();
    let duplicate = async {
        tokio::time::sleep(LEASE * 3).await;
        once.claim(&id("slow"), &fingerprint("p")).await.expect("the store answers")
    };
    let work = |_| async {
        tokio::time::sleep(LEASE * 4).await;
        Ok::<_, std::io::Error>(StoredOutcome::bytes("done"))
    };
    let slow = id("slow");
    let (executed, seen) = tokio::join!(once.execute(&slow, claim, &beats, work), duplicate);
    assert!(matches!(seen, Decision::Conflict { .. }), "a duplicate three leases in is in flight: {seen:?}");
    assert!(matches!(executed, Executed::Completed { .. }), "{executed:?}");
    let renewals = store.renewals.load(Ordering::SeqCst);
    assert!(renewals >= 11, "renewed every third of a lease over four leases: {renewals}");
    assert_eq!(beats.0.load(Ordering::SeqCst), renewals, "one heartbeat per applied renewal");
}

#[tokio::test(start_paused = true)]
async fn no_heartbeat_follows_a_failed_renewal() {
    // The broker's timer must not outlive the lease: a renewal the store did not apply
    // is not followed by an in-progress ack.
    let store = Arc::new(FlakyStore::default());
    store.renew_down.store(true, Ordering::SeqCst);
    let once = once(&store);
    let Decision::Execute(claim) = once.claim(&id("k"), &fingerprint("p")).await.expect("claims") else {
        panic!("a new key executes")
    };
    let beats = Beats::default();
    let work = |_| async {
        tokio::time::sleep(LEASE * 2).await;
        Ok::<_, std::io::Error>(StoredOutcome::empty())
    };
    let executed = once.execute(&id("k"), claim, &beats, work).await;
    assert_eq!(beats.0.load(Ordering::SeqCst), 0, "no renewal applied, so no heartbeat");
    // Its lease lapsed unrenewed, but nobody took over: the completion still applies.
    assert!(matches!(executed, Executed::Completed { .. }), "{executed:?}");
}

#[tokio::test(start_paused = true)]
async fn failed_or_panicking_work_releases_its_claim_so_a_retry_runs() {
    // SPEC "handler error before a durable write": release, so the next attempt runs at once.
    let store = Arc::new(FlakyStore::default());
    let once = once(&store);
    let failed = once
        .run(&id("k"), &fingerprint("p"), |_| async { Err::<StoredOutcome, _>(std::io::Error::other("boom")) })
        .await
        .expect("the store answers");
    assert!(matches!(failed, Ran::Failed(Failure::Work(_))), "{failed:?}");
    let panicked = once
        .run(&id("k"), &fingerprint("p"), |_| async {
            if true {
                panic!("the handler panics");
            }
            Ok::<_, std::io::Error>(StoredOutcome::empty())
        })
        .await
        .expect("the store answers");
    assert!(matches!(panicked, Ran::Failed(Failure::Panicked)), "{panicked:?}");
    let retried = once
        .run(&id("k"), &fingerprint("p"), |_| async { Ok::<_, std::io::Error>(StoredOutcome::bytes("ok")) })
        .await
        .expect("the store answers");
    assert!(matches!(retried, Ran::Executed { .. }), "released twice, so the retry executes at once: {retried:?}");
}

#[tokio::test(start_paused = true)]
async fn a_completion_the_store_cannot_take_is_reported_unrecorded() {
    // Separate mode's window, reported as such: the side effect ran, the record is not
    // completed, and the caller is told rather than given a success.
    let store = Arc::new(FlakyStore::default());
    store.complete_down.store(true, Ordering::SeqCst);
    let once = once(&store);
    let ran = once
        .run(&id("k"), &fingerprint("p"), |_| async { Ok::<_, std::io::Error>(StoredOutcome::bytes("x")) })
        .await
        .expect("the claim succeeded");
    assert!(matches!(ran, Ran::Unrecorded { .. }), "{ran:?}");
    let record = store.inner.get(&id("k")).await.expect("reads").expect("the claim is still there");
    assert!(matches!(record.state, idem_core::RecordState::InFlight { .. }), "{record:?}");
}
