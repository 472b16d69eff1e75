//! [`Operation`]: one logical operation of a client, fixed for the whole run; what the
//! model's steps and the stories that tell them both name.

use idem_core::{Fingerprint, Key, Principal, RecordId};

use crate::message::Slot;

/// One logical operation of one client: a key and a payload, fixed for the whole run.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The client (0-based) that performs it.
    pub client: u8,
    /// The client's principal.
    pub principal: Principal,
    /// The idempotency key it sends on every attempt.
    pub key: Key,
    /// The payment amount in its body.
    pub amount: u32,
    /// idem-core's fingerprint of `POST /payments` with that body.
    pub fingerprint: Fingerprint,
    /// Its record id (principal, key).
    pub record_id: RecordId,
    /// Which of the distinct record ids it is (for "at most one execution per record id").
    pub record_index: u8,
    /// The store slot the store variant files it under.
    pub slot: Slot,
    /// "alice/k1/100": what a response to it must start with.
    pub label: String,
}
