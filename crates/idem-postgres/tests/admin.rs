//! PostgresStore's key administration and lifecycle in its own SQL, beyond idem-core's
//! lifecycle suite: the listing statement pages exactly as `ListQuery::select` does over
//! the same records (every filter, every page size), in Rust's bytewise order whatever
//! the columns' collation; a purge shrinks a completed record's row to its tombstone
//! (response gone, bytes given back); a forgotten claim cannot complete in atomic mode.

mod common;

use std::time::Duration;

use common::{Schemas, at, fingerprint, id, response};
use idem_core::{
    Decision, Fenced, KeyAdmin, ListQuery, Page, Policy, Record, RecordId, Refusal, StateFilter, Store, Timestamp,
};
use idem_postgres::{PlantedBug, PostgresStore, TimeSource};
use sqlx::{AssertSqlSafe, Row};

fn policy() -> Policy {
    let policy = Policy::new(Duration::from_secs(1), Duration::from_secs(10)).expect("lease < retention");
    policy.with_tombstone(Duration::from_secs(100)).expect("a valid tombstone")
}

/// Principals and keys whose bytewise order differs from a natural-language one: upper
/// before lower case, `_` between them, `é` after `z`, the anonymous principal first.
const PRINCIPALS: [&str; 5] = ["", "Zed", "alice", "zoe", "éva"];
const KEYS: [&str; 4] = ["B", "_x", "a", "b-2"];

/// Twenty records, one per (principal, key), created at different times, in flight,
/// completed, or (after the purge at the end) tombstones; returns the time after.
async fn fill(store: &PostgresStore) -> Timestamp {
    let mut n = 0u64;
    for principal in PRINCIPALS {
        for key in KEYS {
            let record_id = id(principal, key);
            let created = at(1_000 * n);
            let Decision::Execute(claim) =
                store.claim(&record_id, &fingerprint("a"), created, &policy()).await.unwrap()
            else {
                panic!("a new key executes")
            };
            if !n.is_multiple_of(3) {
                let done = store.complete(&record_id, claim.fence, response("ok"), created, &policy()).await;
                assert_eq!(done.unwrap(), Fenced::Applied);
            }
            n += 1;
        }
    }
    // Records completed in the first 8 s are past their 10 s retention at 18 s: tombstones.
    let later = at(18_000);
    assert!(store.purge_expired(later, 100).await.unwrap() > 0, "some records shrink or go");
    later
}

/// Every record the store holds, read one by one.
async fn all_records(store: &PostgresStore) -> Vec<(RecordId, Record)> {
    let mut all = Vec::new();
    for principal in PRINCIPALS {
        for key in KEYS {
            let record_id = id(principal, key);
            if let Some(record) = store.get(&record_id).await.unwrap() {
                all.push((record_id, record));
            }
        }
    }
    all
}

/// Every page of `query` from the store, following the cursor until `has_more` is false.
async fn pages(store: &PostgresStore, mut query: ListQuery) -> Vec<Page> {
    let mut pages = Vec::new();
    for _ in 0..=20 {
        let page = store.list(&query).await.unwrap();
        query.starting_after = page.records.last().map(|(id, _)| id.clone());
        let done = !page.has_more;
        pages.push(page);
        if done {
            return pages;
        }
    }
    panic!("twenty records take at most twenty pages")
}

/// The same pages from `ListQuery::select` over `all`.
fn expected_pages(all: &[(RecordId, Record)], mut query: ListQuery) -> Vec<Page> {
    let mut pages = Vec::new();
    loop {
        let page = query.select(all.iter().map(|(id, record)| (id, record)));
        query.starting_after = page.records.last().map(|(id, _)| id.clone());
        let done = !page.has_more;
        pages.push(page);
        if done {
            return pages;
        }
    }
}

/// Queries with every filter alone and some together, at page sizes 1, 3 and 100.
fn queries() -> Vec<ListQuery> {
    let mut queries = Vec::new();
    for limit in [1, 3, 100] {
        let base = || ListQuery::new(limit).expect("a valid limit");
        queries.push(base());
        for principal in ["", "alice", "éva"] {
            let mut query = base();
            query.principal = Some(id(principal, "k").principal);
            queries.push(query);
        }
        for state in [StateFilter::InFlight, StateFilter::Completed, StateFilter::Tombstone] {
            let mut query = base();
            query.state = Some(state);
            queries.push(query);
        }
        let mut query = base();
        query.created_before = Some(at(7_000));
        queries.push(query);
        let mut query = base();
        query.created_after = Some(at(7_000));
        queries.push(query);
        let mut query = base();
        query.state = Some(StateFilter::Completed);
        query.created_after = Some(at(3_000));
        query.created_before = Some(at(15_000));
        query.starting_after = Some(id("alice", "_x"));
        queries.push(query);
    }
    queries
}

/// Sets the record id columns to a natural-language collation, as a database whose
/// default collation is one would have them, so the order comes from the statement alone.
async fn natural_language_columns(store: &PostgresStore) {
    let statement = format!(
        "ALTER TABLE \"{}\".idem_records ALTER COLUMN principal TYPE TEXT COLLATE \"en-x-icu\", \
         ALTER COLUMN idem_key TYPE TEXT COLLATE \"en-x-icu\"",
        store.schema()
    );
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(store.pool()).await.expect("ICU collations are installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_as_list_query_selects_in_bytewise_order() {
    // Goal: the listing's one statement restates ListQuery::admits and its order: for
    // every query below, paging with the cursor gives exactly the pages ListQuery::select
    // gives over the same records, in Rust's bytewise (principal, key) order, even with
    // the id columns in a natural-language collation.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    natural_language_columns(&store).await;
    fill(&store).await;
    let all = all_records(&store).await;
    assert!(all.len() > 10, "most records are held: {}", all.len());
    let states: std::collections::BTreeSet<&str> = all.iter().map(|(_, record)| record.state.name()).collect();
    assert_eq!(states.len(), 3, "every state is listed: {states:?}");
    for query in queries() {
        assert_eq!(pages(&store, query.clone()).await, expected_pages(&all, query.clone()), "{query:?}");
    }
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_without_the_bytewise_collation_is_caught() {
    // Goal: the order test above has teeth: the listing with its `COLLATE "C"` planted
    // away orders the natural-language way, which the comparison with ListQuery::select
    // tells apart.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    natural_language_columns(&store).await;
    fill(&store).await;
    let all = all_records(&store).await;
    let planted = store.with_planted_bug(PlantedBug::ListWithoutCollation);
    let query = ListQuery::new(100).expect("a valid limit");
    assert_ne!(pages(&planted, query.clone()).await, expected_pages(&all, query), "the planted order differs");
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_shrinks_a_completed_row_to_its_tombstone() {
    // Goal: at the end of retention the purge rewrites the row as a tombstone (state
    // 'tombstone', no status, headers or body, kept until the tombstone's end) and gives
    // the response's bytes back; the key then answers Gone, and once the tombstone ends
    // the row goes and the key executes again.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    let alice = id("alice", "k1");
    let Decision::Execute(claim) = store.claim(&alice, &fingerprint("a"), at(0), &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    let body = "x".repeat(1_000);
    assert_eq!(store.complete(&alice, claim.fence, response(&body), at(0), &policy()).await.unwrap(), Fenced::Applied);
    let before = store.usage().await.unwrap();
    assert_eq!(store.purge_expired(at(10_000), 10).await.unwrap(), 1, "due at the end of retention");
    let row = format!(
        "SELECT state, status IS NULL AND headers IS NULL AND body IS NULL AS dropped, expires_at, due_at, stored_bytes \
         FROM \"{}\".idem_records",
        store.schema()
    );
    let row = sqlx::query(AssertSqlSafe(row)).fetch_one(store.pool()).await.unwrap();
    assert_eq!(row.get::<String, _>("state"), "tombstone");
    assert!(row.get::<bool, _>("dropped"), "the response is dropped from the row");
    assert_eq!((row.get::<i64, _>("expires_at"), row.get::<i64, _>("due_at")), (110_000, 110_000));
    let after = store.usage().await.unwrap();
    assert_eq!(after.records, before.records);
    assert!(before.stored_bytes - after.stored_bytes >= 1_000, "{before:?} -> {after:?}");
    assert_eq!(u64::try_from(row.get::<i64, _>("stored_bytes")).unwrap(), after.stored_bytes);
    let gone = store.claim(&alice, &fingerprint("a"), at(50_000), &policy()).await.unwrap();
    assert_eq!(gone, Decision::Gone { expires_at: at(110_000) });
    assert_eq!(store.purge_expired(at(109_999), 10).await.unwrap(), 0, "not before the tombstone's end");
    assert_eq!(store.purge_expired(at(110_000), 10).await.unwrap(), 1);
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.records, usage.stored_bytes), (0, 0));
    let again = store.claim(&alice, &fingerprint("a"), at(110_000), &policy()).await.unwrap();
    assert!(matches!(again, Decision::Execute(next) if next.fence > claim.fence), "{again:?}");
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_claim_cannot_complete_in_atomic_mode() {
    // Goal: forget is fenced (G3) in atomic mode too: the handler whose claim an operator
    // forgot is refused inside its transaction, and after a new claim took the key its
    // fence is stale; its business row never lands.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    let alice = id("alice", "k1");
    let Decision::Execute(claim) = store.claim(&alice, &fingerprint("a"), at(0), &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    assert!(store.forget(&alice).await.unwrap().is_some());
    let mut tx = store.begin_write().await.unwrap();
    let refused = store.complete_in(&mut tx, &alice, claim.fence, response("late"), at(1), &policy()).await;
    assert_eq!(refused.unwrap(), Fenced::Refused(Refusal::NoRecord));
    tx.rollback().await.unwrap();
    let Decision::Execute(next) = store.claim(&alice, &fingerprint("a"), at(2), &policy()).await.unwrap() else {
        panic!("a forgotten key executes again")
    };
    assert!(next.fence.get() >= claim.fence.get() + 2, "the forget drew a fence: {claim:?} then {next:?}");
    let mut tx = store.begin_write().await.unwrap();
    let stale = store.complete_in(&mut tx, &alice, claim.fence, response("late"), at(3), &policy()).await;
    assert_eq!(stale.unwrap(), Fenced::Refused(Refusal::StaleFence { presented: claim.fence, current: next.fence }));
    tx.rollback().await.unwrap();
    schemas.close_all().await;
}
