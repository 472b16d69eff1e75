//! The embedded durable store for idem: idempotency records in a SQLite file.
//!
//! [`SqliteStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge) and adds atomic mode: [`SqliteStore::complete_in`]
//! completes a claim inside the caller's own transaction, so the handler's business
//! writes and the completion with its fence check commit together or not at all.
//!
//! The store is I/O around [`idem_core::step()`] and decides nothing of its own. Every
//! read-decide-write is one `BEGIN IMMEDIATE` transaction: one statement reads the record
//! and the store-wide counters (`idem_fence`, `idem_usage`), the store's
//! [`Limits`](idem_core::Limits) complete the [`StoreView`](idem_core::StoreView),
//! `step` decides, and the store writes exactly what the [`Step`](idem_core::Step) names:
//! the record row put or deleted, the fence counter set, the usage delta added. A step
//! that writes nothing (a conflict, a replay, a refusal) ends without a commit. The
//! decision table, fences, admission at the size limits, usage accounting and atomic
//! mode's refusal of a repeated completion are all idem-core's; `tests/conformance.rs`
//! runs idem-core's conformance suite on real files, and `tests/differential.rs` pins the
//! store to [`idem_core::MemoryStore`] on random histories.
//!
//! # Contents
//!
//! * [`SqliteOptions`]: the file, the size limits ([`SqliteOptions::limits`]), the pool.
//! * [`SqliteStore`]: [`SqliteStore::open`], the [`Store`](idem_core::Store) impl (with
//!   [`Store::renew`](idem_core::Store::renew), the holder's heartbeat),
//!   [`SqliteStore::begin_write`], [`SqliteStore::complete_in`], [`SqliteStore::usage`],
//!   [`SqliteStore::pool`].
//! * [`Usage`]: idem-core's usage totals, re-exported.
//! * [`OpenError`]: why a file could not be opened, worded for a CLI to print.
//!
//! # Atomic mode
//!
//! The payments handler inserts its row and completes the claim in one transaction. If
//! its lease lapsed and another request took the claim over, `complete_in` answers
//! `Refused`, the handler rolls back, and the payment is not written: the side effect
//! happens at most once even across lease lapses (SPEC G1).
//!
//! ```
//! use idem_core::{Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp};
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
//! // The handler: business write and completion in one transaction.
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_1\"}"[..]);
//! let mut tx = store.begin_write().await?;
//! sqlx::query("INSERT INTO payments (id, amount) VALUES ('pay_1', 100)").execute(&mut *tx).await?;
//! match store.complete_in(&mut tx, &id, claim.fence, response.clone(), now, &policy).await? {
//!     Fenced::Applied => tx.commit().await?,
//!     Fenced::Refused(_) => tx.rollback().await?, // stale claim: the payment is not written
//! }
//!
//! // A retry replays the recorded response; the payment exists once.
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?, Decision::Replay(response));
//! let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(store.pool()).await?;
//! assert_eq!(payments, 1);
//! # Ok(())
//! # }
//! ```
//!
//! In separate mode (a handler whose side effect lives elsewhere) the layer calls
//! [`Store::complete`](idem_core::Store::complete) after the handler instead; the
//! completion is still fenced (G3), but a side effect committed before a crash can repeat.
//!
//! # Why sqlx
//!
//! Both drivers wrap the same SQLite C library (bundled, so the SQL features below do not
//! depend on the system's copy). The choice is about the shape of the API around it:
//!
//! * **sqlx** is async: every connection runs on its own worker thread and callers await
//!   it, so the store needs no `spawn_blocking` of its own, and it brings a bounded pool
//!   with an acquire timeout and embedded migrations (`sqlx::migrate!`). Its
//!   `Transaction` is what the atomic-mode recipe hands to the handler; idem-postgres
//!   will hand out the same type over PostgreSQL, with the same migrations story, so a
//!   handler written for one store reads the same for the other.
//! * **rusqlite** is synchronous and thinner: no worker thread and channel hop per
//!   statement, and direct access to every SQLite API, so each statement costs less. But
//!   every call from async code would need `spawn_blocking`, we would need a pool (r2d2
//!   or our own) and a migration runner, and its `Transaction` borrows a `Connection`
//!   that is not `Sync`, so it cannot be held across an `.await` in a `Send` future: a
//!   handler could not await anything between its business writes and the completion.
//!
//! sqlx meets every requirement here (`BEGIN IMMEDIATE` via `begin_with`, busy timeout,
//! WAL and `synchronous` as connection options, bounded pool, embedded migrations), so
//! it is the long-term driver. Its per-statement overhead is the price; at a handful of
//! statements per request it is small next to the `fsync` that each commit waits for.
//!
//! # Durability: WAL and `synchronous=FULL`
//!
//! [`SqliteStore::open`] switches the file to write-ahead logging and every connection to
//! `synchronous=FULL`. In WAL mode a commit appends to the `-wal` file; with `FULL`,
//! SQLite syncs that file before the commit returns. So once `complete` (or the commit
//! after `complete_in`) returns, and therefore before any client can have seen the
//! response, the record survives a crash of the process and of the machine (G7), on a
//! disk that honours `fsync`. The
//! weaker `NORMAL` would sync only at checkpoints and may lose the last commits on power
//! loss. WAL also lets readers ([`Store::get`](idem_core::Store::get)) run while a writer
//! holds the lock. Copy or move the `-wal` file with the database: until a checkpoint,
//! the latest commits live only there.
//!
//! # Concurrency
//!
//! SQLite has one writer at a time. Every read-decide-write starts with
//! `BEGIN IMMEDIATE`, which takes the write lock first and waits for it up to the busy
//! timeout ([`SqliteOptions::busy_timeout`]); a deferred transaction that read first
//! would instead fail with `SQLITE_BUSY` when another writer committed in between. That
//! single lock is what makes each transition atomic against every other connection and
//! process on the same file. Fresh fences come from the one-row counter `idem_fence`, set
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
//! | | `fingerprint` | 32 bytes of SHA-256 |
//! | | `fence` | the fence of the claim that made the record what it is |
//! | | `state` | `'in_flight'` or `'completed'` |
//! | | `lease_expires_at` | in flight: when the claim lapses; completed: NULL |
//! | | `expires_at` | end of retention |
//! | | `forgettable_at` | `Record::forgettable_at`, indexed (with the id) for purging |
//! | | `status`, `headers`, `body` | completed: the stored response; in flight: NULL |
//! | | `stored_bytes` | what the record costs, [`idem_core::usage::stored_bytes`]; read back only to recover from a damaged row |
//! | `idem_fence` | `next_fence` | the next fence to issue; only grows |
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
//! expired records per call, the earliest `forgettable_at` first (ties by fence, as in
//! `idem_core::MemoryState`; no two held records share a fence), in
//! one short transaction: the `forgettable_at` index only finds the candidates, each goes
//! through idem-core's [`op::Expire`](idem_core::step::op::Expire) step, and the batch's
//! usage deltas are written once.
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
//! | `StoreError::Unavailable` | the driver failed: I/O error, disk full, pool closed; with `retry_after` when another writer held the lock past the busy timeout or no connection came free | unknown for `claim`, `complete`, `release`, `renew`, `purge_expired` (see the [`Store`](idem_core::Store) docs on retrying); nothing for a failed `complete_in` once its transaction rolls back |
//! | `StoreError::Full` | a size limit is reached (idem-core's admission refused a claim) | nothing |
//! | `StoreError::Corrupt` | a row (or the file) holds what this version cannot read: a hand-edited row, a newer schema, a damaged file; or the counters disagree with the records (a fence counter not past a record's fence, usage totals that would go below zero) | nothing (a purge still forgets a due row it cannot read, see Bounds) |
//!
//! Fence refusals are not errors but [`idem_core::Fenced::Refused`].

mod codec;
mod error;
mod options;
mod store;
mod writer;

pub use error::OpenError;
/// What a store holds, as its size limits count it (idem-core's, re-exported for
/// callers of [`SqliteStore::usage`]).
pub use idem_core::Usage;
pub use options::{CONNECTIONS_MAX_LIMIT, ClaimSync, SqliteOptions};
/// The driver, re-exported so a service's business writes use the exact sqlx version the
/// store was built with.
pub use sqlx;
pub use store::{MIGRATIONS_TABLE, SqliteStore, WriteTransaction};
pub use writer::GroupCommitStats;
