//! [`RedisStore`]: each operation is one `EVALSHA` of `store.lua`, idem-core's store step
//! on the server.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::usage::Usage;
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, KeyAdmin, ListQuery, Page, Policy, Record, RecordId, Renewal, Store,
    StoreError, StoredResponse, Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use crate::codec::{COUNTER_FENCE, USAGE_BYTES, USAGE_RECORDS, corrupt, decode_record, id_of_member, list_member};
use crate::options::RedisOptions;
use crate::script::{Answer, Call, Calls, Purge, SCRIPT};

/// Keys deleted per `SCAN` round of [`RedisStore::clear`].
const CLEAR_BATCH: usize = 500;
/// List-index entries one round of [`KeyAdmin::list`] reads (one `ZRANGEBYLEX`, one `MGET`).
const LIST_ROUND: usize = 256;
/// Fences per millisecond a [`crate::FenceSeed::ServerClock`] seed leaves room for: the seed is
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
    calls: Calls,
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
            calls: Calls::new(&options),
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
                .arg(&self.calls.keys().counters)
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
    /// prefix, or Redis lost it: the next claim seeds it, see [`crate::FenceSeed`]).
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer, `Corrupt` for a damaged counter.
    pub async fn next_fence(&self) -> Result<Option<Fence>, StoreError> {
        self.bounded(async {
            let next: Option<u64> = redis::cmd("HGET")
                .arg(&self.calls.keys().counters)
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
                .arg(self.calls.keys().pattern())
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

    /// One round of a listing: up to [`LIST_ROUND`] list-index members from `min` to
    /// `max`, and the value of each one's record (`None` when there is none).
    async fn list_round(&self, min: &[u8], max: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<Option<Vec<u8>>>), StoreError> {
        self.bounded(async {
            let mut connection = self.connection();
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYLEX")
                .arg(&self.calls.keys().list)
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg(0)
                .arg(LIST_ROUND)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            if members.is_empty() {
                return Ok((members, Vec::new()));
            }
            let keys = members.iter().map(|member| id_of_member(member).map(|id| self.calls.record_key(&id)));
            let keys = keys.collect::<Result<Vec<_>, _>>()?;
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(keys).query_async(&mut connection).await.map_err(redis_error)?;
            Ok((members, values))
        })
        .await
    }

    /// Runs the script once (`EVALSHA`, or `EVAL` when Redis lost it: `NOSCRIPT` after a
    /// restart or `SCRIPT FLUSH`), within the operation timeout.
    async fn invoke(&self, call: &Call) -> Result<Answer, StoreError> {
        let command = |name: &str, script: &str| {
            let mut command = redis::cmd(name);
            command.arg(script).arg(call.keys.len()).arg(&call.keys).arg(&call.args);
            command
        };
        self.bounded(async {
            let mut connection = self.connection();
            let reply = match command("EVALSHA", &self.script.sha).query_async(&mut connection).await {
                Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    command("EVAL", &self.script.source).query_async(&mut connection).await
                }
                reply => reply,
            };
            reply.map(Answer).map_err(redis_error)
        })
        .await
    }
}

impl Store for RedisStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let answer = self.invoke(&self.calls.claim(id, request, now, policy)).await?;
        self.calls.decision(&answer, now)
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let answer = self.invoke(&self.calls.complete(id, fence, response, now, policy)).await?;
        self.calls.fenced(&answer, fence)
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        let answer = self.invoke(&self.calls.release(id, fence)).await?;
        self.calls.fenced(&answer, fence)
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        let answer = self.invoke(&self.calls.renew(id, fence, now, policy)).await?;
        self.calls.renewal(&answer, fence)
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.bounded(async {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.calls.record_key(id))
                .query_async(&mut self.connection())
                .await
                .map_err(redis_error)?;
            value.map(|value| decode_record(&value)).transpose()
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        let mut purge = Purge::new(now, batch_max);
        while let Some(call) = purge.next(&self.calls) {
            let answer = self.invoke(&call).await?;
            purge.answered(&self.calls, &answer)?;
        }
        Ok(purge.purged())
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        let answer = self.invoke(&self.calls.count_replay(id, now)).await?;
        self.calls.counted(&answer)
    }
}

impl KeyAdmin for RedisStore {
    /// Walks the list index (`{p}:list`, `ZRANGEBYLEX` from the cursor or the principal's
    /// first id) in rounds of 256 entries, reading each round's records with one `MGET`
    /// and keeping those [`ListQuery::admits`], until the page and one more are found or
    /// the index ends. Each round is two commands, so no call blocks Redis for long; the
    /// rounds are bounded by the records the store may hold. A page is not a snapshot:
    /// records written between rounds may or may not be in it, as in a SQL listing
    /// without a transaction. Records Redis forgot by itself (past their forgettable
    /// time) are not listed; they count as absent anyway.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let (mut min, max) = list_range(query);
        let rounds_max = self.options.limits.records_max / LIST_ROUND as u64 + 2;
        let mut page = Page::default();
        for _ in 0..rounds_max {
            let (members, records) = self.list_round(&min, &max).await?;
            for (member, value) in members.iter().zip(records) {
                let Some(value) = value else { continue };
                let id = id_of_member(member)?;
                let record = decode_record(&value)?;
                if !query.admits(&id, &record) {
                    continue;
                }
                if page.records.len() == query.limit() {
                    page.has_more = true;
                    return Ok(page);
                }
                page.records.push((id, record));
            }
            match members.last() {
                Some(last) if members.len() == LIST_ROUND => min = exclusive(last),
                _ => return Ok(page),
            }
        }
        Err(corrupt(format!(
            "the list index holds more than the {} records the store may hold",
            self.options.limits.records_max
        )))
    }

    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let answer = self.invoke(&self.calls.forget(id)).await?;
        self.calls.forgotten(&answer)
    }
}

/// `ZRANGEBYLEX` bounds of a query: from after its cursor or its principal's first id,
/// to its principal's last id or the end.
fn list_range(query: &ListQuery) -> (Vec<u8>, Vec<u8>) {
    let mut min = b"-".to_vec();
    let mut max = b"+".to_vec();
    if let Some(principal) = &query.principal {
        // Every member of this principal is "<principal>\0<key>": from "[<principal>\0"
        // to before "<principal>\x01".
        min = [b"[", principal.as_str().as_bytes(), b"\0"].concat();
        max = [b"(", principal.as_str().as_bytes(), b"\x01"].concat();
    }
    if let Some(cursor) = &query.starting_after {
        let after = list_member(cursor);
        if min == b"-" || after.as_slice() >= &min[1..] {
            min = exclusive(&after);
        }
    }
    (min, max)
}

/// A `ZRANGEBYLEX` bound that excludes `member`.
fn exclusive(member: &[u8]) -> Vec<u8> {
    [b"(", member].concat()
}
