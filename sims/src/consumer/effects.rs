//! The consumers' side effect, an effect row on the store host, and atomic mode over the
//! simulated network: [`RemoteStore`] as an [`AtomicStore`] whose business writes are
//! effect rows, buffered by the handler's writes and carried with the completion in one
//! request (`CompleteWithEffects`), which the store host applies in one step with
//! `op::CompleteInTransaction`: the rows and the completion commit together or not at all.

use std::convert::Infallible;

use bytes::Bytes;
use idem_core::{
    AtomicStore, CommitError, Fence, Fenced, Policy, RecordId, StoreError, StoredResponse, Timestamp, WritesFuture,
};

use crate::consumer::events::MsgEvent;
use crate::history::{Kind, Recorder};
use crate::remote::RemoteStore;
use crate::store_protocol::{Answer, Request};

/// One effect row: the side effect of handling a message.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    pub(crate) consumer: usize,
    pub(crate) id: String,
    pub(crate) payload: String,
    /// The outcome the handler returned with it (what a replay must give back, G2).
    pub(crate) outcome: Bytes,
}

impl Effect {
    /// Records the row as the store host writes it, whichever request wrote it.
    pub(crate) fn record(self, via: &'static str, recorder: &Recorder) {
        let Effect { consumer, id, payload, outcome } = self;
        recorder.record(Kind::Msg(Box::new(MsgEvent::Effect { consumer, via, id, payload, outcome })));
    }
}

/// The transaction a handler's writes run in: the effect rows to commit with the completion.
#[derive(Debug, Default)]
pub(crate) struct EffectTx {
    rows: Vec<Effect>,
}

impl EffectTx {
    /// Adds a row to the transaction.
    pub(crate) fn insert(&mut self, effect: Effect) {
        self.rows.push(effect);
    }
}

impl AtomicStore for RemoteStore {
    type Connection = EffectTx;
    type WriteError = Infallible;

    async fn complete_with<W>(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
        writes: W,
    ) -> Result<Fenced, CommitError<Infallible>>
    where
        W: for<'c> FnOnce(&'c mut EffectTx) -> WritesFuture<'c, Infallible> + Send + 'static,
    {
        let mut tx = EffectTx::default();
        writes(&mut tx).await.map_err(CommitError::Writes)?;
        let request =
            Request::CompleteWithEffects { id: id.clone(), fence, response, now, policy: *policy, effects: tx.rows };
        match self.0.call(request).await? {
            Answer::Fenced(fenced) => Ok(fenced),
            Answer::Refused(error) => Err(CommitError::Store(error)),
            other => Err(CommitError::Store(StoreError::Corrupt {
                detail: format!("unexpected answer from the store host: {other:?}"),
            })),
        }
    }
}

/// Separate mode's write: the effect row alone, on the store host.
pub(crate) async fn insert_alone(store: &RemoteStore, effect: Effect) -> Result<(), StoreError> {
    match store.0.call(Request::InsertEffect { effect }).await? {
        Answer::Done => Ok(()),
        other => Err(StoreError::Corrupt { detail: format!("unexpected answer from the store host: {other:?}") }),
    }
}
