//! The consumer side of the consumer-level tests: a payments handler in atomic mode (its
//! payment row commits with the record's completion), and a consumer running in the
//! background until told to stop.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Drained, Message, OnConflict};
use idem_core::{Policy, StoredOutcome};
use idem_postgres::PostgresStore;
use idem_postgres::sqlx::{self, AssertSqlSafe, PgConnection};
use idem_rabbitmq::RabbitTransport;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::common::pg::insert_payment;

/// Makes a handler wait in the middle of a message until the test lets it go.
#[derive(Default)]
pub struct Gate {
    pub entered: Notify,
    pub release: Notify,
}

/// Writes one payment row per execution, in the completion's transaction; counts runs.
#[derive(Clone)]
pub struct Payments {
    pub schema: String,
    pub runs: Arc<AtomicUsize>,
    /// Runs whose delivery the broker marked redelivered.
    pub redelivered: Arc<AtomicUsize>,
    /// Each run's delivery attempt, as the broker counted it.
    pub attempts: Arc<Mutex<Vec<Option<u32>>>>,
    pub gate: Option<Arc<Gate>>,
}

impl Payments {
    pub fn new(schema: &str) -> Payments {
        Payments {
            schema: schema.to_owned(),
            runs: Arc::default(),
            redelivered: Arc::default(),
            attempts: Arc::default(),
            gate: None,
        }
    }

    pub fn gated(schema: &str, gate: Arc<Gate>) -> Payments {
        Payments { gate: Some(gate), ..Payments::new(schema) }
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    pub fn attempts(&self) -> Vec<Option<u32>> {
        self.attempts.lock().expect("no panic while holding").clone()
    }

    pub fn redelivered_runs(&self) -> usize {
        self.redelivered.load(Ordering::SeqCst)
    }
}

impl AtomicHandler<PostgresStore> for Payments {
    type Error = std::convert::Infallible;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<PostgresStore>, Self::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.attempts.lock().expect("no panic while holding").push(message.attempt());
        if message.redelivered() {
            self.redelivered.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(gate) = &self.gate {
            gate.entered.notify_one();
            gate.release.notified().await;
        }
        let insert = insert_payment(&self.schema);
        let id = message.id().key.as_str().to_owned();
        let body = message.payload().to_vec();
        let outcome = StoredOutcome::bytes(format!("paid {id}"));
        Ok(Commit::new(outcome, move |connection: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).bind(id).bind(body).execute(&mut *connection).await?;
                Ok(())
            })
        }))
    }
}

/// The lease the tests use: short, so a dead holder's claim lapses quickly.
pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(2), Duration::from_secs(600)).expect("lease under retention")
}

/// A consumer running on its own task until [`Running::stop`].
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Running {
    /// Starts an atomic-mode consumer of `transport` with the test policy, waiting on
    /// conflicts (the RabbitMQ recommendation).
    pub fn start(
        store: &PostgresStore,
        transport: RabbitTransport,
        handler: Payments,
        in_flight_max: usize,
    ) -> Running {
        let consumer = Consumer::builder(Arc::new(store.clone()), transport)
            .policy(policy())
            .in_flight_max(in_flight_max)
            .drain_max(Duration::from_secs(5))
            .on_conflict(OnConflict::Wait { max: Duration::from_secs(10) })
            .atomic(handler)
            .expect("the consumer's settings fit");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(consumer.run_until(async move {
            let _ = stopped.await;
        }));
        Running { stop: Some(stop), task }
    }

    /// Shuts the consumer down and waits (bounded) for its drain.
    pub async fn stop(mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("the consumer drains within 15 s")
            .expect("the consumer task does not panic")
    }
}
