//! [`PostgresStore::with_planted_bug`] plants what it names, in a store on the real
//! PostgreSQL: with a completion guard planted wrong, a stale holder's completion (its
//! lease lapsed, another request took the key over) is accepted and lands in the record,
//! where the same store without the bug refuses it and keeps the claim that took over.
//! This is the facility `idem serve --plant-bug` runs for testing a test harness; these
//! tests show each guard bug is really in the SQL, not only in its name.

mod common;

use std::time::Duration;

use common::{Schemas, at, fingerprint, id, response};
use idem_core::{Decision, Fence, Fenced, Policy, RecordId, RecordState, Refusal, Store};
use idem_postgres::{PlantedBug, PostgresStore, TimeSource};

/// A 1 s lease: the take-over below comes 2 s after the first claim.
fn policy() -> Policy {
    Policy::new(Duration::from_secs(1), Duration::from_secs(60)).expect("lease < retention")
}

/// The caller's clock (TimeSource::Caller), so the lease lapses exactly when the test says.
const T0: u64 = 1_700_000_000_000;

/// Claims `key` at T0, lets the lease lapse and takes the key over at T0 + 2 s. Returns
/// (stale fence, current fence).
async fn taken_over(store: &PostgresStore, key: &RecordId) -> (Fence, Fence) {
    let body = fingerprint("pay 10 EUR");
    let Ok(Decision::Execute(first)) = store.claim(key, &body, at(T0), &policy()).await else {
        panic!("a fresh key executes")
    };
    let Ok(Decision::TakeOver { claim, stale }) = store.claim(key, &body, at(T0 + 2_000), &policy()).await else {
        panic!("a lapsed lease is taken over")
    };
    assert_eq!(stale, first.fence);
    (first.fence, claim.fence)
}

/// Completes `key` with the stale fence (the holder that lost the key) at T0 + 3 s.
async fn stale_completion(store: &PostgresStore, key: &RecordId, stale: Fence) -> Fenced {
    store.complete(key, stale, response("stale holder"), at(T0 + 3_000), &policy()).await.expect("no store error")
}

/// The fence and response body the record holds, if completed; `None` if in flight.
async fn completed_with(store: &PostgresStore, key: &RecordId) -> Option<(Fence, String)> {
    let record = store.get(key).await.expect("no store error").expect("the record exists");
    match record.state {
        RecordState::Completed { response, .. } => {
            Some((record.fence, String::from_utf8_lossy(&response.body).into_owned()))
        }
        RecordState::InFlight { .. } | RecordState::Tombstone => None,
    }
}

async fn caller_time_store(schemas: &Schemas) -> PostgresStore {
    schemas.open_with(|options| options.time_source(TimeSource::Caller)).await
}

#[tokio::test]
async fn a_stale_fence_completes_the_claim_in_flight_only_with_a_guard_planted_wrong() {
    // Goal: each of the three completion-guard bugs lets a stale fence complete the claim
    // that took over (G3 broken, and the record keeps the stale holder's response); the
    // store as shipped refuses it as stale and the claim stays in flight.
    let schemas = Schemas::default();
    let shipped = caller_time_store(&schemas).await;

    let key = id("payer", "shipped-in-flight");
    let (stale, current) = taken_over(&shipped, &key).await;
    let refused = stale_completion(&shipped, &key, stale).await;
    assert_eq!(refused, Fenced::Refused(Refusal::StaleFence { presented: stale, current }));
    assert_eq!(completed_with(&shipped, &key).await, None, "the claim that took over is still in flight");

    for bug in [PlantedBug::CompletionWithoutFence, PlantedBug::CompletionFenceAtMost, PlantedBug::CompletionUnguarded]
    {
        let planted = shipped.with_planted_bug(bug);
        let key = id("payer", &format!("{bug}-in-flight"));
        let (stale, current) = taken_over(&planted, &key).await;
        assert_eq!(
            stale_completion(&planted, &key, stale).await,
            Fenced::Applied,
            "{bug}: the stale fence is accepted"
        );
        let record = completed_with(&planted, &key).await;
        assert_eq!(record, Some((current, "stale holder".to_owned())), "{bug}: the stale response landed");
    }
    schemas.close_all().await;
}

#[tokio::test]
async fn a_stale_fence_overwrites_a_completed_record_only_without_any_guard() {
    // Goal: after the claim that took over completed, the stale holder's completion is
    // refused by the shipped store and by the bugs that keep the state check; only
    // `completion-unguarded` lets it replace the response kept (G2 and G3 broken).
    let schemas = Schemas::default();
    let shipped = caller_time_store(&schemas).await;
    let cases = [
        (None, false),
        (Some(PlantedBug::CompletionWithoutFence), false),
        (Some(PlantedBug::CompletionFenceAtMost), false),
        (Some(PlantedBug::CompletionUnguarded), true),
    ];
    for (bug, overwritten) in cases {
        let store = bug.map_or_else(|| shipped.clone(), |bug| shipped.with_planted_bug(bug));
        let name = bug.map_or("shipped", PlantedBug::name);
        let key = id("payer", &format!("{name}-completed"));
        let (stale, current) = taken_over(&store, &key).await;
        let done = store.complete(&key, current, response("new holder"), at(T0 + 2_500), &policy()).await;
        assert_eq!(done.expect("no store error"), Fenced::Applied, "{name}: the current holder completes");

        let late = stale_completion(&store, &key, stale).await;
        let kept = completed_with(&store, &key).await.expect("completed").1;
        if overwritten {
            assert_eq!((late, kept.as_str()), (Fenced::Applied, "stale holder"), "{name}");
        } else {
            assert!(matches!(late, Fenced::Refused(_)), "{name}: {late:?}");
            assert_eq!(kept, "new holder", "{name}");
        }
    }
    schemas.close_all().await;
}

#[tokio::test]
async fn a_store_without_a_planted_bug_keeps_checking_its_completions() {
    // Goal: planting returns another store and leaves the one it came from as shipped:
    // a stale completion on the original after planting is still refused.
    let schemas = Schemas::default();
    let shipped = caller_time_store(&schemas).await;
    let _planted = shipped.with_planted_bug(PlantedBug::CompletionUnguarded);
    let key = id("payer", "original-untouched");
    let (stale, _) = taken_over(&shipped, &key).await;
    assert!(matches!(stale_completion(&shipped, &key, stale).await, Fenced::Refused(_)));
    schemas.close_all().await;
}
