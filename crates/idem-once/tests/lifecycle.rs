//! A key across its life through [`Once::run`], on the real in-memory store in tokio's
//! paused time (SPEC "Key lifecycle"): every answer states its record's expiry, a
//! tombstone never runs the work, a fingerprint of an earlier version still matches, the
//! claim names its holder, and replays are counted for operators.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{FlakyStore, RETENTION, TokioClock, fingerprint, id, policy};
use idem_core::{ClaimRequest, Clock, Fingerprint, Holder, RecordState, SemanticParts, Store, StoredOutcome};
use idem_once::{Once, Ran};
use tokio::time::sleep;

const TOMBSTONE: Duration = Duration::from_secs(7200);

fn once(store: &Arc<FlakyStore>, clock: &Arc<TokioClock>) -> Once<FlakyStore> {
    let policy = policy().with_tombstone(TOMBSTONE).expect("a tombstone period in range");
    Once::new(Arc::clone(store), policy).with_clock(Arc::clone(clock) as Arc<dyn Clock>)
}

#[tokio::test(start_paused = true)]
async fn every_answer_states_when_its_record_expires() {
    // Goal (expiry on the wire): the first answer and every replay state the same expiry,
    // the completion's time plus retention; a duplicate in flight states the claim's
    // record's, and names its holder; a mismatch states the record's that holds the key.
    let (store, clock) = (Arc::new(FlakyStore::default()), TokioClock::new());
    let once = once(&store, &clock);
    let start = clock.now();
    let holder = Holder::new(Some("req-1"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    let request = ClaimRequest { fingerprint: fingerprint("pay 5"), earlier: None, holder: holder.clone() };
    let key = id("k");
    let first = once.run(&key, &request, |_| async {
        sleep(Duration::from_secs(2)).await;
        Ok::<_, std::io::Error>(StoredOutcome::bytes("receipt"))
    });
    let duplicate = async {
        sleep(Duration::from_secs(1)).await;
        let seen: Result<Ran<idem_once::Failure<std::io::Error>>, _> =
            once.run(&id("k"), &fingerprint("pay 5"), |_| async { unreachable!("in flight elsewhere") }).await;
        seen
    };
    let (first, duplicate) = tokio::join!(first, duplicate);
    let first = first.expect("the store answers");
    let completed_until = start.saturating_add(Duration::from_secs(2)).saturating_add(RETENTION);
    assert!(matches!(first, Ran::Executed { expires_at, .. } if expires_at == completed_until), "{first:?}");
    let in_flight_until = Some(start.saturating_add(RETENTION));
    assert!(
        matches!(duplicate, Ok(Ran::InFlight { expires_at, holder: Some(ref h), .. }) if expires_at == in_flight_until && *h == holder),
        "{duplicate:?}"
    );
    sleep(Duration::from_secs(60)).await;
    let again = once.run(&id("k"), &fingerprint("pay 5"), |_| async { unreachable!("replayed") }).await;
    let again: Ran<idem_once::Failure<std::io::Error>> = again.expect("the store answers");
    assert_eq!(again.expires_at(), Some(completed_until), "a replay states the same expiry: {again:?}");
    let other = once.run(&id("k"), &fingerprint("pay 6"), |_| async { unreachable!("a mismatch never runs") }).await;
    let other: Ran<idem_once::Failure<std::io::Error>> = other.expect("the store answers");
    assert!(matches!(other, Ran::Mismatch { expires_at } if expires_at == completed_until), "{other:?}");
}

#[tokio::test(start_paused = true)]
async fn a_tombstoned_key_is_gone_and_never_runs_again() {
    // Goal (tombstones): past retention a completed record leaves its tombstone; the same
    // request then gets Gone with the tombstone's end, also once a purge shrank the record,
    // and the work never runs again until the tombstone is forgotten in turn.
    let (store, clock) = (Arc::new(FlakyStore::default()), TokioClock::new());
    let once = once(&store, &clock);
    let start = clock.now();
    let runs = AtomicU32::new(0);
    let work = |_| async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(StoredOutcome::bytes("receipt"))
    };
    let first = once.run(&id("k"), &fingerprint("p"), work).await.expect("the store answers");
    assert!(matches!(first, Ran::Executed { .. }), "{first:?}");
    let gone_until = start.saturating_add(RETENTION).saturating_add(TOMBSTONE);

    tokio::time::advance(RETENTION).await;
    let gone = once.run(&id("k"), &fingerprint("p"), work).await.expect("the store answers");
    assert!(matches!(gone, Ran::Gone { expires_at } if expires_at == gone_until), "{gone:?}");
    assert_eq!(store.purge_expired(clock.now(), 10).await.expect("purges"), 1, "shrunk to a tombstone");
    let record = store.get(&id("k")).await.expect("reads").expect("the tombstone");
    assert!(matches!(record.state, RecordState::Tombstone), "{record:?}");
    let still = once.run(&id("k"), &fingerprint("p"), work).await.expect("the store answers");
    assert!(matches!(still, Ran::Gone { expires_at } if expires_at == gone_until), "{still:?}");
    let other = once.run(&id("k"), &fingerprint("q"), work).await.expect("the store answers");
    assert!(matches!(other, Ran::Mismatch { expires_at } if expires_at == gone_until), "{other:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a tombstoned key never runs");

    tokio::time::advance(TOMBSTONE).await;
    let anew = once.run(&id("k"), &fingerprint("p"), work).await.expect("the store answers");
    assert!(matches!(anew, Ran::Executed { .. }), "the tombstone is bounded: {anew:?}");
}

#[tokio::test(start_paused = true)]
async fn a_record_made_under_the_earlier_fingerprint_replays_for_the_same_request() {
    // Goal (fingerprint versions): a request that brings its byte fingerprint as `earlier`
    // replays a record written before an upgrade to semantic fingerprints; the semantic
    // fingerprint alone is another request, a mismatch that never runs (G5).
    let (store, clock) = (Arc::new(FlakyStore::default()), TokioClock::new());
    let once = once(&store, &clock);
    let runs = AtomicU32::new(0);
    let work = |_| async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(StoredOutcome::bytes("first"))
    };
    let bytes = Fingerprint::of("POST", "/payments", b"{ \"amount\": 5 }");
    let parts = SemanticParts { method: "POST", path: "/payments", query: &[], headers: &[], body: b"{\"amount\":5}" };
    let semantic = Fingerprint::semantic(&parts);
    let before = once.run(&id("k"), &bytes, work).await.expect("the store answers");
    assert!(matches!(before, Ran::Executed { .. }), "{before:?}");
    let upgraded = ClaimRequest { fingerprint: semantic, earlier: Some(bytes), holder: Holder::NONE };
    let after = once.run(&id("k"), upgraded, work).await.expect("the store answers");
    assert!(matches!(after, Ran::Replayed { ref outcome, .. } if outcome.bytes == "first"), "{after:?}");
    let alone = once.run(&id("k"), &semantic, work).await.expect("the store answers");
    assert!(matches!(alone, Ran::Mismatch { .. }), "{alone:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn replays_are_counted_for_operators() {
    // Goal: each replay through `run` counts on the record (best effort), through a
    // wrapping store that forwards the count.
    let (store, clock) = (Arc::new(FlakyStore::default()), TokioClock::new());
    let once = once(&store, &clock);
    let work = |_| async { Ok::<_, std::io::Error>(StoredOutcome::bytes("r")) };
    for _ in 0..3 {
        let _ = once.run(&id("k"), &fingerprint("p"), work).await.expect("the store answers");
    }
    let record = store.get(&id("k")).await.expect("reads").expect("completed");
    assert!(matches!(record.state, RecordState::Completed { replays: 2, .. }), "{record:?}");
}
