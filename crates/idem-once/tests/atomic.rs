//! Atomic mode on a real SQLite file: the business writes and the completion commit in one
//! transaction, or neither does (SPEC atomic mode, G1 across lease lapses, G7).

mod common;

use std::sync::Arc;

use common::{TokioClock, fingerprint, id, policy};
use idem_core::{RecordState, Store, StoredOutcome};
use idem_once::{Commit, Failure, Once, Ran};
use idem_sqlite::{SqliteOptions, SqliteStore};
use sqlx::Row;

async fn store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("idem.db"))).await.expect("the store opens");
    sqlx::query("CREATE TABLE payments (id TEXT PRIMARY KEY)").execute(store.pool()).await.expect("table");
    Arc::new(store)
}

async fn payments(store: &SqliteStore) -> Vec<String> {
    let rows = sqlx::query("SELECT id FROM payments ORDER BY id").fetch_all(store.pool()).await.expect("reads");
    rows.iter().map(|row| row.get::<String, _>("id")).collect()
}

fn pay(id: &'static str) -> Commit<SqliteStore> {
    Commit::new(StoredOutcome::bytes(id), move |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO payments (id) VALUES (?)").bind(id).execute(&mut *tx).await?;
            Ok(())
        })
    })
}

#[tokio::test]
async fn the_writes_commit_with_the_completion_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = store(&dir).await;
    let once = Once::new(Arc::clone(&store), policy()).with_clock(TokioClock::new());
    for _ in 0..3 {
        let ran = once.run_atomic(&id("p1"), &fingerprint("5"), |_| async { Ok::<_, std::io::Error>(pay("p1")) }).await;
        assert!(matches!(ran, Ok(Ran::Executed { .. } | Ran::Replayed { .. })), "{ran:?}");
    }
    assert_eq!(payments(&store).await, ["p1"], "one payment row for three runs");
    let record = store.get(&id("p1")).await.expect("reads").expect("kept");
    assert!(matches!(record.state, RecordState::Completed { .. }), "{record:?}");
}

#[tokio::test]
async fn failed_writes_commit_nothing_and_release_the_claim() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = store(&dir).await;
    let once = Once::new(Arc::clone(&store), policy()).with_clock(TokioClock::new());
    let failing = Commit::new(StoredOutcome::bytes("x"), |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO payments (id) VALUES ('p2')").execute(&mut *tx).await?;
            sqlx::query("INSERT INTO no_such_table VALUES (1)").execute(&mut *tx).await?;
            Ok(())
        })
    });
    let ran = once.run_atomic(&id("p2"), &fingerprint("5"), |_| async { Ok::<_, std::io::Error>(failing) }).await;
    assert!(matches!(ran, Ok(Ran::Failed(Failure::Writes(_)))), "{ran:?}");
    assert!(payments(&store).await.is_empty(), "the first write rolled back with the rest");
    assert!(store.get(&id("p2")).await.expect("reads").is_none(), "the claim was released");
}
