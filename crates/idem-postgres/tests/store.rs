//! PostgresStore's own behaviour beyond the conformance suite: concurrency resolved by the
//! database, time from the database, bounded retries, bounded purges, atomic mode.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Schemas, at, connect, fingerprint, id, policy, response, wall_clock};
use idem_core::{Decision, Fenced, Policy, RecordState, Refusal, Store, StoreError, Timestamp};
use idem_postgres::{OpenError, PostgresOptions, PostgresStore, TimeSource};
use sqlx::{AssertSqlSafe, Row};

/// Far from any real clock in both directions: what skewed replicas might send.
const LONG_AGO: Timestamp = Timestamp::EPOCH;
const FAR_AHEAD: Timestamp = Timestamp::from_unix_ms(4_102_444_800_000); // 2100-01-01

async fn execute(store: &PostgresStore, schema_sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(schema_sql.to_owned())).execute(store.pool()).await.expect("the test's SQL runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_claims_execute_once() {
    // Goal: G1 across connections: 64 tasks on 16 connections claiming one new record id at
    // once get exactly one execution, every round; the others see the winner's claim.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.connections_max(16)).await;
    for round in 0..5 {
        let key = id("alice", &format!("k{round}"));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { store.claim(&key, &fingerprint("a"), LONG_AGO, &policy()).await })
            })
            .collect();
        let mut executions = 0;
        for task in tasks {
            match task.await.expect("no task panicked").expect("the store answers") {
                Decision::Execute(_) => executions += 1,
                Decision::Conflict { .. } => {}
                other => panic!("round {round}: a claim on a fresh lease got {other:?}"),
            }
        }
        assert_eq!(executions, 1, "round {round}");
    }
    assert_eq!(store.usage().await.expect("usage reads").records, 5, "one record per round, counted once");
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_client_clocks_do_not_matter() {
    // Goal: with time from the database, a replica whose clock is decades behind and one
    // decades ahead get the same decisions as a correct one: the lease and the retention
    // count from the database's clock, a fast clock neither takes over a live claim nor
    // purges a live record.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Database)).await;
    let alice = id("alice", "k1");
    let before = wall_clock();
    let Decision::Execute(claim) = store.claim(&alice, &fingerprint("a"), LONG_AGO, &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    let after = wall_clock();
    // The lease is a second from the database's now, on this machine's clock give or take.
    let lease_ms = claim.lease_expires_at.unix_ms();
    assert!(
        lease_ms + 5_000 >= before.unix_ms() + 1_000 && lease_ms <= after.unix_ms() + 1_000 + 5_000,
        "the lease counts from the database's clock: {claim:?}, wall clock {before:?}..{after:?}"
    );
    let decision = store.claim(&alice, &fingerprint("a"), FAR_AHEAD, &policy()).await.unwrap();
    assert!(matches!(decision, Decision::Conflict { .. }), "a fast clock does not take over: {decision:?}");
    assert_eq!(store.purge_expired(FAR_AHEAD, 10).await.unwrap(), 0, "a fast purger forgets nothing live");
    let completed = store.complete(&alice, claim.fence, response("pay_1"), LONG_AGO, &policy()).await.unwrap();
    assert_eq!(completed, Fenced::Applied);
    let record = store.get(&alice).await.unwrap().expect("the record is held");
    assert!(record.expires_at.unix_ms() >= before.unix_ms() + 9_000, "retention counts from the database's clock");
    let replay = store.claim(&alice, &fingerprint("a"), FAR_AHEAD, &policy()).await.unwrap();
    assert_eq!(replay.replayed(), Some(&response("pay_1")), "a fast clock does not see the record expired");
    assert_eq!(store.purge_expired(FAR_AHEAD, 10).await.unwrap(), 0);
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_clock_lapses_leases() {
    // Goal: with time from the database, a lease lapses when the database's clock passes it,
    // whatever the callers pass: a conflict first, a take-over after the lease.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options).await;
    let policy = Policy::new(Duration::from_millis(300), Duration::from_secs(10)).expect("lease < retention");
    let alice = id("alice", "k1");
    let first = store.claim(&alice, &fingerprint("a"), FAR_AHEAD, &policy).await.unwrap();
    let Decision::Execute(first) = first else { panic!("a new key executes: {first:?}") };
    let early = store.claim(&alice, &fingerprint("a"), FAR_AHEAD, &policy).await.unwrap();
    assert!(matches!(early, Decision::Conflict { .. }), "{early:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    match store.claim(&alice, &fingerprint("a"), LONG_AGO, &policy).await.unwrap() {
        Decision::TakeOver { stale, claim } => assert!(stale == first.fence && claim.fence > first.fence),
        other => panic!("the lease lapsed on the database's clock: {other:?}"),
    }
    schemas.close_all().await;
}

/// Makes every insert into the schema's idem_records fail with `sqlstate` for the first
/// `failures` attempts; a sequence (not rolled back with the failed transactions) counts
/// the attempts.
async fn fail_inserts(store: &PostgresStore, sqlstate: &str, failures: i64) {
    let s = store.schema();
    execute(
        store,
        &format!(
            "CREATE SEQUENCE \"{s}\".attempts;
             CREATE FUNCTION \"{s}\".fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('\"{s}\".attempts') <= {failures} THEN
                 RAISE EXCEPTION 'planted failure' USING ERRCODE = '{sqlstate}';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON \"{s}\".idem_records
               FOR EACH ROW EXECUTE FUNCTION \"{s}\".fail_insert();"
        ),
    )
    .await;
}

async fn attempts(store: &PostgresStore) -> i64 {
    let sql = format!("SELECT last_value FROM \"{}\".attempts", store.schema());
    sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(store.pool()).await.expect("the counter reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_and_deadlocks_are_retried_within_the_bound() {
    // Goal: an attempt aborted with 40001 or 40P01 runs again and succeeds once the
    // contention is gone; with contention that does not end, the store gives up after
    // exactly retries_max retries, as Unavailable with a retry hint, having applied nothing.
    let schemas = Schemas::default();
    for sqlstate in ["40001", "40P01"] {
        let store = schemas.open_with(|options| options.retries_max(3)).await;
        fail_inserts(&store, sqlstate, 2).await;
        let decision = store.claim(&id("alice", "k1"), &fingerprint("a"), LONG_AGO, &policy()).await;
        assert!(matches!(decision, Ok(Decision::Execute(_))), "{sqlstate}: two failures, then it runs: {decision:?}");
        assert_eq!(attempts(&store).await, 3, "{sqlstate}: three attempts");

        let store = schemas.open_with(|options| options.retries_max(3)).await;
        fail_inserts(&store, sqlstate, i64::MAX).await;
        let started = std::time::Instant::now();
        let refused = store.claim(&id("alice", "k1"), &fingerprint("a"), LONG_AGO, &policy()).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable { retry_after: Some(_), .. })),
            "{sqlstate}: contention past the retries is Unavailable: {refused:?}"
        );
        assert_eq!(attempts(&store).await, 4, "{sqlstate}: one attempt and three retries, no more");
        assert!(started.elapsed() < Duration::from_secs(1), "{sqlstate}: backoff is bounded");
        assert_eq!(store.get(&id("alice", "k1")).await.unwrap(), None, "{sqlstate}: nothing was applied");
        assert_eq!(store.usage().await.unwrap().records, 0, "{sqlstate}: nothing was counted");
    }
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_batches_are_bounded_and_skip_held_rows() {
    // Goal: purge forgets at most batch_max records per call, gives their usage back, and
    // passes over a due row that another transaction holds instead of waiting for it.
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    for n in 0..25 {
        let key = id("alice", &format!("k{n}"));
        let Decision::Execute(claim) = store.claim(&key, &fingerprint("a"), at(0), &policy()).await.unwrap() else {
            panic!("a new key executes")
        };
        assert_eq!(store.complete(&key, claim.fence, response("ok"), at(0), &policy()).await.unwrap(), Fenced::Applied);
    }
    // Another transaction holds k0's row.
    let mut holder = store.begin_write().await.unwrap();
    let lock = format!("SELECT 1 FROM \"{}\".idem_records WHERE idem_key = 'k0' FOR UPDATE", store.schema());
    sqlx::query(AssertSqlSafe(lock)).fetch_one(&mut *holder).await.unwrap();
    let later = at(20_000);
    let mut batches = Vec::new();
    loop {
        let purged = store.purge_expired(later, 10).await.unwrap();
        batches.push(purged);
        if purged < 10 {
            break;
        }
    }
    assert_eq!(batches, [10, 10, 4], "bounded batches; the held row is skipped");
    holder.rollback().await.unwrap();
    assert_eq!(store.purge_expired(later, 10).await.unwrap(), 1, "the released row goes in the next batch");
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.records, usage.stored_bytes), (0, 0), "usage is given back");
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_completion_rolls_back_with_the_callers_transaction() {
    // Goal: atomic mode: complete_in inside the caller's transaction commits or rolls back
    // with the business row; a stale fence is refused inside the transaction, which then
    // rolls back, so the business row of a taken-over execution never lands (G1).
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Caller)).await;
    let payments = format!("\"{}\".payments", store.schema());
    execute(&store, &format!("CREATE TABLE {payments} (key TEXT NOT NULL, fence BIGINT NOT NULL)")).await;
    let insert = format!("INSERT INTO {payments} (key, fence) VALUES ($1, $2)");
    let count = format!("SELECT count(*) FROM {payments}");
    let payments_count =
        || async { sqlx::query_scalar::<_, i64>(AssertSqlSafe(count.clone())).fetch_one(store.pool()).await.unwrap() };
    let alice = id("alice", "k1");
    let Decision::Execute(first) = store.claim(&alice, &fingerprint("a"), at(0), &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    let fence_sql = i64::try_from(first.fence.get()).unwrap();

    // Applied, then the caller rolls back (its own failure): neither lands.
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query(AssertSqlSafe(insert.clone())).bind("k1").bind(fence_sql).execute(&mut *tx).await.unwrap();
    let applied = store.complete_in(&mut tx, &alice, first.fence, response("pay_1"), at(100), &policy()).await;
    assert_eq!(applied.unwrap(), Fenced::Applied);
    tx.rollback().await.unwrap();
    assert_eq!(payments_count().await, 0, "the business row rolled back");
    let record = store.get(&alice).await.unwrap().expect("the claim is still held");
    assert!(matches!(record.state, RecordState::InFlight { .. }), "the completion rolled back with it: {record:?}");

    // The lease lapses and another request takes over: the first execution's completion is
    // refused inside its transaction, which rolls back.
    let Decision::TakeOver { claim: second, .. } =
        store.claim(&alice, &fingerprint("a"), at(2_000), &policy()).await.unwrap()
    else {
        panic!("the lapsed claim is taken over")
    };
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query(AssertSqlSafe(insert.clone())).bind("k1").bind(fence_sql).execute(&mut *tx).await.unwrap();
    let stale = store.complete_in(&mut tx, &alice, first.fence, response("stale"), at(2_100), &policy()).await;
    let refused = Fenced::Refused(Refusal::StaleFence { presented: first.fence, current: second.fence });
    assert_eq!(stale.unwrap(), refused);
    tx.rollback().await.unwrap();

    // The current holder completes in a transaction of the application's own connection.
    let mut own = connect().await;
    let mut tx = sqlx::Connection::begin(&mut own).await.unwrap();
    let second_sql = i64::try_from(second.fence.get()).unwrap();
    sqlx::query(AssertSqlSafe(insert.clone())).bind("k1").bind(second_sql).execute(&mut *tx).await.unwrap();
    let applied = store.complete_in(&mut tx, &alice, second.fence, response("pay_2"), at(2_200), &policy()).await;
    assert_eq!(applied.unwrap(), Fenced::Applied);
    tx.commit().await.unwrap();
    assert_eq!(payments_count().await, 1, "exactly one payment");
    let replay = store.claim(&alice, &fingerprint("a"), at(2_300), &policy()).await.unwrap();
    assert_eq!(replay.replayed(), Some(&response("pay_2")));

    // A second completion in a transaction with the same fence is refused: its business
    // writes would repeat the first's.
    let mut tx = store.begin_write().await.unwrap();
    let again = store.complete_in(&mut tx, &alice, second.fence, response("pay_2"), at(2_400), &policy()).await;
    let refused = Fenced::Refused(Refusal::AlreadyCompleted { completed_by: second.fence });
    assert_eq!(again.unwrap(), refused);
    tx.rollback().await.unwrap();
    schemas.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_totals_match_the_rows() {
    // Goal: the sharded usage totals equal the count and byte sum of the record rows after
    // claims, completions, releases, take-overs and purges over many record ids.
    let schemas = Schemas::default();
    let store = Arc::new(schemas.open_with(|options| options.time_source(TimeSource::Caller)).await);
    for n in 0..40u64 {
        let key = id(if n % 2 == 0 { "alice" } else { "" }, &format!("k{n}"));
        let Decision::Execute(claim) = store.claim(&key, &fingerprint("a"), at(n), &policy()).await.unwrap() else {
            panic!("a new key executes")
        };
        match n % 4 {
            0 => assert_eq!(store.release(&key, claim.fence).await.unwrap(), Fenced::Applied),
            1 => {
                let body = "x".repeat(usize::try_from(n).unwrap() * 10);
                let completed = store.complete(&key, claim.fence, response(&body), at(n), &policy()).await;
                assert_eq!(completed.unwrap(), Fenced::Applied);
            }
            2 => {
                let _ = store.claim(&key, &fingerprint("a"), at(n + 5_000), &policy()).await.unwrap();
            }
            _ => {}
        }
    }
    let _ = store.purge_expired(at(14_000), 7).await.unwrap();
    let totals =
        format!("SELECT count(*), coalesce(sum(stored_bytes), 0)::int8 FROM \"{}\".idem_records", store.schema());
    let row = sqlx::query(AssertSqlSafe(totals)).fetch_one(store.pool()).await.unwrap();
    let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.records, usage.stored_bytes), (u64::try_from(rows).unwrap(), u64::try_from(bytes).unwrap()));
    assert!(usage.records > 0, "some records are left to count");
    schemas.close_all().await;
}

#[tokio::test]
async fn unreachable_database_says_how_to_start_it() {
    // Goal: opening a store where no PostgreSQL listens fails, once the open timeout has
    // passed (a refused connection is tried again: the server may be restarting), with a
    // message that says how to start one; invalid options are refused before connecting.
    let options = PostgresOptions::new("postgres://postgres@127.0.0.1:1/test").open_timeout(Duration::from_millis(500));
    let error = PostgresStore::open(options).await.expect_err("nothing listens on port 1");
    assert!(
        matches!(&error, OpenError::NotReady { last, .. } if matches!(**last, OpenError::Connect { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("pg_ctlcluster"), "{error}");
    let error = PostgresStore::open(PostgresOptions::new("postgres://u:secret@127.0.0.1:1/test").schema("Bad"))
        .await
        .expect_err("the schema name is refused");
    assert!(matches!(error, OpenError::InvalidOptions { .. }) && !error.to_string().contains("secret"), "{error}");
}
