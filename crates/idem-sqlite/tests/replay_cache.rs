//! The replay cache: completed records kept in memory answer replays, and never past
//! their expiry, also when another process (another store on the same file) purged and
//! reused the key.

mod common;

use common::{at, fingerprint, id, open_with, policy, replay, replay_of, response};
use idem_core::{Decision, Fenced, Store};
use idem_sqlite::{SqliteOptions, SqliteStore};

fn expect_fence(decision: &Decision) -> idem_core::Fence {
    decision.claim().unwrap_or_else(|| panic!("expected a claim, got {decision:?}")).fence
}

/// Deletes the row behind the store's back: what answers afterwards came from memory.
async fn delete_row(store: &SqliteStore, principal: &str, key: &str) {
    sqlx::query("DELETE FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
        .bind(principal)
        .bind(key)
        .execute(store.pool())
        .await
        .expect("the row is deleted");
}

#[tokio::test]
async fn replays_are_answered_from_memory_with_the_stored_bytes() {
    // Goal: after a completion, a replay and a fingerprint mismatch are decided on the
    // cached record; with the cache off the same claims reach the (now empty) table.
    for (cache_bytes, from_memory) in [(1 << 20, true), (0, false)] {
        let t = open_with(|options| options.replay_cache_bytes(cache_bytes)).await;
        let (key, fp) = (id("alice", "k1"), fingerprint("a"));
        let fence = expect_fence(&t.store.claim(&key, &fp, at(0), &policy()).await.unwrap());
        let sent = response("first and only");
        assert_eq!(t.store.complete(&key, fence, sent.clone(), at(1), &policy()).await.unwrap(), Fenced::Applied);
        delete_row(&t.store, "alice", "k1").await;

        let again = t.store.claim(&key, &fp, at(2), &policy()).await.unwrap();
        let other = t.store.claim(&key, &fingerprint("b"), at(2), &policy()).await.unwrap();
        if from_memory {
            assert_eq!(again, replay_of(sent, 1), "cache {cache_bytes}");
            assert_eq!(other, Decision::Mismatch { expires_at: at(10_001) }, "cache {cache_bytes}");
        } else {
            assert!(again.claim().is_some(), "without a cache the claim reads the table: {again:?}");
        }
    }
}

#[tokio::test]
async fn a_cached_record_is_not_used_past_its_expiry() {
    // Goal: store A caches a completed record; store B on the same file (another process)
    // purges it once expired and completes the key again with another request. A, asked
    // after the expiry, answers B's record, not its own copy (policy: 10 s retention).
    let a = open_with(|options| options.replay_cache_bytes(1 << 20)).await;
    let b = SqliteStore::open(SqliteOptions::new(&a.path).replay_cache_bytes(0)).await.unwrap();
    let key = id("alice", "k1");
    let fence = expect_fence(&a.store.claim(&key, &fingerprint("a"), at(0), &policy()).await.unwrap());
    let _ = a.store.complete(&key, fence, response("from a"), at(1), &policy()).await.unwrap();
    assert_eq!(a.store.claim(&key, &fingerprint("a"), at(2), &policy()).await.unwrap(), replay("from a", 1));

    assert_eq!(b.purge_expired(at(20_000), 10).await.unwrap(), 1);
    let fence = expect_fence(&b.claim(&key, &fingerprint("b"), at(20_000), &policy()).await.unwrap());
    let _ = b.complete(&key, fence, response("from b"), at(20_001), &policy()).await.unwrap();

    assert_eq!(a.store.claim(&key, &fingerprint("b"), at(20_002), &policy()).await.unwrap(), replay("from b", 20_001));
    let mismatch = a.store.claim(&key, &fingerprint("a"), at(20_002), &policy()).await.unwrap();
    assert_eq!(mismatch, Decision::Mismatch { expires_at: at(30_001) });
}

#[tokio::test]
async fn in_flight_records_are_not_cached() {
    // Goal: only completed records are kept: a claim on an in-flight record that lapsed
    // is a take-over decided by the store (a cached in-flight copy would answer Conflict).
    let t = open_with(|options| options.replay_cache_bytes(1 << 20)).await;
    let (key, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = expect_fence(&t.store.claim(&key, &fp, at(0), &policy()).await.unwrap());
    assert!(matches!(t.store.claim(&key, &fp, at(10), &policy()).await.unwrap(), Decision::Conflict { .. }));
    let second = expect_fence(&t.store.claim(&key, &fp, at(5_000), &policy()).await.unwrap());
    assert!(second > first, "the take-over gets a later fence");
}
