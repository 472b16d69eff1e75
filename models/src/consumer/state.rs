//! The consumer model's state: the broker's copies, the consumers' running handlers, the
//! store half (the same [`Store`] as [`crate::IdemModel`]'s: idem-core's `MemoryState`
//! and the ledger of side effects), the fault budgets and the ghost facts.

use idem_core::{DeadLetterReason, Fence, Record, Timestamp};
use stateright::Representative;

use crate::message::Serial;
use crate::state::Store;

/// An index into the published copies (which also names the message id and payload).
pub type CopyIndex = u8;
/// A consumer's index.
pub type ConsumerIndex = u8;

/// Where one published copy of a message is at the broker.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum CopyPhase {
    /// Waiting to be delivered, not before `at` (a nak's delay).
    Ready {
        /// When it may be delivered.
        at: Timestamp,
    },
    /// Delivered to a consumer and not settled.
    Out {
        /// The consumer holding it.
        consumer: ConsumerIndex,
        /// When the broker redelivers it unless acked or moved by progress (`AckWait`);
        /// `None` under `ChannelClose` (only a closing channel brings it back).
        deadline: Option<Timestamp>,
    },
    /// Acked: the broker forgets it.
    Acked,
    /// Dead-lettered, with the reason the consumer gave.
    DeadLettered(DeadLetterReason),
}

/// One published copy of a message.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Copy {
    /// How many times it was delivered (the current delivery's number, from 1).
    pub deliveries: u8,
    /// Where it is.
    pub phase: CopyPhase,
}

/// Where a running handler is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum RunPhase {
    /// It holds a claim and has not written its side effect.
    Claimed,
    /// It wrote its side effect (atomic mode: pending in the claim's transaction; separate
    /// mode: committed); the completion is next.
    Written,
    /// Variant `ack-before-completion`: it acked when the handler returned; the completion
    /// is next.
    AckedEarly,
    /// The record is completed (by this run's completion, or another's): the ack is next.
    Acking,
}

/// A handler a consumer runs for one delivery (in memory: a crash loses it).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Run {
    /// Ghost: which execution grant this is.
    pub serial: Serial,
    /// The copy it was delivered.
    pub copy: CopyIndex,
    /// Which delivery of that copy (the broker settles only the current one).
    pub delivery: u8,
    /// The fence of its claim.
    pub fence: Fence,
    /// Where it is.
    pub phase: RunPhase,
    /// When it claimed: a healthy handler returns within the handler time.
    pub started_at: Timestamp,
    /// When it last renewed (or claimed): the next renewal is due a third of a lease later.
    pub renewed_at: Timestamp,
    /// A stall (a fault): it renews no more and may run for any time.
    pub stalled: bool,
    /// Variant `check-then-act` only: the record it believes it holds (never written).
    pub believed: Option<Record>,
}

/// A consumer: its running handlers, in the order they started.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Consumer {
    /// Handlers running.
    pub runs: Vec<Run>,
}

/// Faults still allowed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConsumerBudgets {
    /// Consumer crashes left.
    pub crashes: u8,
    /// Stalls left.
    pub stalls: u8,
    /// Lost acks left.
    pub lost_acks: u8,
    /// Broker timeouts under a live handler left.
    pub timeouts: u8,
    /// Store outages left.
    pub outages: u8,
    /// Handler failures left.
    pub failures: u8,
}

/// Facts the properties read that no real component keeps.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConsumerGhost {
    /// Execution grants issued so far.
    pub serials: Serial,
    /// Per message id: the grant whose claim is current.
    pub current: Vec<Option<Serial>>,
    /// Per message id: the payload of the copy whose claim created the record.
    pub owner: Vec<Option<u8>>,
    /// Guarantees a step broke (bits of [`crate::Broken`] and [`ConsumerBroken`]).
    pub broken: u16,
    /// What the last step did, for the reachability properties (bits of [`Happened`]);
    /// only the last step's, so that histories do not multiply states.
    pub happened: u16,
}

/// Bits for [`ConsumerGhost::broken`] beyond [`crate::Broken`]'s.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConsumerBroken {
    /// A copy was dead-lettered that is no mismatch: as `key-reused` while its payload is
    /// the record's, or for a reason the configuration cannot give.
    WrongDeadLetter = 1 << 10,
}

/// Bits for [`ConsumerGhost::happened`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Happened {
    /// A copy was redelivered because its ack deadline passed.
    RedeliveredAfterAckTimeout = 1,
    /// A lapsed claim was taken over.
    TakeOver = 2,
    /// A completed record was replayed and the copy acked without running.
    ReplayAcked = 4,
    /// A delivery met another claim and was naked with a delay.
    ConflictNaked = 8,
    /// A copy was dead-lettered.
    DeadLettered = 16,
    /// An ack was lost.
    AckLost = 32,
    /// A consumer crashed after a completion committed and before its ack.
    CrashAfterCommit = 64,
    /// Progress after a renewal moved a copy's ack deadline.
    ProgressExtended = 128,
    /// A closed channel requeued copies.
    ChannelRequeued = 256,
}

/// The whole system at one moment.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConsumerState {
    /// Every published copy, in publish order.
    pub copies: Vec<Copy>,
    /// Per consumer.
    pub consumers: Vec<Consumer>,
    /// The store: idem-core's `MemoryState`, the clock, whether it is up, and the ledger of
    /// side effects (an [`crate::Execution`]'s `op` is the copy whose payload ran).
    pub store: Store,
    /// Faults left.
    pub budgets: ConsumerBudgets,
    /// History variables.
    pub ghost: ConsumerGhost,
}

impl ConsumerState {
    /// Whether a step broke the guarantee with this bit.
    #[must_use]
    pub fn broke(&self, bit: u16) -> bool {
        self.ghost.broken & bit != 0
    }

    /// Whether the last step did this.
    #[must_use]
    pub fn happened(&self, what: Happened) -> bool {
        self.ghost.happened & what as u16 != 0
    }

    pub(crate) fn mark(&mut self, bit: u16) {
        self.ghost.broken |= bit;
    }

    pub(crate) fn saw(&mut self, what: Happened) {
        self.ghost.happened |= what as u16;
    }

    /// Every running handler, with its consumer.
    pub fn runs(&self) -> impl Iterator<Item = (ConsumerIndex, &Run)> {
        self.consumers.iter().enumerate().flat_map(|(consumer, held)| {
            let consumer = u8::try_from(consumer).expect("at most CONSUMERS_MAX consumers");
            held.runs.iter().map(move |run| (consumer, run))
        })
    }
}

/// Consumers are interchangeable: states that differ only by which consumer is which are
/// explored once (stateright applies this under DFS).
impl Representative for ConsumerState {
    fn representative(&self) -> ConsumerState {
        let count = self.consumers.len();
        let signature = |consumer: usize| {
            let held: Vec<(usize, Option<Timestamp>)> = self
                .copies
                .iter()
                .enumerate()
                .filter_map(|(index, copy)| match copy.phase {
                    CopyPhase::Out { consumer: on, deadline } if usize::from(on) == consumer => Some((index, deadline)),
                    _ => None,
                })
                .collect();
            let runs: Vec<_> = self.consumers[consumer]
                .runs
                .iter()
                .map(|r| {
                    let moments = (r.started_at, r.renewed_at, r.stalled, r.believed.is_some());
                    (r.serial, r.copy, r.delivery, r.fence, r.phase, moments)
                })
                .collect();
            (runs, held)
        };
        let signatures: Vec<_> = (0..count).map(signature).collect();
        let mut order: Vec<usize> = (0..count).collect();
        order.sort_by(|a, b| signatures[*a].cmp(&signatures[*b]));
        let mut renamed = vec![0_u8; count];
        for (new, old) in order.iter().enumerate() {
            renamed[*old] = u8::try_from(new).expect("at most CONSUMERS_MAX consumers");
        }
        let mut representative = self.clone();
        representative.consumers = order.iter().map(|old| self.consumers[*old].clone()).collect();
        for copy in &mut representative.copies {
            if let CopyPhase::Out { consumer, .. } = &mut copy.phase {
                *consumer = renamed[usize::from(*consumer)];
            }
        }
        representative
    }
}
