//! The execution ceiling (SPEC "Key lifecycle: execution ceiling") on the real in-memory
//! store, in tokio's paused time: renewal stops at the ceiling, so a hung execution frees
//! its key within the ceiling plus one lease, and its late completion is refused (G3).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{FlakyStore, LEASE, TokioClock, fingerprint, id, policy};
use idem_core::{Decision, RecordState, Store, StoredOutcome};
use idem_once::{Executed, Once, Ran};
use tokio::time::{Instant, sleep, sleep_until};

fn once(store: &Arc<FlakyStore>) -> Once<FlakyStore> {
    Once::new(Arc::clone(store), policy()).with_clock(TokioClock::new())
}

#[tokio::test(start_paused = true)]
async fn a_hung_execution_frees_its_key_within_the_ceiling_plus_one_lease() {
    // Goal: with a ceiling of five renewal intervals, the hung execution's claim is renewed
    // (a duplicate past one lease still meets it in flight), renewal stops at the ceiling,
    // and at ceiling + one lease a duplicate takes the claim over while the hung work
    // still runs; the hung work's completion afterwards is refused and it answers the
    // duplicate's recorded outcome, never its own (G2, G3).
    let started = Instant::now();
    let store = Arc::new(FlakyStore::default());
    let ceiling = policy().renew_every() * 5;
    let hung = once(&store).with_execution_max(ceiling);
    let duplicate = once(&store);
    let hung_running = AtomicBool::new(true);
    let (key, print) = (id("k"), fingerprint("p"));
    let hung_run = hung.run(&key, &print, |_| async {
        sleep(LEASE * 10).await;
        hung_running.store(false, Ordering::SeqCst);
        Ok::<_, std::io::Error>(StoredOutcome::bytes("hung"))
    });
    let duplicates = async {
        sleep(LEASE + LEASE / 2).await;
        let held = duplicate.claim(&id("k"), &fingerprint("p")).await.expect("the store answers");
        let renewed = store.inner.get(&id("k")).await.expect("reads").expect("in flight");
        sleep_until(started + ceiling + LEASE).await;
        let decision = duplicate.claim(&id("k"), &fingerprint("p")).await.expect("the store answers");
        let running_at_take_over = hung_running.load(Ordering::SeqCst);
        let Decision::TakeOver { claim, stale } = decision else {
            panic!("at ceiling + lease the hung claim has lapsed: {decision:?}")
        };
        let work = |_| async { Ok::<_, std::io::Error>(StoredOutcome::bytes("second")) };
        let executed = duplicate.execute(&id("k"), claim, &(), work).await;
        (held, renewed, running_at_take_over, stale, claim, executed)
    };
    let (hung_ran, (held, renewed, running_at_take_over, stale, claim, executed)) = tokio::join!(hung_run, duplicates);

    assert!(matches!(held, Decision::Conflict { .. }), "past one lease, within the ceiling, renewed: {held:?}");
    assert!(matches!(renewed.state, RecordState::InFlight { renewals: 4, .. }), "{renewed:?}");
    assert_eq!(stale, renewed.fence, "the hung claim is the one taken over");
    assert!(running_at_take_over, "the take-over happened while the hung work still ran");
    assert!(matches!(executed, Executed::Completed { .. }), "{executed:?}");
    assert!(
        matches!(hung_ran, Ok(Ran::Replayed { ref outcome, .. }) if outcome.bytes == "second"),
        "the hung execution's completion is refused; it answers the record: {hung_ran:?}"
    );
    let record = store.inner.get(&id("k")).await.expect("reads").expect("completed");
    assert_eq!(record.fence, claim.fence, "completed by the duplicate's claim");
    assert!(
        matches!(record.state, RecordState::Completed { ref response, .. } if response.body == "second"),
        "{record:?}"
    );
    assert_eq!(store.renewals.load(Ordering::SeqCst), 4, "no renewal at or after the ceiling");
}

#[tokio::test(start_paused = true)]
async fn without_a_ceiling_a_slow_execution_keeps_its_key() {
    // Goal: the counterpart: with no ceiling, the same duplicate at the same moment meets
    // the claim in flight, and the slow work's own outcome is recorded.
    let store = Arc::new(FlakyStore::default());
    let slow = once(&store);
    let duplicate = once(&store);
    let (key, print) = (id("k"), fingerprint("p"));
    let slow_run = slow.run(&key, &print, |_| async {
        sleep(LEASE * 10).await;
        Ok::<_, std::io::Error>(StoredOutcome::bytes("slow"))
    });
    let later = async {
        sleep(policy().renew_every() * 5 + LEASE).await;
        duplicate.claim(&id("k"), &fingerprint("p")).await.expect("the store answers")
    };
    let (ran, seen) = tokio::join!(slow_run, later);
    assert!(matches!(seen, Decision::Conflict { .. }), "{seen:?}");
    assert!(matches!(ran, Ok(Ran::Executed { ref outcome, .. }) if outcome.bytes == "slow"), "{ran:?}");
}
