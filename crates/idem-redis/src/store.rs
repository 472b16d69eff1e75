//! [`RedisStore`]: read under `WATCH`, decide with [`idem_core::step()`], write in `MULTI`/`EXEC`.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use idem_core::step::{self, Counters, Operation, StoreView, op};
use idem_core::usage::{self, Usage, UsageDelta};
use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Limits, Policy, Record, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp, Write,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::codec::{
    self, Held, Keys, USAGE_BYTES, USAGE_RECORDS, corrupt, decode_record, encode_record, id_field, member, score,
};
use crate::options::{FenceSeed, RedisOptions};

/// A claim whose view is within this many records of `records_max` watches the usage
/// totals, so admission at the limit is exact under concurrency (see the crate docs).
pub const NEAR_FULL_RECORDS: u64 = 1024;
/// As [`NEAR_FULL_RECORDS`], in bytes of `stored_bytes_max`.
pub const NEAR_FULL_BYTES: u64 = 16 * 1024 * 1024;
/// Keys deleted per `SCAN` round of [`RedisStore::clear`].
const CLEAR_BATCH: usize = 500;
/// Fences per microsecond a [`FenceSeed::ServerClock`] seed leaves room for: the seed is
/// Redis's clock in µs shifted left by this many bits.
pub const FENCE_SEED_SHIFT: u32 = 10;

/// Why [`RedisStore::open`] failed, worded for a CLI to print.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Redis did not answer (not running, wrong address, timeout, refused credentials).
    #[error(
        "cannot reach Redis at {url}: {source} (start one with `redis-server --daemonize yes --save \"\" --appendonly no`)"
    )]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// What the driver reported.
        #[source]
        source: RedisError,
    },
    /// Connecting took longer than the connect and response timeouts together.
    #[error("Redis at {url} did not answer within {timeout:?}")]
    TimedOut {
        /// The URL, without its password.
        url: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The server is older than 6.2, which added `ZRANGE … BYSCORE LIMIT` and `SET … PXAT`.
    #[error("Redis at {url} is version {version}; idem-redis needs 6.2 or later")]
    TooOld {
        /// The URL, without its password.
        url: String,
        /// The version it reported.
        version: String,
    },
}

/// An idempotency [`Store`] on Redis (separate mode): see the crate docs for the layout,
/// time, expiry, limits and what a restart without persistence loses.
pub struct RedisStore {
    options: RedisOptions,
    keys: Keys,
    client: Client,
    /// Single-command reads that need no `WATCH` (`get`, the purge's index, `SCAN`).
    reads: ConnectionManager,
    pool: Pool,
    closed: AtomicBool,
    /// Whether the last view read was near a size limit: the next claim watches usage
    /// from its first attempt.
    near_full: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.options.url_redacted())
            .field("prefix", &self.options.prefix)
            .field("limits", &self.options.limits)
            .finish_non_exhaustive()
    }
}

/// Connections for transactions, each held by one operation at a time: `WATCH` state
/// belongs to a connection, so two operations must never share one mid-transaction.
///
/// Plain multiplexed connections, not [`ConnectionManager`]s: a manager reconnects by
/// itself, and a reconnect between `WATCH` and `EXEC` would drop the watch silently and
/// let `EXEC` commit on a stale read. A plain connection that breaks fails every later
/// command instead; it is dropped and the next checkout dials a new one.
struct Pool {
    permits: Semaphore,
    idle: Mutex<Vec<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

/// A pooled connection on loan. It goes back to the pool only if the operation marked it
/// clean; a connection left mid-command (timeout, error, cancelled future) is dropped.
struct Loan<'a> {
    pool: &'a Pool,
    connection: Option<MultiplexedConnection>,
    clean: bool,
    _permit: SemaphorePermit<'a>,
}

impl Loan<'_> {
    fn get(&mut self) -> &mut MultiplexedConnection {
        self.connection.as_mut().expect("a loan holds its connection until dropped")
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if self.clean
            && let Some(connection) = self.connection.take()
        {
            self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(connection);
        }
    }
}

/// Maps a driver error: a key of the wrong type or a reply that does not parse as what
/// the store wrote is damage (`Corrupt`); everything else (I/O, timeouts, refused
/// connections, `LOADING`, `READONLY`, `OOM`) is `Unavailable`.
fn redis_error(error: RedisError) -> StoreError {
    if error.code() == Some("WRONGTYPE") || error.kind() == redis::ErrorKind::UnexpectedReturnType {
        corrupt(format!("Redis holds a value of another shape under the store's keys: {error}"))
    } else {
        StoreError::unavailable(error)
    }
}

/// A message as a driver-error source for `Unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn unavailable(message: String, retry_after: Option<Duration>) -> StoreError {
    StoreError::Unavailable { source: Box::new(Message(message)), retry_after }
}

fn count(name: &str, value: Option<i64>) -> Result<u64, StoreError> {
    u64::try_from(value.unwrap_or(0)).map_err(|_| corrupt(format!("usage {name} is negative: {value:?}")))
}

fn is_near_full(usage: Usage, limits: Limits) -> bool {
    usage.records.saturating_add(NEAR_FULL_RECORDS) >= limits.records_max
        || usage.stored_bytes.saturating_add(NEAR_FULL_BYTES) >= limits.stored_bytes_max
}

/// What one transaction attempt read for one id.
struct Read {
    record: Option<Record>,
    /// The `held` entry of a record Redis forgot by itself (absent record, entry kept).
    ghost: Option<Held>,
    counters: Counters,
}

/// How an attempt ended.
enum Attempt<A> {
    Done(A),
    /// A concurrent write touched a watched key, or the view must be read again.
    Again,
}

impl RedisStore {
    /// Connects to Redis as `options` say and checks it answers (`PING`, version 6.2+).
    /// Transaction connections are dialled on first use, up to
    /// [`RedisOptions::connections_max`].
    ///
    /// # Errors
    /// [`OpenError`] when Redis cannot be reached in time or is too old.
    pub async fn open(options: RedisOptions) -> Result<RedisStore, OpenError> {
        let url = options.url_redacted();
        let unreachable = |source| OpenError::Unreachable { url: url.clone(), source };
        let client = Client::open(options.url.as_str()).map_err(unreachable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2);
        let timeout = options.connect_timeout + options.response_timeout * 2;
        let connect = async {
            let mut reads = ConnectionManager::new_with_config(client.clone(), manager_config).await?;
            let info: String = redis::cmd("INFO").arg("server").query_async(&mut reads).await?;
            Ok::<_, RedisError>((reads, info))
        };
        let (reads, info) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| OpenError::TimedOut { url: url.clone(), timeout })?
            .map_err(unreachable)?;
        let version =
            info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_owned();
        let number = |part: Option<&str>| part.and_then(|part| part.parse::<u32>().ok()).unwrap_or(0);
        let mut parts = version.split('.');
        if (number(parts.next()), number(parts.next())) < (6, 2) {
            return Err(OpenError::TooOld { url, version });
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        Ok(RedisStore {
            keys: Keys::new(&options.prefix),
            pool: Pool { permits: Semaphore::new(options.connections_max), idle: Mutex::new(Vec::new()), config },
            client,
            reads,
            closed: AtomicBool::new(false),
            near_full: AtomicBool::new(false),
            options,
        })
    }

    /// The options it was opened with.
    #[must_use]
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// What it holds, as its limits count it (records forgotten by Redis but not yet
    /// purged included: see the crate docs).
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer, `Corrupt` for a damaged usage hash.
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        self.bounded(async {
            let (records, bytes): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&self.keys.usage)
                .arg(USAGE_RECORDS)
                .arg(USAGE_BYTES)
                .query_async(&mut self.reads.clone())
                .await
                .map_err(redis_error)?;
            Ok(Usage { records: count(USAGE_RECORDS, records)?, stored_bytes: count(USAGE_BYTES, bytes)? })
        })
        .await
    }

    /// The fence the next claim gets, or `None` while the counter key is missing (a new
    /// prefix, or Redis lost it: the next claim seeds it, see [`FenceSeed`]).
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer, `Corrupt` for a damaged counter.
    pub async fn next_fence(&self) -> Result<Option<Fence>, StoreError> {
        self.bounded(async {
            let next: Option<u64> = redis::cmd("GET")
                .arg(&self.keys.fence)
                .query_async(&mut self.reads.clone())
                .await
                .map_err(redis_error)?;
            Ok(next.map(Fence::new))
        })
        .await
    }

    /// Deletes every key under the prefix (records, counters, index), `SCAN`ning in
    /// rounds of 500; returns how many keys went. Destructive: for tests and for
    /// retiring a prefix. Operations running meanwhile may leave keys behind.
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the store was closed".to_owned(), None));
        }
        let mut connection = self.reads.clone();
        let mut cursor: u64 = 0;
        let mut deleted: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.pattern())
                .arg("COUNT")
                .arg(CLEAR_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                let gone: u64 =
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await.map_err(redis_error)?;
                deleted += gone;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Closes the store: every later operation answers `Unavailable`, and pooled
    /// connections are dropped.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// Runs `operation` within the operation timeout, refusing once closed.
    async fn bounded<T>(&self, operation: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the store was closed".to_owned(), None));
        }
        let timeout = self.options.operation_timeout;
        tokio::time::timeout(timeout, operation).await.unwrap_or_else(|_| {
            Err(unavailable(format!("Redis did not complete the operation within {timeout:?}"), None))
        })
    }

    /// A pooled connection, waiting for a free one.
    async fn loan(&self) -> Result<Loan<'_>, StoreError> {
        let permit = self.pool.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self
                .client
                .get_multiplexed_async_connection_with_config(&self.pool.config)
                .await
                .map_err(redis_error)?,
        };
        Ok(Loan { pool: &self.pool, connection: Some(connection), clean: false, _permit: permit })
    }

    /// One operation on `id`: read under `WATCH`, [`step::step`], write what it names in
    /// `MULTI`/`EXEC`, retrying an aborted `EXEC` up to `attempts_max` times. `now` is the
    /// operation's time (for the record's Redis expiry), absent for operations that
    /// never put a record. `purge` names the fence of a due index entry: a record Redis
    /// forgot by itself under it is then accounted for even though the step writes
    /// nothing, and the second value of the answer says so.
    async fn run<O>(
        &self,
        id: &RecordId,
        now: Option<Timestamp>,
        operation: O,
        purge: Option<Fence>,
    ) -> Result<(O::Answer, bool), StoreError>
    where
        O: Operation + Clone,
    {
        self.bounded(async {
            let field = id_field(id);
            let mut watch_usage = false;
            for _ in 0..self.options.attempts_max {
                let watch = watch_usage || self.near_full.load(Ordering::Relaxed);
                let mut loan = self.loan().await?;
                let attempt = self.attempt(&mut loan, id, &field, now, operation.clone(), watch, purge).await;
                match attempt {
                    Ok(Attempt::Done(answer)) => {
                        loan.clean = true;
                        return Ok(answer);
                    }
                    Ok(Attempt::Again) => {
                        loan.clean = true;
                        watch_usage = self.near_full.load(Ordering::Relaxed);
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(unavailable(
                format!("{} transactions on one key were aborted by concurrent writes", self.options.attempts_max),
                Some(Duration::from_secs(1)),
            ))
        })
        .await
    }

    /// Reads what the step needs for `id` on `connection`, watching the keys the
    /// decision depends on: the record and its `held` entry, and the usage totals when
    /// `watch_usage`. The record is read before the counters, so a counter read is never
    /// older than the record read (the counter only grows).
    async fn read(
        &self,
        connection: &mut MultiplexedConnection,
        record_key: &[u8],
        held_key: &[u8],
        watch_usage: bool,
    ) -> Result<Option<Read>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("UNWATCH").ignore();
        let watch = pipe.cmd("WATCH").arg(record_key).arg(held_key);
        if watch_usage {
            watch.arg(&self.keys.usage);
        }
        watch.ignore();
        pipe.cmd("GET").arg(record_key);
        pipe.cmd("GET").arg(held_key);
        pipe.cmd("GET").arg(&self.keys.fence);
        pipe.cmd("HMGET").arg(&self.keys.usage).arg(USAGE_RECORDS).arg(USAGE_BYTES);
        type Reply = (Option<Vec<u8>>, Option<Vec<u8>>, Option<u64>, (Option<i64>, Option<i64>));
        let (record, held, next_fence, (records, bytes)): Reply =
            pipe.query_async(connection).await.map_err(redis_error)?;
        let Some(next_fence) = next_fence else {
            self.seed_fence_counter(connection).await?;
            return Ok(None);
        };
        if next_fence < Fence::FIRST.get() {
            return Err(corrupt(format!("the fence counter is {next_fence}")));
        }
        let record = record.map(|value| decode_record(&value)).transpose()?;
        let held = held.map(|value| Held::decode(&value)).transpose()?;
        let mut usage = Usage { records: count(USAGE_RECORDS, records)?, stored_bytes: count(USAGE_BYTES, bytes)? };
        let ghost = if record.is_none() { held } else { None };
        if let Some(ghost) = ghost {
            // Redis forgot the record at its forgettable time; the step sees the store as
            // it is once that record is accounted for, which this step's write does.
            usage = Usage {
                records: usage.records.checked_sub(1).ok_or_else(|| corrupt("usage counts fewer records than held"))?,
                stored_bytes: usage
                    .stored_bytes
                    .checked_sub(ghost.bytes)
                    .ok_or_else(|| corrupt("usage counts fewer bytes than held"))?,
            };
        }
        Ok(Some(Read { record, ghost, counters: Counters { next_fence: Fence::new(next_fence), usage } }))
    }

    /// Creates the missing fence counter (`SET NX`, so a concurrent seeder's value stands).
    async fn seed_fence_counter(&self, connection: &mut MultiplexedConnection) -> Result<(), StoreError> {
        let seed = match self.options.fence_seed {
            FenceSeed::First => Fence::FIRST.get(),
            FenceSeed::ServerClock => {
                let (seconds, micros): (u64, u64) =
                    redis::cmd("TIME").query_async(connection).await.map_err(redis_error)?;
                seconds.saturating_mul(1_000_000).saturating_add(micros).saturating_mul(1 << FENCE_SEED_SHIFT).max(1)
            }
        };
        let _: Value = redis::cmd("SET")
            .arg(&self.keys.fence)
            .arg(seed)
            .arg("NX")
            .query_async(connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one attempt's whole context, called from one place
    async fn attempt<O>(
        &self,
        loan: &mut Loan<'_>,
        id: &RecordId,
        field: &[u8],
        now: Option<Timestamp>,
        operation: O,
        watch_usage: bool,
        purge: Option<Fence>,
    ) -> Result<Attempt<(O::Answer, bool)>, StoreError>
    where
        O: Operation,
    {
        let (record_key, held_key) = (self.keys.record(field), self.keys.held(field));
        let connection = loan.get();
        let Some(read) = self.read(connection, &record_key, &held_key, watch_usage).await? else {
            return Ok(Attempt::Again);
        };
        let limits = self.options.limits;
        let near = is_near_full(read.counters.usage, limits);
        self.near_full.store(near, Ordering::Relaxed);
        let view = StoreView { record: read.record.as_ref(), counters: read.counters, limits };
        let step = step::step(id, &view, operation)?;

        let mut tx = redis::pipe();
        tx.atomic();
        let mut delta = step.usage;
        if let Some(ghost) = read.ghost {
            // Account for the record Redis forgot: when this step writes anyway, or when the
            // purge came for exactly this entry.
            if !step.writes_nothing() || purge == Some(ghost.fence) {
                tx.cmd("ZREM").arg(&self.keys.expiry).arg(member(ghost.fence, field)).ignore();
                if step.writes_nothing() {
                    tx.cmd("DEL").arg(&held_key).ignore();
                }
                let bytes = i64::try_from(ghost.bytes).map_err(|_| corrupt("a held entry's size does not fit i64"))?;
                delta = UsageDelta { records: delta.records - 1, stored_bytes: delta.stored_bytes - bytes };
            }
        }
        if step.writes_nothing() && delta.is_none() {
            return Ok(Attempt::Done((step.answer, false)));
        }
        if step.next_fence.is_some() && near && !watch_usage {
            // Admission near a limit must see usage that no one changes before EXEC.
            return Ok(Attempt::Again);
        }
        let purged_ghost = step.writes_nothing();
        match &step.write {
            Write::Unchanged => {}
            Write::Put(new) => {
                let now = now.expect("only claims, completions and renewals put records, and they carry `now`");
                let forgettable_at = new.forgettable_at();
                // Redis forgets the record when, by its own clock, as long has passed as
                // the record had left at `now` (see the crate docs, "Time").
                let ttl_ms = now.until(forgettable_at).as_millis().clamp(1, u128::from(u64::MAX >> 2));
                tx.cmd("SET").arg(&record_key).arg(encode_record(new)).arg("PX").arg(ttl_ms as u64).ignore();
                let bytes = usage::stored_bytes(id, new);
                tx.cmd("SET").arg(&held_key).arg(Held { fence: new.fence, bytes }.encode()).ignore();
                if let Some(old) = &read.record
                    && old.fence != new.fence
                {
                    tx.cmd("ZREM").arg(&self.keys.expiry).arg(member(old.fence, field)).ignore();
                }
                tx.cmd("ZADD").arg(&self.keys.expiry).arg(score(forgettable_at)).arg(member(new.fence, field)).ignore();
            }
            Write::Delete => {
                let old = read.record.as_ref().expect("a step deletes only a record it read");
                tx.cmd("DEL").arg(&record_key).arg(&held_key).ignore();
                tx.cmd("ZREM").arg(&self.keys.expiry).arg(member(old.fence, field)).ignore();
            }
        }
        if let Some(next) = step.next_fence {
            // INCR, not SET: claims on other ids do not watch the counter, so it may have
            // moved past what this step read; INCR keeps it past every fence issued.
            debug_assert_eq!(next, read.counters.next_fence.next(), "a step advances the counter by one");
            tx.cmd("INCR").arg(&self.keys.fence).ignore();
        }
        if delta.records != 0 {
            tx.cmd("HINCRBY").arg(&self.keys.usage).arg(USAGE_RECORDS).arg(delta.records).ignore();
        }
        if delta.stored_bytes != 0 {
            tx.cmd("HINCRBY").arg(&self.keys.usage).arg(USAGE_BYTES).arg(delta.stored_bytes).ignore();
        }
        let reply: Value = tx.query_async(connection).await.map_err(redis_error)?;
        if reply == Value::Nil {
            return Ok(Attempt::Again);
        }
        Ok(Attempt::Done((step.answer, purged_ghost)))
    }

    /// [`RedisStore::run`] for the trait's operations: the answer alone.
    async fn run_op<O: Operation + Clone>(
        &self,
        id: &RecordId,
        now: Option<Timestamp>,
        operation: O,
    ) -> Result<O::Answer, StoreError> {
        Ok(self.run(id, now, operation, None).await?.0)
    }

    /// The purge: due index entries, earliest first (ties by fence), each forgotten
    /// through the [`op::Expire`] step in its own transaction.
    async fn purge(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        if batch_max == 0 {
            return Ok(0);
        }
        let due: Vec<Vec<u8>> = self
            .bounded(async {
                redis::cmd("ZRANGE")
                    .arg(&self.keys.expiry)
                    .arg("-inf")
                    .arg(score(now))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch_max)
                    .query_async(&mut self.reads.clone())
                    .await
                    .map_err(redis_error)
            })
            .await?;
        let mut purged = 0;
        for entry in &due {
            let (fence, field) = codec::from_member(entry)?;
            let id = codec::id_from_field(field)?;
            let (expired, ghost) = self.run(&id, None, op::Expire { now }, Some(fence)).await?;
            if expired || ghost {
                purged += 1;
            }
        }
        Ok(purged)
    }
}

impl Store for RedisStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.run_op(id, Some(now), op::Claim { fingerprint: *fingerprint, now, policy: *policy }).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.run_op(id, Some(now), op::Complete { fence, response, now, policy: *policy }).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.run_op(id, None, op::Release { fence }).await
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.run_op(id, Some(now), op::Renew { fence, now, policy: *policy }).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.bounded(async {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.keys.record(&id_field(id)))
                .query_async(&mut self.reads.clone())
                .await
                .map_err(redis_error)?;
            value.map(|value| decode_record(&value)).transpose()
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.purge(now, batch_max).await
    }
}
