//! Run an operation once per idempotency key, over any idem store: claim, run while the
//! lease is renewed, record the outcome, and replay it to every retry (SPEC G1-G8).
//!
//! This is the I/O around idem-core's store step that every adapter shares: idem-http's
//! layer, idem-consumer's message consumer, and a plain function wrapper
//! ([`Once::run`], [`Once::run_atomic`]). It decides nothing itself: the decision table is
//! the store's, and what an execution that lost its claim answers is
//! `idem_core::reply::superseded`'s.
//!
//! * [`Once::claim`] takes a `ClaimRequest` (fingerprint, the same request's fingerprint
//!   of an earlier version, the claim's `Holder`) or just a `&Fingerprint`.
//! * [`Once::execute`] / [`Once::execute_atomic`]: one execution under a claim the caller
//!   holds, ending in [`Executed`] (plain data: completed with the record's expiry, lost,
//!   failed, unrecorded).
//! * [`Once::run`] / [`Once::run_atomic`] end in [`Ran`], which carries the expiry of the
//!   record it answers from (SPEC "Key lifecycle": expiry on the wire); a tombstone
//!   ([`Ran::Gone`]) never runs the work.
//! * [`renew::while_renewing`]: the lease renewed every `Policy::renew_every` while work
//!   runs, and a [`Heartbeat`] told after each applied renewal (a broker's in-progress ack),
//!   up to the execution ceiling ([`Once::with_execution_max`], SPEC "Key lifecycle:
//!   execution ceiling").
//! * [`record::complete`] / [`record::complete_expiring`] (bounded retries) and
//!   [`record::release`].
//! * [`Commit`]: atomic mode's outcome plus business writes, committed with the completion
//!   in one transaction (`AtomicStore::complete_with`) or not at all.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idem_core::{Fingerprint, Key, MemoryStore, Policy, Principal, RecordId, StoredOutcome};
//! use idem_once::{Once, Ran};
//!
//! let policy = Policy::new(Duration::from_secs(10), Duration::from_secs(86_400)).unwrap();
//! let once = Once::new(Arc::new(MemoryStore::new(Default::default())), policy);
//! let id = RecordId::new(Principal::anonymous(), Key::from_chars("order-42").unwrap());
//! let fingerprint = Fingerprint::of_message("orders", b"{\"amount\":5}");
//!
//! let first = once.run(&id, &fingerprint, |_claim| async { Ok::<_, std::io::Error>(StoredOutcome::bytes("paid")) }).await;
//! assert!(matches!(first, Ok(Ran::Executed { .. })));
//! let again = once.run(&id, &fingerprint, |_claim| async { unreachable!("never runs twice") as Result<_, std::io::Error> }).await;
//! assert!(matches!(again, Ok(Ran::Replayed { ref outcome, .. }) if outcome.bytes == "paid"));
//! // Every answer from a record says when it expires: here, a day after the completion.
//! assert_eq!(first.unwrap().expires_at(), again.unwrap().expires_at());
//! # });
//! ```

mod commit;
mod execute;
#[cfg(feature = "json")]
mod json;
mod lease;
pub mod observe;
mod once;
pub mod record;
pub mod renew;

pub use commit::Commit;
pub use execute::{Executed, Failure};
#[cfg(feature = "json")]
pub use json::json;
pub use lease::{ClaimScope, LeaseState};
pub use once::{Once, Ran};
pub use renew::Heartbeat;
