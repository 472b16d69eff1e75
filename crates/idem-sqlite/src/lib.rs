//! The embedded durable store for idem: idempotency records in a SQLite file.
//!
//! [`SqliteStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge, count a replay), [`KeyAdmin`](idem_core::KeyAdmin) (an
//! operator's list and forget) and [`AtomicStore`](idem_core::AtomicStore) (atomic mode):
//! [`complete_with`](idem_core::AtomicStore::complete_with) runs the handler's business
//! writes and the fenced completion in one transaction, so both commit or neither does.
//! Every write goes through one writer that commits many requests' writes with one `fsync`
//! (group commit, below).
//!
//! The store is I/O around [`idem_core::step()`] and decides nothing of its own. Every
//! read-decide-write runs inside the writer's transaction: one statement reads the record
//! and the store-wide counters (`idem_fence`, `idem_usage`), the store's
//! [`Limits`](idem_core::Limits) complete the [`StoreView`](idem_core::StoreView),
//! `step` decides, and the store writes exactly what the [`Step`](idem_core::Step) names:
//! the record row put or deleted, the fence counter set, the usage delta added. The
//! decision table, fences, admission at the size limits, usage accounting and atomic
//! mode's refusal of a repeated completion are all idem-core's; `tests/conformance.rs`
//! runs idem-core's conformance suite on real files, and `tests/differential.rs` pins the
//! store to [`idem_core::MemoryStore`] on random histories.
//!
//! # Contents
//!
//! * [`SqliteOptions`]: the file, the size limits ([`SqliteOptions::limits`]), the pool,
//!   [`ClaimSync`].
//! * [`SqliteStore`]: [`SqliteStore::open`], the [`Store`](idem_core::Store) impl (with
//!   [`Store::renew`](idem_core::Store::renew), the holder's heartbeat), the
//!   [`AtomicStore`](idem_core::AtomicStore) impl, [`SqliteStore::write`] (business writes
//!   without a completion, group-committed), [`SqliteStore::group_commit_stats`],
//!   [`SqliteStore::usage`], [`SqliteStore::pool`], and the manual atomic-mode path
//!   [`SqliteStore::begin_write`] + [`SqliteStore::complete_in`]; the
//!   [`KeyAdmin`](idem_core::KeyAdmin) impl (key administration, below).
//! * [`GroupCommitStats`]: commits, jobs per commit, the writer's queue.
//! * [`sqlx`]: the driver, re-exported, so a service needs no exact-version dependency of its own.
//! * [`Usage`]: idem-core's usage totals, re-exported.
//! * [`OpenError`]: why a file could not be opened, worded for a CLI to print.
//!
//! # Atomic mode
//!
//! The payments handler hands its row to the store with the response to record. If its
//! lease lapsed and another request took the claim over, the completion is refused, the
//! row is rolled back with it, and the payment is not written: the side effect happens at
//! most once even across lease lapses (SPEC G1). With idem-http, `Claim::commit` does this
//! in one line from the response the handler returns.
//!
//! ```
//! use idem_core::{AtomicStore, Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp};
//! use idem_sqlite::sqlx::{self, SqliteConnection};
//! use idem_sqlite::{SqliteOptions, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("idem.db");
//! let store = SqliteStore::open(SqliteOptions::new(&path)).await?;
//! // The application's own tables live in the same file, migrated on the same pool.
//! sqlx::query("CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
//!     .execute(store.pool())
//!     .await?;
//!
//! let id = RecordId::new(Principal::new("alice")?, Key::parse(b"order-42")?);
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
//! let (now, policy) = (Timestamp::from_unix_ms(1_000), Policy::default());
//! let Decision::Execute(claim) = store.claim(&id, &fingerprint, now, &policy).await? else {
//!     unreachable!("a new key executes")
//! };
//!
//! // The handler: its business write and the completion, in one transaction.
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_1\"}"[..]);
//! let fenced = store
//!     .complete_with(&id, claim.fence, response.clone(), now, &policy, |tx: &mut SqliteConnection| {
//!         Box::pin(async move {
//!             sqlx::query("INSERT INTO payments (id, amount) VALUES ('pay_1', 100)").execute(&mut *tx).await?;
//!             Ok(())
//!         })
//!     })
//!     .await?;
//! assert_eq!(fenced, Fenced::Applied); // Refused: the row was rolled back with it
//!
//! // A retry replays the recorded response; the payment exists once.
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?.replayed(), Some(&response));
//! let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(store.pool()).await?;
//! assert_eq!(payments, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The writes run under the store's write lock, inside the writer's transaction: prepare
//! what they need before (ids, amounts, other reads), write here, and never run `BEGIN`,
//! `COMMIT` or `ROLLBACK` in them. A handler that must hold its own transaction (slow
//! reads between writes) can still use the manual path: [`SqliteStore::begin_write`], its
//! writes, [`SqliteStore::complete_in`], commit on `Applied`. That transaction holds the
//! file's write lock meanwhile, so the writer (and every other request) waits for it.
//!
//! In separate mode (a handler whose side effect lives elsewhere) the layer calls
//! [`Store::complete`](idem_core::Store::complete) after the handler instead; the
//! completion is still fenced (G3), but a side effect committed before a crash can repeat.
//!
//! # Group commit
//!
//! One writer task owns one write connection. Every write (a claim that must write, a
//! completion, a renewal, a release, a purge batch, `complete_with`'s business writes) is
//! a job handed to it. The writer takes everything queued (up to 256 jobs), runs
//! `BEGIN IMMEDIATE`, runs each job, writes what the jobs decided, commits once, and only
//! then answers every job.
//!
//! The store's own operations do not write row by row: each statement is a round trip to
//! sqlx's connection thread (two thread wake-ups), which costs more than the statement.
//! Instead the batch reads the counters and every record its jobs name in one `SELECT`,
//! idem-core's step decides each operation on that in-memory view in turn (a later job
//! sees an earlier one's outcome, as if they ran one after the other), and before the
//! `COMMIT` the changed records go out in multi-row `INSERT ... ON CONFLICT` and `DELETE`
//! statements and the counters in one `UPDATE` each: about seven statements per batch
//! instead of six per operation. A job that writes SQL of its own (`complete_with`'s
//! business writes, [`SqliteStore::write`], a purge) runs inside its own `SAVEPOINT`.
//!
//! A job that fails, panics, runs past the busy timeout, or whose completion is refused
//! leaves the view as it was and is rolled back to its savepoint: other requests' writes
//! in the same commit are untouched. If the transaction itself fails (a full disk, an I/O
//! error: SQLite then rolls back the whole transaction on its own, which a rollback hook
//! reports to the writer), every job of the batch is answered with the same
//! `StoreError::Unavailable`, and none of them committed. While one
//! commit waits for the disk the next batch queues, so concurrent requests share `fsync`s
//! instead of queueing for one each. At most 1,024 jobs wait; past that a caller waits for
//! room up to [`SqliteOptions::acquire_timeout`], then gets `Unavailable`.
//!
//! # Replays: the replay cache
//!
//! A completed record does not change before its retention ends (only its replay count,
//! which no answer reads, and an operator's forget, below), so the store keeps the
//! completed records it has written or read in memory
//! ([`SqliteOptions::replay_cache_bytes`], 64 MiB by default, least-used evicted, each
//! dropped once its retention ended: past it the record may be shrunk to a tombstone). A
//! claim on a cached record is decided by idem-core's step on the copy; only an answer
//! that writes nothing (a replay, with the record's `expires_at`, or a fingerprint
//! mismatch) is taken from it. This stays right with several processes on one file: none
//! of them can change a completed record before its retention ends, but for a forget.
//! A claim the cache cannot answer goes to the group commit, which caches what it finds.
//! With the cache off (`replay_cache_bytes(0)`), a claim first decides on a snapshot read
//! from the pool instead, and only a claim that must write becomes a job; either way a
//! replay takes no write lock. [`Store::get`](idem_core::Store::get) and usage always
//! read the file.
//!
//! Replays are counted for operators ([`Store::count_replay`](idem_core::Store::count_replay),
//! which the layer calls after answering one): each count is a job of the group commit,
//! best effort, so a batch of counts alone commits without a sync of its own.
//!
//! # Key administration
//!
//! [`KeyAdmin::list`](idem_core::KeyAdmin::list) is one `SELECT` on the pool (no write
//! lock): idem-core's filter rule ([`ListQuery::admits`](idem_core::ListQuery::admits))
//! restated as a `WHERE` clause, in `(principal, idem_key)` order (the primary key,
//! `BINARY` collation: bytewise, as record ids order), one row more than the page to tell
//! `has_more`. [`KeyAdmin::forget`](idem_core::KeyAdmin::forget) is idem-core's
//! [`op::Forget`](idem_core::step::op::Forget) through the group commit, synced: the row is
//! deleted and the fence counter moved on in one transaction, so a handler still running
//! under the forgotten claim cannot complete afterwards (G3). A forget drops this
//! process's cached copy; a forget by another process on the same file (`idem keys
//! forget` beside a running server) is not seen by the server's replay cache, which keeps
//! replaying its copy until it is evicted or its retention ends.
//!
//! # Why sqlx
//!
//! Both drivers wrap the same SQLite C library (bundled). sqlx is async: each connection
//! runs on its own worker thread, which is exactly the dedicated writer thread group
//! commit needs, and handlers write their business rows with the same sqlx API (and the
//! same `&mut SqliteConnection`) as everywhere else in a service. It brings the bounded
//! read pool with an acquire timeout and embedded migrations, and idem-postgres hands out
//! the same shapes over PostgreSQL. rusqlite on our own thread would save the channel hop
//! per statement (two thread wake-ups; under load they led the profile), but the writes closure would then be synchronous and
//! run on that thread, so a handler could not reuse its async data layer in it; and we
//! would own a pool and a migration runner. The batch view above takes the hop off the
//! per-operation path instead; what is left is a few hops per batch (docs/benchmarks.md).
//!
//! # Durability: WAL, `synchronous=FULL`, and deferred claim sync
//!
//! [`SqliteStore::open`] switches the file to write-ahead logging. A commit appends to the
//! `-wal` file; with `synchronous=FULL`, SQLite syncs that file before the commit returns.
//! Completions are always committed that way, so once a completion (or `complete_with`)
//! returns, and therefore before any client can have seen the response, the record
//! survives a crash of the process and of the machine (G7), on a disk that honours
//! `fsync`. Copy or move the `-wal` file with the database: until a checkpoint, the
//! latest commits live only there.
//!
//! By default ([`ClaimSync::EveryCommit`]) claims are synced too. In atomic mode they need
//! not be ([`ClaimSync::Deferred`]): a batch of claims, renewals and releases alone commits
//! with `synchronous=NORMAL`, and reaches the disk with the next synced commit, which syncs
//! the whole `-wal` file. A crash of the machine may lose such claims; the executions they
//! admitted cannot have committed (their completion's commit would have synced the claim),
//! and the fences they were issued may be lost with them. So a store with deferred claim
//! sync counts the fences issued since the last synced commit
//! (`idem_fence.unsynced_fences`), syncs when that count passes 16,384, and on open moves
//! the fence counter 2^20 past where it stands, so no fence is ever issued twice. The
//! model checks this configuration: `idem check --store-crashes 1` (docs/guarantees.md).
//! A process crash alone loses nothing either way: the OS still has the `-wal` file.
//!
//! # Concurrency
//!
//! SQLite has one writer at a time. The writer's transactions start with
//! `BEGIN IMMEDIATE`, which takes the write lock first and waits for it up to the busy
//! timeout ([`SqliteOptions::busy_timeout`]), so several processes can share one file,
//! each with its own writer. Fresh fences come from the one-row counter `idem_fence`, set
//! in the claim's transaction to the value the step names when it issues a fence, so
//! fences are never reused, not after a release, a take-over or a purge.
//!
//! # Schema
//!
//! Migrations are embedded (`migrations/` in this crate) and run by `open`; sqlx notes
//! them in [`MIGRATIONS_TABLE`] (`_idem_migrations`), not in its default table, so an
//! application's own `sqlx::migrate!` on [`SqliteStore::pool`] keeps its own list. Every
//! idem table starts with `idem_`; all times are unix milliseconds.
//!
//! | table | column | meaning |
//! |---|---|---|
//! | `idem_records` | `principal`, `idem_key` | the record id, primary key (`''` is the anonymous principal) |
//! | | `fingerprint` | [`Fingerprint::to_stored`](idem_core::Fingerprint::to_stored): the 32-byte digest for version 1 (as before versions), a version byte and the digest for later ones |
//! | | `fence` | the fence of the claim that made the record what it is |
//! | | `state` | `'in_flight'`, `'completed'` or `'tombstone'` ([`RecordState::name`](idem_core::RecordState::name); no `CHECK`, so migration 0003 added a state without rebuilding the table) |
//! | | `created_at` | when the claim that made the record was taken (0 for rows written before migration 0003: unknown, older than any age) |
//! | | `lease_expires_at` | in flight: when the claim lapses; otherwise NULL |
//! | | `holder_request_id`, `holder_trace_id` | in flight: who holds the claim ([`Holder`](idem_core::Holder)), NULL when unknown |
//! | | `renewals` | in flight: renewals of the claim; otherwise 0 |
//! | | `expires_at` | end of retention; for a tombstone, the tombstone's end |
//! | | `due_at` | [`Record::due_at`](idem_core::Record::due_at), indexed (with the id) for purging (named `forgettable_at` before migration 0003; equal for every row written before it) |
//! | | `status`, `headers`, `body` | completed: the stored response; otherwise NULL |
//! | | `replays` | completed: replays counted (best effort); otherwise 0 |
//! | | `tombstone_until` | completed: when the tombstone it leaves after its retention ends, NULL if it leaves none |
//! | | `stored_bytes` | what the record costs, [`idem_core::usage::stored_bytes`]; read back only to recover from a damaged row |
//! | `idem_fence` | `next_fence` | the next fence to issue; only grows |
//! | | `unsynced_fences` | with deferred claim sync: fences issued since the last synced commit (an upper bound) |
//! | `idem_usage` | `records`, `stored_bytes` | totals for the size limits: each step's usage delta is added in its transaction |
//!
//! Headers are one BLOB: a version byte `1`, the number of headers as a big-endian `u32`,
//! then per header the name's length (big-endian `u32`) and UTF-8 bytes, and the value's
//! length (big-endian `u32`) and bytes. Times past `i64::MAX` ms are stored as `i64::MAX`
//! (the store's end of time, as [`idem_core::Timestamp`] saturates); every other integer
//! is converted with a check, and a stored value out of range is
//! [`StoreError::Corrupt`](idem_core::StoreError::Corrupt).
//!
//! # Bounds
//!
//! [`SqliteOptions::records_max`] and [`SqliteOptions::stored_bytes_max`] are the store's
//! [`Limits`](idem_core::Limits); idem-core's step admits claims against them as in every
//! store: at a limit new claims get [`StoreError::Full`](idem_core::StoreError::Full),
//! live records are never evicted, and completions of granted claims are always accepted.
//! [`Store::purge_expired`](idem_core::Store::purge_expired) forgets at most `batch_max`
//! due records per call, the earliest `due_at` first (ties by fence, as in
//! `idem_core::MemoryState`; no two held records share a fence), in
//! one short transaction: the `due_at` index only finds the candidates, each goes
//! through idem-core's [`op::Expire`](idem_core::step::op::Expire) step (which forgets it,
//! or shrinks a completed record that leaves a tombstone to that tombstone, due again at
//! the tombstone's end; tombstones count toward the limits like any record), and the
//! batch's usage deltas are written once.
//!
//! Damage recovery (not a protocol rule): a due row that cannot be read back (a
//! hand-edited row, a row from another version) is forgotten anyway, giving back what its
//! `stored_bytes` column says, because refusing would leave it first in every later batch
//! and stall purging for good. Forgetting is safe: its fence stops being current (G3).
//! The pool holds at most [`SqliteOptions::connections_max`] connections.
//!
//! # Failures
//!
//! | error | cause | what changed |
//! |---|---|---|
//! | [`OpenError`] | the options are invalid; the file cannot be opened or created, is not a SQLite database, stays out of WAL, or was migrated by a newer idem | nothing usable was opened |
//! | `StoreError::Unavailable` | the driver failed: I/O error, disk full, pool closed; with `retry_after` when another writer held the lock past the busy timeout or no connection came free | unknown for `claim`, `complete`, `release`, `renew`, `purge_expired` (see the [`Store`](idem_core::Store) docs on retrying); nothing for a failed `complete_with` or `write` (the whole job was rolled back), nor for a failed `complete_in` once its transaction rolls back. Also: the store is closed, the writer's queue stayed full past the acquire timeout (`retry_after` 1 s), or the job ran past the busy timeout |
//! | `StoreError::Full` | a size limit is reached (idem-core's admission refused a claim) | nothing |
//! | `StoreError::Corrupt` | a row (or the file) holds what this version cannot read: a hand-edited row, a newer schema, a damaged file; or the counters disagree with the records (a fence counter not past a record's fence, usage totals that would go below zero) | nothing (a purge still forgets a due row it cannot read, see Bounds) |
//!
//! Fence refusals are not errors but [`idem_core::Fenced::Refused`].
//!
//! # Feature flags
//!
//! None. SQLite is bundled (sqlx's `sqlite` feature), so the store needs no system library.

mod admin;
mod batch;
pub mod batch_decision;
mod codec;
mod error;
mod open;
mod options;
mod purge;
mod replay_cache;
mod rows;
mod store;
mod writer;

pub use error::OpenError;
/// What a store holds, as its size limits count it (idem-core's, re-exported for
/// callers of [`SqliteStore::usage`]).
pub use idem_core::Usage;
pub use open::MIGRATIONS_TABLE;
pub use options::{CONNECTIONS_MAX_LIMIT, ClaimSync, DEFAULT_REPLAY_CACHE_BYTES, SqliteOptions};
/// The driver, re-exported so a service's business writes use the exact sqlx version the
/// store was built with.
pub use sqlx;
pub use store::{SqliteStore, WriteTransaction};
pub use writer::GroupCommitStats;
