//! [`Once`]: the run-once executor, and [`Once::run`], the function wrapper.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idem_core::reply::{self, Superseded};
use idem_core::{
    AtomicStore, Clock, Decision, Fingerprint, Policy, RecordId, Store, StoreError, StoredOutcome, StoredResponse,
    SystemClock,
};

use crate::commit::Commit;
use crate::execute::{Executed, Failure};
use crate::lease::ClaimScope;
use crate::observe;

/// Runs operations once per record id over a store: the I/O around the store step that
/// every adapter shares (idem-http's layer, idem-consumer's consumer, a plain function).
///
/// It decides nothing itself: the decision table is the store's ([`Store::claim`]), what
/// a lost claim answers is [`reply::superseded`]'s.
pub struct Once<S> {
    pub(crate) store: Arc<S>,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) execution_max: Option<Duration>,
}

impl<S> Clone for Once<S> {
    fn clone(&self) -> Self {
        Once {
            store: Arc::clone(&self.store),
            policy: self.policy,
            clock: Arc::clone(&self.clock),
            execution_max: self.execution_max,
        }
    }
}

/// What became of [`Once::run`]: the store's decision and, if the work ran, its end.
#[derive(Debug)]
#[must_use]
pub enum Ran<E> {
    /// The work ran now and its outcome was recorded.
    Executed(StoredOutcome),
    /// The record was completed earlier: its outcome, and the work did not run.
    Replayed(StoredOutcome),
    /// Another execution holds the claim; try again after about `lease_left`.
    InFlight {
        /// How long the other claim's lease still runs.
        lease_left: Duration,
    },
    /// The key belongs to another operation (other fingerprint): never run (G5).
    Mismatch,
    /// The record is completed, but with an HTTP response rather than an outcome.
    NotAnOutcome(StoredResponse),
    /// The work failed (or its writes did); nothing was recorded; the claim was given back.
    Failed(E),
    /// Separate mode: the work ran, but its outcome could not be recorded.
    Unrecorded {
        /// What the work produced.
        outcome: StoredOutcome,
        /// The store's last error.
        error: StoreError,
    },
}

impl<S: Store> Once<S> {
    /// An executor over `store` with `policy` (lease and retention), on the system clock,
    /// with no execution ceiling.
    pub fn new(store: Arc<S>, policy: Policy) -> Once<S> {
        Once { store, policy, clock: Arc::new(SystemClock), execution_max: None }
    }

    /// Takes time from `clock` (tests, simulations).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Once<S> {
        self.clock = clock;
        self
    }

    /// Stops renewing a claim after `ceiling`: a hung execution frees its key one lease
    /// later (SPEC "Leases").
    #[must_use]
    pub fn with_execution_max(mut self, ceiling: Duration) -> Once<S> {
        self.execution_max = Some(ceiling);
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The lease and retention.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Decides a new request for `id` ([`Store::claim`]), counting a failure.
    ///
    /// # Errors
    /// The store's error: nothing may run (G8).
    pub async fn claim(&self, id: &RecordId, fingerprint: &Fingerprint) -> Result<Decision, StoreError> {
        observe::store("claim", self.store.claim(id, fingerprint, self.clock.now(), &self.policy).await)
    }

    /// The record as stored now, counting a failure.
    ///
    /// # Errors
    /// The store's error.
    pub async fn get(&self, id: &RecordId) -> Result<Option<idem_core::Record>, StoreError> {
        observe::store("get", self.store.get(id).await)
    }

    /// Runs `work` once for `id` (separate mode): the whole protocol for one call. The
    /// side effect inside `work` and the completion are two steps, so a crash between
    /// them lets a retry after the lease run it again (SPEC separate mode); use
    /// [`Once::run_atomic`] where the store can hold the side effect too.
    ///
    /// # Errors
    /// The store failed before a claim: nothing ran (G8).
    pub async fn run<E, W, F>(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        work: W,
    ) -> Result<Ran<Failure<E>>, StoreError>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<StoredOutcome, E>>,
    {
        let claim = match self.claim(id, fingerprint).await? {
            Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim,
            decision => return Ok(not_run(decision)),
        };
        let executed = self.execute(id, claim, &(), work).await;
        self.ended(id, fingerprint, executed).await
    }

    /// What an execution's end means to a caller of [`Once::run`].
    async fn ended<E>(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        executed: Executed<E>,
    ) -> Result<Ran<E>, StoreError> {
        Ok(match executed {
            Executed::Completed(outcome) => Ran::Executed(outcome),
            Executed::Failed(failure) => Ran::Failed(failure),
            Executed::Unrecorded { outcome, error } => Ran::Unrecorded { outcome, error },
            Executed::Lost => {
                let record = self.get(id).await?;
                match reply::superseded(record.as_ref(), fingerprint, self.clock.now()) {
                    Superseded::Replay(response) => replayed(response),
                    Superseded::InProgress { lease_left } => Ran::InFlight { lease_left },
                    Superseded::Mismatch => Ran::Mismatch,
                }
            }
        })
    }
}

impl<S: AtomicStore> Once<S>
where
    S::Connection: 'static,
{
    /// Runs `work` once for `id` in atomic mode: `work` computes and hands back a
    /// [`Commit`] whose writes commit with the completion in one transaction.
    ///
    /// # Errors
    /// The store failed before a claim: nothing ran (G8).
    pub async fn run_atomic<E, W, F>(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        work: W,
    ) -> Result<Ran<Failure<E, S::WriteError>>, StoreError>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<Commit<S>, E>>,
    {
        let claim = match self.claim(id, fingerprint).await? {
            Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim,
            decision => return Ok(not_run(decision)),
        };
        let executed = self.execute_atomic(id, claim, &(), work).await;
        self.ended(id, fingerprint, executed).await
    }
}

/// A decision that runs nothing, as a [`Ran`].
fn not_run<E>(decision: Decision) -> Ran<E> {
    match decision {
        Decision::Replay(response) => replayed(response),
        Decision::Conflict { retry_after } => Ran::InFlight { lease_left: retry_after },
        Decision::Mismatch => Ran::Mismatch,
        Decision::Execute(_) | Decision::TakeOver { .. } => unreachable!("a claim is executed, not answered"),
    }
}

fn replayed<E>(response: StoredResponse) -> Ran<E> {
    match StoredOutcome::try_from(response.clone()) {
        Ok(outcome) => Ran::Replayed(outcome),
        Err(_) => Ran::NotAnOutcome(response),
    }
}
