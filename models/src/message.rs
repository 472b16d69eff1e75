//! What travels between the HTTP model's clients and servers: requests and answers, and
//! the small indices that name operations, servers and attempts in them (the consumer
//! model borrows `Serial`).

use std::time::Duration;

/// An index into the model's operations (which also names the client and the key).
pub type OpIndex = u8;
/// An index into the store's record ids (one per record id the store can tell apart).
pub type Slot = u8;
/// A server replica's index.
pub type ServerIndex = u8;
/// The ghost serial number of one execution grant (one `Execute` or `TakeOver`).
pub type Serial = u16;
/// An attempt's number within its operation, from 1.
pub type AttemptNumber = u8;

/// An answer as it travels back to a client: what the client needs to decide, nothing
/// more. What a response carries (status, stored headers, body) is checked when a server
/// answers, and kept in the ghost facts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Answer {
    /// 201: the handler ran and its completion was accepted.
    Created,
    /// 201 answered without being recorded: the store failed at the completion (separate
    /// mode; the side effect had committed on its own).
    Unrecorded,
    /// The stored response, replayed (`Idempotent-Replayed: true`).
    Replayed,
    /// 409 with a `Retry-After`: another request holds a valid claim.
    Conflict {
        /// The `Retry-After` in whole seconds.
        retry_after_s: u8,
    },
    /// 422: the key was used for a different request.
    Mismatch,
    /// 410: only the record's tombstone is left (problem `key-expired`); idem-client stops.
    Gone,
    /// 503 from the handler itself, which failed before its side effect (no `Retry-After`).
    Failed,
    /// 503 with a `Retry-After`: the store could not be reached.
    Unavailable {
        /// The `Retry-After` in whole seconds.
        retry_after_s: u8,
    },
    /// No HTTP answer: the server crashed with the request and the connection was reset.
    Reset,
}

impl Answer {
    /// Whether the client stops retrying on this answer (idem-client: everything except
    /// 409, 429, 503 and transport errors; a 422 ends it with an error, never retried).
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Answer::Created | Answer::Unrecorded | Answer::Replayed | Answer::Mismatch | Answer::Gone)
    }

    /// The `Retry-After` the answer carries, if any.
    #[must_use]
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Answer::Conflict { retry_after_s } | Answer::Unavailable { retry_after_s } => {
                Some(Duration::from_secs(retry_after_s.into()))
            }
            _ => None,
        }
    }

    /// The HTTP status this answer stands for (0 for a reset connection).
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Answer::Created | Answer::Unrecorded | Answer::Replayed => 201,
            Answer::Conflict { .. } => 409,
            Answer::Mismatch => 422,
            Answer::Gone => 410,
            Answer::Failed | Answer::Unavailable { .. } => 503,
            Answer::Reset => 0,
        }
    }
}

/// A message in the network.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Message {
    /// A client's request for one attempt of an operation, to a server.
    Request {
        /// The operation (and so the client, key and payload).
        op: OpIndex,
        /// Which attempt of it.
        attempt: AttemptNumber,
        /// The server it is addressed to.
        server: ServerIndex,
        /// Held back by the network (a fault): the clock may move while it travels.
        delayed: bool,
    },
    /// A server's answer to an attempt. It is only ever sent to a client still waiting
    /// for that attempt (otherwise its connection is closed and the answer goes nowhere).
    Reply {
        /// The operation answered.
        op: OpIndex,
        /// Which attempt of it.
        attempt: AttemptNumber,
        /// The server answering.
        server: ServerIndex,
        /// What it answered.
        answer: Answer,
        /// Held back by the network (a fault): the clock may move while it travels.
        delayed: bool,
    },
}

impl Message {
    /// The operation the message is about.
    #[must_use]
    pub const fn op(self) -> OpIndex {
        match self {
            Message::Request { op, .. } | Message::Reply { op, .. } => op,
        }
    }

    /// The attempt the message belongs to.
    #[must_use]
    pub const fn attempt(self) -> AttemptNumber {
        match self {
            Message::Request { attempt, .. } | Message::Reply { attempt, .. } => attempt,
        }
    }

    /// The server at the other end.
    #[must_use]
    pub const fn server(self) -> ServerIndex {
        match self {
            Message::Request { server, .. } | Message::Reply { server, .. } => server,
        }
    }

    /// Whether the network holds it back.
    #[must_use]
    pub const fn delayed(self) -> bool {
        match self {
            Message::Request { delayed, .. } | Message::Reply { delayed, .. } => delayed,
        }
    }

    /// The same message, held back by the network.
    #[must_use]
    pub const fn held_back(self) -> Message {
        match self {
            Message::Request { op, attempt, server, .. } => Message::Request { op, attempt, server, delayed: true },
            Message::Reply { op, attempt, server, answer, .. } => {
                Message::Reply { op, attempt, server, answer, delayed: true }
            }
        }
    }

    pub(crate) const fn with_server(self, server: ServerIndex) -> Message {
        match self {
            Message::Request { op, attempt, delayed, .. } => Message::Request { op, attempt, server, delayed },
            Message::Reply { op, attempt, answer, delayed, .. } => {
                Message::Reply { op, attempt, server, answer, delayed }
            }
        }
    }
}
