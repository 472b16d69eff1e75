//! [`SimTransport`] and [`SimDelivery`]: idem-consumer's transport trait over turmoil's TCP
//! to the broker host, every call under a timeout. A call that times out is lost as far as
//! the consumer knows (a lost ack: the broker redelivers; it may still land late).
//!
//! Channels: the transport opens a session and keeps it alive with a heartbeat every
//! [`HEARTBEAT_EVERY`]. In channel-close mode a failed call means the connection broke (AMQP
//! runs over one TCP stream: a lost frame is a broken connection), so the transport gives
//! the session up (its heartbeats stop and the broker requeues its copies) and opens a new
//! one; a delivery of a given-up session can no longer be settled (`TransportError::Closed`).
//! A nak there is held for its delay, then requeued at once, as idem-rabbitmq does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use idem_consumer::{Delivery, DeliveryInfo, Transport, TransportError};
use idem_core::consume::{DeadLetterReason, RedeliveryTimer};

use crate::consumer::broker::{Mode, Out, Settle, Settled};
use crate::consumer::broker_host::{self, Answer, PULL_WAIT, Request, SharedMailbox};
use crate::consumer::events::MsgEvent;
use crate::history::{Kind, Recorder};
use crate::store_protocol::lock;

/// What every delivery was published to, and the consumers' source (their principal).
pub(crate) const SUBJECT: &str = "orders";
pub(crate) const SOURCE: &str = "sim:orders/workers";
/// The header naming the delivery as `delivery/copy/session` (read by the simulation's handler only).
pub(crate) const DELIVERY_HEADER: &str = "sim-delivery";
/// Every broker call but a pull is cut off after this.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// How often a live channel says so.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// A RabbitMQ-like broker's consumer timeout: far beyond a run (`check_timers` wants it
/// over the execution ceiling plus a lease).
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(1_800);

#[derive(Debug, thiserror::Error)]
#[error("broker call {op} {why}")]
struct CallFailed {
    op: &'static str,
    why: String,
}

/// One consumer's way to the broker: its channel and the mailbox.
#[derive(Debug)]
pub(crate) struct BrokerLink {
    pub(crate) consumer: usize,
    pub(crate) mode: Mode,
    pub(crate) mailbox: SharedMailbox,
    pub(crate) recorder: Recorder,
    session: Mutex<Option<u64>>,
}

impl BrokerLink {
    pub(crate) fn new(consumer: usize, mode: Mode, mailbox: SharedMailbox, recorder: Recorder) -> Arc<BrokerLink> {
        Arc::new(BrokerLink { consumer, mode, mailbox, recorder, session: Mutex::new(None) })
    }

    fn record(&self, event: MsgEvent) {
        self.recorder.record(Kind::Msg(Box::new(event)));
    }

    /// Calls the broker; a failure is recorded, and in channel-close mode breaks `session`.
    async fn call(&self, request: Request, timeout: Duration, delivery: Option<u64>) -> Result<Answer, TransportError> {
        let op = request.name();
        let session = match &request {
            Request::Heartbeat { session } | Request::Pull { session } | Request::Settle { session, .. } => {
                Some(*session)
            }
            _ => None,
        };
        match broker_host::call(&self.mailbox, request, timeout).await {
            Ok(Answer::Closed) => {
                if let Some(session) = session {
                    self.drop_session(session);
                }
                Err(TransportError::Closed)
            }
            Ok(answer) => Ok(answer),
            Err(why) => {
                self.record(MsgEvent::CallFailed { consumer: self.consumer, op, delivery, why: why.clone() });
                if let (Mode::ChannelClose, Some(session)) = (self.mode, session) {
                    self.drop_session(session);
                }
                Err(TransportError::other(CallFailed { op, why }))
            }
        }
    }

    /// Gives `session` up if it is still this consumer's channel.
    fn drop_session(&self, session: u64) {
        let mut current = lock(&self.session);
        if *current == Some(session) {
            *current = None;
            self.record(MsgEvent::ChannelDropped { consumer: self.consumer, session });
        }
    }

    fn current(&self) -> Option<u64> {
        *lock(&self.session)
    }

    /// This consumer's channel, opened if it has none.
    async fn session(&self) -> Result<u64, TransportError> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        match self.call(Request::Open { consumer: self.consumer }, CALL_TIMEOUT, None).await? {
            Answer::Session(session) => {
                *lock(&self.session) = Some(session);
                Ok(session)
            }
            other => Err(TransportError::other(format!("unexpected answer to open: {other:?}"))),
        }
    }

    /// Sends `settle` for a delivery of `session`; refused at once when that channel is gone.
    pub(crate) async fn settle(&self, session: u64, out: &Out, settle: Settle) -> Result<(), TransportError> {
        if self.mode == Mode::ChannelClose && self.current() != Some(session) {
            let why = "its channel is gone".to_owned();
            let op = settle.name();
            self.record(MsgEvent::CallFailed { consumer: self.consumer, op, delivery: Some(out.delivery), why });
            return Err(TransportError::Closed);
        }
        let request =
            Request::Settle { session, consumer: self.consumer, copy: out.copy, delivery: out.delivery, settle };
        match self.call(request, CALL_TIMEOUT, Some(out.delivery)).await? {
            Answer::Settled(Settled::Applied) => Ok(()),
            Answer::Settled(Settled::Stale) => Err(TransportError::Stale),
            Answer::Settled(Settled::Closed) => {
                self.drop_session(session);
                Err(TransportError::Closed)
            }
            other => Err(TransportError::other(format!("unexpected answer to a settle: {other:?}"))),
        }
    }

    /// Keeps the current channel alive until the host goes down.
    async fn heartbeats(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            if let Some(session) = self.current() {
                let _ = self.call(Request::Heartbeat { session }, CALL_TIMEOUT, None).await;
            }
        }
    }
}

/// idem-consumer's [`Transport`] over the simulated broker.
pub(crate) struct SimTransport {
    link: Arc<BrokerLink>,
    ack_wait: Duration,
    stopped: Arc<AtomicBool>,
}

impl SimTransport {
    /// A transport for `link`'s consumer; starts its heartbeat on the current runtime
    /// (channel-close mode: an ack-wait broker closes no channel).
    pub(crate) fn new(link: Arc<BrokerLink>, ack_wait: Duration) -> SimTransport {
        if link.mode == Mode::ChannelClose {
            tokio::spawn(Arc::clone(&link).heartbeats());
        }
        SimTransport { link, ack_wait, stopped: Arc::new(AtomicBool::new(false)) }
    }
}

impl Transport for SimTransport {
    type Delivery = SimDelivery;

    async fn next(&mut self) -> Option<Result<SimDelivery, TransportError>> {
        // Each round waits on the broker (a long pull) or fails: this is the wait for a
        // delivery, which ends with one, an error, or the stop.
        while !self.stopped.load(Ordering::SeqCst) {
            let session = match self.link.session().await {
                Ok(session) => session,
                Err(error) => return Some(Err(error)),
            };
            let pull = Request::Pull { session };
            match self.link.call(pull, PULL_WAIT + CALL_TIMEOUT, None).await {
                Ok(Answer::Delivery(out)) => {
                    let header = format!("{}/{}/{session}", out.delivery, out.copy);
                    let payload = Bytes::from(out.payload.clone().into_bytes());
                    let link = Arc::clone(&self.link);
                    return Some(Ok(SimDelivery { link, session, out: *out, header, payload }));
                }
                Ok(_) => {}
                Err(TransportError::Closed) => {}
                Err(error) => return Some(Err(error)),
            }
        }
        None
    }

    async fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn redelivery_timer(&self) -> RedeliveryTimer {
        match self.link.mode {
            Mode::AckWait => RedeliveryTimer::AckWait(self.ack_wait),
            Mode::ChannelClose => RedeliveryTimer::ChannelTimeout(CONSUMER_TIMEOUT),
        }
    }
}

/// One delivery from the simulated broker.
pub(crate) struct SimDelivery {
    link: Arc<BrokerLink>,
    session: u64,
    out: Out,
    header: String,
    payload: Bytes,
}

impl DeliveryInfo for SimDelivery {
    fn subject(&self) -> &str {
        SUBJECT
    }

    fn payload(&self) -> &Bytes {
        &self.payload
    }

    fn message_id(&self) -> Option<&str> {
        Some(&self.out.id)
    }

    fn header(&self, name: &str) -> Option<&str> {
        (name == DELIVERY_HEADER).then_some(self.header.as_str())
    }

    fn source(&self) -> &str {
        SOURCE
    }

    fn attempt(&self) -> Option<u32> {
        // A JetStream-like broker counts deliveries; a classic AMQP queue does not.
        (self.link.mode == Mode::AckWait).then_some(self.out.delivered)
    }

    fn redelivered(&self) -> bool {
        self.out.delivered > 1
    }
}

impl Delivery for SimDelivery {
    async fn ack(self) -> Result<(), TransportError> {
        self.link.settle(self.session, &self.out, Settle::Ack).await
    }

    async fn nak(self, after: Duration) -> Result<(), TransportError> {
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        match self.link.mode {
            Mode::AckWait => self.link.settle(self.session, &self.out, Settle::Nak { after_ms }).await,
            Mode::ChannelClose => {
                // AMQP requeues at once: hold the delivery for the delay, then requeue.
                tokio::time::sleep(after).await;
                self.link.settle(self.session, &self.out, Settle::Nak { after_ms: 0 }).await
            }
        }
    }

    async fn dead_letter(self, reason: DeadLetterReason) -> Result<(), TransportError> {
        let settle = Settle::DeadLetter { reason: reason.as_str().to_owned() };
        self.link.settle(self.session, &self.out, settle).await
    }

    async fn in_progress(&self) -> Result<(), TransportError> {
        match self.link.mode {
            Mode::AckWait => self.link.settle(self.session, &self.out, Settle::Progress).await,
            // AMQP has no in-progress ack.
            Mode::ChannelClose => Ok(()),
        }
    }
}
