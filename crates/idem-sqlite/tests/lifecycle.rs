//! The key lifecycle on real files, where SQLite adds something of its own to idem-core's
//! rules (which `tests/conformance.rs` runs as idem-core's lifecycle suite): the rows a
//! tombstone and a forget leave, the `due_at` index, the listing's one SQL query against
//! idem-core's own filter, replay counts in the row and beside the replay cache, and the
//! holder's columns.

mod common;

use std::time::Duration;

use common::{at, fingerprint, id, open, open_with, policy, replay, response};
use idem_core::{
    AtomicStore, ClaimRequest, Decision, Fence, Fenced, Holder, KeyAdmin, ListQuery, Policy, Principal, RecordId,
    RecordState, Refusal, StateFilter, Store, StoreError,
};
use idem_sqlite::sqlx::SqliteConnection;
use idem_sqlite::{SqliteOptions, SqliteStore};

/// 10 s retention (common::policy), then a 1 h tombstone.
fn tombstones() -> Policy {
    policy().with_tombstone(Duration::from_secs(3600)).expect("1 h is a valid tombstone")
}

fn claimed(decision: &Decision) -> Fence {
    decision.claim().unwrap_or_else(|| panic!("expected a claim, got {decision:?}")).fence
}

/// `(state, expires_at, due_at, status IS NULL, body IS NULL, tombstone_until)` of the one row.
async fn row(store: &SqliteStore) -> (String, i64, i64, bool, bool, Option<i64>) {
    sqlx::query_as("SELECT state, expires_at, due_at, status IS NULL, body IS NULL, tombstone_until FROM idem_records")
        .fetch_one(store.pool())
        .await
        .expect("one row")
}

async fn next_fence(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT next_fence FROM idem_fence").fetch_one(store.pool()).await.expect("the counter")
}

#[tokio::test]
async fn purge_shrinks_a_completed_row_to_its_tombstone_then_forgets_it() {
    // Goal: a completed record that leaves a tombstone is due (indexed by due_at) at the
    // end of its retention, not its tombstone's; the purge then rewrites the row as a
    // tombstone (no response, expires_at and due_at at the tombstone's end, smaller usage),
    // which answers Gone (also after a reopen) until a later purge deletes it.
    let t = open().await;
    let (key, fp) = (id("alice", "k1"), fingerprint("a"));
    let fence = claimed(&t.store.claim(&key, &fp, at(0), &tombstones()).await.unwrap());
    let _ = t.store.complete(&key, fence, response("pay_1"), at(100), &tombstones()).await.unwrap();
    let until: u64 = 100 + 10_000 + 3_600_000;
    let until_sql = i64::try_from(until).unwrap();
    assert_eq!(row(&t.store).await, ("completed".to_owned(), 10_100, 10_100, false, false, Some(until_sql)));
    let completed_usage = t.store.usage().await.unwrap();

    assert_eq!(t.store.purge_expired(at(10_099), 10).await.unwrap(), 0, "not due before its retention ends");
    assert_eq!(t.store.purge_expired(at(10_100), 10).await.unwrap(), 1, "shrunk at its retention's end");
    assert_eq!(row(&t.store).await, ("tombstone".to_owned(), until_sql, until_sql, true, true, None));
    let tombstone_usage = t.store.usage().await.unwrap();
    assert_eq!(tombstone_usage.records, 1, "a tombstone counts as a record");
    assert!(tombstone_usage.stored_bytes < completed_usage.stored_bytes, "the response is gone");
    let stone = t.store.get(&key).await.unwrap().expect("the tombstone is held");
    assert_eq!((stone.state, stone.fingerprint, stone.fence), (RecordState::Tombstone, fp, fence));
    t.store.close().await;

    let reopened = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    let gone = reopened.claim(&key, &fp, at(20_000), &tombstones()).await.unwrap();
    assert_eq!(gone, Decision::Gone { expires_at: at(until) });
    assert_eq!(reopened.purge_expired(at(until - 1), 10).await.unwrap(), 0);
    assert_eq!(reopened.purge_expired(at(until), 10).await.unwrap(), 1);
    assert_eq!(reopened.usage().await.unwrap(), idem_sqlite::Usage { records: 0, stored_bytes: 0 });
    assert!(reopened.claim(&key, &fp, at(until), &tombstones()).await.unwrap().claim().is_some());
}

#[tokio::test]
async fn past_retention_the_store_answers_not_the_cached_copy() {
    // Goal: a cached completed record answers only within its retention: after it, the
    // same claim is Gone (its tombstone), decided by the store, whether or not a purge
    // shrank the row yet.
    let t = open().await;
    let (key, fp) = (id("alice", "k1"), fingerprint("a"));
    let fence = claimed(&t.store.claim(&key, &fp, at(0), &tombstones()).await.unwrap());
    let _ = t.store.complete(&key, fence, response("pay_1"), at(0), &tombstones()).await.unwrap();
    assert_eq!(t.store.claim(&key, &fp, at(9_999), &tombstones()).await.unwrap(), replay("pay_1", 0));
    let gone = Decision::Gone { expires_at: at(10_000 + 3_600_000) };
    assert_eq!(t.store.claim(&key, &fp, at(10_000), &tombstones()).await.unwrap(), gone);
    assert_eq!(t.store.purge_expired(at(10_000), 10).await.unwrap(), 1);
    assert_eq!(t.store.claim(&key, &fp, at(10_001), &tombstones()).await.unwrap(), gone);
}

#[tokio::test]
async fn forget_moves_the_fence_counter_and_refuses_the_running_handler() {
    // Goal: forget deletes the row and moves idem_fence.next_fence on in the same
    // (synced) commit, so the forgotten claim's handler can complete neither separately
    // nor atomically (its business write rolls back), a new claim gets a later fence, and
    // a forget of nothing changes nothing. All of it survives a reopen.
    let t = open().await;
    sqlx::query("CREATE TABLE payments (id TEXT PRIMARY KEY)").execute(t.store.pool()).await.unwrap();
    let (key, fp) = (id("alice", "k1"), fingerprint("a"));
    let fence = claimed(&t.store.claim(&key, &fp, at(0), &policy()).await.unwrap());
    assert_eq!(next_fence(&t.store).await, 2);
    let removed = t.store.forget(&key).await.unwrap().expect("the claim was held");
    assert_eq!(removed.fence, fence);
    assert_eq!(next_fence(&t.store).await, 3, "forget moves the counter on");
    assert_eq!(t.store.forget(&key).await.unwrap(), None);
    assert_eq!(next_fence(&t.store).await, 3, "a forget of nothing moves nothing");
    t.store.close().await;

    let store = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    let late = store.complete(&key, fence, response("late"), at(1), &policy()).await.unwrap();
    assert_eq!(late, Fenced::Refused(Refusal::NoRecord));
    let next = claimed(&store.claim(&key, &fp, at(2), &policy()).await.unwrap());
    assert_eq!(next, Fence::new(3), "the fence after the forget's");
    let atomic = store
        .complete_with(&key, fence, response("late"), at(3), &policy(), |tx: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO payments VALUES ('pay_late')").execute(&mut *tx).await?;
                Ok(())
            })
        })
        .await;
    assert!(matches!(atomic, Ok(Fenced::Refused(Refusal::StaleFence { .. }))), "{atomic:?}");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(store.pool()).await.unwrap();
    assert_eq!(payments, 0, "the forgotten handler's business write rolled back");
}

#[tokio::test]
async fn forget_drops_the_cached_copy() {
    // Goal: after a forget through this store, a claim executes again instead of replaying
    // the completed record from the replay cache.
    let t = open_with(|options| options.replay_cache_bytes(1 << 20)).await;
    let (key, fp) = (id("alice", "k1"), fingerprint("a"));
    let fence = claimed(&t.store.claim(&key, &fp, at(0), &policy()).await.unwrap());
    let _ = t.store.complete(&key, fence, response("pay_1"), at(0), &policy()).await.unwrap();
    assert_eq!(t.store.claim(&key, &fp, at(1), &policy()).await.unwrap(), replay("pay_1", 0));
    assert!(t.store.forget(&key).await.unwrap().is_some());
    let again = t.store.claim(&key, &fp, at(2), &policy()).await.unwrap();
    assert!(matches!(again, Decision::Execute(_)), "a forgotten key executes again: {again:?}");
}

#[tokio::test]
async fn replays_are_counted_in_the_row_beside_the_cache() {
    // Goal: count_replay adds one to the row's replays each time, whether the replay came
    // from the cache or the table; cached replays still state the record's expiry; it
    // counts nothing on an in-flight, absent or past-retention record, and still counts in
    // a store at its record limit (a count is never refused for room).
    for cache_bytes in [1 << 20, 0] {
        let t = open_with(|options| options.replay_cache_bytes(cache_bytes).records_max(1)).await;
        let (key, fp) = (id("alice", "k1"), fingerprint("a"));
        let fence = claimed(&t.store.claim(&key, &fp, at(0), &policy()).await.unwrap());
        assert!(!t.store.count_replay(&key, at(0)).await.unwrap(), "an in-flight record has no replays");
        let _ = t.store.complete(&key, fence, response("pay_1"), at(10), &policy()).await.unwrap();
        for n in 1..=3_i64 {
            assert_eq!(t.store.claim(&key, &fp, at(20), &policy()).await.unwrap(), replay("pay_1", 10));
            assert!(t.store.count_replay(&key, at(20)).await.unwrap(), "cache {cache_bytes}");
            let counted: i64 =
                sqlx::query_scalar("SELECT replays FROM idem_records").fetch_one(t.store.pool()).await.unwrap();
            assert_eq!(counted, n, "cache {cache_bytes}");
        }
        let record = t.store.get(&key).await.unwrap().expect("held");
        assert!(matches!(record.state, RecordState::Completed { replays: 3, .. }), "{record:?}");
        assert!(!t.store.count_replay(&id("alice", "absent"), at(20)).await.unwrap());
        assert!(!t.store.count_replay(&key, at(10_010)).await.unwrap(), "past retention nothing counts");
    }
}

#[tokio::test]
async fn claims_store_their_holder_and_renewals() {
    // Goal: the holder's request and trace ids are columns of the in-flight row, a
    // duplicate's Conflict names them (also from a reopened file), renewals count in the
    // row, and a completion clears them.
    let t = open().await;
    let key = id("alice", "k1");
    let holder = Holder::new(Some("req-1"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    let request = ClaimRequest { fingerprint: fingerprint("a"), earlier: None, holder: holder.clone() };
    let fence = claimed(&t.store.claim(&key, &request, at(0), &policy()).await.unwrap());
    let _ = t.store.renew(&key, fence, at(300), &policy()).await.unwrap();
    let _ = t.store.renew(&key, fence, at(600), &policy()).await.unwrap();
    let columns: (Option<String>, Option<String>, i64) =
        sqlx::query_as("SELECT holder_request_id, holder_trace_id, renewals FROM idem_records")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
    assert_eq!(columns, (Some("req-1".to_owned()), Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()), 2));
    t.store.close().await;

    let store = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    let duplicate = store.claim(&key, &fingerprint("a"), at(700), &policy()).await.unwrap();
    let expected = Decision::Conflict { retry_after: Duration::from_millis(900), expires_at: at(10_000), holder };
    assert_eq!(duplicate, expected);
    let _ = store.complete(&key, fence, response("done"), at(800), &policy()).await.unwrap();
    let cleared: (Option<String>, Option<String>, i64) =
        sqlx::query_as("SELECT holder_request_id, holder_trace_id, renewals FROM idem_records")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(cleared, (None, None, 0));
}

/// Records under principals and keys whose byte order differs from a case-insensitive
/// or locale order, created at 0..n ms, some completed, one a tombstone, one expired.
async fn listing_fixture(store: &SqliteStore) -> Vec<RecordId> {
    let mut ids = Vec::new();
    let mut now = 0;
    for principal in ["", "Zed", "alice", "ébé"] {
        for key in ["B", "a", "a0", "b"] {
            let key = id(principal, key);
            let fence = claimed(&store.claim(&key, &fingerprint("a"), at(now), &tombstones()).await.unwrap());
            if now % 3 == 0 {
                let _ = store.complete(&key, fence, response("ok"), at(now), &tombstones()).await.unwrap();
            }
            ids.push(key);
            now += 1;
        }
    }
    // The first record (completed at 0) becomes a tombstone; the rest stay, expired or not.
    assert_eq!(store.purge_expired(at(10_000), 1).await.unwrap(), 1);
    ids
}

fn list_query(
    limit: usize,
    principal: Option<Principal>,
    state: Option<StateFilter>,
    created_before: Option<idem_core::Timestamp>,
    created_after: Option<idem_core::Timestamp>,
) -> ListQuery {
    let mut query = ListQuery::new(limit).expect("a valid limit");
    (query.principal, query.state, query.created_before, query.created_after) =
        (principal, state, created_before, created_after);
    query
}

/// Every page of `query`, following the cursor, as one list of ids.
async fn all_pages(store: &SqliteStore, mut query: ListQuery) -> Vec<RecordId> {
    let mut listed = Vec::new();
    for _ in 0..100 {
        let page = store.list(&query).await.expect("the listing reads");
        assert!(page.records.len() <= query.limit());
        listed.extend(page.records.iter().map(|(id, _)| id.clone()));
        if !page.has_more {
            return listed;
        }
        query.starting_after = Some(listed.last().expect("a page with more is not empty").clone());
    }
    panic!("more than 100 pages for a handful of records");
}

#[tokio::test]
async fn listing_is_idem_cores_filter_in_byte_order() {
    // Goal: the listing's SQL (filters, cursor, order, limit + 1) selects exactly what
    // ListQuery::select selects from every record held, for every filter and page size:
    // bytewise order ('Z' before 'a' before 'é', anonymous first), created_at bounds
    // exclusive before and inclusive after, stored states (a tombstone, expired records).
    let t = open().await;
    let ids = listing_fixture(&t.store).await;
    let mut held = Vec::new();
    for key in &ids {
        held.push((key.clone(), t.store.get(key).await.unwrap().expect("held")));
    }
    let principals = [None, Some(Principal::anonymous()), Some(Principal::new("Zed").unwrap())];
    let states = [None, Some(StateFilter::InFlight), Some(StateFilter::Completed), Some(StateFilter::Tombstone)];
    let bounds = [None, Some(at(0)), Some(at(5)), Some(at(16))];
    for limit in [1, 3, 100] {
        for principal in &principals {
            for state in states {
                for (before, after) in bounds.iter().flat_map(|b| bounds.iter().map(move |a| (*b, *a))) {
                    let query = list_query(limit, principal.clone(), state, before, after);
                    let all = list_query(100, principal.clone(), state, before, after);
                    let selected = all.select(held.iter().map(|(id, record)| (id, record)));
                    let expected: Vec<RecordId> = selected.records.into_iter().map(|(id, _)| id).collect();
                    assert_eq!(all_pages(&t.store, query.clone()).await, expected, "{query:?}");
                }
            }
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(all_pages(&t.store, ListQuery::new(2).unwrap()).await, sorted);
    assert_eq!(sorted[0].principal, Principal::anonymous());
}

#[tokio::test]
async fn a_full_page_says_whether_more_follow() {
    // Goal: has_more is true exactly when a record follows the page (the extra row), and
    // a page that ends at the last record says none follow.
    let t = open().await;
    for key in ["a", "b", "c"] {
        let _ = t.store.claim(&id("alice", key), &fingerprint("a"), at(0), &policy()).await.unwrap();
    }
    let page = t.store.list(&ListQuery::new(2).unwrap()).await.unwrap();
    assert_eq!((page.records.len(), page.has_more), (2, true));
    let page = t.store.list(&ListQuery::new(3).unwrap()).await.unwrap();
    assert_eq!((page.records.len(), page.has_more), (3, false));
}

#[tokio::test]
async fn a_closed_store_fails_admin_calls_as_unavailable() {
    // Goal: list, forget and count_replay on a closed store are Unavailable errors (a
    // layer ignores a failed count), never panics.
    let t = open().await;
    t.store.close().await;
    let key = id("alice", "k1");
    assert!(matches!(t.store.list(&ListQuery::new(1).unwrap()).await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.forget(&key).await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.count_replay(&key, at(0)).await, Err(StoreError::Unavailable { .. })));
}
