//! An in-memory at-least-once broker for tests (feature `testing`): [`MemoryBroker`] and its
//! [`MemoryTransport`]. It runs on tokio's timer, so paused time drives its ack deadlines
//! and nak delays deterministically, and keeps messages in order by sequence (a `BTreeMap`,
//! never a `HashMap`).
//!
//! Like JetStream: each delivery has an ack deadline (`ack_wait`), restarted by
//! `in_progress`; past it the message is delivered again; a nak redelivers after its delay;
//! a settle from an earlier delivery of a redelivered message is refused as stale. Tests
//! can lose the next acks (the ack is "sent" but never applied) to force redeliveries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use idem_core::consume::{DeadLetterReason, RedeliveryTimer};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::transport::{Delivery, DeliveryInfo, Transport, TransportError};

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting to be delivered at (or after) this instant.
    Ready(Instant),
    /// Delivered as `token`; redelivered after `deadline` unless settled or in progress.
    Out {
        /// Which delivery this is (stale settles carry an older one).
        token: u64,
        /// When it comes back.
        deadline: Instant,
    },
    /// Acked: gone for good.
    Acked,
    /// Dead-lettered with this reason.
    DeadLettered(DeadLetterReason),
}

/// One published message and its fate.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its message id (the default key), if any.
    pub id: Option<String>,
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// How often it was delivered.
    pub delivered: u32,
    /// Where it stands.
    pub state: State,
}

struct Inner {
    messages: BTreeMap<u64, Stored>,
    next_token: u64,
    acks_to_lose: u32,
    stopped: bool,
}

/// The broker: publish messages, hand out transports, read what became of each message.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    ack_wait: Duration,
}

impl MemoryBroker {
    /// An empty broker redelivering after `ack_wait`.
    #[must_use]
    pub fn new(ack_wait: Duration) -> MemoryBroker {
        let inner = Inner { messages: BTreeMap::new(), next_token: 1, acks_to_lose: 0, stopped: false };
        MemoryBroker { inner: Arc::new(Mutex::new(inner)), wake: Arc::new(Notify::new()), ack_wait }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a message; returns its sequence number.
    pub fn publish(&self, id: Option<&str>, subject: &str, payload: impl Into<Bytes>) -> u64 {
        let mut inner = self.lock();
        let seq = inner.messages.len() as u64 + 1;
        let stored = Stored {
            id: id.map(str::to_owned),
            subject: subject.to_owned(),
            payload: payload.into(),
            delivered: 0,
            state: State::Ready(Instant::now()),
        };
        inner.messages.insert(seq, stored);
        drop(inner);
        self.wake.notify_waiters();
        seq
    }

    /// The next `count` acks are lost: sent, answered Ok, never applied.
    pub fn lose_acks(&self, count: u32) {
        self.lock().acks_to_lose = count;
    }

    /// Every message by sequence number.
    #[must_use]
    pub fn messages(&self) -> BTreeMap<u64, Stored> {
        self.lock().messages.clone()
    }

    /// Whether every message is acked or dead-lettered.
    #[must_use]
    pub fn all_settled(&self) -> bool {
        self.lock().messages.values().all(|m| matches!(m.state, State::Acked | State::DeadLettered(_)))
    }

    /// A transport consuming this broker, whose deliveries name `source`.
    #[must_use]
    pub fn transport(&self, source: &str) -> MemoryTransport {
        MemoryTransport { broker: self.clone(), source: Arc::from(source) }
    }

    /// Stops every transport: their `next` answers `None`.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_waiters();
    }

    /// Applies a settle of delivery `token` of message `seq`, if it is still current.
    fn settle(&self, seq: u64, token: u64, to: impl FnOnce(&mut Stored, Duration)) -> Result<(), TransportError> {
        let mut inner = self.lock();
        let stored = inner.messages.get_mut(&seq).ok_or(TransportError::Stale)?;
        match stored.state {
            State::Out { token: current, .. } if current == token => {
                to(stored, self.ack_wait);
                drop(inner);
                self.wake.notify_waiters();
                Ok(())
            }
            _ => Err(TransportError::Stale),
        }
    }
}

/// One consumer's view of a [`MemoryBroker`].
pub struct MemoryTransport {
    broker: MemoryBroker,
    source: Arc<str>,
}

impl MemoryTransport {
    /// The first message due now, marked delivered; else when the next one is due.
    fn take_due(&self) -> Result<MemoryDelivery, Option<Instant>> {
        let mut inner = self.broker.lock();
        let now = Instant::now();
        let token = inner.next_token;
        let mut next_due: Option<Instant> = None;
        for (&seq, stored) in &mut inner.messages {
            let due = match stored.state {
                State::Ready(at) => at,
                State::Out { deadline, .. } => deadline,
                State::Acked | State::DeadLettered(_) => continue,
            };
            if due > now {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
                continue;
            }
            stored.delivered += 1;
            stored.state = State::Out { token, deadline: now + self.broker.ack_wait };
            let delivery = MemoryDelivery {
                broker: self.broker.clone(),
                seq,
                token,
                stored: stored.clone(),
                source: Arc::clone(&self.source),
            };
            inner.next_token += 1;
            return Ok(delivery);
        }
        Err(next_due)
    }
}

impl Transport for MemoryTransport {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Option<Result<MemoryDelivery, TransportError>> {
        // Each turn waits for a publish, a settle or the next due time: it runs as long as
        // the consumer does, like a broker subscription.
        loop {
            let woken = self.broker.wake.notified();
            if self.broker.lock().stopped {
                return None;
            }
            match self.take_due() {
                Ok(delivery) => return Some(Ok(delivery)),
                Err(Some(due)) => {
                    tokio::select! { () = woken => {}, () = tokio::time::sleep_until(due) => {} }
                }
                Err(None) => woken.await,
            }
        }
    }

    async fn stop(&mut self) {}

    fn redelivery_timer(&self) -> RedeliveryTimer {
        RedeliveryTimer::AckWait(self.broker.ack_wait)
    }

    fn source(&self) -> Option<&str> {
        Some(&self.source)
    }
}

/// One delivery from a [`MemoryBroker`].
pub struct MemoryDelivery {
    broker: MemoryBroker,
    seq: u64,
    token: u64,
    stored: Stored,
    source: Arc<str>,
}

impl DeliveryInfo for MemoryDelivery {
    fn subject(&self) -> &str {
        &self.stored.subject
    }
    fn payload(&self) -> &Bytes {
        &self.stored.payload
    }
    fn message_id(&self) -> Option<&str> {
        self.stored.id.as_deref()
    }
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
    fn source(&self) -> &str {
        &self.source
    }
    fn attempt(&self) -> Option<u32> {
        Some(self.stored.delivered)
    }
    fn redelivered(&self) -> bool {
        self.stored.delivered > 1
    }
}

impl Delivery for MemoryDelivery {
    async fn ack(self) -> Result<(), TransportError> {
        {
            let mut inner = self.broker.lock();
            if inner.acks_to_lose > 0 {
                inner.acks_to_lose -= 1;
                return Ok(());
            }
        }
        self.broker.settle(self.seq, self.token, |stored, _| stored.state = State::Acked)
    }

    async fn nak(self, after: Duration) -> Result<(), TransportError> {
        self.broker.settle(self.seq, self.token, |stored, _| stored.state = State::Ready(Instant::now() + after))
    }

    async fn dead_letter(self, reason: DeadLetterReason) -> Result<(), TransportError> {
        self.broker.settle(self.seq, self.token, |stored, _| stored.state = State::DeadLettered(reason))
    }

    async fn in_progress(&self) -> Result<(), TransportError> {
        let token = self.token;
        self.broker.settle(self.seq, self.token, |stored, ack_wait| {
            stored.state = State::Out { token, deadline: Instant::now() + ack_wait };
        })
    }
}
