//! The conformance suite on `MemoryStore`, and planted bugs that show the suite catches
//! a store that keeps a rule of its own instead of applying the store step. (A unit test
//! module, so that `cargo test -p idem-core` runs it without the `testing` feature.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crate::conformance::{self, CASES, Harness};
use crate::step::{self, StoreView, op};
use crate::transition;
use crate::{
    Decision, Fence, Fenced, KeyAdmin, Limits, ListQuery, MemoryState, MemoryStore, Page, Policy, Record, RecordId,
    RecordState, Renewal, Store, StoreError, StoredResponse, Timestamp,
};

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;
    async fn open(&self, limits: Limits) -> MemoryStore {
        MemoryStore::new(limits)
    }
    async fn break_backend(&self, _: &MemoryStore) -> bool {
        false
    }
}

#[test]
fn memory_store_passes_the_lifecycle_cases() {
    // Goal: MemoryStore keeps every key-lifecycle rule (tombstones, forget, listing, holders, counts, versions).
    let report = pollster::block_on(conformance::lifecycle::run(&Memory));
    assert_eq!(report.passed, conformance::lifecycle::CASES);
}

#[test]
fn memory_store_passes_the_conformance_suite() {
    // Goal: MemoryStore keeps every rule of the suite; only the backend-failure case has nothing to check.
    let report = pollster::block_on(conformance::run(&Memory));
    assert_eq!(report.passed.len(), CASES.len() - 1, "{report:?}");
    assert_eq!(
        report.not_applicable.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ["failing_backend_never_executes"]
    );
}

/// How a planted-bug store departs from the store step.
#[derive(Clone, Copy)]
enum Bug {
    /// Decides claims with `transition::claim` alone: no admission at the size limits.
    NoAdmission,
    /// Restarts the fence counter after a release, as a per-record counter would.
    FenceReuseAfterRelease,
    /// Accepts renewals without a fence check.
    UnfencedRenewal,
    /// Answers Execute when its backend fails.
    ExecutesWhenDown,
    /// Keeps at most [`BODY_BYTES_CAP`] bytes of a body, as a too-small column would.
    TruncatesBodies,
    /// Refuses a status outside HTTP's 100..=599, as a codec with that check would.
    RefusesNonHttpStatus,
    /// Forgets by making the claim lapse at once, keeping its fence current (forget
    /// without moving the fence): the forgotten holder can still complete.
    ForgetLapsesTheClaim,
    /// Purges a completed record at its retention's end instead of shrinking it to its
    /// tombstone, so the key runs again.
    PurgeDropsTombstones,
    /// Compares the stored fingerprint with the request's own only, ignoring its earlier
    /// version, as a store that reads the version away would.
    IgnoresEarlierFingerprints,
}

/// The body cap of [`Bug::TruncatesBodies`]: 64 KiB, more than any case but the outcomes' 1 MiB.
const BODY_BYTES_CAP: usize = 64 * 1024;

struct Planted {
    bug: Bug,
    state: Mutex<MemoryState>,
    down: Mutex<bool>,
}

impl Planted {
    fn run<O: step::Operation>(&self, id: &RecordId, operation: O) -> Result<O::Answer, StoreError> {
        Ok(self.state.lock().unwrap().run(id, operation)?)
    }
}

impl Store for Planted {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<crate::ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let mut request = request.into();
        if let Bug::IgnoresEarlierFingerprints = self.bug {
            request.earlier = None;
        }
        let mut state = self.state.lock().unwrap();
        if *self.down.lock().unwrap() {
            return match self.bug {
                Bug::ExecutesWhenDown => {
                    Ok(Decision::Execute(crate::Claim { fence: Fence::new(999), lease_expires_at: now }))
                }
                _ => Err(StoreError::unavailable("down")),
            };
        }
        if let Bug::NoAdmission = self.bug {
            let view = state.view(id);
            let t = transition::claim(view.record, &request, now, policy, view.counters.next_fence);
            let mut limits_off = view;
            limits_off.limits = Limits { records_max: u64::MAX, stored_bytes_max: u64::MAX };
            let step = step::step(id, &limits_off, op::Claim { request: request.clone(), now, policy: *policy })?;
            assert_eq!(step.answer, t.outcome);
            return Ok(state.commit(id, step));
        }
        Ok(state.run(id, op::Claim { request, now, policy: *policy })?)
    }
    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        if *self.down.lock().unwrap() {
            return Err(StoreError::unavailable("down"));
        }
        let response = match self.bug {
            Bug::TruncatesBodies => {
                let body = response.body.slice(..response.body.len().min(BODY_BYTES_CAP));
                StoredResponse { body, ..response }
            }
            Bug::RefusesNonHttpStatus if !(100..=599).contains(&response.status) => {
                return Err(StoreError::Corrupt {
                    detail: format!("status {} is not an HTTP status", response.status),
                });
            }
            _ => response,
        };
        self.run(id, op::Complete { fence, response, now, policy: *policy })
    }
    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        let fenced = self.run(id, op::Release { fence })?;
        if let (Bug::FenceReuseAfterRelease, Fenced::Applied) = (self.bug, fenced) {
            // Rebuild the state with the counter rewound: the next claim reuses `fence`.
            let mut state = self.state.lock().unwrap();
            let mut rewound = MemoryState::new(state.limits());
            let records: Vec<(RecordId, Record)> = state.records().map(|(id, r)| (id.clone(), r.clone())).collect();
            for (id, record) in records {
                let view = StoreView { record: None, counters: rewound.counters(), limits: rewound.limits() };
                let claim =
                    op::Claim { request: record.fingerprint.into(), now: Timestamp::EPOCH, policy: Policy::DEFAULT };
                let mut step = step::step(&id, &view, claim).expect("room");
                step.write = crate::Write::Put(record);
                let _ = rewound.commit(&id, step);
            }
            *state = rewound;
        }
        Ok(fenced)
    }
    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        if let Bug::UnfencedRenewal = self.bug {
            let current = self.state.lock().unwrap().record(id).map_or(fence, |record| record.fence);
            return self.run(id, op::Renew { fence: current, now, policy: *policy });
        }
        self.run(id, op::Renew { fence, now, policy: *policy })
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self.state.lock().unwrap().record(id).cloned())
    }
    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        let mut state = self.state.lock().unwrap();
        if let Bug::PurgeDropsTombstones = self.bug {
            let due: Vec<RecordId> =
                state.records().filter(|(_, record)| record.due_at() <= now).map(|(id, _)| id.clone()).collect();
            for id in due.iter().take(batch_max) {
                let _ = state.run(id, op::Forget);
            }
            return Ok(due.len().min(batch_max));
        }
        Ok(state.purge_expired(now, batch_max))
    }
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.run(id, op::CountReplay { now })
    }
}

impl KeyAdmin for Planted {
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(query.select(state.records()))
    }
    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        if let Bug::ForgetLapsesTheClaim = self.bug {
            let mut state = self.state.lock().unwrap();
            let Some(record) = state.record(id).cloned() else { return Ok(None) };
            let mut lapsed = record.clone();
            if let RecordState::InFlight { lease_expires_at, .. } = &mut lapsed.state {
                *lease_expires_at = Timestamp::EPOCH;
            }
            lapsed.expires_at = Timestamp::EPOCH;
            let view = state.view(id);
            let mut step = step::step(id, &view, op::Forget)?;
            step.write = crate::Write::Put(lapsed);
            step.next_fence = None;
            step.usage = crate::UsageDelta::NONE;
            let _ = state.commit(id, step);
            return Ok(Some(record));
        }
        self.run(id, op::Forget)
    }
}

struct PlantedHarness(Bug);

impl Harness for PlantedHarness {
    type Store = Planted;
    async fn open(&self, limits: Limits) -> Planted {
        Planted { bug: self.0, state: Mutex::new(MemoryState::new(limits)), down: Mutex::new(false) }
    }
    async fn break_backend(&self, store: &Planted) -> bool {
        *store.down.lock().unwrap() = true;
        true
    }
}

/// Runs the suite on a planted bug and returns the failure message.
fn failure(bug: Bug) -> String {
    let outcome = catch_unwind(AssertUnwindSafe(|| pollster::block_on(conformance::run(&PlantedHarness(bug)))));
    let panic = outcome.expect_err("the suite must fail on a planted bug");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Runs the lifecycle cases on a planted bug and returns the failure message.
fn lifecycle_failure(bug: Bug) -> String {
    let outcome =
        catch_unwind(AssertUnwindSafe(|| pollster::block_on(conformance::lifecycle::run(&PlantedHarness(bug)))));
    let panic = outcome.expect_err("the lifecycle cases must fail on a planted bug");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_lifecycle_cases_catch_a_forget_that_does_not_move_the_fence() {
    // Goal: a forget that only lapses the claim lets the forgotten holder complete (G3): caught.
    let message = lifecycle_failure(Bug::ForgetLapsesTheClaim);
    assert!(message.contains("forget_moves_the_fence_on"), "{message}");
}

#[test]
fn the_lifecycle_cases_catch_a_purge_that_drops_tombstones() {
    // Goal: a purge that forgets a completed record instead of leaving its tombstone is caught.
    let message = lifecycle_failure(Bug::PurgeDropsTombstones);
    assert!(message.contains("tombstone_answers_gone_and_never_executes"), "{message}");
}

#[test]
fn the_lifecycle_cases_catch_a_store_that_loses_the_earlier_fingerprint() {
    // Goal: a store that compares only the request's newest fingerprint breaks the upgrade path: caught.
    let message = lifecycle_failure(Bug::IgnoresEarlierFingerprints);
    assert!(message.contains("fingerprint_versions_compare_correctly"), "{message}");
}

#[test]
fn the_suite_catches_a_store_without_admission() {
    // Goal: a store that skips admission at the size limits fails the capacity case.
    let message = failure(Bug::NoAdmission);
    assert!(message.contains("full_store_refuses_claims_and_never_evicts"), "{message}");
}

#[test]
fn the_suite_catches_a_store_that_reuses_fences() {
    // Goal: a store that rewinds its fence counter after a release fails the release case.
    let message = failure(Bug::FenceReuseAfterRelease);
    assert!(message.contains("fence_is_refused_after_release"), "{message}");
}

#[test]
fn the_suite_catches_unfenced_renewals() {
    // Goal: a store that renews for any fence fails the stale-fence case (G3).
    let message = failure(Bug::UnfencedRenewal);
    assert!(message.contains("stale_fence_is_refused_after_take_over"), "{message}");
}

#[test]
fn the_suite_catches_a_store_that_executes_when_down() {
    // Goal: a store that answers Execute with its backend down fails the G8 case.
    let message = failure(Bug::ExecutesWhenDown);
    assert!(message.contains("failing_backend_never_executes"), "{message}");
}

#[test]
fn the_suite_catches_a_store_that_truncates_outcomes() {
    // Goal: a store that keeps only the first 64 KiB of a body passes every HTTP case but
    // fails the outcome case with its 1 MiB outcome.
    let message = failure(Bug::TruncatesBodies);
    assert!(message.contains("outcomes_are_stored_byte_for_byte"), "{message}");
}

#[test]
fn the_suite_catches_a_store_that_refuses_status_zero() {
    // Goal: a store whose codec admits only HTTP statuses fails the outcome case, so no store
    // can keep such a check and pass while message outcomes (status 0) fail on it.
    let message = failure(Bug::RefusesNonHttpStatus);
    assert!(message.contains("outcomes_are_stored_byte_for_byte"), "{message}");
}
