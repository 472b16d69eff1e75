//! The idempotency-key state machine.
//!
//! idem-core is deterministic: it does no networking and no file I/O, it never reads the
//! clock (time is the argument `now`), it never draws randomness, and it spawns nothing.
//! Given the same record and the same arguments, every function returns the same
//! [`Transition`]. That is what lets the model checker (`models/`) drive these very
//! functions and the turmoil simulations replay a seed exactly.
//!
//! It is the one place where SPEC's decision table lives ([`transition`]), and the one
//! place where the rules around it live: [`step()`] decides everything a store does for an
//! operation (the record to write, the fence counter, admission at the size limits, the
//! usage totals), [`reply`] decides what a server layer answers around a decision, and
//! [`consume`] what a message consumer does with one (run, ack, redeliver, dead-letter).
//! A record holds an HTTP response or, through [`outcome`], any operation's outcome.
//! Stores only read, call [`step()`], and write; the model checker drives the same
//! [`MemoryState`] that [`MemoryStore`] holds.
//!
//! # Feature flags
//!
//! * `testing` (off by default): the test suites a store runs, for stores' dev-dependencies
//!   (`idem-core = { workspace = true, features = ["testing"] }`). It makes `conformance`
//!   public (the named cases every store must pass, run through a `Harness` the store
//!   crate implements: how to open an empty store, how to break its backend) and adds
//!   `differential` (random operation sequences a store must answer exactly as
//!   [`MemoryStore`] does). `conformance` also holds what the store crates' own tests
//!   share: `conformance::fixtures` (ids, a short policy, responses, the wall clock) and
//!   `conformance::FlakyStore` (a store whose calls fail while a test says so). It pulls in
//!   `futures` and `proptest`; the rest of the crate needs neither.
//!
//! # Contents
//!
//! * [`key`]: [`Key::parse`], the `Idempotency-Key` header value, parsed once, and
//!   [`Key::from_chars`], a message id taken as it is.
//! * [`record`]: [`Principal`], [`RecordId`], [`Fence`], [`StoredResponse`], [`Record`], [`Policy`].
//! * [`fingerprint`]: [`Fingerprint`], a SHA-256 of method, path and streamed body, or of
//!   a message's subject and payload ([`Fingerprint::of_message`]), never equal to each
//!   other; or of a request's canonical parts ([`Fingerprint::semantic`]), with its
//!   [`FingerprintVersion`].
//! * [`request`]: [`ClaimRequest`] (fingerprints and [`Holder`]), what a claim takes.
//! * [`admin`]: [`KeyAdmin`] (list, forget) and [`ListQuery`]: key administration.
//! * [`outcome`]: [`StoredOutcome`] (bytes and their [`ContentType`]), any operation's
//!   result, recorded as a [`StoredResponse`] of status 0 so no store changes.
//! * [`time`]: [`Timestamp`], time as a value.
//! * [`transition`]: the decision table: [`Decision`], [`Fenced`], [`Renewal`], [`Refusal`].
//! * [`mod@step`]: the store step: [`step()`], [`step::op`], [`Step`], [`StoreView`], [`Counters`].
//! * [`usage`]: [`Usage`], [`Limits`], [`UsageDelta`]: what a store holds and may hold.
//! * [`reply`]: [`StatusRules`], [`reply::retry_after`], [`reply::superseded`]: the layer's rules.
//! * [`consume`]: [`consume::handle`], [`Settle`], [`Redelivery`], [`consume::check_timers`]:
//!   the message consumer's rules (SPEC "Message consumers").
//! * [`store`]: the [`Store`] trait every backend implements, and [`StoreError`].
//! * [`atomic`]: [`AtomicStore`], atomic mode as one call: business writes and the
//!   completion in one transaction, and [`CommitError`].
//! * [`memory`]: [`MemoryState`] (a store as a value) and [`MemoryStore`] (behind a lock).
//! * [`sql_row`]: a record as the SQL stores' columns (idem-sqlite's and idem-postgres's
//!   one codec): [`sql_row::RecordRow`], encoding and decoding over [`sql_row::Columns`].
//! * `conformance` (feature `testing`): the suite every store runs, and the fixtures the
//!   store crates' tests share.
//! * `differential` (feature `testing`): random operation sequences a store must answer
//!   exactly as `MemoryStore` does.
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
//! let replay = store.claim(&id, &fingerprint, now, &policy).await.unwrap();
//! assert_eq!(replay.replayed(), Some(&response));
//! # });
//! ```

pub mod admin;
pub mod atomic;
pub mod clock;
pub mod consume;
pub mod fingerprint;
pub mod key;
pub mod memory;
pub mod outcome;
pub mod record;
pub mod reply;
pub mod request;
pub mod sql_row;
pub mod step;
pub mod store;
pub mod time;
pub mod transition;
pub mod usage;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(test)]
mod conformance_tests;
#[cfg(feature = "testing")]
pub mod differential;

pub use admin::{KeyAdmin, LIST_LIMIT_MAX, ListQuery, ListQueryError, Page, StateFilter};
pub use atomic::{AtomicStore, CommitError, WritesFuture};
pub use bytes::Bytes;
pub use clock::{Clock, ManualClock, SystemClock};
pub use consume::{DeadLetterReason, Handle, Redelivery, RedeliveryTimer, Settle, TimerError};
pub use fingerprint::{Fingerprint, FingerprintBuilder, FingerprintError, FingerprintVersion, SemanticParts};
pub use key::{KEY_CHARS_MAX, Key, KeyError};
pub use memory::{MemoryState, MemoryStore};
pub use outcome::{ContentType, ContentTypeError, NotAnOutcome, StoredOutcome};
pub use record::{
    Fence, LEASE_DEFAULT, Policy, PolicyError, Principal, PrincipalError, RENEWALS_PER_LEASE, Record, RecordId,
    RecordState, StoredResponse, TOMBSTONE_MAX,
};
pub use reply::{Disposition, StatusRules, Superseded, TryLaterStatuses};
pub use request::{ClaimRequest, HOLDER_ID_BYTES_MAX, Holder};
pub use step::{Counters, Step, StepError, StoreView, step};
pub use store::{BoxError, Store, StoreError};
pub use time::Timestamp;
pub use transition::{Claim, Decision, Fenced, Look, Refusal, Renewal, Transition, Write};
pub use usage::{Limits, Usage, UsageDelta};
