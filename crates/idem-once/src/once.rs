//! [`Once`]: the run-once executor, and [`Once::run`], the function wrapper.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idem_core::reply::{self, Superseded};
use idem_core::{
    AtomicStore, ClaimRequest, Clock, Decision, Holder, Policy, RecordId, Store, StoreError, StoredOutcome,
    StoredResponse, SystemClock, Timestamp,
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
///
/// Every answer that comes from a record says when that record expires (`expires_at`,
/// SPEC "Key lifecycle": expiry on the wire), as the store's [`Decision`] or
/// [`Superseded`] stated it; [`Ran::expires_at`] reads it off any variant.
#[derive(Debug)]
#[must_use]
pub enum Ran<E> {
    /// The work ran now and its outcome was recorded.
    Executed {
        /// What the work produced, as recorded.
        outcome: StoredOutcome,
        /// When the completed record's retention ends ([`Executed::Completed`]).
        expires_at: Timestamp,
    },
    /// The record was completed earlier: its outcome, and the work did not run.
    Replayed {
        /// The recorded outcome.
        outcome: StoredOutcome,
        /// When the record's retention ends.
        expires_at: Timestamp,
    },
    /// Another execution holds the claim; try again after about `lease_left`.
    InFlight {
        /// How long the other claim's lease still runs (zero: try again at once).
        lease_left: Duration,
        /// When the in-flight record's retention ends; `None` when this execution lost its
        /// claim and no live claim holds the key now.
        expires_at: Option<Timestamp>,
        /// Who holds the claim in flight; `None` when no live claim holds the key.
        holder: Option<Holder>,
    },
    /// The key belongs to another operation (other fingerprint): never run (G5).
    Mismatch {
        /// When the record (or tombstone) holding the key expires.
        expires_at: Timestamp,
    },
    /// Only the record's tombstone remains (SPEC "Key lifecycle"): the operation ran long
    /// ago, its outcome is gone, and it never runs again.
    Gone {
        /// When the tombstone is forgotten.
        expires_at: Timestamp,
    },
    /// The record is completed, but with an HTTP response rather than an outcome.
    NotAnOutcome {
        /// The recorded response.
        response: StoredResponse,
        /// When the record's retention ends.
        expires_at: Timestamp,
    },
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

impl<E> Ran<E> {
    /// When the record this answer came from expires, if it came from one (not for
    /// [`Ran::Failed`] and [`Ran::Unrecorded`], nor an [`Ran::InFlight`] without a record).
    #[must_use]
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            Ran::Executed { expires_at, .. }
            | Ran::Replayed { expires_at, .. }
            | Ran::Mismatch { expires_at }
            | Ran::Gone { expires_at }
            | Ran::NotAnOutcome { expires_at, .. } => Some(*expires_at),
            Ran::InFlight { expires_at, .. } => *expires_at,
            Ran::Failed(_) | Ran::Unrecorded { .. } => None,
        }
    }
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

    /// The execution ceiling (SPEC "Key lifecycle: execution ceiling"): an execution's claim
    /// is renewed for at most `ceiling` (measured on the runtime's timer from the start of
    /// the execution), then no more, so a hung execution frees its key within `ceiling`
    /// plus one lease: a duplicate then takes the claim over, and the hung execution's
    /// late completion is refused (G3), its outcome never recorded. The work itself is not
    /// cancelled. Without a ceiling the claim is renewed as long as the work runs.
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

    /// The execution ceiling, if any ([`Once::with_execution_max`]).
    #[must_use]
    pub fn execution_max(&self) -> Option<Duration> {
        self.execution_max
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Decides a new request for `id` ([`Store::claim`]), counting a failure. `request` is
    /// a [`ClaimRequest`] (fingerprint, an earlier-version fingerprint, the [`Holder`]) or
    /// just a `&Fingerprint`.
    ///
    /// # Errors
    /// The store's error: nothing may run (G8).
    pub async fn claim(&self, id: &RecordId, request: impl Into<ClaimRequest> + Send) -> Result<Decision, StoreError> {
        observe::store("claim", self.store.claim(id, request, self.clock.now(), &self.policy).await)
    }

    /// The record as stored now, counting a failure.
    ///
    /// # Errors
    /// The store's error.
    pub async fn get(&self, id: &RecordId) -> Result<Option<idem_core::Record>, StoreError> {
        observe::store("get", self.store.get(id).await)
    }

    /// Counts one replay of `id` for operators ([`Store::count_replay`]), best effort: a
    /// failure is counted in the metric and logged, never returned, so it cannot stop a
    /// replay.
    pub async fn count_replay(&self, id: &RecordId) {
        if let Err(error) = observe::store("count_replay", self.store.count_replay(id, self.clock.now()).await) {
            tracing::debug!(key = id.key.as_str(), %error, "could not count a replay");
        }
    }

    /// Runs `work` once for `id` (separate mode): the whole protocol for one call. The
    /// side effect inside `work` and the completion are two steps, so a crash between
    /// them lets a retry after the lease run it again (SPEC separate mode); use
    /// [`Once::run_atomic`] where the store can hold the side effect too. `request` is a
    /// [`ClaimRequest`] or a `&Fingerprint`. A replay is counted ([`Once::count_replay`]).
    ///
    /// # Errors
    /// The store failed before a claim: nothing ran (G8).
    pub async fn run<E, W, F>(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        work: W,
    ) -> Result<Ran<Failure<E>>, StoreError>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<StoredOutcome, E>>,
    {
        let request = request.into();
        let claim = match self.claim(id, &request).await? {
            Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim,
            decision => return Ok(self.not_run(id, decision).await),
        };
        let executed = self.execute(id, claim, &(), work).await;
        self.ended(id, &request, executed).await
    }

    /// A decision that runs nothing (Gone included: a tombstoned key never runs), as a
    /// [`Ran`], with a replay counted.
    async fn not_run<E>(&self, id: &RecordId, decision: Decision) -> Ran<E> {
        let ran = not_run(decision);
        if matches!(ran, Ran::Replayed { .. } | Ran::NotAnOutcome { .. }) {
            self.count_replay(id).await;
        }
        ran
    }

    /// What an execution's end means to a caller of [`Once::run`].
    async fn ended<E>(
        &self,
        id: &RecordId,
        request: &ClaimRequest,
        executed: Executed<E>,
    ) -> Result<Ran<E>, StoreError> {
        Ok(match executed {
            Executed::Completed { outcome, expires_at } => Ran::Executed { outcome, expires_at },
            Executed::Failed(failure) => Ran::Failed(failure),
            Executed::Unrecorded { outcome, error } => Ran::Unrecorded { outcome, error },
            Executed::Lost => {
                let record = self.get(id).await?;
                match reply::superseded(record.as_ref(), request, self.clock.now()) {
                    Superseded::Replay { response, expires_at } => replayed(response, expires_at),
                    Superseded::InProgress { lease_left, expires_at, holder } => {
                        let holder = expires_at.map(|_| holder);
                        Ran::InFlight { lease_left, expires_at, holder }
                    }
                    Superseded::Mismatch { expires_at } => Ran::Mismatch { expires_at },
                    Superseded::Gone { expires_at } => Ran::Gone { expires_at },
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
    /// [`Commit`] whose writes commit with the completion in one transaction. `request`
    /// is a [`ClaimRequest`] or a `&Fingerprint`.
    ///
    /// # Errors
    /// The store failed before a claim: nothing ran (G8).
    pub async fn run_atomic<E, W, F>(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        work: W,
    ) -> Result<Ran<Failure<E, S::WriteError>>, StoreError>
    where
        W: FnOnce(ClaimScope) -> F,
        F: Future<Output = Result<Commit<S>, E>>,
    {
        let request = request.into();
        let claim = match self.claim(id, &request).await? {
            Decision::Execute(claim) | Decision::TakeOver { claim, .. } => claim,
            decision => return Ok(self.not_run(id, decision).await),
        };
        let executed = self.execute_atomic(id, claim, &(), work).await;
        self.ended(id, &request, executed).await
    }
}

/// A decision that runs nothing, as a [`Ran`].
fn not_run<E>(decision: Decision) -> Ran<E> {
    match decision {
        Decision::Replay { response, expires_at } => replayed(response, expires_at),
        Decision::Conflict { retry_after, expires_at, holder } => {
            Ran::InFlight { lease_left: retry_after, expires_at: Some(expires_at), holder: Some(holder) }
        }
        Decision::Mismatch { expires_at } => Ran::Mismatch { expires_at },
        Decision::Gone { expires_at } => Ran::Gone { expires_at },
        Decision::Execute(_) | Decision::TakeOver { .. } => unreachable!("a claim is executed, not answered"),
    }
}

fn replayed<E>(response: StoredResponse, expires_at: Timestamp) -> Ran<E> {
    match StoredOutcome::try_from(response.clone()) {
        Ok(outcome) => Ran::Replayed { outcome, expires_at },
        Err(_) => Ran::NotAnOutcome { response, expires_at },
    }
}
