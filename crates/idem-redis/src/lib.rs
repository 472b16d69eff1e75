//! An idempotency store on Redis (separate mode).
//!
//! [`RedisStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge) and decides nothing of its own: every operation reads the
//! record and the counters under `WATCH`, calls [`idem_core::step()`], and writes exactly
//! what the [`Step`](idem_core::Step) names in one `MULTI`/`EXEC` (the record, the fence
//! counter, the usage totals, the expiry index). A concurrent write to a watched key
//! aborts the `EXEC`; the operation then reads and decides again, at most
//! [`RedisOptions::attempts_max`] times. So there is one decision table, the core's
//! (ARCHITECTURE: "stores read, call `step`, and write what it names"); no Lua script
//! mirrors it. `tests/conformance.rs` runs idem-core's conformance suite on the real Redis
//! and `tests/differential.rs` pins the store to [`idem_core::MemoryStore`] on random
//! histories.
//!
//! # Contents
//!
//! * [`RedisOptions`]: URL, key prefix, size limits, timeouts, pool and attempt bounds,
//!   [`FenceSeed`]; [`OptionsError`].
//! * [`RedisStore`]: [`RedisStore::open`], the `Store` impl, [`RedisStore::usage`],
//!   [`RedisStore::next_fence`], [`RedisStore::clear`], [`RedisStore::close`]; [`OpenError`].
//!
//! # Example
//!
//! ```no_run
//! use idem_core::{Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp};
//! use idem_redis::{RedisOptions, RedisStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What `idem serve --store redis://127.0.0.1:6379/0?prefix=payments` would open.
//! let options = RedisOptions::new("redis://127.0.0.1:6379/0?prefix=payments")?;
//! let store = RedisStore::open(options).await?;
//!
//! let id = RecordId::new(Principal::new("alice")?, Key::parse(b"order-42")?);
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
//! let (now, policy) = (Timestamp::from_unix_ms(1_700_000_000_000), Policy::default());
//! let Decision::Execute(claim) = store.claim(&id, &fingerprint, now, &policy).await? else {
//!     unreachable!("a new key executes")
//! };
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_1\"}"[..]);
//! assert_eq!(store.complete(&id, claim.fence, response.clone(), now, &policy).await?, Fenced::Applied);
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?, Decision::Replay(response));
//! # Ok(())
//! # }
//! ```
//!
//! # Shapes
//!
//! Every key is under `{prefix}` (default `idem`; `?prefix=` in the URL or
//! [`RedisOptions::prefix`]). The braces are a Redis Cluster hash tag: all keys of one
//! store hash to one slot, so one transaction may touch them all.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:r:<id>` | string, with expiry | the record: version 1, fingerprint (32 bytes), fence, `expires_at` ms, state; in flight the lease's end ms, completed the status, headers and body (integers big-endian) |
//! | `{p}:h:<id>` | string, no expiry | `"<fence> <bytes>"` of the record held: what to account for if Redis forgets the record by itself |
//! | `{p}:expiry` | sorted set | score = the record's forgettable time (ms), member = `<fence, 20 digits>:<id>`: the purge's index, earliest first, ties by fence |
//! | `{p}:fence` | integer | the next fence; only grows (`INCR`) |
//! | `{p}:usage` | hash | `records`, `bytes`: idem-core's usage totals (`HINCRBY` in the same `MULTI`) |
//!
//! `<id>` is `<principal length>:<principal><key>`, so every record id has one key
//! (SPEC G4: principals never share a record). Times are milliseconds since the Unix
//! epoch, sizes bytes, as in idem-core.
//!
//! # Time
//!
//! Decisions use the caller's `now`, as every store does: the `Store` contract says stores
//! never read a clock, the conformance suite moves time by passing timestamps, and the
//! HTTP layer's injected `Clock` is what the simulations replace. Redis `TIME` would make
//! replicas with skewed clocks agree on when a lease lapses, but it would make the store
//! the only untestable part of the time story; instead replicas must keep their clocks in
//! sync (NTP). A replica whose clock runs ahead sees leases lapse early and may take a claim
//! over while its holder runs: separate mode's G1 counterexample (below), which renewals
//! every lease/3 keep away as long as the skew is well under a third of the lease.
//!
//! # Expiry and purge
//!
//! Each record is written with `SET … PX (forgettable_at − now)`: Redis forgets it by
//! itself at the record's forgettable time ([`Record::forgettable_at`](idem_core::Record::forgettable_at):
//! retention's end, or a lapsed lease's end if later; SPEC, "The record's life"), measured
//! on Redis's clock from the write. That is `PEXPIREAT forgettable_at` when the caller's
//! and Redis's clocks agree, and unlike `PEXPIREAT` a skew between them neither shortens
//! nor stretches retention. A record Redis forgot stays counted in the usage totals (as an
//! expired record not yet purged counts in every store) until either a later operation on
//! its id or [`purge_expired`](idem_core::Store::purge_expired) accounts for it from its
//! `{p}:h:<id>` entry. The purge walks `{p}:expiry` up to `now` in bounded batches
//! (`ZRANGE … BYSCORE LIMIT`) and runs idem-core's `Expire` step per entry, so it forgets
//! exactly what the core calls expired (the conformance suite's purge cases); it remains
//! needed to keep the usage totals and the index small, not to free the records.
//!
//! # Limits
//!
//! Admission at [`Limits`](idem_core::Limits) is the core's (SPEC: the store refuses new
//! claims when full and never evicts a live record). The usage totals change with every
//! write, so watching them would make every claim conflict with every other write; a claim
//! watches them only when its view is within [`NEAR_FULL_RECORDS`] records or
//! [`NEAR_FULL_BYTES`] bytes of a limit, where admission is then exact under concurrency.
//! Farther from the limits, concurrent claims may all be admitted on totals read a moment
//! apart, which cannot cross a limit unless more than 1024 claims race at once. Redis's own
//! `maxmemory` must not evict keys (`maxmemory-policy noeviction`): an evicted record is a
//! forgotten record (G1), and `OOM` answers are `Unavailable`.
//!
//! # Fences
//!
//! The counter `{p}:fence` is read with the record; a claim that issues a fence writes the
//! record with the value read and `INCR`s the counter in its `MULTI`. Claims on other ids
//! do not watch the counter (so they do not abort each other); two ids may then share a
//! fence number, but one id never sees a fence twice: a claim on an id commits only if
//! no write to that id's record came between its `WATCH` and its `EXEC`, so it read the
//! counter after the previous claim's `INCR` (SPEC: fences are never reused for a record
//! id; G3). When the counter key is missing it is created with `SET NX` from
//! [`FenceSeed`] before the operation reads again.
//!
//! # Connections and errors
//!
//! Transactions run on a pool of [`RedisOptions::connections_max`] dedicated connections,
//! one operation per connection at a time, because `WATCH` belongs to a connection. They
//! are plain multiplexed connections: a `ConnectionManager` reconnects by itself, and a
//! reconnect between `WATCH` and `EXEC` would silently drop the watch. Single-command
//! reads (`get`, the purge's index scan, `usage`, `clear`) go through one
//! `ConnectionManager`. Every connection has a connect timeout and a response timeout,
//! and every operation an overall [`RedisOptions::operation_timeout`].
//!
//! | error | when | outcome |
//! |---|---|---|
//! | `Unavailable` | I/O errors, refused connections, timeouts, `LOADING`/`READONLY`/`OOM`, a closed store, `attempts_max` aborted transactions | unknown (an `EXEC` may have applied before its answer was lost); each `Store` method says whether a retry is safe (G8: the layer answers 503) |
//! | `Full` | admission refused a claim at a size limit | nothing changed |
//! | `Corrupt` | a value under the store's keys does not decode, a key of the wrong type, usage below zero, a counter behind a record | nothing changed |
//!
//! # Guarantees in this mode (SPEC, "Modes")
//!
//! Redis cannot share the handler's transaction, so this is separate mode: G2-G6 and G8
//! hold as in every store, and G3 holds for completions, releases and renewals. G1 holds
//! only while the claim's holder keeps renewing and its records survive: a handler that
//! stalls past its lease and is taken over runs its side effect twice (the model's
//! `--mode separate` counterexample, docs/model.md). G7 needs Redis persistence
//! (`appendonly yes`, `appendfsync always`); without it, see below.
//!
//! # Restart without persistence
//!
//! A Redis restarted with `--save "" --appendonly no` (or a failover to a replica that had
//! not received the last writes) comes back empty under the prefix: records, index, usage
//! and the fence counter are gone.
//!
//! * **Completed records**: a retry of an operation that already ran finds no record and
//!   executes again. G1 holds only while records survive; G2's replay becomes a new
//!   response. This is the model's separate-mode G1 counterexample with "take over the
//!   lapsed claim" replaced by "execute under a new fence": the side effect committed
//!   outside the store, and the store forgot it.
//! * **In-flight records**: a retry during the first execution executes concurrently with
//!   it, the same counterexample again.
//! * **The fence counter**: restarting it at 1 would hand a new claim on an id the very
//!   fence a handler from before the restart still holds; that handler's completion would
//!   then be accepted over the new claim's (G3), the model's planted `fence-reuse` bug
//!   (fences that restart). [`FenceSeed::ServerClock`], the default, prevents this: a
//!   missing counter is recreated from Redis's `TIME` in microseconds × 2^10
//!   ([`FENCE_SEED_SHIFT`]), which is past every fence the lost counter issued unless it
//!   issued more than 1024 fences per microsecond of its life on average, or Redis's clock
//!   stepped back across the restart. Fences then stay below 2^64 until the year 2541.
//!   (`tests/store.rs` simulates the restart by deleting every key of the prefix.)
//!
//! Usage totals restart at zero with the records they counted, so limits stay right.
//!
//! # Bounds
//!
//! Prefix 1..=64 bytes; attempts per operation `attempts_max` (default 32); operation time
//! `operation_timeout` (default 3 s); connections `connections_max` (default 16) plus one;
//! purge batches `batch_max`; `clear` in `SCAN` rounds of 500 keys.

mod codec;
mod options;
#[cfg(test)]
mod planted;
mod store;

pub use idem_core::Usage;
pub use options::{FenceSeed, OptionsError, PREFIX_BYTES_MAX, PREFIX_DEFAULT, RedisOptions};
pub use store::{FENCE_SEED_SHIFT, OpenError, RedisStore};
