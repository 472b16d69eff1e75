//! The round trips each PostgresStore operation takes, as the crate docs state them,
//! counted as the statements sqlx sends.
//!
//! This test is alone in its binary on purpose. It counts sqlx's `sqlx::query` tracing
//! events with a subscriber set for its own thread, and tracing caches whether a callsite
//! is wanted process-wide: a test on another thread that reaches sqlx's callsites at the
//! same moment can leave them cached as unwanted, and this test then counts 0 (seen in a
//! full parallel run). With no other test in the process, nothing races it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Schemas, fingerprint, id, policy, response};
use idem_core::{AtomicStore, Decision, Fenced, Refusal, Store, Timestamp, WritesFuture};
use idem_postgres::{PostgresStore, TimeSource};
use sqlx::AssertSqlSafe;

async fn execute(store: &PostgresStore, schema_sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(schema_sql.to_owned())).execute(store.pool()).await.expect("the test's SQL runs");
}

/// Counts the statements sqlx sends on the current thread (its `sqlx::query` events).
struct StatementCounter {
    statements: Arc<AtomicUsize>,
}

impl tracing::Subscriber for StatementCounter {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "sqlx::query"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "sqlx::query" {
            self.statements.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Business writes of one statement: `insert`, bound to the key `k1`.
fn one_insert(
    insert: String,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> WritesFuture<'c, sqlx::Error> + Send + 'static {
    move |connection| {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(insert)).bind("k1").execute(&mut *connection).await?;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn operations_take_the_round_trips_the_docs_state() {
    // Goal: the round trips the crate docs promise, counted as the statements sqlx sends:
    // a claim that executes is two (the read, the guarded write), a completion one, a
    // replay one; in atomic mode complete_in adds one statement to the caller's transaction
    // when the claim is still the caller's, and two when it must refuse.
    let statements = Arc::new(AtomicUsize::new(0));
    let _counting = tracing::subscriber::set_default(StatementCounter { statements: Arc::clone(&statements) });
    let schemas = Schemas::default();
    let store = schemas.open_with(|options| options.time_source(TimeSource::Database)).await;
    let payments = format!("\"{}\".payments", store.schema());
    execute(&store, &format!("CREATE TABLE {payments} (key TEXT NOT NULL)")).await;
    let insert = format!("INSERT INTO {payments} (key) VALUES ($1)");
    // The statements sent since the last call.
    let sent = || statements.swap(0, Ordering::Relaxed);
    let (alice, bob) = (id("alice", "k1"), id("bob", "k1"));
    let now = Timestamp::EPOCH;

    sent();
    let Decision::Execute(first) = store.claim(&alice, &fingerprint("a"), now, &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    assert_eq!(sent(), 2, "a claim that executes");
    let conflict = store.claim(&alice, &fingerprint("a"), now, &policy()).await.unwrap();
    assert!(matches!(conflict, Decision::Conflict { .. }), "{conflict:?}");
    assert_eq!(sent(), 1, "a conflict");
    let done = store.complete(&alice, first.fence, response("ok"), now, &policy()).await;
    assert_eq!(done.unwrap(), Fenced::Applied);
    assert_eq!(sent(), 1, "a completion");
    let replay = store.claim(&alice, &fingerprint("a"), now, &policy()).await.unwrap();
    assert!(matches!(replay, Decision::Replay { .. }), "{replay:?}");
    assert_eq!(sent(), 1, "a replay");

    let Decision::Execute(second) = store.claim(&bob, &fingerprint("b"), now, &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query(AssertSqlSafe(insert.clone())).bind("k1").execute(&mut *tx).await.unwrap();
    sent();
    let done = store.complete_in(&mut tx, &bob, second.fence, response("ok"), now, &policy()).await;
    assert_eq!(done.unwrap(), Fenced::Applied);
    assert_eq!(sent(), 1, "complete_in that applies adds one statement to the caller's transaction");
    tx.commit().await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    sent();
    let again = store.complete_in(&mut tx, &bob, second.fence, response("ok"), now, &policy()).await;
    assert_eq!(again.unwrap(), Fenced::Refused(Refusal::AlreadyCompleted { completed_by: second.fence }));
    assert_eq!(sent(), 2, "complete_in that refuses adds two");
    tx.rollback().await.unwrap();

    // complete_with: BEGIN, the writes (one insert here), the guarded completion, COMMIT;
    // refused: BEGIN, the writes, the guarded completion and the locked read, ROLLBACK.
    // sqlx sends BEGIN from its transaction manager without a `sqlx::query` event (as for
    // begin_write above), so the counts below are one short of the round trips.
    let carol = id("carol", "k1");
    let Decision::Execute(third) = store.claim(&carol, &fingerprint("c"), now, &policy()).await.unwrap() else {
        panic!("a new key executes")
    };
    sent();
    let done =
        store.complete_with(&carol, third.fence, response("ok"), now, &policy(), one_insert(insert.clone())).await;
    assert_eq!(done.unwrap(), Fenced::Applied);
    assert_eq!(sent(), 3, "complete_with that applies: (BEGIN,) one write, one completion, COMMIT");
    let again =
        store.complete_with(&carol, third.fence, response("ok"), now, &policy(), one_insert(insert.clone())).await;
    assert_eq!(again.unwrap(), Fenced::Refused(Refusal::AlreadyCompleted { completed_by: third.fence }));
    assert_eq!(sent(), 4, "complete_with that refuses: (BEGIN,) one write, two, ROLLBACK");
    schemas.close_all().await;
}
