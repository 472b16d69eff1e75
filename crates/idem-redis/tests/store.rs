//! RedisStore beyond the conformance suite: many tasks on one key, Redis forgetting
//! records by itself, fences after Redis lost its data, and an unreachable Redis.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cleanup, fingerprint, id, policy, response, wall_now};
use idem_core::{Decision, Fenced, Policy, Refusal, Store, StoreError, Usage};
use idem_redis::{OpenError, RedisOptions, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_claims_from_many_tasks_execute_once() {
    // Goal: G1 within the store: 64 tasks on two worker threads claim one new key at once,
    // through a pool of 8 connections; exactly one executes, the others see it in flight.
    let cleanup = Cleanup::default();
    let options = common::options().connections_max(8);
    cleanup.track(&options);
    let store = Arc::new(common::open(options).await);
    let alice = id("alice", "k1");
    let now = wall_now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, alice) = (Arc::clone(&store), alice.clone());
            tokio::spawn(async move { store.claim(&alice, &fingerprint("a"), now, &policy()).await })
        })
        .collect();
    let mut executions = 0;
    for task in tasks {
        match task.await.expect("no task panics").expect("the store answers") {
            Decision::Execute(_) => executions += 1,
            Decision::Conflict { .. } => {}
            other => panic!("a first claim either executes or conflicts, got {other:?}"),
        }
    }
    assert_eq!(executions, 1, "one execution among 64 concurrent first claims");
    assert_eq!(store.usage().await.unwrap(), Usage { records: 1, stored_bytes: store_bytes_of_claim() });
}

fn store_bytes_of_claim() -> u64 {
    // "alice" + "k1" + the 64 fixed bytes of a record (idem-core's usage formula).
    5 + 2 + 64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_disappears_from_redis_at_its_forgettable_time() {
    // Goal: Redis forgets a completed record by itself at its retention's end (not before),
    // the usage totals still count it until the purge accounts for it, and a new claim on
    // the forgotten key executes under a newer fence with exact usage.
    let cleanup = Cleanup::default();
    let options = common::options();
    cleanup.track(&options);
    let store = common::open(options).await;
    let short = Policy::new(Duration::from_millis(100), Duration::from_millis(400)).expect("lease < retention");
    let alice = id("alice", "k1");
    let start = Instant::now();
    let now = wall_now();
    let Decision::Execute(claim) = store.claim(&alice, &fingerprint("a"), now, &short).await.unwrap() else {
        panic!("a new key executes")
    };
    assert_eq!(store.complete(&alice, claim.fence, response("pay_1"), now, &short).await.unwrap(), Fenced::Applied);
    let record = store.get(&alice).await.unwrap().expect("the record is held");
    assert_eq!(record.forgettable_at(), now.saturating_add(Duration::from_millis(400)));
    // Still there well before its time (bounded: the test only asserts if it is early).
    if start.elapsed() < Duration::from_millis(250) {
        assert!(store.get(&alice).await.unwrap().is_some(), "kept until its retention ends");
    }
    let deadline = start + Duration::from_secs(3);
    while store.get(&alice).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Redis still holds the record 3 s after a 400 ms retention");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(390), "forgotten only at its forgettable time");
    let counted = store.usage().await.unwrap();
    assert_eq!(counted.records, 1, "usage counts the forgotten record until it is accounted for");

    // A new claim accounts for the forgotten record in the same transaction.
    let Decision::Execute(again) = store.claim(&alice, &fingerprint("a"), wall_now(), &short).await.unwrap() else {
        panic!("a forgotten key executes again")
    };
    assert!(again.fence > claim.fence, "the new claim's fence is newer");
    assert_eq!(store.usage().await.unwrap(), Usage { records: 1, stored_bytes: store_bytes_of_claim() });
    assert_eq!(store.release(&alice, again.fence).await.unwrap(), Fenced::Applied);
    assert_eq!(store.usage().await.unwrap(), Usage::default());

    // The purge accounts for a record Redis forgot when no claim came for it.
    let bob = id("bob", "k1");
    let Decision::Execute(claim) = store.claim(&bob, &fingerprint("a"), wall_now(), &short).await.unwrap() else {
        panic!("a new key executes")
    };
    let _ = store.complete(&bob, claim.fence, response("pay_2"), wall_now(), &short).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.get(&bob).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Redis still holds the record 3 s after a 400 ms retention");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.purge_expired(wall_now(), 10).await.unwrap(), 1, "the purge accounts for it");
    assert_eq!(store.usage().await.unwrap(), Usage::default());
}

#[tokio::test]
async fn fences_after_redis_lost_its_data_exceed_every_earlier_fence() {
    // Goal: a restart without persistence (simulated by deleting every key of the prefix,
    // counter included) never hands out a fence a stale handler may hold: the counter
    // is reseeded from Redis's clock, so the stale handler's completion is refused (G3).
    let cleanup = Cleanup::default();
    let options = common::options();
    cleanup.track(&options);
    let store = common::open(options).await;
    let alice = id("alice", "k1");
    let mut stale = Vec::new();
    for _ in 0..3 {
        let Decision::Execute(claim) = store.claim(&alice, &fingerprint("a"), wall_now(), &policy()).await.unwrap()
        else {
            panic!("the key executes")
        };
        assert_eq!(store.release(&alice, claim.fence).await.unwrap(), Fenced::Applied);
        stale.push(claim.fence);
    }
    let Decision::Execute(held) = store.claim(&alice, &fingerprint("a"), wall_now(), &policy()).await.unwrap() else {
        panic!("the key executes")
    };
    stale.push(held.fence);
    // The reseed is past every lost fence if the lost counter issued at most 1024 fences
    // per millisecond of its life (lib.rs, "The fence counter"); a real restart takes far
    // longer than the 2 ms this counter must live for its 4 fences. Without the wait, a
    // "restart" in the millisecond of the first seeding reissues the first fence.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.clear().await.unwrap() > 0, "the prefix had keys");
    assert_eq!(store.next_fence().await.unwrap(), None, "the counter is gone, as after a restart");

    let Decision::Execute(fresh) = store.claim(&alice, &fingerprint("a"), wall_now(), &policy()).await.unwrap() else {
        panic!("a forgotten key executes")
    };
    assert!(stale.iter().all(|old| fresh.fence > *old), "fresh {:?} after {stale:?}", fresh.fence);
    let refused = store.complete(&alice, held.fence, response("stale"), wall_now(), &policy()).await.unwrap();
    assert_eq!(refused, Fenced::Refused(Refusal::StaleFence { presented: held.fence, current: fresh.fence }));
}

#[tokio::test]
async fn unreachable_redis_is_an_error_within_the_timeouts() {
    // Goal: opening against a port nobody listens on fails fast with a message that says
    // how to start Redis, and a store whose backend is gone answers Unavailable (G8).
    let options = RedisOptions::new("redis://127.0.0.1:1")
        .unwrap()
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let error = RedisStore::open(options).await.expect_err("nothing listens on port 1");
    assert!(start.elapsed() < Duration::from_secs(5), "bounded by the timeouts: {:?}", start.elapsed());
    assert!(matches!(error, OpenError::Unreachable { .. } | OpenError::TimedOut { .. }), "{error:?}");
    assert!(error.to_string().contains("redis-server --daemonize yes"), "{error}");

    let cleanup = Cleanup::default();
    let options = common::options();
    cleanup.track(&options);
    let store = common::open(options).await;
    store.close();
    let answer = store.claim(&id("alice", "k1"), &fingerprint("a"), wall_now(), &policy()).await;
    assert!(matches!(answer, Err(StoreError::Unavailable { .. })), "{answer:?}");
}
