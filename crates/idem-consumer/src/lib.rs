//! Exactly-once message consumers over idem (SPEC "Message consumers").
//!
//! Brokers deliver at least once. A [`Consumer`] guards each delivery with the same record,
//! decision table, fences, leases and stores as idem's HTTP layer, so a message's side effect
//! runs once per key however often it is delivered, and every delivery ends acked or
//! dead-lettered:
//!
//! | the store decides | the consumer does |
//! |---|---|
//! | execute (new, or take-over) | runs the handler while renewing the lease (and the broker's timer), completes (atomic mode: in the handler's transaction), then acks |
//! | replay (completed) | acks without running; the stored outcome goes to [`Handler::replayed`] first |
//! | in flight elsewhere | naks with a delay (or waits: [`OnConflict::Wait`]) |
//! | mismatch | never runs; dead-letters with reason `key-reused` |
//! | gone (a tombstone: completed, past retention, [`idem_core::Policy::with_tombstone`]) | never runs (the outcome is no longer kept to replay); dead-letters with reason `key-expired` (SPEC "Key lifecycle") |
//! | handler error | releases the claim and naks |
//! | the store fails | never runs; naks (G8) |
//!
//! An ack is sent only after the completion committed. Every rule is idem-core's
//! ([`idem_core::consume`]); this crate is the I/O around them, over the small
//! [`Transport`] trait that idem-nats, idem-rabbitmq, the simulation and
//! `testing::MemoryBroker` (feature `testing`) implement.
//!
//! Guarantees (SPEC G1-G8 read with "message" for "request" and "ack" for "answer"): in
//! atomic mode ([`ConsumerBuilder::atomic`], SQLite and PostgreSQL) the side effect commits
//! at most once per key; in separate mode ([`ConsumerBuilder::handler`], any store) a crash
//! between the side effect and its completion lets it run again once the lease lapses.
//! See docs/consumers.md.

mod config;
mod consumer;
mod handler;
mod message;
mod mode;
pub mod observe;
mod process;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use config::{
    ConfigError, DRAIN_MAX_DEFAULT, EXECUTION_MAX_DEFAULT, IN_FLIGHT_MAX_DEFAULT, IN_FLIGHT_MAX_LIMIT, OnConflict,
    WAIT_MAX_LIMIT,
};
pub use consumer::{Consumer, ConsumerBuilder, Drained};
pub use handler::{AtomicHandler, Handler};
pub use idem_once::{ClaimScope, Commit};
pub use message::{KeyFrom, Message, PrincipalFrom};
pub use mode::{Atomic, Failed, Mode, Separate};
pub use observe::Outcome;
pub use transport::{Delivery, DeliveryInfo, Transport, TransportError};
