//! NATS JetStream transport for idem-consumer: a durable pull consumer whose handler's side
//! effect happens once per message id (SPEC "Message consumers").
//!
//! # What is guaranteed
//!
//! With [`NatsTransport`] under an `idem_consumer::Consumer`:
//!
//! - **One side effect per key.** A message's key (its `Nats-Msg-Id`, or what a key function
//!   takes from it) is claimed in the idem store before its handler runs. In atomic mode
//!   (SQLite, PostgreSQL) the handler's writes commit with the record's completion or not
//!   at all, so a message redelivered after a crash, a timeout or a duplicate publish
//!   outside the stream's duplicate window runs its writes at most once; the redelivery is
//!   acked with the recorded outcome.
//! - **No ack before the completion committed.** An ack is a double ack: the server has
//!   confirmed it when it returns. A lost ack costs a redelivery, which is replayed and acked.
//! - **The broker's timer moves with the lease.** After each lease renewal the store
//!   applied, the consumer sends `+WPI` (in progress), which restarts the message's
//!   `ack_wait`; a crashed holder's message comes back one `ack_wait` after its last renewal.
//! - **A mismatch never runs.** The same key with another subject or payload is
//!   dead-lettered with reason `key-reused`.
//! - **Dead-lettering is at least once.** With a dead-letter subject, the copy is published
//!   and acked by its stream before the original is terminated (`+TERM`); a crash between
//!   the two publishes it again on redelivery, deduplicated by the dead-letter stream's
//!   duplicate window on the copy's `Nats-Msg-Id`. A copy that could not be published
//!   leaves the original unterminated: it comes back after `ack_wait` and is dead-lettered
//!   again, never dropped. Without a subject, the message is terminated with a warning and
//!   dropped.
//!
//! # The settings that make it hold
//!
//! [`NatsTransport::new`] refuses a consumer that would break these
//! ([`SetupError`]); [`recommended_consumer`] makes one that fits:
//!
//! - **durable**, because the durable's name is part of every record's principal
//!   (`nats:<stream>/<durable>`): two applications on one stream each run their own side
//!   effect, and a restarted application finds its records again.
//! - **`ack_policy` Explicit.**
//! - **`ack_wait` ≈ lease + renew_every** (e.g. lease 10 s, ack_wait 13-14 s): a crashed
//!   holder's message then returns just after its lease lapsed and is taken over at once.
//!   The consumer's builder refuses an `ack_wait` under twice the renewal interval.
//! - **`max_deliver` -1.** Every redelivery counts, conflicts and crashes included; a finite
//!   limit below [`MAX_DELIVER_MIN`] is refused. Bound poison messages with the consumer's
//!   `handler_attempts_max`, which dead-letters them instead of stranding them unacked.
//! - **`in_flight_max`** in [`NatsOptions`] equal to the consumer builder's, and the
//!   consumer's `max_ack_pending` at `in_flight_max` × processes: messages pulled but not
//!   yet handled age toward their `ack_wait` in the client.
//! - **record retention longer than the stream's redelivery horizon** (its `max_age`, or
//!   `ack_wait` × deliveries plus nak delays), and a duplicate window (`Nats-Msg-Id`, 2 min by
//!   default) is only the first line: idem dedups everything after it.
//! - **a dead-letter subject captured by another stream** than the consumed one (checked).
//!
//! nats-server 2.9.10 (this project's test server) supports all of this: double acks,
//! `-NAK` with a delay, `+WPI`, `+TERM` (without a reason, which needs 2.11).
//!
//! # Using it
//!
//! `examples/payments_sqlite.rs` is a whole payments consumer (SQLite, atomic mode) in 14
//! lines of glue; `cargo run -p idem-nats --example payments_sqlite -- --demo` runs it
//! against a server and checks one payment row per id. In short:
//!
//! ```text
//! stream.get_or_create_consumer("payments-app", recommended_consumer("payments-app", &policy, 64, 1)).await?;
//! let transport = NatsTransport::open(&js, "payments", "payments-app", NatsOptions::default()).await?;
//! let consumer = Consumer::builder(store, transport).policy(policy).atomic(Payments)?;
//! consumer.run_until(ctrl_c).await;
//! ```
//!
//! Transport behaviour worth knowing:
//!
//! - A settle on a closed client fails with `TransportError::Closed`; the message comes back
//!   after its `ack_wait` and is replayed. JetStream answers an ack of a message it already
//!   redelivered like any other, so `TransportError::Stale` is never reported.
//! - A pull stream the server ended (consumer deleted, request limits) is reopened on the
//!   next `next()`; a closed client keeps answering `Closed` until the consumer shuts down.
//! - `stop()` gives back (`-NAK`, no delay) what the client had buffered and nobody took,
//!   so another process gets it at once instead of after `ack_wait`.
//!
//! # Contents
//!
//! - [`NatsTransport`]: the transport; [`NatsDelivery`]: one delivery.
//! - [`NatsOptions`], [`SetupError`], [`recommended_consumer`], [`MAX_DELIVER_MIN`].
//! - [`dead_letter`]: the headers a dead letter carries.

pub mod dead_letter;
mod delivery;
mod error;
mod setup;
mod transport;

pub use delivery::NatsDelivery;
pub use setup::{
    IN_FLIGHT_MAX_DEFAULT, MAX_DELIVER_MIN, NatsOptions, SetupError, check_consumer, recommended_consumer,
};
pub use transport::NatsTransport;
