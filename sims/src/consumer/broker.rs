//! The broker's state: an at-least-once queue on simulated time, as plain data. The broker
//! host (`broker_host`) applies one request to it per poll; the checker reads its final
//! state (which copy was acked, which dead-lettered, when).
//!
//! Every publish is one copy (no publish-side dedup window is modelled: the duplicates a
//! real stream would drop inside its window never reach idem anyway). A copy is handed to
//! one consumer at a time and comes back:
//!
//! * [`Mode::AckWait`] (JetStream-like): `ack_wait` after its delivery or its last
//!   progress, or after a nak's delay. Acks count by copy, whichever delivery sends them
//!   (JetStream acks by stream sequence while the message is pending).
//! * [`Mode::ChannelClose`] (RabbitMQ-like): only when the channel it was delivered on
//!   closes: a consumer heard from for none of `heartbeat_timeout` (a broken or silent
//!   connection), or a broker restart; every copy on that channel is requeued at once. No
//!   progress exists; a nak requeues at once (the adapter holds the delivery first). An
//!   ack or nak on a closed channel, or for a delivery that is not the copy's current one,
//!   is refused (a stale delivery tag).
//!
//! Timers are evaluated lazily ([`Broker::tick`]) at every request, so nothing here runs
//! on its own and the state depends only on the requests and their simulated times.

use std::collections::BTreeMap;

use crate::consumer::events::MsgEvent;

/// How the broker redelivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// JetStream-like: ack deadlines, progress, nak with a delay.
    AckWait,
    /// RabbitMQ-like: redelivery when a channel closes, all its copies at once.
    ChannelClose,
}

/// Where a copy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a consumer, from `at_ms` on.
    Ready { at_ms: u64 },
    /// Handed to `consumer` on `session` as `delivery`; comes back at `deadline_ms` (ack wait).
    Out { delivery: u64, session: u64, consumer: usize, deadline_ms: u64 },
    /// Acknowledged: the broker forgot it.
    Acked { at_ms: u64, delivery: u64 },
    /// Dead-lettered with `reason`.
    DeadLettered { at_ms: u64, reason: String },
}

/// One published message instance.
#[derive(Debug, Clone)]
pub(crate) struct Copy {
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) published_ms: u64,
    /// Deliveries so far.
    pub(crate) delivered: u32,
    pub(crate) phase: Phase,
}

impl Copy {
    pub(crate) fn settled(&self) -> bool {
        matches!(self.phase, Phase::Acked { .. } | Phase::DeadLettered { .. })
    }
}

/// A consumer's channel (a JetStream pull subscription, an AMQP channel).
#[derive(Debug, Clone)]
struct Session {
    consumer: usize,
    last_heard_ms: u64,
    open: bool,
}

/// A delivery as it leaves the broker.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub(crate) copy: u64,
    pub(crate) delivery: u64,
    pub(crate) session: u64,
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) delivered: u32,
}

/// What a settle request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Applied,
    /// The delivery is not the copy's current one, or the copy is settled already.
    Stale,
    /// The session is closed.
    Closed,
}

/// How a copy is settled or touched.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ack,
    Nak { after_ms: u64 },
    Progress,
    DeadLetter { reason: String },
}

impl Settle {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Nak { .. } => "nak",
            Settle::Progress => "progress",
            Settle::DeadLetter { .. } => "dead-letter",
        }
    }
}

/// The broker's durable state (it survives a bounce of the broker host).
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) mode: Mode,
    ack_wait_ms: u64,
    heartbeat_timeout_ms: u64,
    pub(crate) copies: Vec<Copy>,
    sessions: BTreeMap<u64, Session>,
    next_delivery: u64,
    next_session: u64,
}

impl Broker {
    pub(crate) fn new(mode: Mode, ack_wait_ms: u64, heartbeat_timeout_ms: u64) -> Broker {
        Broker {
            mode,
            ack_wait_ms,
            heartbeat_timeout_ms,
            copies: Vec::new(),
            sessions: BTreeMap::new(),
            next_delivery: 0,
            next_session: 0,
        }
    }

    /// Applies the timers due by `now`: lapsed ack deadlines (ack-wait) and silent sessions
    /// (channel-close). Returns what it did, for the history.
    pub(crate) fn tick(&mut self, now: u64) -> Vec<MsgEvent> {
        let mut events = Vec::new();
        match self.mode {
            Mode::AckWait => {
                for copy in &mut self.copies {
                    if let Phase::Out { delivery, consumer, deadline_ms, .. } = copy.phase
                        && deadline_ms <= now
                    {
                        events.push(MsgEvent::AckWaitLapsed {
                            copy: copy.seq,
                            delivery,
                            id: copy.id.clone(),
                            consumer,
                        });
                        copy.phase = Phase::Ready { at_ms: now };
                    }
                }
            }
            Mode::ChannelClose => {
                let silent: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(_, session)| session.open && session.last_heard_ms + self.heartbeat_timeout_ms <= now)
                    .map(|(number, _)| *number)
                    .collect();
                for session in silent {
                    events.push(self.close(session, now, "heartbeat timeout"));
                }
            }
        }
        events
    }

    /// Closes every open session: the broker restarted and its connections are gone
    /// (channel-close mode; a JetStream consumer's pending acks survive a restart).
    pub(crate) fn restarted(&mut self, now: u64) -> Vec<MsgEvent> {
        if self.mode != Mode::ChannelClose {
            return Vec::new();
        }
        let open: Vec<u64> = self.sessions.iter().filter(|(_, s)| s.open).map(|(n, _)| *n).collect();
        open.into_iter().map(|session| self.close(session, now, "broker restarted")).collect()
    }

    fn close(&mut self, session: u64, now: u64, why: &'static str) -> MsgEvent {
        let consumer = self.sessions.get(&session).map_or(usize::MAX, |s| s.consumer);
        if let Some(state) = self.sessions.get_mut(&session) {
            state.open = false;
        }
        let mut requeued = Vec::new();
        for copy in &mut self.copies {
            if matches!(copy.phase, Phase::Out { session: on, .. } if on == session) {
                requeued.push(copy.id.clone());
                copy.phase = Phase::Ready { at_ms: now };
            }
        }
        MsgEvent::ChannelClosed { session, consumer, why, requeued }
    }

    pub(crate) fn open(&mut self, consumer: usize, now: u64) -> u64 {
        self.next_session += 1;
        self.sessions.insert(self.next_session, Session { consumer, last_heard_ms: now, open: true });
        self.next_session
    }

    /// Notes that `session` was heard from; whether it is still open.
    pub(crate) fn heard(&mut self, session: u64, now: u64) -> bool {
        match self.sessions.get_mut(&session) {
            Some(state) if state.open => {
                state.last_heard_ms = now;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn publish(&mut self, id: &str, payload: &str, now: u64) -> u64 {
        let seq = self.copies.len() as u64 + 1;
        let copy = Copy {
            seq,
            id: id.to_owned(),
            payload: payload.to_owned(),
            published_ms: now,
            delivered: 0,
            phase: Phase::Ready { at_ms: now },
        };
        self.copies.push(copy);
        seq
    }

    /// Hands the oldest ready copy to `session`'s consumer, if any.
    pub(crate) fn deliver(&mut self, session: u64, now: u64) -> Option<Out> {
        let consumer = self.sessions.get(&session)?.consumer;
        let copy = self
            .copies
            .iter_mut()
            .filter(|copy| matches!(copy.phase, Phase::Ready { at_ms } if at_ms <= now))
            .min_by_key(|copy| match copy.phase {
            Phase::Ready { at_ms } => (at_ms, copy.seq),
            _ => (u64::MAX, copy.seq),
        })?;
        self.next_delivery += 1;
        copy.delivered += 1;
        let deadline_ms = now + self.ack_wait_ms;
        copy.phase = Phase::Out { delivery: self.next_delivery, session, consumer, deadline_ms };
        Some(Out {
            copy: copy.seq,
            delivery: self.next_delivery,
            session,
            id: copy.id.clone(),
            payload: copy.payload.clone(),
            delivered: copy.delivered,
        })
    }

    /// Applies `settle` for `delivery` of copy `seq` on `session`.
    pub(crate) fn settle(&mut self, session: u64, seq: u64, delivery: u64, settle: &Settle, now: u64) -> Settled {
        let mode = self.mode;
        if mode == Mode::ChannelClose && !self.heard(session, now) {
            return Settled::Closed;
        }
        let ack_wait_ms = self.ack_wait_ms;
        let Some(copy) = self.copies.iter_mut().find(|copy| copy.seq == seq) else { return Settled::Stale };
        let current = matches!(copy.phase, Phase::Out { delivery: out, .. } if out == delivery);
        match settle {
            // JetStream acks a pending message by its sequence, from any of its deliveries.
            Settle::Ack if mode == Mode::AckWait && !copy.settled() => {
                copy.phase = Phase::Acked { at_ms: now, delivery };
                Settled::Applied
            }
            Settle::DeadLetter { reason } if mode == Mode::AckWait && !copy.settled() => {
                copy.phase = Phase::DeadLettered { at_ms: now, reason: reason.clone() };
                Settled::Applied
            }
            _ if !current => Settled::Stale,
            Settle::Ack => {
                copy.phase = Phase::Acked { at_ms: now, delivery };
                Settled::Applied
            }
            Settle::DeadLetter { reason } => {
                copy.phase = Phase::DeadLettered { at_ms: now, reason: reason.clone() };
                Settled::Applied
            }
            Settle::Nak { after_ms } => {
                copy.phase = Phase::Ready { at_ms: now + after_ms };
                Settled::Applied
            }
            Settle::Progress if mode == Mode::AckWait => {
                if let Phase::Out { deadline_ms, .. } = &mut copy.phase {
                    *deadline_ms = now + ack_wait_ms;
                }
                Settled::Applied
            }
            // AMQP has no in-progress ack.
            Settle::Progress => Settled::Stale,
        }
    }

    /// The id and payload of copy `seq`.
    pub(crate) fn copy(&self, seq: u64) -> Option<&Copy> {
        self.copies.iter().find(|copy| copy.seq == seq)
    }

    /// Whether some copy of `id` was acked.
    pub(crate) fn acked(&self, id: &str) -> bool {
        self.copies.iter().any(|copy| copy.id == id && matches!(copy.phase, Phase::Acked { .. }))
    }

    /// Whether every copy is acked or dead-lettered.
    pub(crate) fn all_settled(&self) -> bool {
        self.copies.iter().all(Copy::settled)
    }
}
