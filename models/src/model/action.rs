//! The steps of the system, one variant per kind of step.

use crate::message::{Message, OpIndex, Serial, ServerIndex, Slot};

/// One step of the system.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// A client sends the first attempt of an operation to a server.
    Start {
        /// The operation.
        op: OpIndex,
        /// The server chosen.
        server: ServerIndex,
    },
    /// A client's wait ends (the clock moves to its end) and it sends the next attempt.
    Wake {
        /// The operation.
        op: OpIndex,
        /// The server chosen.
        server: ServerIndex,
    },
    /// An attempt's timer fires (the clock moves to it): the client stops waiting for it.
    Timeout {
        /// The operation.
        op: OpIndex,
    },
    /// The network delivers a message (and forgets it).
    Deliver(Message),
    /// The network delivers a copy of a request and keeps it for a second delivery.
    Duplicate(Message),
    /// The network loses a message.
    Lose(Message),
    /// The network holds a message back: the clock may move before it arrives.
    Delay(Message),
    /// A handler takes its next step: it writes its payment row, or (once written) completes.
    Step {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler fails (503), before its write or after it, and releases its claim.
    Fail {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler renews its lease: the clock moves to its heartbeat, a third of a lease
    /// after its last renewal (or the renewal is late and happens now).
    Renew {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler turns out slow: it runs past the handler time, renewing on schedule.
    Slow {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler stalls: it stops renewing, so its lease may lapse while it runs.
    Stall {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A server crashes and restarts, losing its running handlers.
    Crash {
        /// The server.
        server: ServerIndex,
    },
    /// The store becomes unreachable: the next store call fails (and the outage is over).
    StoreDown,
    /// The store is reachable again although nobody called it (offered only when no call
    /// is left to make: the requests were lost, the handlers crashed).
    StoreUp,
    /// The store crashes and restarts at once: it loses every write not yet on disk.
    StoreCrash,
    /// A server runs the store's purge of expired records at its own time, while requests
    /// may be in flight.
    Purge {
        /// The server whose clock the purge reads.
        server: ServerIndex,
    },
    /// An operator forgets a record (`op::Forget`): the store removes it and moves its fence
    /// counter on.
    Forget {
        /// The store slot of the record.
        slot: Slot,
    },
    /// Time passes until a record is due (forgotten, or shrunk to its tombstone), and the
    /// store purges what is due.
    Expire {
        /// The store slot of the record.
        slot: Slot,
    },
}
