//! The guarded completion (`src/guarded.rs`) and PostgresStore's other statements against
//! idem-core's store step: the guarded completion answers as the step does on every kind of
//! stored record, and concurrent operations on one record apply once. (The round trips each
//! operation takes are counted in `round_trips.rs`.)

mod common;

use std::time::Duration;

use common::{Schemas, at, fingerprint, id, policy, response};
use idem_core::step::{self, Counters, Operation, StoreView, op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Holder, Limits, Policy, Record, RecordId, RecordState, Refusal, Store,
    Timestamp, Write,
};
use idem_postgres::{PostgresStore, TimeSource};
use sqlx::{AssertSqlSafe, Row};

/// The fence counter as idem-core's step reads it: the sequence's next value.
async fn next_fence(store: &PostgresStore) -> Fence {
    let sql = format!(
        "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM \"{}\".idem_fence_seq",
        store.schema()
    );
    let next: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(store.pool()).await.unwrap();
    Fence::new(u64::try_from(next).unwrap())
}

/// What idem-core's step answers for `operation` on the record `store` holds for `id` now,
/// and the record it leaves there.
async fn stepped<O: Operation<Answer = Fenced>>(
    store: &PostgresStore,
    id: &RecordId,
    operation: O,
) -> (Fenced, Option<Record>) {
    let record = store.get(id).await.unwrap();
    let counters = Counters { next_fence: next_fence(store).await, usage: store.usage().await.unwrap() };
    let view = StoreView { record: record.as_ref(), counters, limits: Limits::default() };
    let step = step::step(id, &view, operation).expect("completions are never refused for room");
    let after = match step.write {
        Write::Unchanged => record,
        Write::Put(record) => Some(record),
        Write::Delete => None,
    };
    (step.answer, after)
}

/// `record` as the store keeps it: times past `i64::MAX` ms are the store's end of time.
fn as_stored(record: Record) -> Record {
    let end = Timestamp::from_unix_ms(u64::try_from(i64::MAX).expect("fits"));
    let state = match record.state {
        RecordState::InFlight { lease_expires_at, holder, renewals } => {
            RecordState::InFlight { lease_expires_at: lease_expires_at.min(end), holder, renewals }
        }
        RecordState::Completed { response, replays, tombstone_until } => {
            RecordState::Completed { response, replays, tombstone_until: tombstone_until.map(|until| until.min(end)) }
        }
        RecordState::Tombstone => RecordState::Tombstone,
    };
    Record { expires_at: record.expires_at.min(end), state, ..record }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_completion_answers_as_the_step_on_the_stored_record() {
    // Goal: complete_in and complete write the claim in flight in one guarded statement,
    // presuming the record is that claim; whatever the record really is (live, lapsed but
    // not taken over, past its retention but not purged, taken over, completed by this
    // fence or another, released, purged; a retention so long that its end saturates; a
    // claim whose holder sent ids, completed under a policy with tombstones, also with a
    // retention that saturates), the answer and the stored record are exactly what
    // idem-core's step makes of the record read just before, and the usage totals still
    // match the rows.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    let long = Policy::new(Duration::from_secs(1), Duration::MAX).expect("lease < retention");
    let tombstone = |policy: Policy| policy.with_tombstone(Duration::from_secs(3600)).expect("a valid tombstone");
    let held =
        ClaimRequest { holder: Holder::new(Some("req-7"), Some("trace-7")), ..ClaimRequest::new(fingerprint("a")) };
    let scenarios = [
        "live",
        "lapsed",
        "past retention",
        "taken over",
        "completed by this fence",
        "completed by another",
        "released",
        "purged",
        "long retention",
        "held, tombstone",
        "held, tombstone, long retention",
    ];
    for (n, scenario) in scenarios.into_iter().enumerate() {
        for atomic in [true, false] {
            let key = id("alice", &format!("k{n}-{atomic}"));
            let start = at(1_000_000 * u64::try_from(n).unwrap());
            let policy = match scenario {
                "long retention" => long,
                "held, tombstone" => tombstone(policy()),
                "held, tombstone, long retention" => tombstone(long),
                _ => policy(),
            };
            let request = if scenario.starts_with("held") { held.clone() } else { ClaimRequest::new(fingerprint("a")) };
            let Decision::Execute(claim) = store.claim(&key, &request, start, &policy).await.unwrap() else {
                panic!("{scenario}: a new key executes")
            };
            let mut later = start.saturating_add(Duration::from_millis(500));
            match scenario {
                "lapsed" => later = start.saturating_add(Duration::from_secs(2)),
                "past retention" => later = start.saturating_add(Duration::from_secs(30)),
                "taken over" => {
                    later = start.saturating_add(Duration::from_secs(2));
                    let taken = store.claim(&key, &fingerprint("a"), later, &policy).await.unwrap();
                    assert!(matches!(taken, Decision::TakeOver { .. }), "{scenario}: {taken:?}");
                }
                "completed by this fence" => {
                    let done = store.complete(&key, claim.fence, response("first"), start, &policy).await;
                    assert_eq!(done.unwrap(), Fenced::Applied);
                }
                "completed by another" => {
                    later = start.saturating_add(Duration::from_secs(2));
                    let Decision::TakeOver { claim: other, .. } =
                        store.claim(&key, &fingerprint("a"), later, &policy).await.unwrap()
                    else {
                        panic!("{scenario}: the lapsed claim is taken over")
                    };
                    let done = store.complete(&key, other.fence, response("other"), later, &policy).await;
                    assert_eq!(done.unwrap(), Fenced::Applied);
                }
                "released" => assert_eq!(store.release(&key, claim.fence).await.unwrap(), Fenced::Applied),
                "purged" => {
                    later = start.saturating_add(Duration::from_secs(30));
                    assert!(store.purge_expired(later, 100).await.unwrap() >= 1, "{scenario}: the record is purged");
                }
                _ => {}
            }
            let body = response(&format!("done {n}"));
            let (_, after) = if atomic {
                let operation =
                    op::CompleteInTransaction { fence: claim.fence, response: body.clone(), now: later, policy };
                let expected = stepped(&store, &key, operation).await;
                let mut tx = store.begin_write().await.unwrap();
                let answer = store.complete_in(&mut tx, &key, claim.fence, body, later, &policy).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(answer, expected.0, "{scenario}, atomic: the answer");
                expected
            } else {
                let operation = op::Complete { fence: claim.fence, response: body.clone(), now: later, policy };
                let expected = stepped(&store, &key, operation).await;
                let answer = store.complete(&key, claim.fence, body, later, &policy).await.unwrap();
                assert_eq!(answer, expected.0, "{scenario}, separate: the answer");
                expected
            };
            let after = after.map(as_stored);
            assert_eq!(store.get(&key).await.unwrap(), after, "{scenario}, atomic {atomic}: the stored record");
        }
    }
    let totals =
        format!("SELECT count(*), coalesce(sum(stored_bytes), 0)::int8 FROM \"{}\".idem_records", store.schema());
    let row = sqlx::query(AssertSqlSafe(totals)).fetch_one(store.pool()).await.unwrap();
    let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.records, usage.stored_bytes), (u64::try_from(rows).unwrap(), u64::try_from(bytes).unwrap()));
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_on_one_record_apply_once() {
    // Goal: G1 and G3 under the optimistic writes: on a claim whose lease lapsed, 32 tasks
    // on 16 connections take it over, renew, complete and release it with the stale fence
    // at once; exactly one take-over happens every round, every operation with the stale
    // fence is refused, and the usage totals still count one record.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.connections_max(16).time_source(TimeSource::Caller)).await;
    for round in 0..5u64 {
        let key = id("alice", &format!("k{round}"));
        let start = at(round * 100_000);
        let Decision::Execute(stale) = store.claim(&key, &fingerprint("a"), start, &policy()).await.unwrap() else {
            panic!("a new key executes")
        };
        let later = start.saturating_add(Duration::from_secs(2));
        let tasks: Vec<_> = (0..32)
            .map(|n| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    match n % 4 {
                        0 | 1 => Some(store.claim(&key, &fingerprint("a"), later, &policy()).await.unwrap()),
                        // Renewed or refused, completed or refused: the record read afterwards says which.
                        2 => {
                            let _ = store.renew(&key, stale.fence, later, &policy()).await.unwrap();
                            None
                        }
                        _ => {
                            let _ =
                                store.complete(&key, stale.fence, response("stale"), later, &policy()).await.unwrap();
                            None
                        }
                    }
                })
            })
            .collect();
        let mut take_overs = 0;
        for task in tasks {
            match task.await.expect("no task panicked") {
                Some(Decision::TakeOver { .. }) => take_overs += 1,
                Some(Decision::Conflict { .. } | Decision::Replay { .. }) | None => {}
                Some(other) => panic!("round {round}: {other:?}"),
            }
        }
        let record = store.get(&key).await.unwrap().expect("the record is held");
        match record.state {
            // The stale holder completed (or renewed) before any take-over: none may follow.
            RecordState::Completed { .. } => assert_eq!(take_overs, 0, "round {round}: {record:?}"),
            RecordState::InFlight { .. } if record.fence == stale.fence => {
                assert_eq!(take_overs, 0, "round {round}: a renewal kept the claim: {record:?}");
            }
            RecordState::InFlight { .. } => assert_eq!(take_overs, 1, "round {round}: one take-over"),
            RecordState::Tombstone => panic!("round {round}: no tombstone policy, yet {record:?}"),
        }
        // Once taken over, the stale fence is refused.
        if record.fence != stale.fence {
            let refused = store.complete(&key, stale.fence, response("late"), later, &policy()).await.unwrap();
            assert!(matches!(refused, Fenced::Refused(Refusal::StaleFence { .. })), "{refused:?}");
        }
    }
    let usage = store.usage().await.unwrap();
    assert_eq!(usage.records, 5, "one record per round, counted once");
    schemas.close_all().await;
}
