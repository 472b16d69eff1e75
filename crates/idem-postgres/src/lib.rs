//! The shared durable store for idem: idempotency records in PostgreSQL, for several server
//! replicas on one database.
//!
//! [`PostgresStore`] implements idem-core's [`Store`](idem_core::Store) (claim, complete,
//! release, renew, get, purge, count a replay), its [`KeyAdmin`](idem_core::KeyAdmin)
//! (list, forget: SPEC "Key lifecycle") and atomic mode, where the handler's business writes and
//! the completion with its fence check commit together or not at all (SPEC "Modes", G1):
//! [`AtomicStore::complete_with`](idem_core::AtomicStore::complete_with) runs the
//! handler's writes and the completion in one transaction of the store's (the recommended
//! path), and [`PostgresStore::complete_in`] completes a claim inside a
//! `sqlx::Transaction<Postgres>` the caller holds (the manual one).
//!
//! The store is I/O around [`idem_core::step()`] and decides nothing of its own. Every
//! operation is optimistic and takes no transaction of its own: one statement reads the
//! record (with its row version), the store-wide counters and the database's clock; the
//! store's [`Limits`](idem_core::Limits) complete the [`StoreView`](idem_core::StoreView);
//! `step` decides; and one statement writes exactly what the [`Step`](idem_core::Step)
//! names (record put or deleted, usage delta added), guarded by what was read, and commits
//! as it ends (autocommit). A guard that finds the record changed writes nothing, and the
//! operation runs again from its read. A step that writes nothing (a conflict, a replay, a
//! refusal) ends after the read. The decision table, fences, admission at the size limits,
//! usage accounting and atomic mode's refusal of a repeated completion are all
//! idem-core's; `tests/conformance.rs` runs idem-core's conformance suite on a real
//! PostgreSQL, and `tests/differential.rs` idem-core's differential check (random histories
//! answered as `MemoryStore` answers them, fences compared by rank), which `src/planted.rs`
//! shows fails for each rule of the SQL planted wrong that [`PlantedBug`] names (the
//! guarded completion without its fence or its state check, with neither, or comparing
//! fences with `<=`; its retention, tombstone or usage delta counted wrong; a purge one
//! millisecond late), except the listing's order, which `tests/admin.rs` catches.
//!
//! # Contents
//!
//! * [`PostgresOptions`]: the URL, the schema, the size limits, the pool, the timeouts,
//!   the retries, [`TimeSource`], the session settings that bound a dead holder and the
//!   open timeout; [`PostgresOptions::connect_options`] (the driver's options with those
//!   settings, for a service's own pool).
//! * [`PostgresStore`]: [`PostgresStore::open`] (which waits for a server that is
//!   starting, runs the embedded migrations if something is missing, and opens a pool),
//!   [`PostgresStore::with_pool`] (the same on the service's own pool), the
//!   [`Store`](idem_core::Store) impl, the [`AtomicStore`](idem_core::AtomicStore) impl
//!   ([`complete_with`](idem_core::AtomicStore::complete_with), atomic mode in one call:
//!   the recommended path), [`PostgresStore::begin_write`] and
//!   [`PostgresStore::complete_in`] (atomic mode by hand, in a transaction the caller
//!   holds), the [`KeyAdmin`](idem_core::KeyAdmin) impl (an operator's list and forget,
//!   "Key administration" below), [`PostgresStore::usage`], [`PostgresStore::pool`].
//! * [`OpenError`]: why a database could not be opened, worded for a CLI to print.
//! * [`PlantedBug`], [`PostgresStore::with_planted_bug`]: **for testing tests only**, the
//!   store with one rule of its SQL planted wrong (what `idem serve --plant-bug` runs), so
//!   a check can show it catches that rule broken; `tests/planted_bug.rs` shows the
//!   completion-guard bugs accept a stale fence's completion that the shipped store refuses.
//! * [`sqlx`]: the driver, re-exported, so a service writes its business rows with the
//!   very sqlx version (and `PgConnection` type) this crate was built with, without
//!   pinning sqlx itself.
//!
//! # Atomic mode
//!
//! Hand the business writes to [`complete_with`](idem_core::AtomicStore::complete_with):
//! it begins a transaction on a pooled connection, runs the writes on it, completes the
//! claim in it ([`PostgresStore::complete_in`]), and commits on
//! [`Fenced::Applied`](idem_core::Fenced::Applied), or rolls back on
//! [`Fenced::Refused`](idem_core::Fenced::Refused) (the claim was taken over after its
//! lease lapsed, or completed already) and on any error
//! ([`CommitError`](idem_core::CommitError): `Writes` for the writes' own failure, `Store`
//! for the store's). Either the payment and the completion both land, or neither does and
//! the claim is still in flight.
//!
//! ```no_run
//! use idem_core::{AtomicStore, Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! use idem_core::{Store, StoredResponse, Timestamp};
//! use idem_postgres::sqlx::{self, PgConnection};
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
//! // The handler: business write and completion in one transaction of the store's.
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_1\"}"[..]);
//! let fenced = store
//!     .complete_with(&id, claim.fence, response.clone(), now, &policy, |connection: &mut PgConnection| {
//!         Box::pin(async move {
//!             sqlx::query("INSERT INTO payments (id, amount) VALUES ('pay_1', 100)").execute(&mut *connection).await?;
//!             Ok(())
//!         })
//!     })
//!     .await?;
//! match fenced {
//!     Fenced::Applied => {}                 // the payment and the completion committed
//!     Fenced::Refused(_) => return Ok(()), // stale claim: the payment was rolled back
//! }
//! assert_eq!(store.claim(&id, &fingerprint, now, &policy).await?.replayed(), Some(&response));
//! # Ok(())
//! # }
//! ```
//!
//! The writes run after `BEGIN` and before the completion locks the record's row, so they
//! hold no lock of idem's; they run at most once and are not retried (the closure is
//! `FnOnce`). Prepare what they write before the call, and keep them to the statements.
//!
//! **By hand.** A handler that must hold the transaction itself (it spans more than the
//! writes, or comes from the application's own pool or connection) calls
//! [`PostgresStore::complete_in`] inside it, and commits or rolls back on its answer:
//!
//! ```no_run
//! # use idem_core::{Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId};
//! # use idem_core::{Store, StoredResponse, Timestamp};
//! # use idem_postgres::sqlx;
//! # use idem_postgres::{PostgresOptions, PostgresStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let store = PostgresStore::open(PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test")).await?;
//! # let id = RecordId::new(Principal::new("alice")?, Key::parse(b"order-43")?);
//! # let fingerprint = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
//! # let (now, policy) = (Timestamp::EPOCH, Policy::default());
//! # let Decision::Execute(claim) = store.claim(&id, &fingerprint, now, &policy).await? else { unreachable!() };
//! let response = StoredResponse::new(201, &b"{\"payment_id\":\"pay_2\"}"[..]);
//! let mut tx = store.begin_write().await?;
//! sqlx::query("INSERT INTO payments (id, amount) VALUES ('pay_2', 100)").execute(&mut *tx).await?;
//! match store.complete_in(&mut tx, &id, claim.fence, response.clone(), now, &policy).await? {
//!     Fenced::Applied => tx.commit().await?,
//!     Fenced::Refused(_) => tx.rollback().await?, // stale claim: the payment is not written
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `complete_in` takes any transaction on the same database (from
//! [`PostgresStore::begin_write`] or the application's own pool): every statement names
//! idem's schema, and the row lock it takes holds off take-overs until that transaction
//! ends.
//!
//! # The service's own pool
//!
//! [`PostgresStore::open`] opens a pool of its own from [`PostgresOptions`].
//! [`PostgresStore::with_pool`] instead takes the `PgPool` the service already has: it
//! runs idem's migrations on it (on one connection it detaches from the pool, so no pooled
//! connection keeps the migration's `search_path`), in the schema the options name, noted
//! in idem's own [`MIGRATIONS_TABLE`], so the service's `sqlx::migrate!` keeps its own list
//! even in the same schema. The pool's settings (size, acquire timeout, statement timeout,
//! liveness check, the session settings of "Dead holders") are then the service's; the
//! options give the schema, the limits, the retries, the time source, the schema lock
//! timeout and the open timeout. Build the pool from [`PostgresOptions::connect_options`]
//! to give its connections idem's session settings.
//!
//! # Round trips
//!
//! Counted as statements sent and answered (`tests/round_trips.rs` counts them; sqlx logs no
//! event for `BEGIN`, so the test counts the others and the docs add it); taking a pooled
//! connection adds sqlx's liveness check (`test_before_acquire`), one more short round trip,
//! to each operation that runs on the pool, as it does to any query on the pool.
//!
//! | operation | statements | commits |
//! |---|---|---|
//! | `claim` that executes or takes over | 2: the read (drawing a fence), the guarded write | 1 |
//! | `claim` that conflicts, replays or mismatches | 1: the read | 0 |
//! | `complete` of the claim in flight | 1: the guarded completion | 1 |
//! | `complete` otherwise (repeated, refused) | 2: the guarded completion (writes nothing), the read | 0 |
//! | `release`, `renew`, `count_replay` | 2: the read, the guarded write (1 when the step writes nothing) | 1 (0) |
//! | `forget` (KeyAdmin) | 2: the read (drawing a fence), the guarded delete (1 when nothing is held) | 1 (0) |
//! | `list` (KeyAdmin) | 1 | 0 |
//! | `complete_in` of the claim in flight | **1**, in the caller's transaction | the caller's |
//! | `complete_in` otherwise (refused) | 2: the guarded completion, the locked read | the caller's |
//! | `complete_with` of the claim in flight | **3** and the writes': `BEGIN`, the writes, the guarded completion, `COMMIT` | 1 |
//! | `complete_with` otherwise (refused, or the writes or the completion failed) | `BEGIN`, the writes, `complete_in`'s (2 when refused, none when the writes failed), `ROLLBACK` | 0 |
//!
//! A contended operation (a guard that failed, `40001`, `40P01`) adds its read and write
//! again per retry.
//!
//! **The guarded completion.** A completion of the claim in flight is the usual case, and
//! what idem-core's step makes of it depends on no part of the record but its state and
//! fence: the completed record keeps the claim's fingerprint, fence and creation time,
//! drops its holder and renewal count, holds the response with no replays counted, is kept
//! for the retention from the completion's `now`, and (under a policy with tombstones)
//! leaves its tombstone until the tombstone period after that. So the store asks the step
//! what to write for the record presumed to be "the claim `fence`, in flight", and sends it
//! as one statement that locks the record's row only if it is that claim (and the fence
//! counter is past it, the step's damage check), reads the counters and the clock after
//! the lock is granted, and writes the completion with its end of retention counted from
//! that clock (`LEAST(now + retention, i64::MAX)`, [`Timestamp`](idem_core::Timestamp)'s
//! saturating sum as stored, and the tombstone's end likewise after it), all in one round
//! trip; the usage delta is the new `stored_bytes` less the row's, since a holder's ids
//! count toward the claim's size. The statement returns the view it read and the row as
//! it wrote it; the store runs the step again on that view, at that time, and checks that
//! it names exactly what was written (the record read back from the written row, its
//! `stored_bytes`, the usage delta, the answer). When the row is not that
//! claim (taken over, completed, released, purged), the statement writes nothing and the
//! ordinary read and step produce the refusal. A disagreement would be a bug in this
//! crate's SQL: it is reported as `Corrupt` (in atomic mode the caller then rolls back and
//! nothing lands; for `complete`, which commits as it writes, the record holds that
//! completion); `tests/guarded.rs` runs the guarded completion against the step on every
//! kind of record, and the differential check (above) on random histories.
//!
//! # Time (SPEC "lease", "retention"; G1, G3)
//!
//! With [`TimeSource::Database`] (the default) the `now` of every decision is the
//! database's `clock_timestamp()` in unix milliseconds, read in the same statement as the
//! record the step decides on (after its row lock is granted, where there is one); the
//! `now` callers pass is ignored.
//! Replicas whose clocks disagree therefore agree on when a lease lapses and when a record
//! expires, and a purger with a fast clock cannot forget live records. Decisions still go
//! through idem-core with that time as its argument. [`TimeSource::Caller`] uses the
//! caller's `now`, as idem-core's other stores do (tests, simulations, the conformance suite).
//!
//! # Concurrency (G1)
//!
//! * **One record id.** An operation reads the record without a lock, and its write is
//!   guarded by what it read: a record that was absent is written with `INSERT … ON
//!   CONFLICT DO NOTHING`, so the primary key decides a race between first claims; a record
//!   that was held is updated or deleted only if its row is still the version read
//!   (`WHERE xmin = $version`: the row's `xmin` is the id of the transaction that wrote it,
//!   so any later write of the row, by another transaction, changes it; the optimistic
//!   token Npgsql and EF Core use too). A write that finds the row changed (or inserted, or
//!   deleted) writes nothing, and the operation runs again from its read (it counts as
//!   contention, below). A write that waits for another transaction's row lock (an atomic
//!   completion in flight) rechecks its guard on the row that transaction committed. So
//!   each operation takes effect on the very record its step decided on, at a moment
//!   between its read and its write, as if the two were one locked section; concurrent
//!   first claims get one execution, the others find the winner's claim.
//! * **Fences** come from the sequence `idem_fence_seq`, drawn (`nextval`) in a claim's
//!   read, after that statement's snapshot was taken. The record the read returns was
//!   committed before that snapshot, and its fence drawn before its commit, so the fence
//!   drawn is past it, and the guarded write puts the new claim only over that very
//!   record. Sequences never go back, also not after a release, a take-over, a purge or a
//!   crash (a write that commits a drawn fence flushes the draw), so fences are never
//!   reused (G3). A draw the step does not use (a conflict, a replay, a lost race) leaves a
//!   gap; fences need only grow. One window: when a record id has no row, nothing is there
//!   to guard but its absence, so if another claim inserts a record and it is deleted again
//!   (released, purged) between a first claim's read and its insert, the new claim's fence
//!   may be below the deleted one's. Fences stay unique and the deleted claim's fence is
//!   refused as any stale fence; a locked read has the same window (an absent row cannot
//!   be locked). A sequence takes no lock, so claims on different record
//!   ids commit in parallel (group commit).
//! * **Usage shards.** The usage totals live in 64 rows of `idem_usage`; a step adds its
//!   delta to the shard of its record id (FNV-1a of principal and key, modulo 64), in the
//!   statement that writes the record, and the totals are the sums. Steps on different
//!   record ids rarely wait for each other.
//! * **Contention.** An attempt whose guard failed, or that PostgreSQL aborts with a
//!   serialization failure (`40001`) or a deadlock (`40P01`), has applied nothing and runs
//!   again from its read, at most [`PostgresOptions::retries_max`] times, with exponential
//!   backoff (2 ms to 64 ms, jittered); then it fails as `Unavailable` with nothing applied.
//!   `complete_in` does not retry: its row lock means no guard of its own fails, and a
//!   serialization failure or deadlock aborts the caller's transaction, which only the
//!   caller can run again.
//!
//! # Bounds
//!
//! [`PostgresOptions::records_max`] and [`PostgresOptions::stored_bytes_max`] are the
//! store's [`Limits`](idem_core::Limits), admitted against by idem-core's step as in every
//! store: at a limit new claims get [`StoreError::Full`](idem_core::StoreError::Full), live
//! records are never evicted, completions of granted claims are always accepted. One
//! difference from a store with a single writer: a claim reads the totals in its read and
//! adds to them in its write, so claims between their read and their write at the same
//! moment do not see each other, and the store may overshoot `records_max` (and
//! `stored_bytes_max`) by at most the number of claims that run concurrently, at most the
//! connections of all replicas' pools (an operation holds one pooled connection from its
//! read to its write); sequential claims, and the conformance suite, see exact totals.
//!
//! [`Store::purge_expired`](idem_core::Store::purge_expired) visits at most `batch_max`
//! due records per call, earliest [`Record::due_at`](idem_core::Record::due_at) first
//! (ties by fence, as in `idem_core::MemoryState`), in one short transaction: the `due_at`
//! index finds the candidates, rows another transaction holds are skipped (`SKIP
//! LOCKED`), each goes through idem-core's [`op::Expire`](idem_core::step::op::Expire)
//! step, which forgets it or, for a completed record that leaves a tombstone, shrinks it
//! to the tombstone (response dropped, kept until the tombstone's end, when it is due
//! again); the forgotten ones are deleted in one statement, the shrunk ones rewritten in
//! another (one array per column), and the usage given back per shard in a third. Each
//! counts in what the call returns. A due row that cannot
//! be read back is forgotten anyway (damage recovery, as in idem-sqlite).
//!
//! The pool holds at most [`PostgresOptions::connections_max`] connections; a call waits
//! at most [`PostgresOptions::acquire_timeout`] for one, and every statement at most
//! [`PostgresOptions::statement_timeout`] (PostgreSQL's `statement_timeout`, set on each
//! pooled connection).
//!
//! # Dead holders
//!
//! A replica whose host dies without closing its connections (power loss, a frozen VM, a
//! host cut off) after an atomic-mode completion locked the record's row, and before its
//! `COMMIT`, leaves an open transaction on the server: its row lock keeps the key from
//! being taken over, until the server ends the session. Every connection the store opens
//! therefore carries, in its startup packet, PostgreSQL settings that end such a session
//! on the server's side, where the locks are (defaults, and the option that sets each):
//!
//! | setting | default | option | ends |
//! |---|---|---|---|
//! | `statement_timeout` | 5 s | [`PostgresOptions::statement_timeout`] | a statement running or waiting longer |
//! | `idle_in_transaction_session_timeout` | 5 s | [`PostgresOptions::idle_in_transaction_timeout`] | a session silent inside a transaction longer: rolled back, locks freed |
//! | `lock_timeout` | 2 s | [`PostgresOptions::lock_timeout`] | a lock wait longer (the request fails `Unavailable` and gives its connection back) |
//! | `tcp_keepalives_idle`, `_interval`, `_count` | 5 s, 1 s, 5 | [`PostgresOptions::tcp_keepalive`] | a connection whose host stopped answering probes (about 10 s) |
//! | `tcp_user_timeout` | 10 s | [`PostgresOptions::tcp_user_timeout`] | a connection whose sent data stays unacknowledged longer |
//!
//! So a dead holder's row lock is gone at most `statement_timeout +
//! idle_in_transaction_session_timeout` (10 s) after its host died, and its key can be
//! taken over at the later of that and its lease's end (docs/guarantees.md, "A dead holder
//! holds nothing"). The defaults are tied to idem's default lease (10 s): the sums are one
//! lease, so a vanished host costs its key at most one lease more than a crashed process.
//! The keepalives and the user timeout cover what the idle timeout does not see: a
//! session that holds a lock outside a transaction (sqlx's migration lock) or that is
//! stuck sending to the vanished host. sqlx has no client-side keepalive option; the
//! client side is bounded by the statement timeout and the pool's liveness check.
//!
//! [`PostgresStore::open`] tries again, within [`PostgresOptions::open_timeout`] (10 s),
//! while the server refuses connections, answers "the database system is starting up"
//! (SQLSTATE 57P03, also shutting down or in recovery), has no free slot, or idem's schema
//! is locked; it fails at once on what waiting cannot fix (authentication, a missing
//! database, invalid options).
//!
//! # Schema
//!
//! Migrations are embedded (`migrations/` in this crate, `sqlx::migrate!`) and run by
//! [`PostgresStore::open`] in [`PostgresOptions::schema`] (created if missing, default
//! `public`); sqlx notes them in [`MIGRATIONS_TABLE`] (`_idem_migrations`) in that schema.
//! Startup DDL never waits behind the store's business: `open` first reads the catalog
//! and the migrations table (plain reads, which no row lock blocks), and when every table
//! is there and every migration applied it runs no DDL and takes no migration lock. Only a
//! schema that lacks something is created or migrated, and every statement of this phase
//! runs under [`PostgresOptions::schema_lock_timeout`] (1 s): a lock it cannot take ends
//! the attempt ([`OpenError::SchemaLocked`]) instead of queueing ahead of the writers, and
//! `open` tries again until its open timeout.
//! Every idem table starts with `idem_`; all times are unix milliseconds (`BIGINT`).
//!
//! | table | column | meaning |
//! |---|---|---|
//! | `idem_records` | `principal`, `idem_key` | the record id, primary key, collation `"C"` (bytewise) since 0002 (`''` is the anonymous principal) |
//! | | `fingerprint` | [`Fingerprint::to_stored`](idem_core::Fingerprint::to_stored): 32 bytes of SHA-256 for a byte fingerprint (version 1), a version byte and 32 bytes for later versions |
//! | | `fence` | the fence of the claim that made the record what it is |
//! | | `created_at` | when that claim was taken; 0 for records written before migration 0002 |
//! | | `state` | `'in_flight'`, `'completed'` or `'tombstone'` (a CHECK constraint) |
//! | | `lease_expires_at` | in flight: when the claim lapses; otherwise NULL |
//! | | `holder_request_id`, `holder_trace_id` | in flight: the holder's ids, each NULL when not sent; otherwise NULL |
//! | | `renewals` | in flight: renewals of the lease; otherwise 0 |
//! | | `expires_at` | end of retention; for a tombstone, the tombstone's end |
//! | | `due_at` | [`Record::due_at`](idem_core::Record::due_at), indexed with `fence` for purging |
//! | | `status`, `headers`, `body` | completed: the stored response; otherwise NULL |
//! | | `replays` | completed: replays counted (best effort); otherwise 0 |
//! | | `tombstone_until` | completed: when its tombstone ends, NULL if it leaves none; otherwise NULL |
//! | | `stored_bytes` | what the record costs, [`idem_core::usage::stored_bytes`] |
//! | `idem_fence_seq` | (sequence) | the fences; only grows |
//! | `idem_usage` | `shard`, `records`, `stored_bytes` | 64 shards of the totals for the size limits |
//!
//! **Upgrading** from a schema migrated before the key lifecycle (0001 only): `open` runs
//! migration `0002_key_lifecycle.sql`, which adds the lifecycle columns with values for
//! the rows already there (created at 0, "before the upgrade, time unknown", so an age
//! filter counts them as old; no holder; no counts; no tombstone), adds the state
//! constraint, renames `forgettable_at` to `due_at` (the same value for every row 0001
//! could hold) and gives the id columns the `"C"` collation, which rebuilds the primary
//! key. It holds an exclusive lock on `idem_records` for as long as that takes (it lifts
//! the statement timeout for itself; on a table of millions of rows, seconds), and the
//! store's operations wait for it or fail `Unavailable` after the lock timeout. Stop
//! replicas of the older idem first: their statements name `forgettable_at` and fail
//! afterwards (`Unavailable`, nothing applied), and a replica of the older idem that
//! opens the migrated schema is refused ([`OpenError::NewerSchema`]).
//! `tests/upgrade.rs` migrates with 0001 alone, writes records as the older idem did, and
//! shows they read back, replay and complete after the upgrade.
//!
//! Headers are one `BYTEA` in idem-sqlite's encoding: a version byte `1`, the number of
//! headers as a big-endian `u32`, then per header the name's length (big-endian `u32`) and
//! UTF-8 bytes, and the value's length and bytes. A stored value out of range is
//! [`StoreError::Corrupt`](idem_core::StoreError::Corrupt).
//!
//! # Key administration (SPEC "Key lifecycle")
//!
//! [`KeyAdmin::list`](idem_core::KeyAdmin::list) is one statement that restates
//! [`ListQuery::admits`](idem_core::ListQuery::admits) as its `WHERE` clause (principal,
//! stored state, created before, created at or after, and the cursor as `(principal,
//! idem_key) > (…)`), ordered by `(principal, idem_key)` in the `"C"` collation, so pages
//! come in Rust's bytewise `str` order whatever the database's collation, and reads
//! `limit + 1` rows to tell whether more follow. With the id columns in that collation
//! (migration 0002) the primary key's index serves the order and the cursor. Expired
//! records not yet purged are listed. `tests/admin.rs` pages every filter against
//! `ListQuery::select` over the same records, with the columns in a natural-language
//! collation, and shows the listing without its `COLLATE "C"` ([`PlantedBug`]) is caught.
//!
//! [`KeyAdmin::forget`](idem_core::KeyAdmin::forget) is idem-core's
//! [`op::Forget`](idem_core::step::op::Forget) through the ordinary read and guarded
//! write; its read draws from `idem_fence_seq` as a claim's does, and that draw is the
//! step's advance of the fence counter, so a handler still running under the forgotten
//! claim can never complete afterwards (G3), in separate or atomic mode.
//!
//! [`Store::count_replay`](idem_core::Store::count_replay) is idem-core's
//! [`op::CountReplay`](idem_core::step::op::CountReplay) through the same path.
//!
//! # Failures (G8: the caller refuses the request, nothing runs without a claim)
//!
//! | error | cause | what changed |
//! |---|---|---|
//! | [`OpenError`] | invalid options or URL; server unreachable, starting up or idem's schema locked past the open timeout ([`OpenError::NotReady`], naming the last reason); schema from a newer idem; migration failed | nothing usable was opened |
//! | `StoreError::Unavailable` | connection lost or refused, server shutting down or starting up, pool closed; with `retry_after` for a statement timeout, a pool with no free connection, or contention past the retries (or, in `complete_in` and `complete_with`, which do not retry, any serialization failure or deadlock) | unknown for `claim`, `complete`, `release`, `renew` if the connection broke during their write statement, which commits as it ends (see the [`Store`](idem_core::Store) docs on retrying), and for `complete_with` if it broke during its `COMMIT`; nothing otherwise; nothing for a failed `complete_in` once its transaction rolls back |
//! | `StoreError::Full` | a size limit is reached | nothing |
//! | `StoreError::Corrupt` | a row holds what this version cannot read, a constraint of idem's tables broke (usage totals edited by hand), or the fence sequence is behind a record | nothing (a guarded completion that disagrees with the step, a bug: see "Round trips") |
//!
//! `complete_with` wraps these as [`CommitError::Store`](idem_core::CommitError::Store);
//! its [`CommitError::Writes`](idem_core::CommitError::Writes) is the business writes' own
//! `sqlx::Error` (also an integrity violation reported by `COMMIT`: a deferred constraint
//! of the business tables, as idem's own constraints are not deferred), and nothing of
//! that call was committed. Fence refusals are not errors but
//! [`idem_core::Fenced::Refused`].
//!
//! # Feature flags
//!
//! This crate has no Cargo features of its own. It builds sqlx with the workspace's
//! features (`postgres`, `runtime-tokio`, `migrate`, `macros`; also `sqlite`, for
//! idem-sqlite), and the re-exported [`sqlx`] is that build: a service that uses it gets
//! those features and no other sqlx.

/// The driver, re-exported so a service's business writes (and its own pool, for
/// [`PostgresStore::with_pool`]) use the exact sqlx version this crate is built with.
pub use sqlx;

// The unit tests share files with the integration tests (`tests/common/differential.rs`),
// which name this crate by its name.
#[cfg(test)]
extern crate self as idem_postgres;

mod admin;
mod atomic;
mod codec;
mod error;
mod guarded;
mod inner;
mod open;
mod options;
#[cfg(test)]
mod planted;
mod planting;
mod purge;
mod read;
mod schema;
mod session;
mod statements;
mod store;
mod write;

pub use atomic::WriteTransaction;
pub use error::OpenError;
/// What a store holds, as its size limits count it (idem-core's, re-exported for callers
/// of [`PostgresStore::usage`]).
pub use idem_core::Usage;
pub use options::{CONNECTIONS_MAX_LIMIT, PostgresOptions, RETRIES_MAX_LIMIT, SCHEMA_CHARS_MAX, TimeSource};
pub use planting::{PlantedBug, UnknownPlantedBug};
pub use schema::MIGRATIONS_TABLE;
pub use session::KEEPALIVE_COUNT_MAX;
pub use store::PostgresStore;
