//! [`PostgresStore`]: idem-core's store step, read and written in PostgreSQL statements.
//!
//! Every read-decide-write has the same shape: [`decide`] (`read.rs`) reads the record
//! (with its row version), the counters and the database's clock in one statement and
//! calls [`idem_core::step::step`]; [`write()`] (`write.rs`) writes exactly what the step
//! names in one statement, guarded by what the read found. [`complete_guarded`]
//! (`guarded.rs`) is a completion of the claim in flight in one statement, checked against
//! the step afterwards. This file holds the `Store` implementation that strings them
//! together; the store has no rule of its own about the protocol. Opening is in `open.rs`,
//! atomic mode in `atomic.rs`, purging in `purge.rs`.

use std::sync::Arc;
use std::time::Duration;

use idem_core::step::{Operation, op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Policy, Record, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp, Usage,
};
use sqlx::postgres::{PgConnection, PgPool};

use crate::codec;
use crate::error::{Failure, store_error};
use crate::guarded::complete_guarded;
use crate::inner::Inner;
use crate::options::TimeSource;
use crate::planting::PlantedBug;
use crate::purge::purge_batch;
use crate::read::{ReadKind, Seen, decide, decode_usage};
use crate::statements::query;
use crate::write::write;

/// Backoff after contention: 2 ms doubling per retry up to 64 ms, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// The durable, shared store: records in PostgreSQL, decided by idem-core's store step.
///
/// Cloning is cheap and shares the pool. See the crate docs for the schema, the atomic-mode
/// recipe, time, concurrency and what each failure means.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) inner: Arc<Inner>,
}

impl PostgresStore {
    /// **For testing the tests only.** This store (same pool, same schema) with `bug`
    /// planted in its SQL ([`PlantedBug`]), so that a check that claims to catch such a bug
    /// can show it does. Never use it for real data: the planted rule is wrong on purpose.
    ///
    /// The planted store also stops checking its guarded completion against idem-core's
    /// store step after writing (the check that turns a completion the step does not name
    /// into [`StoreError::Corrupt`], and a panic in debug builds): that check would catch
    /// every completion bug at once, and what is planted is "the SQL is wrong and nothing
    /// in the store notices", for the check under test to notice by what the store does
    /// (`src/planted.rs`: idem-core's differential check catches each; `tests/planted_bug.rs`:
    /// the completion-guard bugs accept a stale fence's completion).
    ///
    /// # Panics
    /// Never for a [`PlantedBug`]: each names SQL found in exactly one statement (checked).
    #[must_use]
    pub fn with_planted_bug(&self, bug: PlantedBug) -> PostgresStore {
        let (right, wrong) = bug.replacement();
        let mut sql = self.inner.sql.clone();
        let mut planted = 0;
        for statement in sql.all().into_iter().filter(|statement| statement.contains(right)) {
            *statement = Arc::from(statement.replace(right, wrong));
            planted += 1;
        }
        assert_eq!(planted, 1, "the SQL to plant {bug} in is in exactly one statement: {right}");
        let inner = Inner { sql, schema: self.inner.schema.clone(), self_check: false, ..*self.inner };
        PostgresStore { pool: self.pool.clone(), inner: Arc::new(inner) }
    }

    /// The connection pool, for an application's own queries on the same database (the
    /// service's own pool, for a store opened with [`PostgresStore::with_pool`]).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema idem's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    /// Later calls fail with [`StoreError::Unavailable`]. For a store opened with
    /// [`PostgresStore::with_pool`] that is the service's pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// What the store holds, as its size limits count it (the sums over the usage shards).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let row = query(&self.inner.sql.usage_totals).fetch_one(&self.pool).await.map_err(store_error)?;
        decode_usage(&row)
    }

    /// One operation, run again after contention (bounded, with backoff).
    pub(crate) async fn run<O: Operation>(
        &self,
        id: &RecordId,
        read: ReadKind,
        now: Timestamp,
        operation: impl Fn(Timestamp) -> O,
    ) -> Result<O::Answer, StoreError> {
        debug_assert!(read != ReadKind::PeekLocked, "a lock outlives an autocommit read");
        let operation = &operation;
        self.retrying(|| async move {
            let mut connection = self.pool.acquire().await?;
            self.attempt(&mut connection, id, read, now, operation).await
        })
        .await
    }

    /// Runs `attempt` until it is not contention, at most [`crate::PostgresOptions::retries_max`]
    /// times more, with backoff.
    async fn retrying<A, F>(&self, attempt: impl Fn() -> F) -> Result<A, StoreError>
    where
        F: Future<Output = Result<A, Failure>>,
    {
        let mut retries = 0;
        loop {
            match attempt().await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Contention(source)) if retries < self.inner.retries_max => {
                    tracing::debug!(retries, error = %source, "store operation lost to contention; running it again");
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// One attempt, optimistic, on one pooled connection and without a transaction:
    /// [`decide`] on an unlocked read (one autocommit statement), then [`write()`] guarded by
    /// what was read (one autocommit statement, which commits), or nothing when the step
    /// writes nothing. A guard that fails (another operation wrote the record in between)
    /// is contention: nothing was applied, and the operation runs again from its read.
    async fn attempt<O: Operation>(
        &self,
        connection: &mut PgConnection,
        id: &RecordId,
        read: ReadKind,
        now: Timestamp,
        operation: &impl Fn(Timestamp) -> O,
    ) -> Result<O::Answer, Failure> {
        let (step, seen) = decide(connection, &self.inner, id, read, now, operation).await?;
        if step.writes_nothing() {
            return Ok(step.answer);
        }
        match write(connection, &self.inner, id, seen, step).await? {
            Some(answer) => Ok(answer),
            None => Err(Failure::Contention(match seen {
                Seen::Absent => "a concurrent claim inserted the same record id first".into(),
                Seen::Held { .. } => "a concurrent operation wrote the record after it was read".into(),
            })),
        }
    }
}

/// How long to wait before retry number `retries` (0-based): doubling from
/// [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], then a random point in its upper half, so
/// transactions that collided do not collide again in step.
fn backoff(retries: u32) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << retries.min(10)).min(BACKOFF_MAX);
    ceiling.mul_f64(rand::random_range(0.5..=1.0))
}

impl Store for PostgresStore {
    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let (request, policy) = (request.into(), *policy);
        self.run(id, ReadKind::Draw, now, |now| op::Claim { request: request.clone(), now, policy }).await
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let policy = *policy;
        let operation = |now| op::Complete { fence, response: response.clone(), now, policy };
        // The usual case in one statement (see `complete_in`); otherwise the optimistic read
        // and write on the same connection.
        let operation = &operation;
        self.retrying(|| async move {
            let mut connection = self.pool.acquire().await?;
            if let Some(answer) = complete_guarded(&mut connection, &self.inner, id, fence, now, operation).await? {
                return Ok(answer);
            }
            self.attempt(&mut connection, id, ReadKind::Peek, now, operation).await
        })
        .await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.run(id, ReadKind::Peek, Timestamp::EPOCH, |_| op::Release { fence }).await
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        let policy = *policy;
        self.run(id, ReadKind::Peek, now, |now| op::Renew { fence, now, policy }).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let row = query(&self.inner.sql.read_record)
            .bind(id.principal.as_str())
            .bind(id.key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(codec::decode_record).transpose()
    }

    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides what
    /// has expired, so a purger with a fast clock cannot forget live records.
    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        if batch_max == 0 {
            return Ok(0);
        }
        let mut retries = 0;
        loop {
            match purge_batch(&self.pool, &self.inner, now, batch_max).await {
                Ok(purged) => return Ok(purged),
                Err(Failure::Contention(_)) if retries < self.inner.retries_max => {
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// Counts the replay through idem-core's [`op::CountReplay`] step, as every other
    /// operation runs (a read, a guarded write). Best effort by the trait's contract: the
    /// caller ignores a failure, so a full or failing store never stops a replay.
    /// Under [`TimeSource::Database`], `now` is ignored: the database's clock decides.
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.run(id, ReadKind::Peek, now, |now| op::CountReplay { now }).await
    }

    /// Under [`TimeSource::Database`] (the default) the database's clock decides, not the
    /// caller's `now`.
    fn decides_with_callers_now(&self) -> bool {
        self.inner.time == TimeSource::Caller
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        // Goal: every wait lies in the upper half of a ceiling that doubles from 2 ms to 64 ms.
        for retries in 0..30 {
            let ceiling = BACKOFF_FIRST.saturating_mul(1 << retries.min(10)).min(BACKOFF_MAX);
            let wait = backoff(retries);
            assert!(wait <= ceiling && wait >= ceiling / 2, "retry {retries}: {wait:?} of {ceiling:?}");
        }
        assert!(backoff(20) <= BACKOFF_MAX);
    }
}
