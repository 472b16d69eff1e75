//! Separate and atomic mode behind one trait, so the consumer's state machine is written once.

use std::future::Future;

use idem_core::{AtomicStore, Claim, RecordId, Store, StoredOutcome};
use idem_once::{Executed, Heartbeat, Once};

use crate::handler::{AtomicHandler, Handler};
use crate::message::Message;

/// How a handler's execution commits: [`Separate`] or [`Atomic`]. Built by
/// [`crate::ConsumerBuilder::handler`] and [`crate::ConsumerBuilder::atomic`]; there is no
/// need to implement it.
pub trait Mode<S: Store>: Send + Sync + 'static {
    /// Runs the handler under `claim` while renewing it, and records its outcome.
    /// A failure comes back as its text, for the log.
    fn execute<'a>(
        &'a self,
        once: &'a Once<S>,
        id: &'a RecordId,
        claim: Claim,
        message: &'a Message<'a>,
        heartbeat: &'a impl Heartbeat,
    ) -> impl Future<Output = Executed<String>> + Send + 'a;

    /// The handler's hook for a completed record, before its ack.
    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send;

    /// `atomic` or `separate`, for logs.
    fn name(&self) -> &'static str;
}

/// Separate mode over any store, with a [`Handler`].
pub struct Separate<H>(pub(crate) H);

/// Atomic mode over an [`AtomicStore`], with an [`AtomicHandler`].
pub struct Atomic<H>(pub(crate) H);

impl<S: Store + 'static, H: Handler> Mode<S> for Separate<H> {
    async fn execute<'a>(
        &'a self,
        once: &'a Once<S>,
        id: &'a RecordId,
        claim: Claim,
        message: &'a Message<'a>,
        heartbeat: &'a impl Heartbeat,
    ) -> Executed<String> {
        let work = |scope| async move { self.0.handle(message, &scope).await };
        text(once.execute(id, claim, heartbeat, work).await)
    }

    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        self.0.replayed(message, outcome)
    }

    fn name(&self) -> &'static str {
        "separate"
    }
}

impl<S, H> Mode<S> for Atomic<H>
where
    S: AtomicStore + 'static,
    S::Connection: 'static,
    H: AtomicHandler<S>,
{
    async fn execute<'a>(
        &'a self,
        once: &'a Once<S>,
        id: &'a RecordId,
        claim: Claim,
        message: &'a Message<'a>,
        heartbeat: &'a impl Heartbeat,
    ) -> Executed<String> {
        let work = |scope| async move { self.0.handle(message, &scope).await };
        text(once.execute_atomic(id, claim, heartbeat, work).await)
    }

    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        self.0.replayed(message, outcome)
    }

    fn name(&self) -> &'static str {
        "atomic"
    }
}

fn text<F: std::fmt::Display>(executed: Executed<F>) -> Executed<String> {
    match executed {
        Executed::Completed(outcome) => Executed::Completed(outcome),
        Executed::Lost => Executed::Lost,
        Executed::Failed(failure) => Executed::Failed(failure.to_string()),
        Executed::Unrecorded { outcome, error } => Executed::Unrecorded { outcome, error },
    }
}
