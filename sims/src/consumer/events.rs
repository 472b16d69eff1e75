//! What the consumer world adds to the history: the publisher's plan and publishes, the
//! broker's deliveries, timers and settles, the consumers' transport failures, the
//! handlers' runs and replays, and every effect row the store host writes.

use std::fmt;

use bytes::Bytes;

/// One event of the consumer world (a `history::Kind::Msg`).
#[derive(Debug, Clone)]
pub(crate) enum MsgEvent {
    /// The publisher's plan for one message id (printed at the start of the trace).
    Planned { id: String, text: String },
    /// The broker stored a copy.
    Published { copy: u64, id: String, payload: String, duplicate: bool },
    /// The broker handed a copy to a consumer.
    Delivered { copy: u64, delivery: u64, id: String, consumer: usize, session: u64, attempt: u32 },
    /// An ack deadline passed: the copy is ready again (ack-wait mode).
    AckWaitLapsed { copy: u64, delivery: u64, id: String, consumer: usize },
    /// A channel closed; every copy out on it is ready again (channel-close mode).
    ChannelClosed { session: u64, consumer: usize, why: &'static str, requeued: Vec<String> },
    /// The broker applied (or refused) a settle or a progress.
    Settle { copy: u64, delivery: u64, id: String, consumer: usize, what: String, applied: &'static str },
    /// A call from a consumer to the broker failed on the network (its fate unknown).
    CallFailed { consumer: usize, op: &'static str, delivery: Option<u64>, why: String },
    /// A consumer gave up a channel after a failed call (channel-close mode).
    ChannelDropped { consumer: usize, session: u64 },
    /// A handler started on a delivery under the claim `fence` (`fate`: how it will go).
    Handling { consumer: usize, delivery: u64, id: String, payload: String, fence: u64, fate: String },
    /// A handler returned (`result`: its outcome or its error).
    Handled { consumer: usize, delivery: u64, id: String, result: String },
    /// The consumer replayed a completed record (`Handler::replayed`) for a delivery.
    Replayed { consumer: usize, delivery: u64, id: String, outcome: Bytes },
    /// The store host wrote an effect row, by any path (`via`: the request that wrote it).
    Effect { consumer: usize, via: &'static str, id: String, payload: String, outcome: Bytes },
    /// A planted bug acted (what it did).
    Planted { consumer: usize, what: String },
}

impl MsgEvent {
    /// The message id the event is about, if one.
    pub(crate) fn id(&self) -> Option<&str> {
        match self {
            MsgEvent::Planned { id, .. }
            | MsgEvent::Published { id, .. }
            | MsgEvent::Delivered { id, .. }
            | MsgEvent::AckWaitLapsed { id, .. }
            | MsgEvent::Settle { id, .. }
            | MsgEvent::Handling { id, .. }
            | MsgEvent::Handled { id, .. }
            | MsgEvent::Replayed { id, .. }
            | MsgEvent::Effect { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the event mentions `id` (a channel close names the ids it requeued).
    pub(crate) fn mentions(&self, id: &str) -> bool {
        match self {
            MsgEvent::ChannelClosed { requeued, .. } => requeued.iter().any(|requeued| requeued == id),
            other => other.id() == Some(id),
        }
    }
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl fmt::Display for MsgEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgEvent::Planned { id, text } => write!(f, "plan    {id}: {text}"),
            MsgEvent::Published { copy, id, payload, duplicate } => {
                let again = if *duplicate { " (again)" } else { "" };
                write!(f, "publish #{copy} {id} {payload}{again}")
            }
            MsgEvent::Delivered { copy, delivery, id, consumer, session, attempt } => {
                write!(
                    f,
                    "deliver #{copy} {id} as d{delivery} to consumer-{consumer} (session {session}, attempt {attempt})"
                )
            }
            MsgEvent::AckWaitLapsed { copy, delivery, id, consumer } => {
                write!(f, "lapsed  #{copy} {id} d{delivery} of consumer-{consumer}: ack wait passed, ready again")
            }
            MsgEvent::ChannelClosed { session, consumer, why, requeued } => {
                write!(f, "closed  session {session} of consumer-{consumer} ({why}): requeued {requeued:?}")
            }
            MsgEvent::Settle { copy, delivery, id, consumer, what, applied } => {
                write!(f, "settle  #{copy} {id} d{delivery} {what} from consumer-{consumer}: {applied}")
            }
            MsgEvent::CallFailed { consumer, op, delivery, why } => match delivery {
                Some(delivery) => write!(f, "lost    consumer-{consumer} {op} d{delivery}: {why}"),
                None => write!(f, "lost    consumer-{consumer} {op}: {why}"),
            },
            MsgEvent::ChannelDropped { consumer, session } => {
                write!(f, "drop    consumer-{consumer} gives up session {session} (its connection broke)")
            }
            MsgEvent::Handling { consumer, delivery, id, payload, fence, fate } => {
                write!(f, "handle  consumer-{consumer} d{delivery} {id} {payload} under f{fence}: {fate}")
            }
            MsgEvent::Handled { consumer, delivery, id, result } => {
                write!(f, "handled consumer-{consumer} d{delivery} {id}: {result}")
            }
            MsgEvent::Replayed { consumer, delivery, id, outcome } => {
                write!(f, "replay  consumer-{consumer} d{delivery} {id}: {}", text(outcome))
            }
            MsgEvent::Effect { consumer, via, id, payload, outcome } => {
                write!(f, "effect  {id} {payload} by consumer-{consumer} via {via} (outcome {})", text(outcome))
            }
            MsgEvent::Planted { consumer, what } => write!(f, "planted consumer-{consumer}: {what}"),
        }
    }
}
