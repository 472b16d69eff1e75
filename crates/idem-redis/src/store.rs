//! [`RedisStore`]: each operation is one `EVALSHA` of `store.lua`, idem-core's store step
//! on the server.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::step::{LimitReached, StepError};
use idem_core::usage::{self, Usage};
use idem_core::{
    Claim, Decision, Fence, Fenced, Fingerprint, Policy, Record, RecordId, RecordState, Refusal, Renewal, Store,
    StoreError, StoredResponse, Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use crate::codec::{
    COUNTER_FENCE, Keys, USAGE_BYTES, USAGE_RECORDS, corrupt, decimal, decode_record, decode_response, encode_response,
    id_field,
};
use crate::options::{FenceSeed, RedisOptions};

/// The script every operation runs: idem-core's store step in Lua (see the crate docs).
pub(crate) const SCRIPT: &str = include_str!("store.lua");
/// Keys deleted per `SCAN` round of [`RedisStore::clear`].
const CLEAR_BATCH: usize = 500;
/// Due records one purge script forgets at most: a longer purge runs several scripts, so
/// no script blocks Redis for long.
const PURGE_SCRIPT_BATCH: usize = 128;
/// Fences per millisecond a [`FenceSeed::ServerClock`] seed leaves room for: the seed is
/// Redis's clock in milliseconds shifted left by this many bits (`SEED_FACTOR` in
/// `store.lua`).
///
/// Why 10: a counter recreated after a restart must start past every fence the lost one
/// issued, so the seed must grow faster than fences are issued: 2^10 per ms is about a
/// million claims a second on average over the counter's whole life, ten times what one
/// Redis runs these scripts at. And the seed must stay exact as a Lua number (a double,
/// exact below 2^53) with room: today's seed is about 1.8 × 10^15 (2^50.7), and it reaches
/// 2^53 only in the year 2248. (The script never turns a fence into a number anyway: it
/// compares fences as decimal strings and advances the counter with `INCR`; the bound
/// keeps the seed itself, computed from `TIME` in Lua, exact.)
pub const FENCE_SEED_SHIFT: u32 = 10;

/// 2^53: Lua numbers are doubles, exact below it.
const LUA_EXACT: u64 = 1 << 53;
const _: () = assert!((1u64 << FENCE_SEED_SHIFT) * 8_000_000_000_000 < LUA_EXACT, "seeds stay exact past 2200");

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
/// the script, time, expiry, limits and what a restart without persistence loses.
pub struct RedisStore {
    options: RedisOptions,
    keys: Keys,
    /// Multiplexed connections (each pipelines the commands of concurrent operations),
    /// used in turn.
    connections: Vec<ConnectionManager>,
    turn: AtomicUsize,
    script: Script,
    closed: AtomicBool,
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

/// A Lua script and its SHA1 as Redis computed it (`SCRIPT LOAD` at open): what
/// `redis::Script` does, without a SHA1 of our own (so no extra dependency).
struct Script {
    source: String,
    sha: String,
}

/// Maps a driver error: a key of the wrong type or a reply that does not parse as what
/// the store wrote is damage (`Corrupt`); everything else (I/O, timeouts, refused
/// connections, `LOADING`, `READONLY`, `OOM`, `BUSY`) is `Unavailable`.
fn redis_error(error: RedisError) -> StoreError {
    let wrong_type = error.code() == Some("WRONGTYPE") || error.detail().is_some_and(|d| d.contains("WRONGTYPE"));
    if wrong_type || error.kind() == redis::ErrorKind::UnexpectedReturnType {
        corrupt(format!("Redis holds a value of another shape under the store's keys: {error}"))
    } else {
        StoreError::unavailable(error)
    }
}

/// A message as a driver-error source for `Unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable { source: Box::new(Message(message)), retry_after: None }
}

fn count(name: &str, value: Option<i64>) -> Result<u64, StoreError> {
    u64::try_from(value.unwrap_or(0)).map_err(|_| corrupt(format!("usage {name} is negative: {value:?}")))
}

fn text(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// A script's answer: its name, then its values.
struct Answer(Vec<Vec<u8>>);

impl Answer {
    fn name(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    fn value(&self, index: usize) -> Option<Vec<u8>> {
        self.0.get(index).cloned()
    }

    fn number(&self, index: usize, what: &str) -> Result<u64, StoreError> {
        decimal(what, self.value(index))
    }

    fn fence(&self, index: usize) -> Result<Fence, StoreError> {
        Ok(Fence::new(self.number(index, "a fence")?))
    }

    fn time(&self, index: usize) -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_unix_ms(self.number(index, "a time")?))
    }

    fn unexpected(&self) -> StoreError {
        corrupt(format!("the script answered {:?}", String::from_utf8_lossy(self.name())))
    }

    /// The answers every operation may give instead of its own: the step's errors and
    /// damage the script found.
    fn error(&self, options: &RedisOptions) -> Result<StoreError, StoreError> {
        let limits = options.limits;
        Ok(match self.name() {
            b"full" => match self.value(1).as_deref() {
                Some(b"records") => StepError::Full(LimitReached::Records(limits.records_max)).into(),
                _ => StepError::Full(LimitReached::Bytes(limits.stored_bytes_max)).into(),
            },
            b"behind" => {
                StepError::FenceCounterBehind { next_fence: self.fence(1)?, record_fence: self.fence(2)? }.into()
            }
            b"corrupt" => corrupt(String::from_utf8_lossy(&self.value(1).unwrap_or_default()).into_owned()),
            _ => self.unexpected(),
        })
    }

    /// A fence refusal (`transition::check_fence`), if this answer is one.
    fn refusal(&self, presented: Fence) -> Result<Option<Refusal>, StoreError> {
        Ok(match self.name() {
            b"no_record" => Some(Refusal::NoRecord),
            b"stale" => Some(Refusal::StaleFence { presented, current: self.fence(1)? }),
            b"completed" => Some(Refusal::AlreadyCompleted { completed_by: self.fence(1)? }),
            _ => None,
        })
    }
}

impl RedisStore {
    /// Connects to Redis as `options` say, checks it answers (version 6.2+) and loads the
    /// script. [`RedisOptions::connections_max`] multiplexed connections are dialled.
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
            let mut first = ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await?;
            let info: String = redis::cmd("INFO").arg("server").query_async(&mut first).await?;
            Ok::<_, RedisError>((first, info))
        };
        let (first, info) = tokio::time::timeout(timeout, connect)
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
        let rest = async {
            let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).query_async(&mut first.clone()).await?;
            let mut connections = vec![first];
            while connections.len() < options.connections_max {
                connections.push(ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await?);
            }
            Ok::<_, RedisError>((sha, connections))
        };
        let (sha, connections) = tokio::time::timeout(timeout, rest)
            .await
            .map_err(|_| OpenError::TimedOut { url: url.clone(), timeout })?
            .map_err(unreachable)?;
        Ok(RedisStore {
            keys: Keys::new(&options.prefix),
            connections,
            turn: AtomicUsize::new(0),
            script: Script { source: SCRIPT.to_owned(), sha },
            closed: AtomicBool::new(false),
            options,
        })
    }

    /// This store running `source` instead of `store.lua`: for the tests that plant a bug
    /// in the script and check that the differential test finds it.
    #[cfg(test)]
    pub(crate) async fn with_script(mut self, source: String) -> RedisStore {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&source)
            .query_async(&mut self.connection())
            .await
            .expect("the planted script loads");
        self.script = Script { source, sha };
        self
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
                .arg(&self.keys.counters)
                .arg(USAGE_RECORDS)
                .arg(USAGE_BYTES)
                .query_async(&mut self.connection())
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
            let next: Option<u64> = redis::cmd("HGET")
                .arg(&self.keys.counters)
                .arg(COUNTER_FENCE)
                .query_async(&mut self.connection())
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
            return Err(unavailable("the store was closed".to_owned()));
        }
        let mut connection = self.connection();
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

    /// Closes the store: every later operation answers `Unavailable`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Runs `operation` within the operation timeout, refusing once closed.
    async fn bounded<T>(&self, operation: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the store was closed".to_owned()));
        }
        let timeout = self.options.operation_timeout;
        tokio::time::timeout(timeout, operation)
            .await
            .unwrap_or_else(|_| Err(unavailable(format!("Redis did not complete the operation within {timeout:?}"))))
    }

    /// The next connection in turn.
    fn connection(&self) -> ConnectionManager {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[turn].clone()
    }

    /// Runs the script once (`EVALSHA`, or `EVAL` when Redis lost it: `NOSCRIPT` after a
    /// restart or `SCRIPT FLUSH`) with `keys` and, after the operation's name and the fence
    /// seed, `args`.
    async fn invoke(&self, operation: &str, keys: &[&[u8]], args: &[&[u8]]) -> Result<Answer, StoreError> {
        let seed: &[u8] = match self.options.fence_seed {
            FenceSeed::ServerClock => b"clock",
            FenceSeed::First => b"1",
        };
        let command = |name: &str, script: &str| {
            let mut command = redis::cmd(name);
            command.arg(script).arg(keys.len()).arg(keys).arg(operation).arg(seed).arg(args);
            command
        };
        let mut connection = self.connection();
        let reply = match command("EVALSHA", &self.script.sha).query_async(&mut connection).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                command("EVAL", &self.script.source).query_async(&mut connection).await
            }
            reply => reply,
        };
        reply.map(Answer).map_err(redis_error)
    }

    /// Runs a per-id operation: keys record, held entry, counters, index.
    async fn run(&self, id: &RecordId, operation: &str, args: &[&[u8]]) -> Result<Answer, StoreError> {
        let field = id_field(id);
        let (record, held) = (self.keys.record(&field), self.keys.held(&field));
        let keys: [&[u8]; 4] = [&record, &held, self.keys.counters.as_bytes(), self.keys.expiry.as_bytes()];
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        all.push(&field);
        all.extend_from_slice(args);
        self.bounded(self.invoke(operation, &keys, &all)).await
    }

    /// A fence refusal or completion: what complete and release answer.
    fn fenced(&self, answer: &Answer, fence: Fence) -> Result<Fenced, StoreError> {
        if answer.name() == b"applied" {
            return Ok(Fenced::Applied);
        }
        match answer.refusal(fence)? {
            Some(refusal) => Ok(Fenced::Refused(refusal)),
            None => Err(answer.error(&self.options)?),
        }
    }
}

/// Bytes a record costs (idem-core's [`usage::stored_bytes`]), which the script adds to
/// the usage totals.
fn bytes_of(id: &RecordId, state: RecordState) -> Vec<u8> {
    let record = Record {
        fingerprint: Fingerprint::from_bytes([0; 32]),
        fence: Fence::FIRST,
        expires_at: Timestamp::EPOCH,
        state,
    };
    text(usage::stored_bytes(id, &record))
}

impl Store for RedisStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let lease_end = now.saturating_add(policy.lease());
        let retention_end = now.saturating_add(policy.retention());
        let limits = self.options.limits;
        let args = [
            &text(limits.records_max)[..],
            &text(limits.stored_bytes_max),
            fingerprint.as_bytes(),
            &text(now.unix_ms()),
            &text(lease_end.unix_ms()),
            &text(retention_end.unix_ms()),
            &bytes_of(id, RecordState::InFlight { lease_expires_at: lease_end }),
        ];
        let answer = self.run(id, "claim", &args).await?;
        Ok(match answer.name() {
            b"execute" => Decision::Execute(Claim { fence: answer.fence(1)?, lease_expires_at: answer.time(2)? }),
            b"takeover" => Decision::TakeOver {
                claim: Claim { fence: answer.fence(1)?, lease_expires_at: answer.time(2)? },
                stale: answer.fence(3)?,
            },
            b"replay" => Decision::Replay(decode_response(&answer.value(1).unwrap_or_default())?),
            b"conflict" => Decision::Conflict { retry_after: now.until(answer.time(1)?) },
            b"mismatch" => Decision::Mismatch,
            _ => return Err(answer.error(&self.options)?),
        })
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let retention_end = now.saturating_add(policy.retention());
        let encoded = encode_response(&response);
        let bytes = bytes_of(id, RecordState::Completed { response });
        let args = [&text(fence.get())[..], &text(now.unix_ms()), &text(retention_end.unix_ms()), &encoded, &bytes];
        let answer = self.run(id, "complete", &args).await?;
        self.fenced(&answer, fence)
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        let answer = self.run(id, "release", &[&text(fence.get())]).await?;
        self.fenced(&answer, fence)
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        let lease_end = now.saturating_add(policy.lease());
        let args = [&text(fence.get())[..], &text(now.unix_ms()), &text(lease_end.unix_ms())];
        let answer = self.run(id, "renew", &args).await?;
        if answer.name() == b"renewed" {
            return Ok(Renewal::Renewed { lease_expires_at: answer.time(1)? });
        }
        match answer.refusal(fence)? {
            Some(refusal) => Ok(Renewal::Refused(refusal)),
            None => Err(answer.error(&self.options)?),
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.bounded(async {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.keys.record(&id_field(id)))
                .query_async(&mut self.connection())
                .await
                .map_err(redis_error)?;
            value.map(|value| decode_record(&value)).transpose()
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        let keys: [&[u8]; 2] = [self.keys.counters.as_bytes(), self.keys.expiry.as_bytes()];
        let mut purged = 0;
        // Bounded: every round but the last forgets a whole script batch.
        while purged < batch_max {
            let batch = (batch_max - purged).min(PURGE_SCRIPT_BATCH);
            let args = [self.keys.tagged.as_bytes(), &text(now.unix_ms()), &text(batch as u64)];
            let answer = self.bounded(self.invoke("purge", &keys, &args)).await?;
            if answer.name() != b"purged" {
                return Err(answer.error(&self.options)?);
            }
            let forgotten = usize::try_from(answer.number(1, "a purge count")?).map_err(|_| answer.unexpected())?;
            purged += forgotten;
            if forgotten < batch {
                break;
            }
        }
        Ok(purged)
    }
}
