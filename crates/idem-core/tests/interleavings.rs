//! Random interleavings of several logical requests against `MemoryStore`, checked step by
//! step against a small reference model written straight from SPEC's decision table.
//!
//! The reference shares no code with idem-core's transitions: it keeps its own records,
//! its own fence counter and its own notion of expiry. After every step the two must agree
//! on the decision, on the refusal, and on what is stored, and the guarantees the core
//! alone can break (G1, G2, G3 for completions, releases and renewals, G5) must hold, and
//! the usage totals must count exactly the records held.

use std::collections::BTreeMap;
use std::time::Duration;

use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Key, MemoryStore, Policy, Principal, RecordId, RecordState, Refusal, Renewal,
    Store, StoredResponse, Timestamp,
};
use pollster::block_on;
use proptest::prelude::*;

const LEASE_MS: u64 = 1_000;
const RETENTION_MS: u64 = 5_000;
const PRINCIPALS: [&str; 2] = ["alice", "bob"];
const KEYS: [&str; 2] = ["k1", "k2"];
const PAYLOADS: [&str; 2] = ["pay 10", "pay 20"];

/// One logical request: who, which key, what payload (indices into the arrays above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    principal: usize,
    key: usize,
    payload: usize,
}

#[derive(Debug, Clone)]
enum Step {
    /// A request arrives and is claimed.
    Claim(Request),
    /// The holder of the n-th granted claim (mod how many) completes with a response.
    Complete(usize),
    /// The holder of the n-th granted claim releases it.
    Release(usize),
    /// The holder of the n-th granted claim renews its lease.
    Renew(usize),
    /// Time passes.
    Advance(u64),
    /// Expired records are purged, at most this many.
    Purge(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let request = (0..PRINCIPALS.len(), 0..KEYS.len(), 0..PAYLOADS.len())
        .prop_map(|(principal, key, payload)| Request { principal, key, payload });
    prop_oneof![
        4 => request.prop_map(Step::Claim),
        3 => any::<usize>().prop_map(Step::Complete),
        1 => any::<usize>().prop_map(Step::Release),
        2 => any::<usize>().prop_map(Step::Renew),
        2 => prop_oneof![0..LEASE_MS, LEASE_MS..2 * LEASE_MS, Just(RETENTION_MS)].prop_map(Step::Advance),
        1 => (1usize..4).prop_map(Step::Purge),
    ]
}

// ---- the reference model --------------------------------------------------------------

type RefId = (usize, usize); // (principal, key)

#[derive(Debug, Clone, PartialEq, Eq)]
enum RefState {
    InFlight { lease_end_ms: u64 },
    Completed { response: u64 },
}

#[derive(Debug, Clone)]
struct RefRecord {
    payload: usize,
    fence: u64,
    expires_ms: u64,
    state: RefState,
}

impl RefRecord {
    fn gone_at(&self, now_ms: u64) -> bool {
        match self.state {
            RefState::InFlight { lease_end_ms } => now_ms >= self.expires_ms && now_ms >= lease_end_ms,
            RefState::Completed { .. } => now_ms >= self.expires_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RefDecision {
    Execute { fence: u64 },
    TakeOver { fence: u64, stale: u64 },
    Replay { response: u64 },
    Conflict { retry_after_ms: u64 },
    Mismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefFenced {
    Applied,
    NoRecord,
    Stale { current: u64 },
    Completed { by: u64 },
}

#[derive(Debug, Default)]
struct Reference {
    records: BTreeMap<RefId, RefRecord>,
    next_fence: u64,
}

impl Reference {
    fn new() -> Reference {
        Reference { records: BTreeMap::new(), next_fence: 1 }
    }

    fn claim(&mut self, request: Request, now_ms: u64) -> RefDecision {
        let id = (request.principal, request.key);
        let live = self.records.get(&id).filter(|r| !r.gone_at(now_ms)).cloned();
        let new_claim = |this: &mut Reference| {
            let fence = this.next_fence;
            this.next_fence += 1;
            this.records.insert(
                id,
                RefRecord {
                    payload: request.payload,
                    fence,
                    expires_ms: now_ms + RETENTION_MS,
                    state: RefState::InFlight { lease_end_ms: now_ms + LEASE_MS },
                },
            );
            fence
        };
        match live {
            None => RefDecision::Execute { fence: new_claim(self) },
            Some(record) if record.payload != request.payload => RefDecision::Mismatch,
            Some(RefRecord { state: RefState::Completed { response }, .. }) => RefDecision::Replay { response },
            Some(RefRecord { state: RefState::InFlight { lease_end_ms }, .. }) if now_ms < lease_end_ms => {
                RefDecision::Conflict { retry_after_ms: lease_end_ms - now_ms }
            }
            Some(record) => RefDecision::TakeOver { fence: new_claim(self), stale: record.fence },
        }
    }

    fn fenced(&self, id: RefId, fence: u64) -> RefFenced {
        match self.records.get(&id) {
            None => RefFenced::NoRecord,
            Some(RefRecord { state: RefState::Completed { .. }, fence: by, .. }) if *by == fence => RefFenced::Applied,
            Some(RefRecord { state: RefState::Completed { .. }, fence: by, .. }) => RefFenced::Completed { by: *by },
            Some(record) if record.fence != fence => RefFenced::Stale { current: record.fence },
            Some(_) => RefFenced::Applied,
        }
    }

    fn complete(&mut self, id: RefId, fence: u64, response: u64, now_ms: u64) -> RefFenced {
        let verdict = self.fenced(id, fence);
        let record = self.records.get_mut(&id);
        if let (RefFenced::Applied, Some(record)) = (verdict, record)
            && matches!(record.state, RefState::InFlight { .. })
        {
            record.state = RefState::Completed { response };
            record.expires_ms = now_ms + RETENTION_MS;
        }
        verdict
    }

    fn release(&mut self, id: RefId, fence: u64) -> RefFenced {
        match self.fenced(id, fence) {
            RefFenced::Applied if matches!(self.records[&id].state, RefState::Completed { .. }) => {
                RefFenced::Completed { by: fence }
            }
            RefFenced::Applied => {
                self.records.remove(&id);
                RefFenced::Applied
            }
            refused => refused,
        }
    }

    /// A renewal: the current holder's lease runs a whole lease from now (never shorter).
    fn renew(&mut self, id: RefId, fence: u64, now_ms: u64) -> (RefFenced, Option<u64>) {
        match self.fenced(id, fence) {
            RefFenced::Applied => match self.records.get_mut(&id).map(|record| &mut record.state) {
                Some(RefState::InFlight { lease_end_ms }) => {
                    *lease_end_ms = (*lease_end_ms).max(now_ms + LEASE_MS);
                    (RefFenced::Applied, Some(*lease_end_ms))
                }
                _ => (RefFenced::Completed { by: fence }, None),
            },
            refused => (refused, None),
        }
    }

    /// The ids a purge at `now_ms` may forget.
    fn due(&self, now_ms: u64) -> Vec<RefId> {
        self.records.iter().filter(|(_, r)| r.gone_at(now_ms)).map(|(id, _)| *id).collect()
    }
}

// ---- driving both -----------------------------------------------------------------------

fn record_id(id: RefId) -> RecordId {
    let principal = Principal::new(PRINCIPALS[id.0]).expect("fixed principals are valid");
    RecordId::new(principal, Key::try_from(KEYS[id.1]).expect("fixed keys are valid"))
}

fn fingerprint(request: Request) -> Fingerprint {
    Fingerprint::of("POST", "/payments", PAYLOADS[request.payload].as_bytes())
}

fn response(n: u64) -> StoredResponse {
    StoredResponse::new(201, format!("response {n}").into_bytes())
}

fn to_reference(decision: &Decision, responses: &BTreeMap<String, u64>) -> RefDecision {
    match decision {
        Decision::Execute(claim) => RefDecision::Execute { fence: claim.fence.get() },
        Decision::TakeOver { claim, stale } => RefDecision::TakeOver { fence: claim.fence.get(), stale: stale.get() },
        Decision::Replay { response: stored, .. } => {
            let body = String::from_utf8(stored.body.to_vec()).expect("test bodies are UTF-8");
            RefDecision::Replay { response: responses[&body] }
        }
        Decision::Conflict { retry_after, .. } => {
            RefDecision::Conflict { retry_after_ms: u64::try_from(retry_after.as_millis()).expect("short") }
        }
        Decision::Mismatch { .. } => RefDecision::Mismatch,
        Decision::Gone { .. } => unreachable!("no tombstones without a tombstone policy"),
    }
}

fn fenced_to_reference(fenced: Fenced) -> RefFenced {
    match fenced {
        Fenced::Applied => RefFenced::Applied,
        Fenced::Refused(Refusal::NoRecord) => RefFenced::NoRecord,
        Fenced::Refused(Refusal::StaleFence { current, .. }) => RefFenced::Stale { current: current.get() },
        Fenced::Refused(Refusal::AlreadyCompleted { completed_by }) => RefFenced::Completed { by: completed_by.get() },
    }
}

/// What the run has observed, to check the guarantees across steps.
#[derive(Default)]
struct History {
    /// Every claim granted, in order: (record id, fence).
    granted: Vec<(RefId, u64)>,
    /// The response each record id was first completed with, until it is forgotten.
    first_completion: BTreeMap<RefId, u64>,
    responses_by_body: BTreeMap<String, u64>,
    next_response: u64,
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let store = MemoryStore::default();
    let policy = Policy::new(Duration::from_millis(LEASE_MS), Duration::from_millis(RETENTION_MS)).expect("valid");
    let mut reference = Reference::new();
    let mut history = History::default();
    let mut now_ms = 0u64;
    let now = |ms: u64| Timestamp::from_unix_ms(ms);

    for step in steps {
        match step {
            Step::Claim(request) => {
                let id = (request.principal, request.key);
                let live_before = reference.records.get(&id).filter(|r| !r.gone_at(now_ms)).cloned();
                let decision = block_on(store.claim(&record_id(id), &fingerprint(request), now(now_ms), &policy))
                    .expect("memory store is available and large enough");
                let expected = reference.claim(request, now_ms);
                prop_assert_eq!(to_reference(&decision, &history.responses_by_body), expected.clone());
                if let Some(claim) = decision.claim() {
                    // G1: an execution is granted only when no live claim or completion stands.
                    let blocked = live_before.as_ref().is_some_and(|r| match r.state {
                        RefState::Completed { .. } => true,
                        RefState::InFlight { lease_end_ms } => now_ms < lease_end_ms,
                    });
                    prop_assert!(!blocked, "executed while another claim or completion stood");
                    // G5: never for a payload that differs from the live record's.
                    prop_assert!(live_before.as_ref().is_none_or(|r| r.payload == request.payload));
                    // Fences only grow.
                    let newest = history.granted.last().map_or(0, |(_, f)| *f);
                    prop_assert!(claim.fence.get() > newest, "fence reused or out of order");
                    history.granted.push((id, claim.fence.get()));
                    history.first_completion.remove(&id);
                }
                if let RefDecision::Replay { response } = expected {
                    // G2: every replay is the first completion's response.
                    prop_assert_eq!(Some(&response), history.first_completion.get(&id));
                }
            }
            Step::Complete(n) if !history.granted.is_empty() => {
                let (id, fence) = history.granted[n % history.granted.len()];
                let number = history.next_response;
                history.next_response += 1;
                history.responses_by_body.insert(format!("response {number}"), number);
                let fenced =
                    block_on(store.complete(&record_id(id), Fence::new(fence), response(number), now(now_ms), &policy))
                        .expect("available");
                let expected = reference.complete(id, fence, number, now_ms);
                prop_assert_eq!(fenced_to_reference(fenced), expected);
                if fenced == Fenced::Applied {
                    // G3: only the newest claim for the id completes.
                    let newest = history.granted.iter().rev().find(|(i, _)| *i == id).map(|(_, f)| *f);
                    prop_assert_eq!(Some(fence), newest, "a stale fence completed");
                    history.first_completion.entry(id).or_insert(number);
                }
            }
            Step::Release(n) if !history.granted.is_empty() => {
                let (id, fence) = history.granted[n % history.granted.len()];
                let fenced = block_on(store.release(&record_id(id), Fence::new(fence))).expect("available");
                prop_assert_eq!(fenced_to_reference(fenced), reference.release(id, fence));
            }
            Step::Renew(n) if !history.granted.is_empty() => {
                let (id, fence) = history.granted[n % history.granted.len()];
                let renewal =
                    block_on(store.renew(&record_id(id), Fence::new(fence), now(now_ms), &policy)).expect("available");
                let got = match renewal {
                    Renewal::Renewed { lease_expires_at } => (RefFenced::Applied, Some(lease_expires_at.unix_ms())),
                    Renewal::Refused(refusal) => (fenced_to_reference(Fenced::Refused(refusal)), None),
                };
                prop_assert_eq!(got, reference.renew(id, fence, now_ms));
                if got.0 == RefFenced::Applied {
                    // G3 for renewals: only the newest claim for the id renews.
                    let newest = history.granted.iter().rev().find(|(i, _)| *i == id).map(|(_, f)| *f);
                    prop_assert_eq!(Some(fence), newest, "a stale fence renewed");
                }
            }
            Step::Complete(_) | Step::Release(_) | Step::Renew(_) => {}
            Step::Advance(ms) => now_ms += ms,
            Step::Purge(batch) => {
                // Which expired records go first is the store's choice; how many, and that
                // only expired ones go, is not.
                let due = reference.due(now_ms);
                let purged = block_on(store.purge_expired(now(now_ms), batch)).expect("available");
                prop_assert_eq!(purged, due.len().min(batch));
                for id in due {
                    if block_on(store.get(&record_id(id))).expect("available").is_none() {
                        reference.records.remove(&id);
                    }
                }
            }
        }
        check_same_records(&store, &reference)?;
        for id in history.first_completion.keys().copied().collect::<Vec<_>>() {
            if !reference.records.contains_key(&id) {
                history.first_completion.remove(&id);
            }
        }
    }
    Ok(())
}

/// The store holds exactly the reference's records, field by field, and its usage totals
/// count exactly those records.
fn check_same_records(store: &MemoryStore, reference: &Reference) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.len(), reference.records.len());
    let usage = store.usage();
    prop_assert_eq!(usage.records, reference.records.len() as u64);
    let held_bytes: u64 = reference
        .records
        .keys()
        .map(|&id| {
            let record = block_on(store.get(&record_id(id))).expect("available").expect("the reference holds it");
            idem_core::usage::stored_bytes(&record_id(id), &record)
        })
        .sum();
    prop_assert_eq!(usage.stored_bytes, held_bytes);
    for (&id, expected) in &reference.records {
        let record = block_on(store.get(&record_id(id))).expect("available").expect("the reference holds it");
        prop_assert_eq!(record.fence.get(), expected.fence);
        prop_assert_eq!(record.expires_at, Timestamp::from_unix_ms(expected.expires_ms));
        let payload = Request { principal: id.0, key: id.1, payload: expected.payload };
        prop_assert_eq!(record.fingerprint, fingerprint(payload));
        match (&record.state, &expected.state) {
            (RecordState::InFlight { lease_expires_at, .. }, RefState::InFlight { lease_end_ms }) => {
                prop_assert_eq!(lease_expires_at.unix_ms(), *lease_end_ms);
            }
            (RecordState::Completed { response: stored, .. }, RefState::Completed { response: number }) => {
                prop_assert_eq!(stored, &response(*number));
            }
            (got, want) => prop_assert!(false, "state differs: store {got:?}, reference {want:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_agrees_with_reference_model(steps in prop::collection::vec(step(), 1..60)) {
        // Goal: identical decisions and records to the reference, and G1/G2/G3/G5 after every step.
        run(steps)?;
    }
}
