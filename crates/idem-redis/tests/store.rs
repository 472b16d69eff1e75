//! RedisStore beyond the conformance suite: many tasks on one key, Redis forgetting
//! records by itself, fences after Redis lost its data, and an unreachable Redis.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cleanup, fingerprint, id, policy, response, wall_now};
use idem_core::{
    Decision, Fence, Fenced, Holder, KeyAdmin, ListQuery, Policy, RecordState, Refusal, Store, StoreError,
    StoredResponse, Timestamp, Usage,
};
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

/// The script as the previous version shipped it (before versioned fingerprints,
/// tombstones and the list index), to write records the way that version did.
const SCRIPT_BEFORE: &str = include_str!("fixtures/store-before-lifecycle.lua");

/// Runs [`SCRIPT_BEFORE`] on `id` at `now_ms` with the previous argument layout.
async fn before(prefix: &str, id_field: &str, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let tag = format!("{{{prefix}}}");
    let keys = [
        format!("{tag}:r:{id_field}"),
        format!("{tag}:h:{id_field}"),
        format!("{tag}:counters"),
        format!("{tag}:expiry"),
    ];
    let client = redis::Client::open(common::redis_url()).expect("the test URL parses");
    let mut connection = client.get_multiplexed_async_connection().await.expect("these tests need Redis");
    redis::cmd("EVAL")
        .arg(SCRIPT_BEFORE)
        .arg(keys.len())
        .arg(&keys)
        .arg(args)
        .query_async(&mut connection)
        .await
        .expect("the previous script runs")
}

#[tokio::test]
async fn records_written_by_the_previous_version_read_back_and_replay() {
    // Goal: an upgrade keeps what Redis holds: a completed record and an in-flight claim
    // the previous script wrote (32-byte fingerprint, four header fields, no list entry)
    // read back as version 1 fingerprints, replay with their expiry, complete under their
    // fence, count in the usage as idem_core::usage::stored_bytes says, and are listed
    // and forgotten once the new script has written them.
    let cleanup = Cleanup::default();
    let options = common::options().fence_seed(idem_redis::FenceSeed::First);
    cleanup.track(&options);
    let prefix = options.key_prefix().to_owned();
    let now = wall_now();
    let policy = policy();
    let (lease_end, retention_end) = (now.saturating_add(policy.lease()), now.saturating_add(policy.retention()));
    let digest = fingerprint("a").to_stored();
    assert_eq!(digest.len(), 32, "a byte fingerprint is stored as its digest, as before");
    let text = |n: u64| n.to_string().into_bytes();
    let claim = |field: &str, bytes: u64| {
        let head = [b"claim".to_vec(), b"1".to_vec(), field.as_bytes().to_vec(), text(100), text(1 << 20)];
        let tail = [
            digest.clone(),
            text(now.unix_ms()),
            text(lease_end.unix_ms()),
            text(retention_end.unix_ms()),
            text(bytes),
        ];
        [&head[..], &tail[..]].concat()
    };
    // alice/k1 completed, bob/k1 in flight, each as the previous version wrote them.
    let answer = before(&prefix, "5:alicek1", &claim("5:alicek1", 5 + 2 + 64)).await;
    assert_eq!(answer, [b"execute".to_vec(), b"1".to_vec(), text(lease_end.unix_ms())]);
    let mut encoded = vec![2, 0, 201, 0, 0, 0, 0];
    encoded.extend_from_slice(b"pay_1");
    let complete = [b"complete".to_vec(), b"1".to_vec(), b"5:alicek1".to_vec(), text(1), text(now.unix_ms())];
    let complete = [&complete[..], &[text(retention_end.unix_ms()), encoded, text(5 + 2 + 64 + 5)]].concat();
    assert_eq!(before(&prefix, "5:alicek1", &complete).await, [b"applied".to_vec()]);
    assert_eq!(before(&prefix, "3:bobk1", &claim("3:bobk1", 3 + 2 + 64)).await[0], b"execute");

    let store = common::open(options).await;
    let (alice, bob) = (id("alice", "k1"), id("bob", "k1"));
    let old = store.get(&alice).await.unwrap().expect("the old record reads back");
    assert_eq!(
        (old.fingerprint, old.fence, old.created_at, old.expires_at),
        (fingerprint("a"), Fence::new(1), Timestamp::EPOCH, retention_end)
    );
    let replayed = store.claim(&alice, &fingerprint("a"), now, &policy).await.unwrap();
    assert_eq!(
        replayed,
        Decision::Replay { response: StoredResponse::new(201, &b"pay_1"[..]), expires_at: retention_end }
    );
    let mismatch = store.claim(&alice, &fingerprint("b"), now, &policy).await.unwrap();
    assert_eq!(mismatch, Decision::Mismatch { expires_at: retention_end });
    assert!(store.count_replay(&alice, now).await.unwrap(), "an old completed record counts replays");
    let in_flight = store.get(&bob).await.unwrap().expect("the old claim reads back");
    assert!(
        matches!(in_flight.state, RecordState::InFlight { ref holder, renewals: 0, .. } if *holder == Holder::NONE)
    );
    let done = store.complete(&bob, Fence::new(2), response("pay_2"), now, &policy).await.unwrap();
    assert_eq!(done, Fenced::Applied, "the old claim's fence completes it");
    let bytes: u64 = [(&alice, store.get(&alice).await), (&bob, store.get(&bob).await)]
        .into_iter()
        .map(|(id, record)| idem_core::usage::stored_bytes(id, &record.unwrap().expect("held")))
        .sum();
    assert_eq!(store.usage().await.unwrap(), Usage { records: 2, stored_bytes: bytes });
    let page = store.list(&ListQuery::new(10).unwrap()).await.unwrap();
    let listed: Vec<_> = page.records.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(listed, [alice.clone(), bob.clone()], "listed once the new script wrote them");
    assert!(store.forget(&alice).await.unwrap().is_some());
    assert!(store.forget(&bob).await.unwrap().is_some());
    assert_eq!(store.usage().await.unwrap(), Usage::default());
}
