//! The shared durable store for idem: idempotency records in PostgreSQL, for several server
//! replicas on one database.
//!
//! [`PostgresStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge) and adds atomic mode: [`PostgresStore::complete_in`]
//! completes a claim inside the caller's own `sqlx::Transaction<Postgres>`, so the
//! handler's business writes and the completion with its fence check commit together or
//! not at all (SPEC "Modes", G1).
//!
//! The store is I/O around [`idem_core::step()`] and decides nothing of its own. Every
//! operation is one transaction: one statement locks the record's row (`SELECT … FOR
//! UPDATE`), reads the store-wide counters and the database's clock; the store's
//! [`Limits`](idem_core::Limits) complete the [`StoreView`](idem_core::StoreView); `step`
//! decides; and one statement writes exactly what the [`Step`](idem_core::Step) names
//! (record put or deleted, usage delta added), then the transaction commits. A step that
//! writes nothing (a conflict, a replay, a refusal) ends without a commit. The decision
//! table, fences, admission at the size limits, usage accounting and atomic mode's refusal
//! of a repeated completion are all idem-core's; `tests/conformance.rs` runs idem-core's
//! conformance suite on a real PostgreSQL.
//!
//! # Contents
//!
//! * [`PostgresOptions`]: the URL, the schema, the size limits, the pool, the timeouts,
//!   the retries, and [`TimeSource`].
//! * [`PostgresStore`]: [`PostgresStore::open`] (which runs the embedded migrations), the
//!   [`Store`](idem_core::Store) impl, [`PostgresStore::begin_write`],
//!   [`PostgresStore::complete_in`], [`PostgresStore::usage`], [`PostgresStore::pool`].
//! * [`OpenError`]: why a database could not be opened, worded for a CLI to print.
//!
//! # Atomic mode
//!
//! ```no_run
//! use idem_core::{Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp};
//! use idem_postgres::{PostgresOptions, PostgresStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::open(PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test")).await?;
//! sqlx::query("CREATE TABLE IF NOT EXISTS payments (id TEXT PRIMARY KEY, amount BIGINT NOT NULL)")
//!     .execute(store.pool())
//!     .await?;
//!
//! let id = RecordId::new(Principal::new("alice")?, Key::parse(b"order-42")?);
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
//! // With the default TimeSource::Database, `now` is ignored: the database's clock decides.
//! let (now, policy) = (Timestamp::EPOCH, Policy::default());
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
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?, Decision::Replay(response));
//! # Ok(())
//! # }
//! ```
//!
//! `complete_in` takes any transaction on the same database (from
//! [`PostgresStore::begin_write`] or the application's own pool): every statement names
//! idem's schema, and the row lock it takes holds off take-overs until that transaction
//! ends. It adds two statement round trips to the business transaction (the locked read,
//! the write); a claim or a separate-mode completion is four (`BEGIN`, read, write,
//! `COMMIT`), a conflict or replay three (`BEGIN`, read, and a rollback that rides on the
//! connection's next use).
//!
//! # Time (SPEC "lease", "retention"; G1, G3)
//!
//! With [`TimeSource::Database`] (the default) the `now` of every decision is the
//! database's `clock_timestamp()` in unix milliseconds, read in the operation's own
//! transaction after the record's row lock is granted; the `now` callers pass is ignored.
//! Replicas whose clocks disagree therefore agree on when a lease lapses and when a record
//! expires, and a purger with a fast clock cannot forget live records. Decisions still go
//! through idem-core with that time as its argument. [`TimeSource::Caller`] uses the
//! caller's `now`, as idem-core's other stores do (tests, simulations, the conformance suite).
//!
//! # Concurrency (G1)
//!
//! * **One record id.** Every operation locks the record's row (`FOR UPDATE`) before it
//!   decides, so operations on one record id take turns. A record id with no row yet has
//!   nothing to lock: two first claims may both find it absent, but the primary key
//!   decides, since a new record is written with `INSERT … ON CONFLICT DO NOTHING`, which
//!   waits for the other insert to commit and then inserts nothing. The loser runs again
//!   (it counts as contention, below) and now finds the winner's claim: one execution.
//! * **Fences** come from the sequence `idem_fence_seq`, drawn (`nextval`) in a claim's
//!   read after the row lock is granted, so a fence drawn for a record id is past every
//!   fence that record id was given before. Sequences never go back, also not after a
//!   release, a take-over, a purge or a crash (the claim's commit flushes the draw), so
//!   fences are never reused (G3). A draw the step does not use (a conflict, a replay)
//!   leaves a gap; fences need only grow. Unlike a counter row, a sequence is not locked
//!   until commit, so claims on different record ids commit in parallel (group commit).
//! * **Usage shards.** The usage totals live in 64 rows of `idem_usage`; a step adds its
//!   delta to the shard of its record id (FNV-1a of principal and key, modulo 64), and the
//!   totals are the sums. Steps on different record ids rarely wait for each other.
//! * **Contention.** An attempt that PostgreSQL aborts with a serialization failure
//!   (`40001`), a deadlock (`40P01`), or that lost the insert race above, is rolled back
//!   and run again, at most [`PostgresOptions::retries_max`] times, with exponential
//!   backoff (2 ms to 64 ms, jittered); then it fails as `Unavailable` with nothing applied.
//!   `complete_in` does not retry: the caller's transaction is aborted, and only the caller
//!   can run it again.
//!
//! # Bounds
//!
//! [`PostgresOptions::records_max`] and [`PostgresOptions::stored_bytes_max`] are the
//! store's [`Limits`](idem_core::Limits), admitted against by idem-core's step as in every
//! store: at a limit new claims get [`StoreError::Full`](idem_core::StoreError::Full), live
//! records are never evicted, completions of granted claims are always accepted. One
//! difference from a store with a single writer: a claim reads the totals as of its
//! statement's snapshot, so claims running at the same moment do not see each other, and
//! the store may overshoot `records_max` by at most the number of claims that run
//! concurrently (at most the connections of all replicas' pools); sequential claims, and
//! the conformance suite, see exact totals.
//!
//! [`Store::purge_expired`](idem_core::Store::purge_expired) forgets at most `batch_max`
//! expired records per call, earliest `forgettable_at` first (ties by fence, as in
//! `idem_core::MemoryState`), in one short transaction: the `forgettable_at` index finds
//! the candidates, rows another transaction holds are skipped (`SKIP LOCKED`), each goes
//! through idem-core's [`op::Expire`](idem_core::step::op::Expire) step, and the batch is
//! deleted and its usage given back per shard in one statement each. A due row that cannot
//! be read back is forgotten anyway (damage recovery, as in idem-sqlite).
//!
//! The pool holds at most [`PostgresOptions::connections_max`] connections; a call waits
//! at most [`PostgresOptions::acquire_timeout`] for one, and every statement at most
//! [`PostgresOptions::statement_timeout`] (PostgreSQL's `statement_timeout`, set on each
//! pooled connection).
//!
//! # Schema
//!
//! Migrations are embedded (`migrations/` in this crate, `sqlx::migrate!`) and run by
//! [`PostgresStore::open`] in [`PostgresOptions::schema`] (created if missing, default
//! `public`); sqlx notes them in [`MIGRATIONS_TABLE`] (`_idem_migrations`) in that schema.
//! Every idem table starts with `idem_`; all times are unix milliseconds (`BIGINT`).
//!
//! | table | column | meaning |
//! |---|---|---|
//! | `idem_records` | `principal`, `idem_key` | the record id, primary key (`''` is the anonymous principal) |
//! | | `fingerprint` | 32 bytes of SHA-256 |
//! | | `fence` | the fence of the claim that made the record what it is |
//! | | `state` | `'in_flight'` or `'completed'` |
//! | | `lease_expires_at` | in flight: when the claim lapses; completed: NULL |
//! | | `expires_at` | end of retention |
//! | | `forgettable_at` | `Record::forgettable_at`, indexed with `fence` for purging |
//! | | `status`, `headers`, `body` | completed: the stored response; in flight: NULL |
//! | | `stored_bytes` | what the record costs, [`idem_core::usage::stored_bytes`] |
//! | `idem_fence_seq` | (sequence) | the fences; only grows |
//! | `idem_usage` | `shard`, `records`, `stored_bytes` | 64 shards of the totals for the size limits |
//!
//! Headers are one `BYTEA` in idem-sqlite's encoding: a version byte `1`, the number of
//! headers as a big-endian `u32`, then per header the name's length (big-endian `u32`) and
//! UTF-8 bytes, and the value's length and bytes. A stored value out of range is
//! [`StoreError::Corrupt`](idem_core::StoreError::Corrupt).
//!
//! # Failures (G8: the caller refuses the request, nothing runs without a claim)
//!
//! | error | cause | what changed |
//! |---|---|---|
//! | [`OpenError`] | invalid options or URL; server unreachable; schema from a newer idem; migration failed | nothing usable was opened |
//! | `StoreError::Unavailable` | connection lost or refused, server shutting down or starting up, pool closed; with `retry_after` for a statement timeout, a pool with no free connection, or contention past the retries | unknown for `claim`, `complete`, `release`, `renew` if the connection broke during `COMMIT` (see the [`Store`](idem_core::Store) docs on retrying), nothing otherwise; nothing for a failed `complete_in` once its transaction rolls back |
//! | `StoreError::Full` | a size limit is reached | nothing |
//! | `StoreError::Corrupt` | a row holds what this version cannot read, a constraint of idem's tables broke (usage totals edited by hand), or the fence sequence is behind a record | nothing |
//!
//! Fence refusals are not errors but [`idem_core::Fenced::Refused`].

mod codec;
mod error;
mod options;
mod store;

pub use error::OpenError;
/// What a store holds, as its size limits count it (idem-core's, re-exported for callers
/// of [`PostgresStore::usage`]).
pub use idem_core::Usage;
pub use options::{CONNECTIONS_MAX_LIMIT, PostgresOptions, RETRIES_MAX_LIMIT, SCHEMA_CHARS_MAX, TimeSource};
pub use store::{MIGRATIONS_TABLE, PostgresStore, WriteTransaction};
