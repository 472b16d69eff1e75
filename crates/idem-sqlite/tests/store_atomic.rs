//! SqliteStore on real SQLite files, atomic mode: `complete_in` inside the application's own
//! transaction, so the completion and the business row commit or roll back together.

mod common;

use common::{at, expect_claim, fingerprint, id, open, policy, replay, replay_of, response};
use idem_core::{Fenced, RecordState, Refusal, Store};
use idem_sqlite::SqliteStore;

async fn create_payments(store: &SqliteStore) {
    sqlx::query("CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .expect("the application's table is created");
}

async fn payments(store: &SqliteStore) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM payments ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("payments are readable")
}

#[tokio::test]
async fn atomic_completion_commits_with_business_row() {
    // Goal: a business row and complete_in in one transaction commit together; retries replay.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let stored = response("{\"payment_id\":\"pay_1\"}");
    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
    let outcome = t.store.complete_in(&mut tx, &id, claim.fence, stored.clone(), at(10), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Applied);
    tx.commit().await.unwrap();
    assert_eq!(payments(&t.store).await, ["pay_1"]);
    assert_eq!(t.store.claim(&id, &fp, at(20), &policy()).await.unwrap(), replay_of(stored, 10));
}

#[tokio::test]
async fn atomic_completion_with_stale_fence_rolls_back_business_row() {
    // Goal: a handler whose lease lapsed and was taken over gets Refused, and its rollback
    // removes its business row; the new claim is untouched (G1 in atomic mode).
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let stale = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let current = expect_claim(t.store.claim(&id, &fp, at(1_500), &policy()).await.unwrap());
    let before = t.store.get(&id).await.unwrap();

    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_stale', 100)").execute(&mut *tx).await.unwrap();
    let outcome =
        t.store.complete_in(&mut tx, &id, stale.fence, response("stale"), at(1_600), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Refused(Refusal::StaleFence { presented: stale.fence, current: current.fence }));
    tx.rollback().await.unwrap();

    assert!(payments(&t.store).await.is_empty(), "the stale handler's payment must not exist");
    assert_eq!(t.store.get(&id).await.unwrap(), before);
}

#[tokio::test]
async fn atomic_completion_twice_with_same_fence_is_refused() {
    // Goal: a second transaction completing with the fence that already completed is
    // refused, so its business writes (a second payment) roll back.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let mut usage_after_first = None;
    for (payment, expected) in [
        ("pay_1", Fenced::Applied),
        ("pay_2", Fenced::Refused(Refusal::AlreadyCompleted { completed_by: claim.fence })),
    ] {
        let mut tx = t.store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO payments VALUES (?1, 100)").bind(payment).execute(&mut *tx).await.unwrap();
        let outcome =
            t.store.complete_in(&mut tx, &id, claim.fence, response(payment), at(1), &policy()).await.unwrap();
        assert_eq!(outcome, expected);
        match outcome {
            Fenced::Applied => tx.commit().await.unwrap(),
            Fenced::Refused(_) => tx.rollback().await.unwrap(),
        }
        if payment == "pay_1" {
            usage_after_first = Some(t.store.usage().await.unwrap());
        }
    }
    assert_eq!(payments(&t.store).await, ["pay_1"], "the repeated completion's payment rolled back");
    assert_eq!(t.store.claim(&id, &fp, at(2), &policy()).await.unwrap(), replay("pay_1", 1));
    assert_eq!(Some(t.store.usage().await.unwrap()), usage_after_first, "the refusal wrote nothing");
}

#[tokio::test]
async fn atomic_completion_after_a_separate_completion_is_refused() {
    // Goal: complete_in with the fence that Store::complete already used is refused too
    // (the record holds a response from outside this transaction), so the business write rolls back.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let _ = t.store.complete(&id, claim.fence, response("separate"), at(1), &policy()).await.unwrap();
    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
    let outcome = t.store.complete_in(&mut tx, &id, claim.fence, response("atomic"), at(2), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Refused(Refusal::AlreadyCompleted { completed_by: claim.fence }));
    tx.rollback().await.unwrap();
    assert!(payments(&t.store).await.is_empty());
    assert_eq!(t.store.claim(&id, &fp, at(3), &policy()).await.unwrap(), replay("separate", 1));
}

#[tokio::test]
async fn dropped_atomic_transaction_leaves_claim_in_flight() {
    // Goal: a handler that completes but never commits (a crash) leaves no completion and no business row.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    {
        let mut tx = t.store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
        let _ = t.store.complete_in(&mut tx, &id, claim.fence, response("x"), at(1), &policy()).await.unwrap();
    }
    assert!(payments(&t.store).await.is_empty());
    let record = t.store.get(&id).await.unwrap().unwrap();
    assert!(matches!(record.state, RecordState::InFlight { .. }), "got {record:?}");
}
