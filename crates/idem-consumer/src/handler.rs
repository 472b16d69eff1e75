//! The two kinds of handler: separate mode (any store) and atomic mode (the store is the
//! handler's own database).

use std::future::Future;

use idem_core::{AtomicStore, StoredOutcome};
use idem_once::{ClaimScope, Commit};

use crate::message::Message;

/// Separate mode: the handler does its side effect and returns the outcome to record.
/// The side effect and the completion are two steps, so a crash between them lets the
/// message run again once the lease lapses (SPEC separate mode); use [`AtomicHandler`]
/// where the store is the handler's own database.
pub trait Handler: Send + Sync + 'static {
    /// What the handler fails with; the claim is released and the message redelivered.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Handles one message under its claim.
    fn handle(
        &self,
        message: &Message<'_>,
        claim: &ClaimScope,
    ) -> impl Future<Output = Result<StoredOutcome, Self::Error>> + Send;

    /// Called for a message whose record was completed before (a redelivery, a duplicate
    /// publish), before its ack: e.g. to send its reply again. Does nothing by default.
    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        let _ = (message, outcome);
        async {}
    }
}

/// Atomic mode: the handler computes, then hands back a [`Commit`] whose writes commit
/// with the completion in one transaction of the store (SQLite, PostgreSQL), or neither.
pub trait AtomicHandler<S: AtomicStore>: Send + Sync + 'static {
    /// What the handler fails with; the claim is released and the message redelivered.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Handles one message under its claim.
    fn handle(
        &self,
        message: &Message<'_>,
        claim: &ClaimScope,
    ) -> impl Future<Output = Result<Commit<S>, Self::Error>> + Send;

    /// As [`Handler::replayed`].
    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        let _ = (message, outcome);
        async {}
    }
}

/// A shared handler is a handler (so a test or an application can keep a reference).
impl<H: Handler> Handler for std::sync::Arc<H> {
    type Error = H::Error;

    fn handle(
        &self,
        message: &Message<'_>,
        claim: &ClaimScope,
    ) -> impl Future<Output = Result<StoredOutcome, Self::Error>> + Send {
        (**self).handle(message, claim)
    }

    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        (**self).replayed(message, outcome)
    }
}

/// A shared atomic handler is an atomic handler.
impl<S: AtomicStore, H: AtomicHandler<S>> AtomicHandler<S> for std::sync::Arc<H> {
    type Error = H::Error;

    fn handle(
        &self,
        message: &Message<'_>,
        claim: &ClaimScope,
    ) -> impl Future<Output = Result<Commit<S>, Self::Error>> + Send {
        (**self).handle(message, claim)
    }

    fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) -> impl Future<Output = ()> + Send {
        (**self).replayed(message, outcome)
    }
}
