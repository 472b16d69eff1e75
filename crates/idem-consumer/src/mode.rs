//! Separate and atomic mode behind one trait, so the consumer's state machine is written once.

use std::future::Future;

use idem_core::{AtomicStore, Claim, RecordId, Store, StoredOutcome};
use idem_once::{Executed, Failure, Heartbeat, Once};

use crate::handler::{AtomicHandler, Handler};
use crate::message::Message;

/// How a handler's execution commits: [`Separate`] or [`Atomic`]. Built by
/// [`crate::ConsumerBuilder::handler`] and [`crate::ConsumerBuilder::atomic`]; there is no
/// need to implement it.
pub trait Mode<S: Store>: Send + Sync + 'static {
    /// Runs the handler under `claim` while renewing it, and records its outcome.
    fn execute<'a>(
        &'a self,
        once: &'a Once<S>,
        id: &'a RecordId,
        claim: Claim,
        message: &'a Message<'a>,
        heartbeat: &'a impl Heartbeat,
    ) -> impl Future<Output = Executed<Failed>> + Send + 'a;

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
    ) -> Executed<Failed> {
        let work = |scope| async move { self.0.handle(message, &scope).await };
        classified(once.execute(id, claim, heartbeat, work).await)
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
    ) -> Executed<Failed> {
        let work = |scope| async move { self.0.handle(message, &scope).await };
        classified(once.execute_atomic(id, claim, heartbeat, work).await)
    }

    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        self.0.replayed(message, outcome)
    }

    fn name(&self) -> &'static str {
        "atomic"
    }
}

/// Why an execution failed, as the consumer settles it.
#[derive(Debug)]
pub enum Failed {
    /// The handler, its writes, or a panic in either: SPEC row "handler error" (release, nak,
    /// or dead-letter once the attempts are spent). The failure's text, for the log.
    Handler(String),
    /// The store failed while committing: not the handler's fault, so never counted
    /// toward giving up (G8's nak).
    Store(idem_core::StoreError),
}

fn classified<E: std::fmt::Display, W: std::fmt::Display>(executed: Executed<Failure<E, W>>) -> Executed<Failed> {
    match executed {
        Executed::Completed { outcome, expires_at } => Executed::Completed { outcome, expires_at },
        Executed::Lost => Executed::Lost,
        Executed::Failed(Failure::Store(error)) => Executed::Failed(Failed::Store(error)),
        Executed::Failed(failure) => Executed::Failed(Failed::Handler(failure.to_string())),
        Executed::Unrecorded { outcome, error } => Executed::Unrecorded { outcome, error },
    }
}
