//! The history: every client invocation and answer, every store operation, every
//! execution and every fault, in the order they happened, with simulated time. Checkers
//! read it after the run (Jepsen style); its text is the run's trace.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use idem_core::{ClaimRequest, Fence, RecordId, StoredResponse};

use crate::clock::sim_ms;

/// Which store operation a [`StoreEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Claim,
    Complete,
    CompleteInTransaction,
    Release,
    Renew,
    Get,
    /// A replay counted (`Store::count_replay`): changes no fence, answers no request.
    CountReplay,
}

/// The record as the store host held it before an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Absent,
    InFlight(Fence),
    Completed(Fence),
    /// Only the tombstone of a completed record (SPEC "Key lifecycle").
    Tombstone(Fence),
}

impl Held {
    pub(crate) fn fence(self) -> Option<Fence> {
        match self {
            Held::Absent => None,
            Held::InFlight(fence) | Held::Completed(fence) | Held::Tombstone(fence) => Some(fence),
        }
    }
}

/// One operation the store host applied.
#[derive(Debug, Clone)]
pub(crate) struct StoreEvent {
    /// The replica that asked.
    pub(crate) replica: usize,
    /// The store host's lifetime (bumped by every boot of a volatile store).
    pub(crate) epoch: u32,
    pub(crate) op: StoreOp,
    pub(crate) id: RecordId,
    /// The fence the replica presented (fenced operations).
    pub(crate) presented: Option<Fence>,
    pub(crate) before: Held,
    /// The claim's request as the store received it: fingerprint, earlier one, holder (claims).
    pub(crate) request: Option<ClaimRequest>,
    /// The fence a claim issued and whether the in-flight record was written with it.
    pub(crate) issued: Option<(Fence, bool)>,
    /// Whether a fenced operation applied (`Fenced::Applied`, `Renewed`).
    pub(crate) applied: bool,
    /// The response a completion recorded, if it applied.
    pub(crate) recorded: Option<StoredResponse>,
    /// The answer, as text.
    pub(crate) answer: String,
}

impl StoreEvent {
    /// An operation as the host starts on it: nothing issued, applied or answered yet.
    pub(crate) fn new(
        replica: usize,
        epoch: u32,
        op: StoreOp,
        id: &RecordId,
        presented: Option<Fence>,
        before: Held,
    ) -> StoreEvent {
        StoreEvent {
            replica,
            epoch,
            op,
            id: id.clone(),
            presented,
            before,
            request: None,
            issued: None,
            applied: false,
            recorded: None,
            answer: String::new(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A fault was injected or reverted.
    Fault(String),
    /// A client submitted an operation (again: `submission` > 1 after an error): what it
    /// sent, as sent (`auth` is the `Authorization` value, `target` the path and query).
    Invoke { client: usize, op: usize, submission: u32, auth: String, key: String, target: String, body: Bytes },
    /// An attempt of an operation left the client for a replica.
    Send { client: usize, op: usize, replica: usize, key: String },
    /// An attempt's answer reached the client.
    Answer { client: usize, op: usize, replica: usize, answer: Answer },
    /// An attempt failed on the transport or was cut off by the client's timeout.
    Lost { client: usize, op: usize, replica: usize, why: String },
    /// A submission ended with an error from the client layer.
    Failed { client: usize, op: usize, why: String },
    /// An operation ended: with an answer's status, or given up.
    End { client: usize, op: usize, status: Option<u16> },
    /// The store host applied an operation.
    Store(Box<StoreEvent>),
    /// A store call from a replica failed (timeout, connection), outcome unknown.
    StoreCallFailed { replica: usize, op: &'static str, why: String },
    /// A handler reached its write (the side effect) under a claim.
    Execute { replica: usize, id: RecordId, fence: Fence, body: Bytes },
    /// A purge on the store host forgot `count` expired records.
    Purged { count: usize },
    /// The `sqlite-batch` host decided `operations` idempotency operations in one batch.
    Batch { operations: usize },
    /// The ledger host wrote a payment row, by any path (`via`: the request that wrote it).
    Row(Box<Row>),
    /// After the run, a user listed a caller's payments over HTTP, page by page: the items
    /// as answered (`None`: the list could not be read).
    Listed { auth: String, pages: u32, items: Option<Vec<Bytes>> },
    /// The consumer scenarios' own events: publishes, deliveries, settles, handlers, effect rows.
    Msg(Box<crate::consumer::MsgEvent>),
}

/// A payment row as the ledger host wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) epoch: u32,
    pub(crate) via: &'static str,
    /// The row's owner, as the server stored it (opaque to the checker).
    pub(crate) owner: String,
    pub(crate) payment_id: String,
    pub(crate) amount_minor: u64,
    pub(crate) currency: String,
    pub(crate) destination: String,
}

/// An HTTP answer as the client saw it: what G2 compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) replayed: bool,
    /// The headers a replay must repeat: all but `date`, `content-length`, the key echo
    /// and `idempotent-replayed`, in the order received.
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value)
    }
}

/// One entry of the history.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) at_ms: u64,
    pub(crate) kind: Kind,
}

impl Event {
    /// The idempotency key this event is about, if any (for stories).
    pub(crate) fn key(&self) -> Option<&str> {
        match &self.kind {
            Kind::Invoke { key, .. } => Some(key),
            Kind::Store(event) => Some(event.id.key.as_str()),
            Kind::Execute { id, .. } => Some(id.key.as_str()),
            _ => None,
        }
    }

    /// The (client, op) this event is about, if any.
    pub(crate) fn op(&self) -> Option<(usize, usize)> {
        match &self.kind {
            Kind::Invoke { client, op, .. }
            | Kind::Send { client, op, .. }
            | Kind::Answer { client, op, .. }
            | Kind::Lost { client, op, .. }
            | Kind::Failed { client, op, .. }
            | Kind::End { client, op, .. } => Some((*client, *op)),
            _ => None,
        }
    }
}

fn short(principal: &idem_core::Principal) -> &str {
    let name = principal.as_str();
    if name.is_empty() { "anonymous" } else { &name[..name.len().min(8)] }
}

struct Id<'a>(&'a RecordId);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", short(&self.0.principal), self.0.key.as_str())
    }
}

struct Text<'a>(&'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_MAX: usize = 160;
        let shown = &self.0[..self.0.len().min(SHOWN_MAX)];
        write!(f, "{}", String::from_utf8_lossy(shown))?;
        if self.0.len() > SHOWN_MAX { write!(f, "…") } else { Ok(()) }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>6}.{:03}s ", self.at_ms / 1000, self.at_ms % 1000)?;
        match &self.kind {
            Kind::Fault(text) => write!(f, "fault   {text}"),
            Kind::Msg(event) => write!(f, "{event}"),
            Kind::Invoke { client, op, submission, auth, key, target, body } => {
                write!(f, "invoke  c{client}.{op} #{submission} [{auth}] key={key} POST {target} {}", Text(body))
            }
            Kind::Send { client, op, replica, key } => {
                write!(f, "send    c{client}.{op} -> replica-{replica} key={key}")
            }
            Kind::Answer { client, op, replica, answer } => write!(
                f,
                "answer  c{client}.{op} <- replica-{replica} {}{} location={} {}",
                answer.status,
                if answer.replayed { " replayed" } else { "" },
                Text(answer.header("location").map_or(&b"-"[..], |value| value)),
                Text(&answer.body)
            ),
            Kind::Lost { client, op, replica, why } => write!(f, "lost    c{client}.{op} <- replica-{replica}: {why}"),
            Kind::Failed { client, op, why } => write!(f, "failed  c{client}.{op}: {why}"),
            Kind::End { client, op, status: Some(status) } => write!(f, "end     c{client}.{op} {status}"),
            Kind::End { client, op, status: None } => write!(f, "end     c{client}.{op} gave up"),
            Kind::Store(event) => {
                let StoreEvent { replica, epoch, op, id, presented, before, issued, answer, .. } = &**event;
                write!(f, "store   e{epoch} replica-{replica} {op:?} {} ", Id(id))?;
                if let Some(fence) = presented {
                    write!(f, "presents {fence:?} ")?;
                }
                write!(f, "held {before:?} -> {answer}")?;
                match issued {
                    Some((fence, true)) => write!(f, " (claim {fence:?} written)"),
                    Some((fence, false)) => write!(f, " (claim {fence:?} NOT written)"),
                    None => Ok(()),
                }
            }
            Kind::StoreCallFailed { replica, op, why } => write!(f, "unreach replica-{replica} {op}: {why}"),
            Kind::Execute { replica, id, fence, body } => {
                write!(f, "execute replica-{replica} {} under {fence:?}: {}", Id(id), Text(body))
            }
            Kind::Row(row) => write!(
                f,
                "row     e{} {} via {}: {} {} {} to {}",
                row.epoch,
                &row.owner[..row.owner.len().min(8)],
                row.via,
                row.payment_id,
                row.amount_minor,
                row.currency,
                row.destination
            ),
            Kind::Purged { count } => write!(f, "purged  {count} expired records"),
            Kind::Batch { operations } => write!(f, "batch   {operations} operations decided in one group commit"),
            Kind::Listed { auth, pages, items: Some(items) } => {
                write!(f, "listed  [{auth}] {} payments in {pages} pages", items.len())
            }
            Kind::Listed { auth, pages, items: None } => write!(f, "listed  [{auth}] unreadable after {pages} pages"),
        }
    }
}

/// The shared recorder every host writes to. The simulation runs on one thread, in a
/// fixed order, so the order of events is the same for the same seed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// Records `kind` at the current simulated time.
    pub(crate) fn record(&self, kind: Kind) {
        self.record_at(sim_ms(), kind);
    }

    pub(crate) fn record_at(&self, at_ms: u64, kind: Kind) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(Event { at_ms, kind });
    }

    /// Calls `each` on every event recorded from index `from` on; returns the next index.
    pub(crate) fn scan_from(&self, from: usize, mut each: impl FnMut(&Event)) -> usize {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events.iter().skip(from) {
            each(event);
        }
        events.len()
    }

    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
