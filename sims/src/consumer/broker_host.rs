//! The broker host: the queue of [`crate::consumer::broker`] behind the store host's
//! framing (one connection per call, an 8-byte frame each way, the request and its answer
//! handed over in a mailbox keyed by the call number; a frame that arrives late is still
//! applied). Its state lives outside the host's software, so a bounce keeps it (a durable
//! stream or queue); a channel-close broker drops every session when it boots again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::sim_ms;
use crate::consumer::broker::{Broker, Out, Settle, Settled};
use crate::consumer::events::MsgEvent;
use crate::history::{Kind, Recorder};
use crate::store_protocol::lock;

/// The broker host's name and port on the simulated network.
pub(crate) const BROKER_HOST: &str = "broker";
pub(crate) const BROKER_PORT: u16 = 7100;
/// How long a pull waits on the broker for a ready copy before it answers "none".
pub(crate) const PULL_WAIT: Duration = Duration::from_millis(500);
/// How often a waiting pull looks again.
const PULL_POLL: Duration = Duration::from_millis(50);

/// One request to the broker host.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// A consumer opens a channel.
    Open { consumer: usize },
    /// A consumer's channel says it is alive.
    Heartbeat { session: u64 },
    /// The next ready copy for this channel, waiting up to [`PULL_WAIT`].
    Pull { session: u64 },
    /// Settle or touch a delivery.
    Settle { session: u64, consumer: usize, copy: u64, delivery: u64, settle: Settle },
    /// The publisher stores a copy.
    Publish { id: String, payload: String, duplicate: bool },
    /// Whether some copy of `id` was acked (the publisher waits for it before a mismatch).
    Acked { id: String },
    /// Whether every copy is settled (the publisher waits for it before it ends).
    AllSettled,
}

impl Request {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Open { .. } => "open",
            Request::Heartbeat { .. } => "heartbeat",
            Request::Pull { .. } => "pull",
            Request::Settle { settle, .. } => settle.name(),
            Request::Publish { .. } => "publish",
            Request::Acked { .. } => "acked?",
            Request::AllSettled => "all settled?",
        }
    }
}

/// The broker host's answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Session(u64),
    Delivery(Box<Out>),
    Nothing,
    Settled(Settled),
    Yes(bool),
    Done,
    /// The channel is closed: open another.
    Closed,
}

/// Calls in transit, by number.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    next: u64,
    requests: BTreeMap<u64, Request>,
    answers: BTreeMap<u64, Answer>,
    abandoned: BTreeSet<u64>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

/// The broker's "disk".
pub(crate) type BrokerDisk = Arc<Mutex<Broker>>;

/// Calls the broker host once, under `timeout`; an error says what failed (the request may
/// still arrive and be applied).
pub(crate) async fn call(mailbox: &SharedMailbox, request: Request, timeout: Duration) -> Result<Answer, String> {
    let number = {
        let mut mailbox = lock(mailbox);
        mailbox.next += 1;
        let number = mailbox.next;
        mailbox.requests.insert(number, request);
        number
    };
    let exchange = async {
        let mut stream = turmoil::net::TcpStream::connect((BROKER_HOST, BROKER_PORT)).await?;
        stream.write_all(&number.to_be_bytes()).await?;
        let mut frame = [0u8; 8];
        stream.read_exact(&mut frame).await?;
        Ok::<_, std::io::Error>(())
    };
    let failure = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => match lock(mailbox).answers.remove(&number) {
            Some(answer) => return Ok(answer),
            None => "had no answer".to_owned(),
        },
        Ok(Err(error)) => format!("failed: {error}"),
        Err(_) => format!("timed out after {timeout:?}"),
    };
    let mut mailbox = lock(mailbox);
    if mailbox.answers.remove(&number).is_none() {
        mailbox.abandoned.insert(number);
    }
    Err(failure)
}

/// The broker host's software.
pub(crate) async fn host(disk: BrokerDisk, mailbox: SharedMailbox, recorder: Recorder, boot: u32) -> turmoil::Result {
    if boot > 0 {
        let closed = lock(&disk).restarted(sim_ms());
        for event in closed {
            recorder.record(Kind::Msg(Box::new(event)));
        }
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (disk, mailbox, recorder) = (Arc::clone(&disk), Arc::clone(&mailbox), recorder.clone());
        tokio::spawn(async move {
            let mut frame = [0u8; 8];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let number = u64::from_be_bytes(frame);
            let Some(request) = lock(&mailbox).requests.remove(&number) else { return };
            let answer = answer(&disk, request, &recorder).await;
            {
                let mut mailbox = lock(&mailbox);
                if !mailbox.abandoned.remove(&number) {
                    mailbox.answers.insert(number, answer);
                }
            }
            let _ = stream.write_all(&frame).await;
        });
    }
}

/// Applies the due timers, then `request`; a pull waits for a ready copy.
async fn answer(disk: &BrokerDisk, request: Request, recorder: &Recorder) -> Answer {
    let record = |events: Vec<MsgEvent>| {
        for event in events {
            recorder.record(Kind::Msg(Box::new(event)));
        }
    };
    if let Request::Pull { session } = request {
        let waits = PULL_WAIT.as_millis() / PULL_POLL.as_millis();
        for _ in 0..=waits {
            let now = sim_ms();
            let (answer, events) = {
                let mut broker = lock(disk);
                let mut events = broker.tick(now);
                if !broker.heard(session, now) {
                    (Some(Answer::Closed), events)
                } else if let Some(out) = broker.deliver(session, now) {
                    events.push(delivered(&out, &broker));
                    (Some(Answer::Delivery(Box::new(out))), events)
                } else {
                    (None, events)
                }
            };
            record(events);
            if let Some(answer) = answer {
                return answer;
            }
            tokio::time::sleep(PULL_POLL).await;
        }
        return Answer::Nothing;
    }
    let now = sim_ms();
    let mut broker = lock(disk);
    record(broker.tick(now));
    match request {
        Request::Open { consumer } => Answer::Session(broker.open(consumer, now)),
        Request::Heartbeat { session } => {
            if broker.heard(session, now) {
                Answer::Done
            } else {
                Answer::Closed
            }
        }
        Request::Settle { session, consumer, copy, delivery, settle } => {
            let settled = broker.settle(session, copy, delivery, &settle, now);
            let id = broker.copy(copy).map(|copy| copy.id.clone()).unwrap_or_default();
            let what = match &settle {
                Settle::Nak { after_ms } => format!("nak {after_ms} ms"),
                Settle::DeadLetter { reason } => format!("dead-letter {reason}"),
                other => other.name().to_owned(),
            };
            let applied = match settled {
                Settled::Applied => "applied",
                Settled::Stale => "refused: stale delivery",
                Settled::Closed => "refused: channel closed",
            };
            record(vec![MsgEvent::Settle { copy, delivery, id, consumer, what, applied }]);
            Answer::Settled(settled)
        }
        Request::Publish { id, payload, duplicate } => {
            let copy = broker.publish(&id, &payload, now);
            record(vec![MsgEvent::Published { copy, id, payload, duplicate }]);
            Answer::Done
        }
        Request::Acked { id } => Answer::Yes(broker.acked(&id)),
        Request::AllSettled => Answer::Yes(broker.all_settled()),
        Request::Pull { .. } => Answer::Nothing,
    }
}

fn delivered(out: &Out, broker: &Broker) -> MsgEvent {
    let consumer = match broker.copy(out.copy).map(|copy| &copy.phase) {
        Some(crate::consumer::broker::Phase::Out { consumer, .. }) => *consumer,
        _ => usize::MAX,
    };
    MsgEvent::Delivered {
        copy: out.copy,
        delivery: out.delivery,
        id: out.id.clone(),
        consumer,
        session: out.session,
        attempt: out.delivered,
    }
}
