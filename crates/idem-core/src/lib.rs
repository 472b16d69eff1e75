//! The idempotency-key state machine.
//!
//! idem-core is deterministic: it does no networking and no file I/O, it never reads the
//! clock (time is the argument `now`), it never draws randomness, and it spawns nothing.
//! Given the same record and the same arguments, every function returns the same
//! [`Transition`]. That is what lets the model checker (`models/`) drive these very
//! functions and the turmoil simulations replay a seed exactly.
//!
//! It is the one place where SPEC's decision table lives: [`transition::claim`],
//! [`transition::complete`], [`transition::release`] and [`transition::expire`]. Stores
//! make those transitions atomic; they do not decide.
//!
//! # Contents
//!
//! * [`key`]: [`Key::parse`], the `Idempotency-Key` header value, parsed once.
//! * [`record`]: [`Principal`], [`RecordId`], [`Fence`], [`StoredResponse`], [`Record`], [`Policy`].
//! * [`fingerprint`]: [`Fingerprint`], a SHA-256 of method, path and streamed body.
//! * [`time`]: [`Timestamp`], time as a value.
//! * [`transition`]: the decision table: [`Decision`], [`Fenced`], [`Refusal`].
//! * [`store`]: the [`Store`] trait every backend implements, and [`StoreError`].
//! * [`memory`]: [`MemoryStore`], a bounded in-process store.
//! * [`clock`]: [`Clock`] for callers: [`SystemClock`] and [`ManualClock`] (never read here).
//!
//! # Example
//!
//! ```
//! use idem_core::{Decision, Fingerprint, Key, MemoryStore, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp, Fenced};
//!
//! # pollster::block_on(async {
//! let store = MemoryStore::default();
//! let id = RecordId::new(Principal::anonymous(), Key::parse(b"\"k1\"").unwrap());
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
//! let (now, policy) = (Timestamp::from_unix_ms(0), Policy::default());
//!
//! let Decision::Execute(claim) = store.claim(&id, &fingerprint, now, &policy).await.unwrap() else {
//!     unreachable!("a new key executes")
//! };
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_1\"}"[..]);
//! let completed = store.complete(&id, claim.fence, response.clone(), now, &policy).await.unwrap();
//! assert_eq!(completed, Fenced::Applied);
//!
//! // The retry gets the recorded response, and nothing runs twice.
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await.unwrap(), Decision::Replay(response));
//! # });
//! ```

pub mod clock;
pub mod fingerprint;
pub mod key;
pub mod memory;
pub mod record;
pub mod store;
pub mod time;
pub mod transition;

pub use bytes::Bytes;
pub use clock::{Clock, ManualClock, SystemClock};
pub use fingerprint::{Fingerprint, FingerprintBuilder};
pub use key::{KEY_CHARS_MAX, Key, KeyError};
pub use memory::{MemoryLimits, MemoryStore};
pub use record::{
    Fence, Policy, PolicyError, Principal, PrincipalError, Record, RecordId, RecordState, StoredResponse,
};
pub use store::{BoxError, Store, StoreError};
pub use time::Timestamp;
pub use transition::{Claim, Decision, Fenced, Refusal, Transition, Write};
