//! Exactly-once message consumers over idem (issue 21, SPEC "Message consumers").
//!
//! Work in progress: the transport trait ([`transport`]) is settled; the consumer loop follows.

pub mod transport;

pub use transport::{Delivery, DeliveryInfo, Transport, TransportError};
