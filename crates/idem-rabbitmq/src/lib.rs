//! RabbitMQ (AMQP 0-9-1) transport for [`idem_consumer`]: a queue consumer whose side
//! effects run once per message id, however often RabbitMQ delivers the message.
//!
//! # Contract
//!
//! [`RabbitTransport`] is an [`idem_consumer::Transport`]: `basic.consume` on one queue
//! with manual acks and `basic.qos` prefetch. The consumer it feeds guarantees, per key
//! (by default the AMQP `message_id`; principal `amqp:<vhost>/<queue>`):
//!
//! * the handler's side effect is committed at most once (atomic mode: in the same
//!   transaction as the record's completion), and a message that is acked had its effect;
//! * an ack is sent only after the completion committed, so a lost ack, a crash or a closed
//!   channel makes RabbitMQ redeliver, and the redelivery is replayed (acked with the
//!   stored outcome) without running the handler again;
//! * a message whose key's record belongs to another payload or routing is never run: it is
//!   dead-lettered with the reason `key-reused`.
//!
//! RabbitMQ never deduplicates publishes (plan B8): every duplicate reaches the consumer and
//! is replayed. A message without a `message_id` (or a key function's key) is dead-lettered
//! (`key-missing`), never run unguarded.
//!
//! # What RabbitMQ imposes (plan B5-B7)
//!
//! * **No in-progress ack (B5).** A delivery comes back only when its channel or connection
//!   closes: at once when a consumer process dies (TCP close), after the heartbeat timeout
//!   for a hung peer, or when the broker's `consumer_timeout` (default 30 min, global on
//!   RabbitMQ 3.10) fires, which **closes the whole channel** and requeues every delivery on
//!   it. The timeout cannot be read over AMQP: declare it with
//!   [`RabbitTransportBuilder::consumer_timeout`]; the consumer refuses to start unless
//!   `execution_max + lease` is under it. [`idem_consumer::Delivery::in_progress`] is a
//!   no-op. When the channel closes under running handlers they are not cancelled: they
//!   complete their records, their acks fail (counted as `closed` transport errors), the
//!   transport consumes again on a new channel, and the requeued copies are replayed.
//! * **No delayed nack (B6).** `basic.nack` with requeue puts the message back at once, so
//!   a nak with a delay holds the delivery for the delay (keeping its prefetch slot) and
//!   then nacks it. Set the prefetch ([`RabbitTransportBuilder::prefetch`]) to the
//!   consumer's in-flight bound.
//! * **Quorum queues count requeues (B7).** Each nack, and each delivery returned by a
//!   closed channel, counts toward `x-delivery-limit`; at the limit the broker drops or
//!   dead-letters the message, even one that would have completed. Leave the limit off or
//!   set it to 5 or more, and use [`idem_consumer::OnConflict::Wait`]
//!   ([`recommended_on_conflict`]): the consumer waits for the holder's lease instead of
//!   nacking a message that is in flight elsewhere, so a crash costs one extra delivery at
//!   most (tests/crash.rs: a limit of 1 survives a SIGKILLed consumer with `Wait`, and
//!   drops the message with `Redeliver`). [`idem_consumer::DeliveryInfo::attempt`] is the
//!   quorum queue's `x-delivery-count` + 1 (classic queues do not count: `None`).
//!
//! # Dead-lettering
//!
//! With [`RabbitTransportBuilder::dead_letter_to`], a copy of the message (every property
//! kept, `message_id` above all, plus the headers [`REASON_HEADER`] and [`SOURCE_HEADER`])
//! is published to that exchange under publisher confirms and `mandatory`, and the original
//! is acked only once the broker confirmed the copy; an unroutable or refused copy requeues
//! the original to be tried again. Without it, the delivery is rejected without requeue:
//! the queue's own dead-letter exchange (`x-dead-letter-exchange`) takes it if it has one
//! (the reason is then only in the warn log). Either way dead-lettering is **at least
//! once**: a crash or a lost ack between the copy and the settle copies the message again.
//!
//! # Example
//!
//! examples/payments_postgres.rs is the whole of it with PostgreSQL in atomic mode; in
//! short (separate mode, any store):
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use idem_consumer::{ClaimScope, Consumer, Handler, Message, OnConflict};
//! use idem_core::{Limits, MemoryStore, StoredOutcome};
//! use idem_rabbitmq::RabbitTransport;
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type Error = std::convert::Infallible;
//!
//!     async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<StoredOutcome, Self::Error> {
//!         Ok(StoredOutcome::bytes(message.payload().clone()))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = RabbitTransport::builder("amqp://guest:guest@127.0.0.1:5672/%2f", "orders")
//!     .prefetch(16) // = in_flight_max
//!     .connect()
//!     .await?;
//! let consumer = Consumer::builder(Arc::new(MemoryStore::new(Limits::default())), transport)
//!     .in_flight_max(16)
//!     .on_conflict(OnConflict::Wait { max: Duration::from_secs(10) })
//!     .handler(Echo)?;
//! let drained = consumer.run_until(async { tokio::signal::ctrl_c().await.unwrap_or_default() }).await;
//! assert_eq!(drained.abandoned, 0, "every running handler finished within the drain time");
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//!
//! * [`RabbitTransportBuilder`] (builder.rs): settings, checked before connecting.
//! * [`RabbitTransport`] (transport.rs): consume, stop, reopen after a closed channel.
//! * [`RabbitDelivery`] (delivery.rs): one delivery's message and its settles.
//! * dead_letter.rs: the copy under publisher confirms, or the reject.
//! * reply.rs: [`RabbitDelivery::reply`], answering `reply_to` with the recorded outcome.

mod builder;
mod dead_letter;
mod delivery;
mod error;
mod link;
mod reply;
mod transport;

pub use builder::{DEFAULT_CONSUMER_TIMEOUT, DEFAULT_PREFETCH, RabbitTransportBuilder, recommended_on_conflict};
pub use dead_letter::{REASON_HEADER, SOURCE_HEADER};
pub use delivery::RabbitDelivery;
pub use error::RabbitError;
pub use transport::RabbitTransport;

/// The lapin version this crate builds on, for callers that declare queues themselves.
pub use lapin;
