//! What every case does over and over: the suite's fixed policy, ids and times, and store
//! calls that panic naming the case when the store fails.
//!
//! These are the suite's own values (a 10 s lease, a 1 h retention, `at` in seconds after
//! a fixed start, fingerprints by amount), which its cases' expected answers are written
//! in; [`super::fixtures`] holds different ones (a 1 s lease, absolute milliseconds) for the
//! store crates' tests. Keep each set where its tests are written against it.

use std::time::Duration;

use crate::{
    Decision, Fence, Fenced, Fingerprint, Key, Policy, Principal, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp,
};

pub(super) const LEASE: Duration = Duration::from_secs(10);
pub(super) const RETENTION: Duration = Duration::from_secs(3600);

pub(super) fn policy() -> Policy {
    Policy::new(LEASE, RETENTION).expect("a 10 s lease and 1 h retention are valid")
}

pub(super) fn id(principal: &str, key: &str) -> RecordId {
    let principal = Principal::new(principal).expect("suite principals are valid");
    RecordId::new(principal, Key::parse(key.as_bytes()).expect("suite keys are valid"))
}

pub(super) fn fingerprint(amount: u32) -> Fingerprint {
    Fingerprint::of("POST", "/payments", format!("{{\"amount\":{amount}}}").as_bytes())
}

/// `seconds` after a fixed start (not the epoch, so nothing hides behind zero).
pub(super) fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_ms(1_700_000_000_000 + seconds * 1000)
}

pub(super) fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), "application/json".into()), ("x-trace".to_owned(), "t1".into())],
        body: body.as_bytes().to_vec().into(),
    }
}

pub(super) fn ok<T>(case: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|error| panic!("conformance case `{case}`: the store failed: {error}"))
}

pub(super) async fn claim<S: Store>(case: &str, store: &S, id: &RecordId, amount: u32, now: Timestamp) -> Decision {
    ok(case, store.claim(id, &fingerprint(amount), now, &policy()).await)
}

pub(super) async fn executes<S: Store>(case: &str, store: &S, id: &RecordId, amount: u32, now: Timestamp) -> Fence {
    match claim(case, store, id, amount, now).await {
        Decision::Execute(claim) => claim.fence,
        other => panic!("conformance case `{case}`: expected Execute, got {other:?}"),
    }
}

pub(super) async fn complete<S: Store>(
    case: &str,
    store: &S,
    id: &RecordId,
    fence: Fence,
    body: &str,
    now: Timestamp,
) -> Fenced {
    ok(case, store.complete(id, fence, response(body), now, &policy()).await)
}

pub(super) async fn renew<S: Store>(case: &str, store: &S, id: &RecordId, fence: Fence, now: Timestamp) -> Renewal {
    ok(case, store.renew(id, fence, now, &policy()).await)
}

pub(super) async fn record<S: Store>(case: &str, store: &S, id: &RecordId) -> Option<crate::Record> {
    ok(case, store.get(id).await)
}
