//! A stateright model of the idempotency-key protocol that drives idem-core itself.
//!
//! The model's store *is* idem-core's store: an [`idem_core::MemoryState`], the very value
//! `MemoryStore` holds, changed only by idem-core's store step ([`idem_core::step()`]
//! through `MemoryState::run`) with the operations of [`idem_core::step::op`]: `Claim`,
//! `CompleteInTransaction` (atomic mode), `Complete` (separate mode), `Release`, `Renew`,
//! `Forget` (an operator's, `Config::forgets`) and `Expire` (through
//! `MemoryState::purge_expired`, which shrinks a completed record to its tombstone with
//! `Config::tombstone`). With `Config::ceiling` the server stops renewing a handler at the
//! execution ceiling, as idem-once does. Fences, admission, usage and the
//! decision table are idem-core's; so are the answers around a decision: the 409's
//! `Retry-After` ([`idem_core::reply::retry_after`], capped at idem-http's default), what
//! an execution that lost its claim answers ([`idem_core::reply::superseded`]), and which
//! handler statuses release ([`idem_core::StatusRules`]). The model moves messages, runs
//! the clock, injects faults and keeps ghost facts for the properties; it decides no
//! protocol question. Planted bugs ([`Variant`]) tamper with what the server passes to the
//! store (the view, the operation's fields, the step before it is committed), never with
//! idem-core, and never by a second copy of a rule.
//!
//! # What is modelled
//!
//! * **Clients**, one principal each (alice, bob, ...), with idem-client's retry policy
//!   ([`ClientPolicy`], its defaults: 12 attempts, a 30 s deadline, a 10 s attempt
//!   timeout, backoff from 100 ms doubling to 5 s). Operation `n` of every client is
//!   `POST /payments {"amount":100n}` with key `kn`, so principals share key strings; with
//!   `key_reuse`, client 1 also reuses `k1` with another amount. One attempt is out at a
//!   time. A 409 or a store's 503 is retried after exactly its `Retry-After`; a reset
//!   connection, a handler's 503 or a timed-out attempt after the backoff; 201, a replay
//!   and 422 are final. When the attempts or the deadline run out the client gives up.
//! * **Servers** (replicas): a request arrives and the store decides. A handler holding a
//!   claim renews its lease while it runs, writes its payment row (the business write),
//!   then completes (atomic mode: `CompleteInTransaction`; separate mode: `Complete`), or
//!   fails with a 503, before its write or after it, and releases. An execution whose
//!   completion, release or renewal is refused answers `reply::superseded`. Each server
//!   passes its own clock to the store (`Config::skew`: servers 2, 3, ... run ahead).
//! * **The business write**: the ledger holds the payment rows that committed, and G1
//!   counts them per record id. Atomic mode is the store's transaction semantics: the row
//!   is pending in the handler's open transaction and commits only with an applied
//!   `CompleteInTransaction`; a refusal, a failed completion, a release or a crash rolls it
//!   back. In separate mode it commits at once.
//! * **The store**: the `MemoryState`, a logical clock, whether it is up, and the business
//!   ledger. While it is down a request gets 503 and no handler runs (G8); a completion
//!   fails: atomic mode rolls back and answers 503, separate mode answers its response
//!   unrecorded (its side effect had committed); the claim stays and lapses. A server may
//!   run the store's purge while requests are in flight (`Config::purges`); it must remove
//!   nothing before its time.
//! * **Faults**, each with a budget: server crashes (handlers lost, their connections
//!   reset), stalls (a handler stops renewing, so its lease may lapse while it runs),
//!   handler failures, early timeouts (an attempt times out while still alive), duplicated
//!   or lost messages, store outages, store crashes.
//! * **Store crashes** (a durable store that commits claims without waiting for the disk):
//!   claims, renewals and releases commit unsynced; a completion waits for the disk, and
//!   with it everything committed before it (SQLite's WAL), and so does a purge. The state
//!   keeps the store as its disk holds it ([`Durable`]) while later writes are not on disk;
//!   a store crash rolls the `MemoryState` back to it and restarts the store at once with
//!   its fence counter moved past every fence issued before (`with_fences_from`, as
//!   idem-redis reseeds), so fences are never reused. Payments survive: in atomic mode they
//!   committed with a completion that waited for the disk, in separate mode outside the
//!   store. Running handlers keep running and meet the store as it came back (a lost
//!   claim is absent: its completion, renewal or release is refused, `NoRecord`). Planted
//!   bugs: `no-fence-reseed`, `unsynced-completion`, `completion-apart`.
//! * **Retention**: once nothing for a record is alive any more, time may pass to its
//!   forgettable time and the store purges it; it must be gone afterwards.
//!
//! # Time
//!
//! The clock moves only when someone waits, and then to the end of the wait: a client's
//! `Retry-After` or backoff, an attempt's timeout, a record's retention. The clock never
//! skips a pending timer (every client wakes exactly when its wait ends), never passes the
//! lease end of a running holder that did not stall (it renews in time; renewals are
//! offered whenever the clock moved since the holder's last one), and does not move while
//! the store is down (an outage is shorter than any wait). Messages and handler steps take
//! no time.
//!
//! # What is abstracted away
//!
//! * HTTP itself: parsing, header filtering and problem+json are idem-http's and tested
//!   there. A response is 201 with a `location` and a body that name the execution
//!   (`alice/k1/100#2`), so any mix-up of status, stored headers or body is visible.
//! * Backoff jitter: the model waits the backoff's ceiling, the longest draw, which is the
//!   worst case for the deadline. A 409's `Retry-After` is whole seconds, so a shorter draw
//!   cannot save the client an attempt against a lease.
//! * Durability across store restarts (G7), beyond the store crash above: an outage loses
//!   nothing, and what a store keeps on disk is the store crates' business and the
//!   simulations'.
//! * A crashed server restarts at once; requests to it wait (a load balancer or TCP
//!   retry); losing them is what the lossy network is for.
//!
//! # Why a plain `Model` and not stateright's actors
//!
//! The store is a shared object whose operations are atomic (one transaction each). As an
//! actor it would add a message round trip, and so extra interleavings, to every store
//! call without modelling anything real. The fault budgets, the clock, the three network
//! kinds and the ghost facts the properties read are also simpler to state as explicit
//! state and actions than through the actor framework's fixed network semantics.
//!
//! # Progress (G6) and stateright's `eventually`
//!
//! stateright checks `eventually` properties only at terminal states, and it does not tell
//! a cycle from a join of two paths, so a path that loops forever would go unchecked. The
//! model is therefore built without cycles: every fault spends a budget, every attempt
//! counts against the client's attempts, the clock only moves forward, a renewal needs the
//! clock to have moved, and every other step consumes a message or a handler. So every
//! path ends in a state with no successors, where the property is checked: either every
//! operation has its final answer, or a client gave up (a violation, with the story of
//! how). The property never turns false once true, so the path by which a state was first
//! reached does not matter either. A test walks the whole state graph of a configuration
//! and asserts there is no cycle.
//!
//! # Contents
//!
//! * [`Config`], [`Config::into_model`]: what to check; [`ClientPolicy`], [`Variant`],
//!   [`Mode`], [`NetworkKind`].
//! * [`IdemModel`]: the model; [`State`], [`Action`].
//! * [`properties`]: the properties, named in plain words, and the guarantee each checks.
//! * [`spawn`], [`verdicts`], [`shortest_discovery`]: run a check, read its verdicts.
//! * [`story()`]: a counterexample as numbered, readable lines, rendered from the
//!   [`StoryEvent`]s each step tells ([`IdemModel::events`]).
//! * [`consumer`]: the consumer configuration (SPEC "Message consumers"): [`ConsumerModel`]
//!   over the same store half, driving idem-core's `consume` rules; [`spawn_consumer`],
//!   [`consumer_verdicts`], [`consumer_story`].

mod checking;
mod config;
pub mod consumer;
mod ghost;
mod message;
mod model;
mod operation;
pub mod properties;
mod state;
mod story;

pub use checking::story;
pub use checking::{
    Outcome, RunningChecker, Search, SearchError, Strategy, Verdict, join, shortest_discovery, spawn, verdicts,
};
pub use config::{
    ACTORS_MAX, ATTEMPTS_MAX, CLIENT_TIME_MAX, ClientPolicy, Config, ConfigError, FAULTS_MAX, HANDLER_TIME_DEFAULT,
    Mode, NetworkKind, SLOW_HANDLER_TIME_DEFAULT, Variant,
};
pub use consumer::{
    BrokerKind, ConsumerAction, ConsumerChecker, ConsumerConfig, ConsumerFaults, ConsumerModel, ConsumerState,
    ConsumerVariant, consumer_story, consumer_verdicts, shortest_consumer_discovery, spawn_consumer,
};
pub use message::{Answer, AttemptNumber, Message, OpIndex, Serial, ServerIndex, Slot};
pub use model::{Action, FAILURE_STATUS, IdemModel, LONG_LEASE, Operation, POLICY};
pub use state::{
    Broken, Budgets, Durable, Execution, Ghost, GiveUp, Handler, OpState, Pace, Phase, Server, SlotGhost, Stage, State,
    Store,
};
pub use story::{Cast, Decided, Disk, FenceCounter, Held, StoryEvent, Wait, line};
