//! One delivery, from receipt to settle: SPEC "Message consumers" as I/O around
//! idem-core's rules (`consume::handle`, `after_failure`, `superseded`, `store_failed`).
//!
//! The invariant the rest rests on: **no ack is sent while the record is not completed**.
//! Every `Settle::Ack` here comes from a completion this execution saw applied or from a
//! record the store holds completed; every failure to settle is left to the broker, whose
//! redelivery is then acked as a replay.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use idem_core::consume::{self, Handle, Settle};
use idem_core::reply;
use idem_core::{ClaimRequest, Decision, Fingerprint, RecordId, Store, StoreError};
use idem_once::{Executed, Heartbeat, Once};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{OnConflict, Settings};
use crate::message::{Message, record_id};
use crate::mode::{Failed, Mode};
use crate::observe::{self, Outcome};
use crate::transport::Delivery;

/// First pause between looks at a held record ([`OnConflict::Wait`]); doubled up to [`WAIT_POLL_MAX`].
const WAIT_POLL_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between looks at a held record.
const WAIT_POLL_MAX: Duration = Duration::from_millis(250);
/// Most looks by one waiting delivery, whatever the clock does.
const WAIT_POLLS_MAX: u32 = 2048;

/// What every delivery's task shares.
pub(crate) struct Shared<S, M> {
    pub(crate) once: Once<S>,
    pub(crate) mode: M,
    pub(crate) settings: Settings,
}

/// Handles one delivery to its settle; returns what became of it.
pub(crate) async fn process<D: Delivery, S: Store + 'static, M: Mode<S>>(
    shared: &Shared<S, M>,
    delivery: D,
) -> Outcome {
    let span = observe::message_span(&delivery);
    let started = Instant::now();
    // A panic outside the handler's own future (a key function, a `replayed` hook) must not
    // leave the delivery unsettled: RabbitMQ would hold it until its consumer timeout.
    let decided = AssertUnwindSafe(decide(shared, &delivery, &span)).catch_unwind().instrument(span.clone()).await;
    let (outcome, settle) = decided.unwrap_or_else(|_panic| {
        tracing::error!(parent: &span, "panicked while handling the delivery; naking it");
        (Outcome::Panicked, Settle::Redeliver { after: shared.settings.redelivery.handler_retry_after })
    });
    let answer_failed_retry = shared.settings.redelivery.handler_retry_after;
    settle_delivery(delivery, settle, answer_failed_retry).instrument(span.clone()).await;
    observe::settled(&span, outcome, started);
    outcome
}

async fn decide<D: Delivery, S: Store + 'static, M: Mode<S>>(
    shared: &Shared<S, M>,
    delivery: &D,
    span: &tracing::Span,
) -> (Outcome, Settle) {
    let Shared { once, mode, settings } = shared;
    let rules = &settings.redelivery;
    let id = match record_id(delivery, &settings.key_from, &settings.principal_from) {
        Ok(id) => id,
        Err(reason) => return (Outcome::DeadLettered, Settle::DeadLetter(reason)),
    };
    observe::identified(span, &id);
    let message = Message::new(&id, delivery);
    let request = ClaimRequest::new(Fingerprint::of_message(delivery.subject(), delivery.payload()));
    let mut decision = match once.claim(&id, &request).await {
        Ok(decision) => decision,
        Err(error) => return store_failed(&error, settings),
    };
    if let (Decision::Conflict { .. }, OnConflict::Wait { max }) = (&decision, settings.on_conflict) {
        decision = match wait_for_turn(once, delivery, &id, &request, max, decision).await {
            Ok(decision) => decision,
            Err(error) => return store_failed(&error, settings),
        };
    }
    if let Decision::TakeOver { claim, stale } = &decision {
        // The earlier holder is presumed crashed; in separate mode its side effect may have happened.
        tracing::warn!(?stale, fence = ?claim.fence, mode = mode.name(), "taking over a lapsed claim");
    }
    let claim = match consume::handle(decision, rules) {
        Handle::Run(claim) => claim,
        Handle::Settle(settle) => return (settled_without_running(&settle), replay_hook(mode, &message, settle).await),
    };
    match mode.execute(once, &id, claim, &message, &Progress(delivery)).await {
        Executed::Completed { outcome, .. } => (Outcome::Executed, Settle::Ack(outcome)),
        Executed::Lost => {
            // Never this execution's word: the record as stored decides (G2, G3).
            let settle = match once.get(&id).await {
                Ok(record) => consume::superseded(record.as_ref(), &request, once.clock().now(), rules),
                Err(error) => consume::store_failed(&error, rules),
            };
            (Outcome::Superseded, replay_hook(mode, &message, settle).await)
        }
        Executed::Failed(Failed::Handler(failure)) => {
            tracing::warn!(%failure, "handler failed; its claim was released");
            (Outcome::Released, consume::after_failure(delivery.attempt(), rules))
        }
        Executed::Failed(Failed::Store(error)) => store_failed(&error, settings),
        Executed::Unrecorded { error, .. } => {
            // SPEC: an ack only after the completion committed. The side effect ran
            // (separate mode); the redelivery meets this claim until its lease lapses.
            tracing::error!(%error, "the side effect ran but its completion was not recorded; not acking");
            (Outcome::Unrecorded, Settle::Redeliver { after: rules.store_retry_after })
        }
    }
}

fn store_failed(error: &StoreError, settings: &Settings) -> (Outcome, Settle) {
    tracing::warn!(%error, "idempotency store failed; the message is not run (G8)");
    (Outcome::StoreFailed, consume::store_failed(error, &settings.redelivery))
}

fn settled_without_running(settle: &Settle) -> Outcome {
    match settle {
        Settle::Ack(_) => Outcome::Replayed,
        Settle::Redeliver { .. } => Outcome::Conflict,
        Settle::DeadLetter(_) => Outcome::DeadLettered,
    }
}

/// Gives the handler a completed record's outcome before the ack (e.g. to reply again).
async fn replay_hook<S: Store, M: Mode<S>>(mode: &M, message: &Message<'_>, settle: Settle) -> Settle {
    if let Settle::Ack(outcome) = &settle {
        mode.replayed(message, outcome).await;
    }
    settle
}

/// Holds a delivery while another claim holds its record, at most `wait_max` and
/// [`WAIT_POLLS_MAX`] looks; returns the first decision that is not a conflict, or the
/// latest conflict (`conflict` is the first) if the wait ran out. Whether to keep waiting is [`reply::keep_waiting`]'s answer.
async fn wait_for_turn<S: Store, D: Delivery>(
    once: &Once<S>,
    delivery: &D,
    id: &RecordId,
    request: &ClaimRequest,
    wait_max: Duration,
    mut conflict: Decision,
) -> Result<Decision, StoreError> {
    let renew_every = once.policy().renew_every();
    let (mut waited, mut since_progress, mut pause) = (Duration::ZERO, Duration::ZERO, WAIT_POLL_FIRST);
    for _ in 0..WAIT_POLLS_MAX {
        if waited >= wait_max {
            break;
        }
        let nap = pause.min(wait_max - waited);
        tokio::time::sleep(nap).await;
        (waited, since_progress, pause) = (waited + nap, since_progress + nap, (pause * 2).min(WAIT_POLL_MAX));
        if since_progress >= renew_every {
            // Still ours to hold: keep the broker's timer from redelivering it meanwhile.
            Progress(delivery).renewed().await;
            since_progress = Duration::ZERO;
        }
        let record = once.get(id).await?;
        if let Some(left) = reply::keep_waiting(record.as_ref(), request, once.clock().now()) {
            if let Decision::Conflict { retry_after, .. } = &mut conflict {
                *retry_after = left;
            }
            continue;
        }
        match once.claim(id, request).await? {
            seen @ Decision::Conflict { .. } => conflict = seen,
            decision => return Ok(decision),
        }
    }
    Ok(conflict)
}

/// The broker's in-progress ack after each renewal the store applied.
struct Progress<'a, D>(&'a D);

impl<D: Delivery> Heartbeat for Progress<'_, D> {
    async fn renewed(&self) {
        if let Err(error) = self.0.in_progress().await {
            observe::transport_failed("in_progress", &error);
        }
    }
}

/// Sends the settle; a failure is counted and left to the broker's redelivery. An ack is
/// preceded by the delivery's answer ([`Delivery::answer`]); if that fails, the message is
/// naked after `answer_failed_retry` instead, so its redelivery answers again.
async fn settle_delivery<D: Delivery>(delivery: D, settle: Settle, answer_failed_retry: Duration) {
    let (operation, result) = match settle {
        Settle::Ack(outcome) => match delivery.answer(&outcome).await {
            Ok(()) => ("ack", delivery.ack().await),
            Err(error) => {
                observe::transport_failed("answer", &error);
                ("nak", delivery.nak(answer_failed_retry).await)
            }
        },
        Settle::Redeliver { after } => ("nak", delivery.nak(after).await),
        Settle::DeadLetter(reason) => {
            tracing::warn!(%reason, "dead-lettering the message");
            ("dead_letter", delivery.dead_letter(reason).await)
        }
    };
    if let Err(error) = result {
        observe::transport_failed(operation, &error);
    }
}
