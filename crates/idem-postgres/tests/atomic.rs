//! Atomic mode as one call ([`AtomicStore::complete_with`]) on a real PostgreSQL: the
//! business writes and the fenced completion commit together or not at all; and a store
//! on the service's own pool ([`PostgresStore::with_pool`]).

mod common;

use std::sync::Arc;

use common::{Schemas, at, connect, fingerprint, id, policy, response, url};
use idem_core::{AtomicStore, CommitError, Decision, Fence, Fenced, RecordId, RecordState, Refusal, Store, StoreError};
use idem_postgres::sqlx::postgres::PgPoolOptions;
use idem_postgres::sqlx::{self, AssertSqlSafe, PgConnection};
use idem_postgres::{MIGRATIONS_TABLE, OpenError, PostgresOptions, PostgresStore, TimeSource};
use tokio::sync::Barrier;

/// Creates the business table `payments` in the store's schema.
async fn create_payments(store: &PostgresStore) {
    let sql = format!("CREATE TABLE \"{}\".payments (id TEXT PRIMARY KEY, idem_key TEXT NOT NULL)", store.schema());
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(store.pool()).await.expect("the payments table is created");
}

/// The payment ids written, in order.
async fn payments(store: &PostgresStore) -> Vec<String> {
    let sql = format!("SELECT id FROM \"{}\".payments ORDER BY id", store.schema());
    sqlx::query_scalar(AssertSqlSafe(sql)).fetch_all(store.pool()).await.expect("the payments read")
}

/// Claims `id` at `now_ms`, which must execute.
async fn claim(store: &PostgresStore, id: &RecordId, now_ms: u64) -> Fence {
    match store.claim(id, &fingerprint("pay"), at(now_ms), &policy()).await.expect("the claim is answered") {
        Decision::Execute(claim) => claim.fence,
        other => panic!("a new key executes: {other:?}"),
    }
}

/// Completes `id`'s claim `fence` together with the payment row `payment`.
async fn pay(
    store: &PostgresStore,
    id: &RecordId,
    fence: Fence,
    payment: &str,
    now_ms: u64,
) -> Result<Fenced, CommitError<sqlx::Error>> {
    let insert = format!("INSERT INTO \"{}\".payments (id, idem_key) VALUES ($1, $2)", store.schema());
    let (payment_id, key) = (payment.to_owned(), id.key.as_str().to_owned());
    store
        .complete_with(id, fence, response(payment), at(now_ms), &policy(), move |connection: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).bind(payment_id).bind(key).execute(&mut *connection).await?;
                Ok(())
            })
        })
        .await
}

/// The record is the claim `fence`, still in flight.
async fn assert_in_flight(store: &PostgresStore, id: &RecordId, fence: Fence) {
    let record = store.get(id).await.expect("the record reads").expect("the record is held");
    assert!(matches!(record.state, RecordState::InFlight { .. }) && record.fence == fence, "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_with_commits_the_writes_and_the_completion_together() {
    // Goal: G1/G2 in one call: the payment row and the completion land together; a retry's
    // claim replays the stored response, and a second completion with the same fence is
    // refused with its writes rolled back, so the payment exists once.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let alice = id("alice", "k1");
    let fence = claim(&store, &alice, 0).await;

    assert_eq!(pay(&store, &alice, fence, "pay_1", 100).await.expect("committed"), Fenced::Applied);
    assert_eq!(payments(&store).await, ["pay_1"]);
    let retry = store.claim(&alice, &fingerprint("pay"), at(200), &policy()).await.expect("answered");
    assert_eq!(retry.replayed(), Some(&response("pay_1")));

    let again = pay(&store, &alice, fence, "pay_1b", 300).await.expect("answered");
    assert_eq!(again, Fenced::Refused(Refusal::AlreadyCompleted { completed_by: fence }));
    assert_eq!(payments(&store).await, ["pay_1"], "the repeated completion's writes rolled back");
    let usage = store.usage().await.expect("usage reads");
    assert_eq!(usage.records, 1);
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_completion_rolls_the_writes_back() {
    // Goal: G1 across a lapsed lease: the first execution's lease (1 s) lapses and another
    // request takes the claim over at 2 s; the first one's complete_with is refused as
    // stale and its payment never lands, the new holder's lands once.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let alice = id("alice", "k1");
    let first = claim(&store, &alice, 0).await;
    let second = match store.claim(&alice, &fingerprint("pay"), at(2_000), &policy()).await.expect("answered") {
        Decision::TakeOver { stale, claim } if stale == first => claim.fence,
        other => panic!("the lapsed claim is taken over: {other:?}"),
    };

    let stale = pay(&store, &alice, first, "pay_stale", 2_100).await.expect("answered");
    assert_eq!(stale, Fenced::Refused(Refusal::StaleFence { presented: first, current: second }));
    assert!(payments(&store).await.is_empty(), "the stale execution's payment rolled back");
    assert_in_flight(&store, &alice, second).await;

    assert_eq!(pay(&store, &alice, second, "pay_2", 2_200).await.expect("committed"), Fenced::Applied);
    assert_eq!(payments(&store).await, ["pay_2"]);
    let retry = store.claim(&alice, &fingerprint("pay"), at(2_300), &policy()).await.expect("answered");
    assert_eq!(retry.replayed(), Some(&response("pay_2")));
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_roll_back_and_keep_the_claim_in_flight() {
    // Goal: a business write that fails rolls back everything written before it, comes
    // back as CommitError::Writes with the driver's error, and leaves the claim in flight:
    // a later complete_with with the same fence commits.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let alice = id("alice", "k1");
    let fence = claim(&store, &alice, 0).await;
    let insert = format!("INSERT INTO \"{}\".payments (id, idem_key) VALUES ('pay_0', 'k1')", store.schema());

    let failed = store
        .complete_with(&alice, fence, response("pay_0"), at(100), &policy(), move |connection: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).execute(&mut *connection).await?;
                sqlx::query("SELECT 1 / 0").execute(&mut *connection).await?;
                Ok(())
            })
        })
        .await;
    match failed {
        Err(CommitError::Writes(sqlx::Error::Database(error))) => assert_eq!(error.code().as_deref(), Some("22012")),
        other => panic!("the division by zero is the writes' error: {other:?}"),
    }
    assert!(payments(&store).await.is_empty(), "the write before the failure rolled back");
    assert_in_flight(&store, &alice, fence).await;

    assert_eq!(pay(&store, &alice, fence, "pay_1", 200).await.expect("committed"), Fenced::Applied);
    assert_eq!(payments(&store).await, ["pay_1"]);
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_after_the_writes_rolls_them_back() {
    // Goal: writes that swallow their own failure leave the transaction aborted; the
    // completion then fails as a store error (Unavailable), the writes roll back with it,
    // and the claim stays in flight for a later complete_with.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let alice = id("alice", "k1");
    let fence = claim(&store, &alice, 0).await;
    let insert = format!("INSERT INTO \"{}\".payments (id, idem_key) VALUES ('pay_0', 'k1')", store.schema());

    let failed = store
        .complete_with(&alice, fence, response("pay_0"), at(100), &policy(), move |connection: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).execute(&mut *connection).await?;
                let swallowed = sqlx::query("SELECT 1 / 0").execute(&mut *connection).await;
                assert!(swallowed.is_err(), "the division fails and aborts the transaction");
                Ok(())
            })
        })
        .await;
    assert!(matches!(failed, Err(CommitError::Store(StoreError::Unavailable { .. }))), "{failed:?}");
    assert!(payments(&store).await.is_empty(), "the writes rolled back with the failed completion");
    assert_in_flight(&store, &alice, fence).await;

    assert_eq!(pay(&store, &alice, fence, "pay_1", 200).await.expect("committed"), Fenced::Applied);
    assert_eq!(payments(&store).await, ["pay_1"]);
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_constraint_failing_at_commit_is_a_writes_error() {
    // Goal: a business constraint checked only at COMMIT (DEFERRABLE INITIALLY DEFERRED)
    // fails the commit after the completion applied: nothing lands, the error is the
    // writes' (CommitError::Writes, 23505), and the claim stays in flight.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let ledger = format!("\"{}\".ledger", store.schema());
    let create = format!("CREATE TABLE {ledger} (entry TEXT, UNIQUE (entry) DEFERRABLE INITIALLY DEFERRED)");
    sqlx::raw_sql(AssertSqlSafe(create)).execute(store.pool()).await.expect("the ledger is created");
    let alice = id("alice", "k1");
    let fence = claim(&store, &alice, 0).await;

    let insert = format!("INSERT INTO {ledger} (entry) VALUES ('e1'), ('e1')");
    let failed = store
        .complete_with(&alice, fence, response("pay_0"), at(100), &policy(), move |connection: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).execute(&mut *connection).await?;
                Ok(())
            })
        })
        .await;
    match failed {
        Err(CommitError::Writes(sqlx::Error::Database(error))) => assert_eq!(error.code().as_deref(), Some("23505")),
        other => panic!("the deferred unique constraint fails the commit: {other:?}"),
    }
    let entries: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {ledger}")))
        .fetch_one(store.pool())
        .await
        .expect("the ledger reads");
    assert_eq!(entries, 0, "nothing of the failed commit landed");
    assert_in_flight(&store, &alice, fence).await;
    assert_eq!(pay(&store, &alice, fence, "pay_1", 200).await.expect("committed"), Fenced::Applied);
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_complete_with_on_distinct_keys_all_land() {
    // Goal: 16 complete_with calls for distinct keys, released together on 16 connections,
    // all apply: every payment lands once and every key replays its own response.
    const KEYS: usize = 16;
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.connections_max(16).time_source(TimeSource::Caller)).await;
    create_payments(&store).await;
    let mut claims = Vec::with_capacity(KEYS);
    for n in 0..KEYS {
        let key = id("alice", &format!("k{n:02}"));
        let fence = claim(&store, &key, 0).await;
        claims.push((key, fence));
    }
    let start = Arc::new(Barrier::new(KEYS));
    let tasks: Vec<_> = claims
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, (key, fence))| {
            let (store, start) = (store.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                pay(&store, &key, fence, &format!("pay_{n:02}"), 100).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("no task panicked").expect("committed"), Fenced::Applied);
    }
    let expected: Vec<String> = (0..KEYS).map(|n| format!("pay_{n:02}")).collect();
    assert_eq!(payments(&store).await, expected);
    for (n, (key, _)) in claims.iter().enumerate() {
        let retry = store.claim(key, &fingerprint("pay"), at(200), &policy()).await.expect("answered");
        assert_eq!(retry.replayed(), Some(&response(&format!("pay_{n:02}"))));
    }
    assert_eq!(store.usage().await.expect("usage reads").records, u64::try_from(KEYS).expect("16 fits"));
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pool_migrates_on_the_services_pool_and_leaves_its_connections_alone() {
    // Goal: a service brings its own pool: with_pool migrates idem's schema on it (noted in
    // idem's own migrations table, not sqlx's default), opening twice is harmless, the
    // pool's connections keep their search_path, and atomic mode runs on that pool.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let pool = PgPoolOptions::new().max_connections(2).connect(&url()).await.expect("the service's pool connects");
    let options = || PostgresOptions::new("unused://").schema(&schema).time_source(TimeSource::Caller);

    let bad = PostgresStore::with_pool(pool.clone(), options().schema("Bad")).await;
    assert!(matches!(bad, Err(OpenError::InvalidOptions { .. })), "{bad:?}");
    let store = PostgresStore::with_pool(pool.clone(), options()).await.expect("idem migrates on the pool");
    let again = PostgresStore::with_pool(pool.clone(), options()).await.expect("migrating again is a no-op");
    assert_eq!(again.schema(), schema);

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(&schema)
    .fetch_all(&pool)
    .await
    .expect("the catalog reads");
    assert!(tables.contains(&MIGRATIONS_TABLE.to_owned()), "{tables:?}");
    assert!(!tables.contains(&"_sqlx_migrations".to_owned()), "sqlx's default table is the service's: {tables:?}");
    // Every connection the pool holds still has the server's default search_path.
    let default_path: String =
        sqlx::query_scalar("SHOW search_path").fetch_one(&mut connect().await).await.expect("reads");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(pool.acquire().await.expect("the pool gives a connection"));
    }
    for connection in &mut held {
        let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&mut **connection).await.expect("reads");
        assert_eq!(path, default_path, "idem's migration did not leak its search_path");
    }
    drop(held);

    create_payments(&store).await;
    let alice = id("alice", "k1");
    let fence = claim(&store, &alice, 0).await;
    assert_eq!(pay(&store, &alice, fence, "pay_1", 100).await.expect("committed"), Fenced::Applied);
    assert_eq!(payments(&again).await, ["pay_1"], "both stores share the service's pool and tables");
    pool.close().await;
}
