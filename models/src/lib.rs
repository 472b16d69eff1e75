//! A stateright model of the idempotency-key protocol that drives idem-core itself.
//!
//! Every decision about a record is taken by idem-core's own functions,
//! [`idem_core::transition::claim`], [`complete`](idem_core::transition::complete) and
//! [`release`](idem_core::transition::release), on real [`idem_core::Record`]s, with a real
//! [`idem_core::Policy`], [`idem_core::Fence`]s and [`idem_core::Timestamp`]s. The store in
//! the model only applies the `Write` those functions return; it does not decide. Planted
//! bugs ([`Variant`]) change what the store passes to those functions or skip a write,
//! never idem-core.
//!
//! # What is modelled
//!
//! * **Clients**, one principal each (alice, bob, ...). Each has one or more logical
//!   operations, a key and a payload (`POST /payments {"amount":N}`); operation `n` of every
//!   client uses key `kn`, so two principals use the same key strings. With `key_reuse`,
//!   client 1 also reuses `k1` with another amount. A client sends, resends early on a
//!   timer (bounded), and retries after an attempt ended without a final answer (lost,
//!   crashed, 409, 5xx), honouring `Retry-After`: it does not retry while the record is
//!   claimed under a valid lease. 201, replays and 422 are final.
//! * **Servers** (replicas): a request arrives and the store claims; the handler then runs
//!   the side effect and completes (atomic mode: one fenced step; separate mode: two
//!   steps), or fails before its side effect and releases. A server may crash; it restarts
//!   at once with its running handlers gone, their claims left in the store.
//! * **The store**: the records, a store-wide fence counter that only grows (as
//!   `MemoryStore` does), a logical clock `now`, and the business ledger. In atomic mode a
//!   completion and its side effect commit together or not at all; in separate mode the
//!   side effect commits on its own, and a refused completion cannot take it back.
//! * **The network**: unordered with duplicate delivery (default), FIFO per client/server
//!   pair, or unordered and lossy.
//! * **Time**: only the store's clock exists. A *lease lapse* moves it to the lease's end:
//!   while the holder still runs (a slow handler; a fault, bounded) or after the holder
//!   crashed (recovery; always possible).
//!
//! # What is abstracted away
//!
//! * HTTP itself: headers, status lines and parsing are idem-http's and are tested there.
//!   The model's requests carry a fingerprint computed by idem-core; its responses are
//!   `201` with a body naming the principal, key, amount and execution (`alice/k1/100#2`).
//! * Retention: records are kept for an hour and no run of the model lasts that long in
//!   logical time, so `expire` is never called.
//! * Store failures (G8) and durability across store restarts (G7): the store is one
//!   atomic, always-available object, as the SQL stores are within a transaction.
//! * Real backoff: a retry is sent when the client's earlier attempts are over, which is
//!   what a timeout plus backoff amounts to once the attempt is really lost; premature
//!   timeouts are the separate, bounded timer resends.
//!
//! # Why a plain `Model` and not stateright's actors
//!
//! The store is a shared object whose operations are atomic (one transaction each). As an
//! actor it would add a message round trip, and so extra interleavings, to every store
//! call without modelling anything real. The fault budgets, the three network kinds and
//! the ghost facts the properties read are also simpler to state as explicit state and
//! actions than through the actor framework's fixed network semantics.
//!
//! # Progress (G6) and stateright's `eventually`
//!
//! stateright checks `eventually` properties only at terminal states, and it does not tell
//! a cycle from a join of two paths, so a path that loops forever would go unchecked. The
//! model is therefore built without cycles: every fault spends a budget, every send counts
//! against a per-operation maximum ([`Config::sends_max`]), each claim draws a fresh fence,
//! each lapse moves the clock forward, and every other step consumes a message or a
//! handler. So every path ends in a state with no successors, where the property is
//! checked. The property itself ("every operation has its final answer") never turns
//! false once true, so the path by which a state was first reached does not matter either.
//! A test walks the whole state graph of a configuration and asserts there is no cycle.
//!
//! # Contents
//!
//! * [`Config`], [`Config::into_model`]: what to check; [`Variant`], [`Mode`], [`NetworkKind`].
//! * [`IdemModel`]: the model; [`State`], [`Action`].
//! * [`properties`]: the properties, named in plain words, and the guarantee each checks.
//! * [`spawn`], [`verdicts`], [`shortest_discovery`]: run a check, read its verdicts.
//! * [`story()`]: a counterexample as numbered, readable lines.

mod checking;
mod config;
mod model;
pub mod properties;
mod state;
mod story;

pub use checking::{
    Outcome, RunningChecker, Search, SearchError, Strategy, Verdict, join, shortest_discovery, spawn, verdicts,
};
pub use config::{ACTORS_MAX, Config, ConfigError, FAULTS_MAX, Mode, NetworkKind, Variant};
pub use model::{Action, IdemModel, LEASE, Operation, RETENTION, SendKind};
pub use state::{
    Answer, Broken, Budgets, Execution, Ghost, Handler, Message, OpIndex, OpState, Serial, Server, ServerIndex, Slot,
    Stage, State, Store, StoredRecord,
};
pub use story::story;
