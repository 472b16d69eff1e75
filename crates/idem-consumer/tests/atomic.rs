//! Atomic mode on a real SQLite file: the payment row and the completion commit together,
//! once per key, and the ack follows the commit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ACK_WAIT, policy, until_settled};
use idem_consumer::testing::{MemoryBroker, State};
use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Message};
use idem_core::StoredOutcome;
use idem_sqlite::{SqliteOptions, SqliteStore};

struct Payments;

#[derive(Debug, thiserror::Error)]
#[error("not a payment")]
struct NotAPayment;

impl AtomicHandler<SqliteStore> for Payments {
    type Error = NotAPayment;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<SqliteStore>, NotAPayment> {
        let amount: i64 =
            std::str::from_utf8(message.payload()).ok().and_then(|s| s.parse().ok()).ok_or(NotAPayment)?;
        let key = message.id().key.as_str().to_owned();
        Ok(Commit::new(StoredOutcome::bytes(format!("paid {amount}")), move |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO payments (id, amount) VALUES (?, ?)")
                    .bind(key)
                    .bind(amount)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            })
        }))
    }
}

#[tokio::test]
async fn each_payment_row_commits_once_with_its_record() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("idem.db"))).await.expect("opens");
    // No key constraint: a second run for a key would show as a second row, not an error.
    sqlx::query("CREATE TABLE payments (id TEXT NOT NULL, amount INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .expect("table");
    let store = Arc::new(store);
    let broker = MemoryBroker::new(ACK_WAIT);
    for n in 0..30 {
        broker.publish(Some(&format!("p{}", n % 12)), "payments", format!("{}", n % 12));
    }
    let consumer = Consumer::builder(Arc::clone(&store), broker.transport("memory:payments/ledger"))
        .policy(policy())
        .in_flight_max(8)
        .atomic(Payments)
        .expect("valid settings");
    let drained = consumer.run_until(until_settled(&broker, Duration::from_secs(60))).await;
    assert!(drained.settled >= 30, "every copy settled, conflicts naked and redelivered: {drained:?}");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, count(*) FROM payments GROUP BY id").fetch_all(store.pool()).await.expect("reads");
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "one row per key: {rows:?}");
    assert!(broker.messages().values().all(|m| m.state == State::Acked));
}
