//! The consumer-level tests' payments service: an atomic handler that writes one row per
//! run into a SQLite file shared with the idem store, with knobs to slow, fail or block it.
//! The payments table has no unique key, so a second run of a message would show as a
//! second row instead of a failed insert.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_consumer::{
    AtomicHandler, ClaimScope, Commit, Consumer, ConsumerBuilder, DeliveryInfo, Drained, KeyFrom, Message, Transport,
};
use idem_core::{Policy, StoredOutcome};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore, sqlx};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// The consumers' `ack_wait`: lease + renewal interval, rounded up (lib.rs's advice).
pub const ACK_WAIT: Duration = Duration::from_secs(3);

/// A 2 s lease (renewed every 2/3 s), so a crashed holder's claim lapses before `ACK_WAIT`.
pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(2), Duration::from_secs(3600)).expect("policy")
}

/// The key: the message's `Nats-Msg-Id`, else the payload up to its first `:` (messages
/// published without an id carry their key in the payload, as `key:amount`).
pub fn key_of(info: &dyn DeliveryInfo) -> Option<String> {
    payment_id(info.message_id(), info.payload())
}

/// The payment a message is about, by the same rule; the handler's row says this, not the
/// record's key, so a wrong key function shows as a second row for one payment.
pub fn payment_id(message_id: Option<&str>, payload: &[u8]) -> Option<String> {
    if let Some(id) = message_id {
        return Some(id.to_owned());
    }
    let payload = std::str::from_utf8(payload).ok()?;
    payload.split_once(':').map(|(key, _)| key.to_owned())
}

pub async fn open_store(path: &Path) -> Arc<SqliteStore> {
    let options = SqliteOptions::new(path).claim_sync(ClaimSync::Deferred);
    let store = SqliteStore::open(options).await.expect("open the SQLite store");
    let schema = "CREATE TABLE IF NOT EXISTS payments (key TEXT NOT NULL, payload BLOB NOT NULL)";
    sqlx::query(schema).execute(store.pool()).await.expect("payments table");
    Arc::new(store)
}

/// Payment rows per key.
pub async fn rows(store: &SqliteStore) -> BTreeMap<String, i64> {
    let query = sqlx::query_as::<_, (String, i64)>("SELECT key, COUNT(*) FROM payments GROUP BY key");
    query.fetch_all(store.pool()).await.expect("count payments").into_iter().collect()
}

/// What the handler saw: each run (key, attempt) and each replay (key).
#[derive(Default)]
pub struct Log {
    pub runs: Mutex<Vec<(String, Option<u32>)>>,
    pub replays: Mutex<Vec<String>>,
    failed: Mutex<HashSet<String>>,
}

impl Log {
    pub fn runs(&self) -> Vec<(String, Option<u32>)> {
        self.runs.lock().expect("log").clone()
    }
    pub fn replays(&self) -> Vec<String> {
        self.replays.lock().expect("log").clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the handler failed as the test planned")]
pub struct Planned;

/// The payments handler, with test knobs.
#[derive(Default)]
pub struct Payments {
    pub log: Arc<Log>,
    /// Each run sleeps this long before returning its writes.
    pub hold: Duration,
    /// Each run waits for a permit of this semaphore first (a gate the test opens).
    pub gate: Option<Arc<Semaphore>>,
    /// These keys fail on their first run.
    pub fail_first: HashSet<String>,
    /// The writes insert the row, create this file, and never finish (the test kills the process).
    pub block_in_writes: Option<PathBuf>,
}

impl AtomicHandler<SqliteStore> for Payments {
    type Error = Planned;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<SqliteStore>, Planned> {
        let key = message.id().key.as_str().to_owned();
        let payment = payment_id(message.message_id(), message.payload()).unwrap_or_else(|| key.clone());
        self.log.runs.lock().expect("log").push((key.clone(), message.attempt()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if self.fail_first.contains(&key) && self.log.failed.lock().expect("log").insert(key.clone()) {
            return Err(Planned);
        }
        tokio::time::sleep(self.hold).await;
        let payload = message.payload().to_vec();
        let block = self.block_in_writes.clone();
        let outcome = StoredOutcome::bytes(format!("paid {key}"));
        Ok(Commit::new(outcome, move |tx| {
            Box::pin(async move {
                let insert = sqlx::query("INSERT INTO payments (key, payload) VALUES (?, ?)");
                insert.bind(payment).bind(payload).execute(&mut *tx).await?;
                if let Some(marker) = block {
                    std::fs::write(&marker, b"in the transaction").expect("write the marker");
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }))
    }

    async fn replayed(&self, message: &Message<'_>, _outcome: &StoredOutcome) {
        self.log.replays.lock().expect("log").push(message.id().key.as_str().to_owned());
    }
}

/// A consumer running on its own task until [`Running::stop`].
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Drained>,
}

/// Builds the test consumer (lease [`policy`], keys by [`key_of`]), lets `tweak` change
/// the builder, and runs it.
pub fn run<T: Transport>(
    store: Arc<SqliteStore>,
    transport: T,
    handler: impl AtomicHandler<SqliteStore>,
    tweak: impl FnOnce(ConsumerBuilder<T, SqliteStore>) -> ConsumerBuilder<T, SqliteStore>,
) -> Running {
    let builder = Consumer::builder(store, transport).policy(policy()).key_from(KeyFrom::Fn(key_of));
    let consumer = tweak(builder).atomic(handler).expect("the consumer's settings fit the broker's");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run_until(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    /// Shuts the consumer down and returns what it drained.
    pub async fn stop(self) -> Drained {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(40), self.task).await {
            Ok(drained) => drained.expect("the consumer task"),
            Err(_) => panic!("the consumer did not stop within 40 s of its shutdown"),
        }
    }
}

/// Asserts every key has exactly one payment row and there are no others.
pub fn assert_one_row_each(rows: &BTreeMap<String, i64>, keys: impl IntoIterator<Item = String>) {
    let keys: HashSet<String> = keys.into_iter().collect();
    let doubled: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "keys with other than one payment row: {doubled:?}");
    let missing: Vec<_> = keys.iter().filter(|k| !rows.contains_key(*k)).collect();
    assert!(missing.is_empty(), "keys with no payment row: {missing:?}");
    assert_eq!(rows.len(), keys.len(), "payment rows for keys never published");
}
