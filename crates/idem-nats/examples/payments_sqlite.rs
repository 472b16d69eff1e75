//! A payments consumer on NATS JetStream with SQLite in atomic mode: each payment row
//! commits in the same transaction as its message's idempotency record, so a payment is
//! written once per `Nats-Msg-Id` however often JetStream delivers it (an ack lost, a
//! crash mid-message, a duplicate published after the stream's duplicate window).
//!
//! ```text
//! cargo run -p idem-nats --example payments_sqlite            # consume stream `payments` until Ctrl-C
//! cargo run -p idem-nats --example payments_sqlite -- --demo  # publish 3 (one twice), check, exit
//! ```
//!
//! `NATS_URL` (default `127.0.0.1:4222`) and `PAYMENTS_DB` (default `payments.db`) say
//! where the server and the database are. The stream `payments` (subjects `payments.>`)
//! and its durable consumer `payments-app` are made if missing. A demo run uses a stream
//! and a database of its own, removed at the end.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::{self, RetentionPolicy::WorkQueue};
use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Message};
use idem_core::Policy;
use idem_nats::{NatsOptions, NatsTransport, recommended_consumer};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore, sqlx};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(serde::Deserialize)]
struct Payment {
    amount_cents: i64,
}

#[derive(serde::Serialize)]
struct Receipt<'a> {
    payment: &'a str,
    amount_cents: i64,
}

/// The handler: parse and compute outside the store's lock, write in its transaction. The
/// payment's id is the message's key (its `Nats-Msg-Id`).
struct Payments;

impl AtomicHandler<SqliteStore> for Payments {
    type Error = serde_json::Error;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<SqliteStore>, Self::Error> {
        let Payment { amount_cents } = serde_json::from_slice(message.payload())?;
        let id = message.id().key.as_str().to_owned();
        let receipt = idem_once::json(&Receipt { payment: &id, amount_cents })?;
        Ok(Commit::new(receipt, move |tx| {
            Box::pin(async move {
                let insert = sqlx::query("INSERT INTO payments (id, amount_cents) VALUES (?, ?)");
                insert.bind(id).bind(amount_cents).execute(&mut *tx).await?;
                Ok(())
            })
        }))
    }
}

/// No unique constraint: idem is what keeps it to one row per payment (the demo checks).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS payments (id TEXT NOT NULL, amount_cents INTEGER NOT NULL)";

/// The durable consumer's name: part of every record's principal (`nats:payments/payments-app`).
const DURABLE: &str = "payments-app";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let demo = std::env::args().any(|arg| arg == "--demo");
    let (url, name, db) = demo::settings(demo);
    // The glue: connect, open the store and its table, make the stream and the durable if missing, consume.
    let js = jetstream::new(async_nats::connect(&url).await?);
    let store = Arc::new(SqliteStore::open(SqliteOptions::new(&db).claim_sync(ClaimSync::Deferred)).await?);
    sqlx::query(SCHEMA).execute(store.pool()).await?;
    let subjects = vec![format!("{name}.>")];
    let config = stream::Config { name: name.clone(), subjects, retention: WorkQueue, ..demo::window(demo) };
    let stream = js.get_or_create_stream(config).await?;
    stream.get_or_create_consumer(DURABLE, recommended_consumer(DURABLE, &Policy::DEFAULT, 64, 1)).await?;
    let transport = NatsTransport::open(&js, &name, DURABLE, NatsOptions::default()).await?;
    let consumer = Consumer::builder(Arc::clone(&store), transport).atomic(Payments)?;
    let (until, published) = demo::until(demo, &js, &name); // Ctrl-C; with --demo: publish until all acked
    let drained = consumer.run_until(until).await;
    demo::check(published, drained, &js, &store, &name, &db).await?; // nothing without --demo
    store.close().await;
    Ok(())
}

/// `--demo`: publish, consume, check, clean up; what CI runs.
mod demo {
    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::pin::Pin;
    use std::sync::Mutex;

    use async_nats::jetstream::context::Context;
    use idem_consumer::Drained;

    use super::*;

    /// The demo's stream forgets `Nats-Msg-Id`s after half a second, so a duplicate
    /// published later reaches the consumer and only idem stands between it and a second row.
    const WINDOW: Duration = Duration::from_millis(500);

    /// What the publishing said, once it is done; `None` without `--demo`.
    pub(super) type Published = Option<Arc<Mutex<Option<Result<(), String>>>>>;

    /// The server, the stream's name and the database: the real ones, or the demo's own.
    pub(super) fn settings(demo: bool) -> (String, String, PathBuf) {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned());
        if demo {
            let name = format!("payments_demo_{}", std::process::id());
            let db = std::env::temp_dir().join(format!("{name}.db"));
            return (url, name, db);
        }
        (url, "payments".to_owned(), std::env::var("PAYMENTS_DB").unwrap_or_else(|_| "payments.db".to_owned()).into())
    }

    /// A stream config's defaults, with the demo's short duplicate window.
    pub(super) fn window(demo: bool) -> stream::Config {
        let duplicate_window = if demo { WINDOW } else { stream::Config::default().duplicate_window };
        stream::Config { duplicate_window, ..Default::default() }
    }

    /// When the consumer stops: at Ctrl-C, or once the demo's messages are all acked.
    pub(super) fn until(demo: bool, js: &Context, name: &str) -> (Pin<Box<dyn Future<Output = ()> + Send>>, Published) {
        if !demo {
            return (Box::pin(async { tokio::signal::ctrl_c().await.unwrap_or_default() }), None);
        }
        let slot = Arc::new(Mutex::new(None));
        let (js, name, done) = (js.clone(), name.to_owned(), Arc::clone(&slot));
        let publishing = async move {
            let result = publish(&js, &name).await.map_err(|error| error.to_string());
            *done.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
        };
        (Box::pin(publishing), Some(slot))
    }

    /// Checks one payment row per id, prints the summary and removes the demo's stream and database.
    #[expect(clippy::print_stdout, reason = "the demo's summary is its output")]
    pub(super) async fn check(
        published: Published,
        drained: Drained,
        js: &Context,
        store: &SqliteStore,
        name: &str,
        db: &Path,
    ) -> Result<(), BoxError> {
        let Some(published) = published else { return Ok(()) };
        let count = "SELECT id, COUNT(*) FROM payments GROUP BY id ORDER BY id";
        let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(count).fetch_all(store.pool()).await;
        js.delete_stream(name).await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let published = published.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        published.unwrap_or_else(|| Err("the publishing did not finish".to_owned()))?;
        let rows = rows?;
        let expected = ["pay-1", "pay-2", "pay-3"].map(|id| (id.to_owned(), 1_i64));
        if rows != expected {
            return Err(format!("expected one payment row per id, found {rows:?}").into());
        }
        println!("demo: 4 publishes (pay-2 twice, the second after the stream's {WINDOW:?} duplicate window),");
        println!("      {} deliveries settled, all acked, one payment row each: {rows:?}", drained.settled);
        Ok(())
    }

    async fn publish(js: &Context, name: &str) -> Result<(), BoxError> {
        let subject = format!("{name}.card");
        let subject = subject.as_str();
        let publish = |id: &'static str, cents: i64| {
            let message = jetstream::message::PublishMessage::build().message_id(id);
            let message = message.payload(format!("{{\"amount_cents\":{cents}}}").into());
            async move { js.send_publish(subject.to_owned(), message).await?.await }
        };
        for (id, cents) in [("pay-1", 1000), ("pay-2", 2500), ("pay-3", 4200)] {
            publish(id, cents).await?;
        }
        all_acked(js, name).await?;
        tokio::time::sleep(WINDOW * 2).await; // past the window: the stream keeps the duplicate
        let again = publish("pay-2", 2500).await?;
        if again.duplicate {
            return Err("the stream dropped the late duplicate; the demo needs it delivered".into());
        }
        all_acked(js, name).await
    }

    /// Waits (at most 30 s) until the durable has nothing pending and nothing unacked.
    async fn all_acked(js: &Context, name: &str) -> Result<(), BoxError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let consumer: jetstream::consumer::PullConsumer = js.get_stream(name).await?.get_consumer(DURABLE).await?;
            let info = consumer.get_info().await?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let left = (info.num_pending, info.num_ack_pending);
                return Err(format!("not all acked within 30 s: (pending, unacked) = {left:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
