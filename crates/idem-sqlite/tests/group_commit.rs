//! Group commit and atomic mode as one call ([`AtomicStore::complete_with`]) on real files:
//! jobs that share one transaction stay all-or-nothing each, one job's failure never
//! reaches another's writes, and deferred claim sync never reissues a fence.

mod common;

use std::time::Duration;

use common::{at, fingerprint, id, open, open_with, policy, response};
use idem_core::{AtomicStore, CommitError, Decision, Fence, Fenced, RecordId, RecordState, Store};
use idem_sqlite::sqlx::{self, SqliteConnection};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore};
use tokio::sync::oneshot;

const ORDERS: &str = "CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)";

async fn claim(store: &SqliteStore, id: &RecordId, now_ms: u64) -> Fence {
    match store.claim(id, &fingerprint("order"), at(now_ms), &policy()).await.expect("claim") {
        Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim.fence,
        other => panic!("expected to execute, got {other:?}"),
    }
}

async fn orders(store: &SqliteStore) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM orders ORDER BY id").fetch_all(store.pool()).await.expect("orders are readable")
}

/// Completes `id`'s claim together with one order row `order`.
async fn complete_with_order(
    store: &SqliteStore,
    id: &RecordId,
    fence: Fence,
    order: &str,
    now_ms: u64,
) -> Result<Fenced, CommitError<sqlx::Error>> {
    let order = order.to_owned();
    store
        .complete_with(id, fence, response(&order), at(now_ms), &policy(), move |tx: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO orders (id, amount) VALUES (?1, 100)").bind(order).execute(&mut *tx).await?;
                Ok(())
            })
        })
        .await
}

/// Waits, at most 5 s, until `jobs` jobs are queued behind the writer.
async fn until_queued(store: &SqliteStore, jobs: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.group_commit_stats().queued < jobs {
        assert!(tokio::time::Instant::now() < deadline, "{jobs} jobs never queued: {:?}", store.group_commit_stats());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A batch the writer is kept inside (a `write` job waiting on a channel), so that the
/// jobs submitted meanwhile queue up and go into the next group commit together.
struct HeldBatch {
    release: oneshot::Sender<()>,
    blocker: tokio::task::JoinHandle<Result<(), CommitError<sqlx::Error>>>,
}

impl HeldBatch {
    async fn start(store: &SqliteStore) -> HeldBatch {
        let (started, running) = oneshot::channel::<()>();
        let (release, held) = oneshot::channel::<()>();
        let blocker = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_tx: &mut SqliteConnection| {
                        Box::pin(async move {
                            let _ = started.send(());
                            let _ = held.await;
                            Ok(())
                        })
                    })
                    .await
            }
        });
        running.await.expect("the blocker runs");
        HeldBatch { release, blocker }
    }

    /// Lets the held batch commit, and waits for it.
    async fn finish(self) {
        self.release.send(()).expect("the blocker waits");
        self.blocker.await.expect("blocker task").expect("blocker commits");
    }
}

#[tokio::test]
async fn writes_and_completion_commit_together_and_a_retry_replays() {
    let temp = open().await;
    let store = &temp.store;
    sqlx::query(ORDERS).execute(store.pool()).await.expect("create orders");
    let id = id("alice", "order-1");
    let fence = claim(store, &id, 1_000).await;

    assert_eq!(complete_with_order(store, &id, fence, "ord_1", 1_100).await.expect("commit"), Fenced::Applied);

    let replay = store.claim(&id, &fingerprint("order"), at(1_200), &policy()).await.expect("claim");
    assert_eq!(replay, common::replay("ord_1", 1_100));
    assert_eq!(orders(store).await, ["ord_1"]);
    // The same fence cannot complete (and write) a second time.
    let again = complete_with_order(store, &id, fence, "ord_1b", 1_300).await.expect("answered");
    assert!(matches!(again, Fenced::Refused(_)), "{again:?}");
    assert_eq!(orders(store).await, ["ord_1"]);
}

#[tokio::test]
async fn a_claim_taken_over_writes_nothing() {
    let temp = open().await;
    let store = &temp.store;
    sqlx::query(ORDERS).execute(store.pool()).await.expect("create orders");
    let id = id("alice", "order-2");
    let stale = claim(store, &id, 1_000).await;
    // The 1 s lease lapses; a retry takes the claim over.
    let current = claim(store, &id, 2_500).await;
    assert_ne!(stale, current);

    let refused = complete_with_order(store, &id, stale, "ord_stale", 2_600).await.expect("answered");
    assert!(matches!(refused, Fenced::Refused(_)), "{refused:?}");
    assert!(orders(store).await.is_empty(), "the stale execution's order must not land (G1)");
    assert_eq!(complete_with_order(store, &id, current, "ord_2", 2_700).await.expect("commit"), Fenced::Applied);
    assert_eq!(orders(store).await, ["ord_2"]);
}

#[tokio::test]
async fn failed_writes_roll_back_and_leave_the_claim_in_flight() {
    let temp = open().await;
    let store = &temp.store;
    sqlx::query(ORDERS).execute(store.pool()).await.expect("create orders");
    let id = id("alice", "order-3");
    let fence = claim(store, &id, 1_000).await;

    let failed = store
        .complete_with(&id, fence, response("x"), at(1_100), &policy(), |tx: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO orders (id, amount) VALUES ('ord_x', 1)").execute(&mut *tx).await?;
                sqlx::query("INSERT INTO no_such_table VALUES (1)").execute(&mut *tx).await?;
                Ok(())
            })
        })
        .await;
    assert!(matches!(failed, Err(CommitError::Writes(_))), "{failed:?}");
    assert!(orders(store).await.is_empty(), "the first insert rolled back with the failed one");
    let record = store.get(&id).await.expect("get").expect("still held");
    assert!(matches!(record.state, RecordState::InFlight { .. }), "{record:?}");
    assert_eq!(complete_with_order(store, &id, fence, "ord_3", 1_200).await.expect("commit"), Fenced::Applied);
}

/// 48 completions queue behind a held batch and commit together as one transaction. In
/// that same transaction one job breaks a constraint, one is refused and one panics: only
/// their own writes are rolled back.
#[tokio::test]
async fn one_group_commit_keeps_each_jobs_failure_to_itself() {
    let temp = open().await;
    let store = temp.store.clone();
    sqlx::query(ORDERS).execute(store.pool()).await.expect("create orders");
    sqlx::query("INSERT INTO orders (id, amount) VALUES ('ord_taken', 1)").execute(store.pool()).await.expect("seed");

    let mut claims = Vec::new();
    for n in 0..48 {
        let id = id("bob", &format!("k{n}"));
        let fence = claim(&store, &id, 1_000).await;
        claims.push((id, fence));
    }

    // Hold the writer inside a first batch until every other job is queued.
    let held = HeldBatch::start(&store).await;
    let before = store.group_commit_stats();

    let mut jobs = Vec::new();
    for (n, (id, fence)) in claims.into_iter().enumerate() {
        let store = store.clone();
        let (fence, order) = match n {
            0 => (fence, "ord_taken".to_owned()), // breaks the primary key
            1 => (Fence::new(fence.get() + 1_000_000), format!("ord_{n}")), // not this claim's fence
            _ => (fence, format!("ord_{n}")),
        };
        jobs.push(tokio::spawn(async move {
            if n == 2 {
                let panicked = store
                    .complete_with(&id, fence, response("p"), at(1_100), &policy(), |_tx: &mut SqliteConnection| {
                        Box::pin(async move { panic!("a handler bug inside the writes") })
                    })
                    .await;
                return panicked.map_err(|error| error.to_string());
            }
            complete_with_order(&store, &id, fence, &order, 1_100).await.map_err(|error| error.to_string())
        }));
    }
    until_queued(&store, 48).await;
    held.finish().await;

    let mut answers = Vec::new();
    for job in jobs {
        answers.push(job.await.expect("job task"));
    }
    let after = store.group_commit_stats();
    assert_eq!(after.commits - before.commits, 2, "the held batch, then all 48 in one: {before:?} {after:?}");
    assert_eq!(after.failed_batches, 0);

    assert!(matches!(answers[0], Err(ref error) if error.contains("business writes failed")), "{:?}", answers[0]);
    assert!(matches!(answers[1], Ok(Fenced::Refused(_))), "{:?}", answers[1]);
    assert!(answers[2].is_err(), "{:?}", answers[2]);
    assert!(answers[3..].iter().all(|answer| *answer == Ok(Fenced::Applied)), "{answers:?}");
    let mut expected: Vec<String> = (3..48).map(|n| format!("ord_{n}")).collect();
    expected.push("ord_taken".to_owned());
    expected.sort();
    assert_eq!(orders(&store).await, expected);
    for n in 0..3 {
        let record = store.get(&id("bob", &format!("k{n}"))).await.expect("get").expect("held");
        assert!(matches!(record.state, RecordState::InFlight { .. }), "job {n} should still be in flight: {record:?}");
    }
    // The writer survived the panic.
    let (later, fence) = (id("bob", "later"), claim(&store, &id("bob", "later"), 1_200).await);
    let later_answer = complete_with_order(&store, &later, fence, "ord_later", 1_300).await.expect("commit");
    assert_eq!(later_answer, Fenced::Applied);
}

#[tokio::test]
async fn deferred_claim_sync_skips_every_fence_a_crash_can_have_lost_when_it_opens() {
    let dir = common::temp_dir(true);
    let options = || SqliteOptions::new(dir.path().join("idem.db")).claim_sync(ClaimSync::Deferred);
    let store = SqliteStore::open(options()).await.expect("open");
    let first = claim(&store, &id("", "a"), 1_000).await;
    store.close().await;

    let store = SqliteStore::open(options()).await.expect("reopen");
    let next = claim(&store, &id("", "b"), 1_000).await;
    assert!(next.get() >= first.get() + (1 << 20), "fence {next:?} after reopen is within the gap of {first:?}");
    store.close().await;

    // The default syncs every commit and needs no gap.
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("idem.db"))).await.expect("reopen");
    let after = claim(&store, &id("", "c"), 1_000).await;
    assert_eq!(after.get(), next.get() + 1);
}

#[tokio::test]
async fn a_closed_store_refuses_writes_instead_of_hanging() {
    let temp = open_with(|options| options).await;
    temp.store.close().await;
    let refused = temp.store.claim(&id("", "k"), &fingerprint("x"), at(1), &policy()).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn jobs_in_one_batch_see_each_others_outcomes() {
    // Goal: the batch decides its jobs one after the other on its view, so 16 claims of one
    // new key in one group commit admit exactly one execution (the rest conflict), and 16
    // claims of distinct keys get distinct fences; what the batch wrote back matches what
    // it answered (rows, fences, usage).
    let temp = open().await;
    let store = temp.store.clone();
    let held = HeldBatch::start(&store).await;
    let claims: Vec<_> = (0..32)
        .map(|n| {
            let store = store.clone();
            let key = if n < 16 { id("carol", "same") } else { id("carol", &format!("k{n}")) };
            tokio::spawn(async move { store.claim(&key, &fingerprint("order"), at(1_000), &policy()).await })
        })
        .collect();
    until_queued(&store, 32).await;
    let before = store.group_commit_stats();
    held.finish().await;

    let mut answers = Vec::new();
    for claim in claims {
        answers.push(claim.await.expect("claim task").expect("claim"));
    }
    let after = store.group_commit_stats();
    assert_eq!(after.commits - before.commits, 2, "the held batch, then the 32 claims in one: {after:?}");
    let executions = answers[..16].iter().filter(|answer| answer.claim().is_some()).count();
    assert_eq!(executions, 1, "one execution of the shared key: {answers:?}");
    assert!(
        answers[..16].iter().filter(|answer| answer.claim().is_none()).all(|a| matches!(a, Decision::Conflict { .. }))
    );
    let mut fences: Vec<Fence> = answers.iter().filter_map(|answer| answer.claim().map(|claim| claim.fence)).collect();
    fences.sort();
    fences.dedup();
    assert_eq!(fences.len(), 17, "17 executions, 17 distinct fences: {answers:?}");
    let held = store.get(&id("carol", "same")).await.expect("get").expect("held");
    assert!(fences.contains(&held.fence), "the row holds the fence that was answered");
    assert_eq!(store.usage().await.expect("usage").records, 17);
}
