//! The conformance suite every [`Store`] runs: one call, every rule.
//!
//! A store crate implements [`Harness`] (how to open an empty store with given limits,
//! and how to make its backend fail) and calls [`run`] from one test, the way tower-test
//! and sqlx's test macros serve many backends:
//!
//! ```
//! use idem_core::conformance::{self, Harness};
//! use idem_core::{Limits, MemoryStore};
//!
//! struct Memory;
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!     async fn open(&self, limits: Limits) -> MemoryStore {
//!         MemoryStore::new(limits)
//!     }
//!     async fn break_backend(&self, _: &MemoryStore) -> bool {
//!         false // a memory store has no backend to lose
//!     }
//! }
//!
//! let report = pollster::block_on(conformance::run(&Memory));
//! // Every case held, except the backend failure, which a memory store cannot have.
//! assert_eq!(report.passed.len(), conformance::CASES.len() - 1);
//! assert_eq!(report.not_applicable.len(), 1);
//! ```
//!
//! Each case opens a fresh store and checks one rule; [`CASES`] names them. The last two
//! store message outcomes ([`StoredOutcome`](crate::StoredOutcome)) through the store's
//! ordinary codec. A failing case panics with its name and what differed. Time is an
//! argument of every store call, so the suite moves time by passing later timestamps;
//! nothing sleeps.
//!
//! The cases live by subject: `claims.rs` (the decision table), `fences.rs` (fencing and
//! renewal), `limits.rs` (purge, a full store, concurrency, a failing backend) and
//! `outcomes.rs` (message outcomes); [`fixtures`] holds values the store crates' own tests
//! share, and [`FlakyStore`] a store that fails while a test says so.

mod claims;
mod fences;
pub mod fixtures;
mod flaky;
pub mod lifecycle;
mod limits;
mod outcomes;
mod steps;

pub use flaky::FlakyStore;
pub use outcomes::OUTCOME_BYTES_MAX;

use std::future::Future;

use claims::{
    absent_record_executes, conflict_while_in_flight, expired_record_executes_again, lapsed_claim_is_taken_over,
    mismatch_after_completion, mismatch_while_in_flight, principals_never_share_a_record, replay_after_completion,
};
use fences::{
    completion_under_another_fence_is_refused, fence_is_refused_after_release, fences_are_never_reused,
    renewal_by_a_taken_over_holder_is_refused, renewal_extends_the_lease, repeated_completion_with_the_same_fence,
    stale_fence_is_refused_after_take_over,
};
use limits::{
    concurrent_claims_execute_once, failing_backend_never_executes, full_store_accepts_a_granted_completion,
    full_store_refuses_claims_and_never_evicts, purge_forgets_only_expired_records,
};
use outcomes::{a_completed_outcome_replays_equal, outcomes_are_stored_byte_for_byte};

use crate::{Limits, Store};

/// How the suite gets stores of one backend.
pub trait Harness {
    /// The store under test.
    type Store: Store;

    /// An empty store with these limits (a fresh file, database schema or key prefix).
    fn open(&self, limits: Limits) -> impl Future<Output = Self::Store>;

    /// Makes `store`'s backend fail from now on (close its pool, stop its connection).
    /// Returns `false` if the store has no backend that can fail (an in-memory store);
    /// the failure case then has nothing to check and says so in the report.
    fn break_backend(&self, store: &Self::Store) -> impl Future<Output = bool>;
}

/// What a run checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Cases that ran and held.
    pub passed: Vec<&'static str>,
    /// Cases with nothing to check on this store, and why.
    pub not_applicable: Vec<(&'static str, &'static str)>,
}

/// Every case, in the order [`run`] runs them.
pub const CASES: [&str; 22] = [
    "absent_record_executes",
    "conflict_while_in_flight",
    "lapsed_claim_is_taken_over",
    "replay_after_completion",
    "mismatch_while_in_flight",
    "mismatch_after_completion",
    "expired_record_executes_again",
    "principals_never_share_a_record",
    "stale_fence_is_refused_after_take_over",
    "fence_is_refused_after_release",
    "renewal_extends_the_lease",
    "renewal_by_a_taken_over_holder_is_refused",
    "repeated_completion_with_the_same_fence",
    "completion_under_another_fence_is_refused",
    "fences_are_never_reused",
    "purge_forgets_only_expired_records",
    "full_store_refuses_claims_and_never_evicts",
    "full_store_accepts_a_granted_completion",
    "concurrent_claims_execute_once",
    "failing_backend_never_executes",
    "outcomes_are_stored_byte_for_byte",
    "a_completed_outcome_replays_equal",
];

/// How many concurrent claims [`CASES`]' `concurrent_claims_execute_once` makes.
pub const CONCURRENT_CLAIMS: usize = 64;

/// Runs every case against fresh stores from `harness`.
///
/// # Panics
/// On the first case that does not hold, naming it.
pub async fn run<H: Harness>(harness: &H) -> Report {
    let mut report = Report::default();
    let mut passed = |name| report.passed.push(name);
    absent_record_executes(harness).await;
    passed(CASES[0]);
    conflict_while_in_flight(harness).await;
    passed(CASES[1]);
    lapsed_claim_is_taken_over(harness).await;
    passed(CASES[2]);
    replay_after_completion(harness).await;
    passed(CASES[3]);
    mismatch_while_in_flight(harness).await;
    passed(CASES[4]);
    mismatch_after_completion(harness).await;
    passed(CASES[5]);
    expired_record_executes_again(harness).await;
    passed(CASES[6]);
    principals_never_share_a_record(harness).await;
    passed(CASES[7]);
    stale_fence_is_refused_after_take_over(harness).await;
    passed(CASES[8]);
    fence_is_refused_after_release(harness).await;
    passed(CASES[9]);
    renewal_extends_the_lease(harness).await;
    passed(CASES[10]);
    renewal_by_a_taken_over_holder_is_refused(harness).await;
    passed(CASES[11]);
    repeated_completion_with_the_same_fence(harness).await;
    passed(CASES[12]);
    completion_under_another_fence_is_refused(harness).await;
    passed(CASES[13]);
    fences_are_never_reused(harness).await;
    passed(CASES[14]);
    purge_forgets_only_expired_records(harness).await;
    passed(CASES[15]);
    full_store_refuses_claims_and_never_evicts(harness).await;
    passed(CASES[16]);
    full_store_accepts_a_granted_completion(harness).await;
    passed(CASES[17]);
    concurrent_claims_execute_once(harness).await;
    passed(CASES[18]);
    if failing_backend_never_executes(harness).await {
        passed(CASES[19]);
    } else {
        report.not_applicable.push((CASES[19], "the store has no backend that can fail"));
    }
    outcomes_are_stored_byte_for_byte(harness).await;
    report.passed.push(CASES[20]);
    a_completed_outcome_replays_equal(harness).await;
    report.passed.push(CASES[21]);
    report
}
