//! Atomic mode: the completion inside a transaction that holds the business writes
//! ([`PostgresStore::complete_in`] by hand, [`AtomicStore::complete_with`] in one call).

use idem_core::step::op;
use idem_core::{
    AtomicStore, CommitError, Fence, Fenced, Policy, RecordId, StoreError, StoredResponse, Timestamp, WritesFuture,
};
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Transaction};

use crate::error::{Failure, INTEGRITY_CLASS, corrupt, sqlstate, store_error};
use crate::guarded::complete_guarded;
use crate::read::{ReadKind, decide};
use crate::store::PostgresStore;
use crate::write::write;

/// A transaction on a pooled connection from [`PostgresStore::begin_write`]. It commits
/// with `commit()`; dropped, it rolls back.
pub type WriteTransaction = Transaction<'static, Postgres>;

impl PostgresStore {
    /// Starts a transaction (`BEGIN`, read committed) on a pooled connection, for the
    /// atomic-mode recipe: business writes, then [`PostgresStore::complete_in`], then commit.
    /// Any other transaction on the same database works as well (see `complete_in`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection comes within the acquire timeout.
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    /// Completes the claim `fence` inside the caller's transaction (atomic mode): the
    /// fence check and the completion commit or roll back with the caller's business writes.
    ///
    /// On [`Fenced::Applied`], commit; on [`Fenced::Refused`], roll back: the claim is no
    /// longer the caller's, and its business writes must not land (G1). The record's row
    /// stays locked (`FOR UPDATE`) until the caller's transaction ends, so no take-over
    /// slips in between this check and the commit.
    ///
    /// One statement in the caller's transaction when the claim is still the caller's (the
    /// usual case): it locks the record's row if it is the claim `fence` in flight, reads
    /// the counters and the clock, and writes the completion idem-core's step names for
    /// that record; the view it read comes back and the step checks it decided exactly
    /// what was written (crate docs, "Round trips"). Otherwise (the claim was taken over,
    /// released, purged, or completed already) that statement writes nothing, and a second
    /// one reads the locked record for the step to answer the refusal.
    ///
    /// `now` is ignored under [`TimeSource::Database`](crate::TimeSource::Database) (the default): retention counts from
    /// the database's clock, read in the caller's transaction.
    ///
    /// This is idem-core's [`op::CompleteInTransaction`]: unlike [`Store::complete`](idem_core::Store::complete), a
    /// second completion with the fence that already completed the record is refused
    /// (`Refused(AlreadyCompleted)` naming that very fence), because its transaction's
    /// business writes would repeat the first one's.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for driver errors (including a serialization failure or
    /// deadlock in the caller's transaction, which is not retried here: the caller's
    /// transaction is aborted and only the caller can run it again), [`StoreError::Corrupt`]
    /// for a row it cannot read. Either way, roll back.
    pub async fn complete_in(
        &self,
        transaction: &mut Transaction<'_, Postgres>,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let policy = *policy;
        let operation = |now| op::CompleteInTransaction { fence, response: response.clone(), now, policy };
        let inner = &self.inner;
        let attempt = async {
            if let Some(answer) = complete_guarded(transaction, inner, id, fence, now, operation).await? {
                return Ok(answer);
            }
            let (step, seen) = decide(transaction, inner, id, ReadKind::PeekLocked, now, operation).await?;
            // The caller commits (or rolls back) with its business writes.
            match write(transaction, inner, id, seen, step).await? {
                Some(answer) => Ok(answer),
                // The row is locked by this transaction's read, so it cannot have changed.
                None => Err(corrupt("the record row changed under its lock").into()),
            }
        };
        attempt.await.map_err(Failure::into_store_error)
    }
}

impl AtomicStore for PostgresStore {
    type Connection = PgConnection;
    type WriteError = sqlx::Error;

    /// Atomic mode in one call: [`PostgresStore::begin_write`], `writes` on the
    /// transaction's connection, [`PostgresStore::complete_in`], then `COMMIT` on
    /// [`Fenced::Applied`] and `ROLLBACK` on [`Fenced::Refused`] or any error, so the
    /// business writes and the completion commit together or not at all (G1). The record's
    /// row is locked only by the completion, after the writes, and until the commit.
    ///
    /// Nothing is retried: `writes` runs at most once. A serialization failure or deadlock
    /// in the writes is [`CommitError::Writes`], in the completion or the commit
    /// `StoreError::Unavailable` with a retry hint; the claim is still in flight either way.
    /// An integrity violation reported by `COMMIT` is [`CommitError::Writes`]: idem's own
    /// constraints are checked as its statements run, so it is a deferred constraint of the
    /// business tables. One outcome is unknown, as for any commit: when the connection
    /// breaks during `COMMIT` (`StoreError::Unavailable`), the server may have committed.
    ///
    /// `now` is ignored under [`TimeSource::Database`](crate::TimeSource::Database) (the default).
    async fn complete_with<W>(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
        writes: W,
    ) -> Result<Fenced, CommitError<sqlx::Error>>
    where
        W: for<'c> FnOnce(&'c mut PgConnection) -> WritesFuture<'c, sqlx::Error> + Send + 'static,
    {
        let mut transaction = self.begin_write().await?;
        if let Err(error) = writes(&mut transaction).await {
            rollback(transaction).await;
            return Err(CommitError::Writes(error));
        }
        let fenced = match self.complete_in(&mut transaction, id, fence, response, now, policy).await {
            Ok(fenced) => fenced,
            Err(error) => {
                rollback(transaction).await;
                return Err(CommitError::Store(error));
            }
        };
        match fenced {
            Fenced::Applied => transaction.commit().await.map_err(|error| {
                if sqlstate(&error).is_some_and(|code| code.starts_with(INTEGRITY_CLASS)) {
                    CommitError::Writes(error)
                } else {
                    CommitError::Store(store_error(error))
                }
            })?,
            // The claim is no longer the caller's: its business writes must not land (G1).
            Fenced::Refused(_) => rollback(transaction).await,
        }
        Ok(fenced)
    }
}

/// Rolls `transaction` back. A rollback that fails leaves nothing committed either: the
/// connection it failed on is broken, and PostgreSQL ends the transaction with it.
async fn rollback(transaction: WriteTransaction) {
    if let Err(error) = transaction.rollback().await {
        tracing::debug!(%error, "rollback failed; the server ends the transaction with the connection");
    }
}
