//! An idempotency store on Redis (separate mode).
//!
//! [`RedisStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge, count_replay) and [`KeyAdmin`](idem_core::KeyAdmin) (list,
//! forget; SPEC "Key lifecycle"). Each operation is **one round trip**: one `EVALSHA` of
//! `src/store.lua`, a Lua script that runs idem-core's store step on the server, atomically
//! (Redis runs one script at a time): the decision table
//! (`idem_core::transition`), the fence counter that only grows, admission at the size
//! limits and the usage accounting (`idem_core::step`, `idem_core::usage`), and the lease
//! and retention as the record key's Redis expiry. `get` is one `GET`.
//!
//! # Why Lua, and what keeps it honest
//!
//! The other stores read, call [`idem_core::step()`] in Rust and write what it names. On
//! Redis that takes a read under `WATCH` and a `MULTI`/`EXEC` write: two round trips per
//! operation, four per claim+complete, and `WATCH` ties every operation to a connection
//! of its own, so nothing pipelines (docs/benchmarks.md measured 0.06-0.21 of a plain
//! `SET NX PX`). The script decides on the server in one round trip instead, so it is a
//! second copy of the core's rules, which STYLE allows only when pinned to the core:
//!
//! * `tests/differential.rs` runs `idem_core::differential` against the script: random
//!   sequences of claims, completions, releases, renewals, reads, purges and clock steps
//!   must give the same answers, records, `Full` errors, usage and fence counter as
//!   [`idem_core::MemoryStore`], which is `step` itself.
//! * `src/planted.rs` shows the check has teeth: the script with one rule planted wrong (a
//!   dropped fence check, a lease one millisecond too long, admission one record late)
//!   is caught on the same fixed-seed cases the shipped script passes.
//! * `tests/conformance.rs` runs idem-core's conformance suite on the real Redis.
//! * The deterministic simulation (`sims/`, scenarios `redis-lua` and `redis-lua-atomic`)
//!   runs this same script in an embedded Lua 5.1 on a simulated keyspace, through
//!   [`script`] (the calls `RedisStore` sends and the decoding of their answers, pure so
//!   both use them), under network faults, crashes and skewed clocks; its planted
//!   `lua-drops-fence-check` is caught there by G3.
//!
//! A change to the core's rules must be made in `store.lua` too; the differential test
//! fails until it is.
//!
//! The script is loaded with `SCRIPT LOAD` at [`RedisStore::open`] (which also checks it
//! compiles) and run with `EVALSHA`; when Redis answers `NOSCRIPT` (a restart, `SCRIPT
//! FLUSH`) the operation runs it with `EVAL`, which loads it again: what `redis::Script`
//! does, with the SHA1 computed by Redis rather than by a dependency of our own.
//!
//! **Numbers.** Lua numbers are doubles, exact below 2^53. The script never turns a fence,
//! a time or a limit into a number where exactness matters: they travel as decimal
//! strings, compare with an exact string comparison and the counter advances with an
//! exact decimal increment. Usage totals (bounded by Redis's memory) and key expiries are
//! the only numbers, and are written back with `%.0f`, never `tostring` (14 digits).
//! Times `now + lease` and `now + retention` are computed in Rust with idem-core's
//! saturating arithmetic and passed in.
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
//! let expires_at = now.saturating_add(policy.retention());
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?, Decision::Replay { response, expires_at });
//! # Ok(())
//! # }
//! ```
//!
//! # Shapes
//!
//! Every key is under `{prefix}` (default `idem`; `?prefix=` in the URL or
//! [`RedisOptions::prefix`]). The braces are a Redis Cluster hash tag: all keys of one
//! store hash to one slot, so one script may touch them all (the purge script builds
//! record keys from index entries; they are in that slot too).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:r:<id>` | string, with expiry | the record: the fingerprint's digest (32 bytes), then `"v<fingerprint version> <fence> <expires_at> <lease end> <stored bytes> <created_at> <state i\|c\|t> <renewals> <replays> <tombstone_until> <holder request id> <holder trace id>\n"` (an empty field is absent: lease end and holder ids only in flight, tombstone end only when completed with one), then for a completed record the response (version 2: status, headers, body; integers big-endian) |
//! | `{p}:h:<id>` | string, no expiry | `"<fence> <bytes>"` of the record held: what to account for if Redis forgets the record by itself |
//! | `{p}:expiry` | sorted set | score = when a purge is due ([`Record::due_at`](idem_core::Record::due_at), ms), member = `<fence, 20 digits>:<id>`: the purge's index, earliest first, ties by fence |
//! | `{p}:list` | sorted set | score 0, member = `<principal>\0<key>` of every record held: [`KeyAdmin::list`](idem_core::KeyAdmin::list)'s index, walked with `ZRANGEBYLEX` in `RecordId` order (a principal has no byte below 0x20) |
//! | `{p}:counters` | hash | `fence` (the next fence; only grows), `records`, `bytes` (idem-core's usage totals) |
//!
//! Records the previous version wrote (no `v` after the digest, four header fields) still
//! read back and replay as version 1 fingerprints created at the epoch (the time was not
//! kept); the first write through this version rewrites them and adds them to `{p}:list`,
//! so until then a listing does not show them (they expire within their retention).
//! The reverse does not hold: replicas of the previous version read this version's records
//! as `Corrupt`, so all replicas must be upgraded together.
//!
//! A record is one string so that writing it and its expiry is one `SET … PX`; the script
//! reads its header with one pattern match and never parses the response. `<id>` is
//! `<principal length>:<principal><key>`, so every record id has one key (SPEC G4:
//! principals never share a record). Times are milliseconds since the Unix epoch, sizes
//! bytes, as in idem-core.
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
//! `{p}:h:<id>` entry. The purge is one script per batch of at most 128: it walks
//! `{p}:expiry` up to `now` (`ZRANGEBYSCORE … LIMIT`) and runs idem-core's `Expire` step
//! per entry, so it forgets exactly what the core calls expired (the conformance suite's
//! purge cases), and shrinks a completed record whose policy keeps a tombstone to that
//! tombstone at its retention's end (the response dropped, the usage with it); it remains needed to keep the usage totals and the index small, not to
//! free the records.
//!
//! # Key administration
//!
//! [`forget`](idem_core::KeyAdmin::forget) is one script, `op::Forget`: the record, its
//! held entry and index entries go and the fence counter moves on in the same script, so
//! a handler still running under the forgotten claim can never complete (G3). A record
//! Redis already forgot by itself is accounted for the same way (it answers `None`).
//! [`list`](idem_core::KeyAdmin::list) walks `{p}:list` in rounds of 256 (`ZRANGEBYLEX`,
//! then one `MGET` of the records) and keeps what
//! [`ListQuery::admits`](idem_core::ListQuery::admits); rounds are bounded by the records
//! the store may hold. [`count_replay`](idem_core::Store::count_replay) is one script.
//!
//! # Limits
//!
//! Admission at [`Limits`](idem_core::Limits) is the core's (SPEC: the store refuses new
//! claims when full and never evicts a live record), and it is exact under concurrency:
//! the script reads the totals, admits and writes them back with no other operation in
//! between. Redis's own `maxmemory` must not evict keys (`maxmemory-policy noeviction`):
//! an evicted record is a forgotten record (G1), and `OOM` answers are `Unavailable`.
//!
//! # Fences
//!
//! A claim that executes issues the counter's value and writes the counter one past it,
//! in the same script, so no two claims ever share a fence (SPEC: fences are never reused
//! for a record id; G3). When the counter is missing (a new prefix, or Redis lost its
//! data) the script creates it from [`FenceSeed`] first.
//!
//! # Connections and errors
//!
//! Operations share [`RedisOptions::connections_max`] multiplexed connections
//! (`ConnectionManager`s, default 2), used in turn: each operation is one command, so
//! concurrent operations pipeline on a connection and a reconnect is harmless (a script
//! either ran or did not). Every connection has a connect timeout and a response
//! timeout, and every operation an overall [`RedisOptions::operation_timeout`].
//!
//! | error | when | outcome |
//! |---|---|---|
//! | `Unavailable` | I/O errors, refused connections, timeouts, `LOADING`/`READONLY`/`OOM`/`BUSY`, a closed store | unknown (a script may have run before its answer was lost); each `Store` method says whether a retry is safe (G8: the layer answers 503) |
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
//!   missing counter is recreated from Redis's `TIME` in milliseconds × 2^10
//!   ([`FENCE_SEED_SHIFT`], which says why 10), which is past every fence the lost counter
//!   issued unless it issued more than 1024 fences per millisecond of its life on average,
//!   or Redis's clock stepped back across the restart. Seeds stay below 2^53, exact as
//!   Lua numbers, until the year 2248.
//!   (`tests/store.rs` simulates the restart by deleting every key of the prefix.)
//!
//! Usage totals restart at zero with the records they counted, so limits stay right.
//!
//! # Feature flags
//!
//! None: idem-redis has no cargo features. It always uses the `redis` crate with tokio and
//! its connection manager (the workspace enables `tokio-comp` and `connection-manager`).
//!
//! # Bounds
//!
//! Prefix 1..=64 bytes; one script per operation; operation time `operation_timeout`
//! (default 3 s); connections `connections_max` (default 2); purge batches `batch_max`,
//! at most 128 records per script; `clear` in `SCAN` rounds of 500 keys.

mod codec;
mod options;
#[cfg(test)]
mod planted;
pub mod script;
mod store;

pub use idem_core::Usage;
pub use options::{FenceSeed, OptionsError, PREFIX_BYTES_MAX, PREFIX_DEFAULT, RedisOptions};
pub use store::{FENCE_SEED_SHIFT, OpenError, RedisStore};
