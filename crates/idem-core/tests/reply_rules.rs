//! The rules a server layer answers by (SPEC "HTTP behaviour"), as idem-core states them.

use std::time::Duration;

use idem_core::reply::{self, RETRY_AFTER_MIN, TRY_LATER_STATUSES};
use idem_core::{
    ClaimRequest, Disposition, Fence, Fingerprint, Holder, Record, RecordState, StatusRules, StoredResponse,
    Superseded, Timestamp,
};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn fingerprint(body: &[u8]) -> Fingerprint {
    Fingerprint::of("POST", "/payments", body)
}

fn request(body: &[u8]) -> ClaimRequest {
    ClaimRequest::new(fingerprint(body))
}

fn in_flight(lease_end_ms: u64) -> Record {
    Record {
        fingerprint: fingerprint(b"a"),
        fence: Fence::new(3),
        created_at: at(0),
        expires_at: at(3_600_000),
        state: RecordState::InFlight { lease_expires_at: at(lease_end_ms), holder: Holder::NONE, renewals: 0 },
    }
}

#[test]
fn statuses_record_or_release_as_spec_says() {
    // Goal: 2xx and 4xx record; 408, 425, 429 and 5xx release; each switch flips only its class.
    let default = StatusRules::default();
    for status in [200, 201, 204, 301, 400, 404, 409, 422] {
        assert_eq!(default.disposition(status), Disposition::Record, "{status}");
    }
    for status in [408, 425, 429, 500, 502, 503, 599] {
        assert_eq!(default.disposition(status), Disposition::Release, "{status}");
    }
    let servers = StatusRules { record_server_errors: true, ..StatusRules::default() };
    assert_eq!(servers.disposition(500), Disposition::Record);
    assert_eq!(servers.disposition(429), Disposition::Release);
    let later = StatusRules { record_try_later: true, ..StatusRules::default() };
    assert!(TRY_LATER_STATUSES.iter().all(|status| later.disposition(*status) == Disposition::Record));
    assert_eq!(later.disposition(503), Disposition::Release);
}

#[test]
fn retry_after_is_the_lease_left_capped_in_whole_seconds() {
    // Goal: the hint is min(lease left, cap), rounded up to whole seconds, never below one second.
    let cap = Duration::from_secs(5);
    assert_eq!(reply::retry_after(Duration::from_millis(2_100), cap), Duration::from_secs(3));
    assert_eq!(reply::retry_after(Duration::from_secs(2), cap), Duration::from_secs(2));
    assert_eq!(reply::retry_after(Duration::from_secs(60), cap), cap);
    assert_eq!(reply::retry_after(Duration::ZERO, cap), RETRY_AFTER_MIN);
    assert_eq!(reply::retry_after(Duration::from_millis(1), Duration::ZERO), RETRY_AFTER_MIN);
    assert_eq!(reply::retry_after(Duration::MAX, Duration::MAX), Duration::from_secs(u64::MAX), "saturates");
}

#[test]
fn a_superseded_execution_answers_what_the_store_holds() {
    // Goal: after losing its claim an execution answers the recorded response, 409 for a live
    // claim (with its lease left), 409 at once when nothing is held, and 422 for another request.
    let response = StoredResponse::new(201, &b"pay_2"[..]);
    let state = RecordState::Completed { response: response.clone(), replays: 0, tombstone_until: None };
    let completed = Record { state, ..in_flight(0) };
    let replay = Superseded::Replay { response, expires_at: at(3_600_000) };
    assert_eq!(reply::superseded(Some(&completed), &request(b"a"), at(5)), replay);
    let live = in_flight(8_000);
    let expected = Superseded::InProgress {
        lease_left: Duration::from_secs(3),
        expires_at: Some(at(3_600_000)),
        holder: Holder::NONE,
    };
    assert_eq!(reply::superseded(Some(&live), &request(b"a"), at(5_000)), expected);
    let gone = Superseded::InProgress { lease_left: Duration::ZERO, expires_at: None, holder: Holder::NONE };
    assert_eq!(reply::superseded(None, &request(b"a"), at(5_000)), gone);
    assert_eq!(reply::superseded(Some(&live), &request(b"a"), at(9_000)), gone, "a lapsed claim is not live");
    let mismatch = Superseded::Mismatch { expires_at: at(3_600_000) };
    assert_eq!(reply::superseded(Some(&live), &request(b"b"), at(5_000)), mismatch);
}

#[test]
fn a_waiting_request_waits_only_for_a_live_claim_of_its_own_request() {
    // Goal: keep waiting while the same request's claim is live; stop for a lapse, a completion,
    // an absent record and a different request (which then gets 422 from the claim).
    let live = in_flight(8_000);
    assert_eq!(reply::keep_waiting(Some(&live), &request(b"a"), at(5_000)), Some(Duration::from_secs(3)));
    assert_eq!(reply::keep_waiting(Some(&live), &request(b"a"), at(8_000)), None);
    assert_eq!(reply::keep_waiting(Some(&live), &request(b"b"), at(5_000)), None);
    assert_eq!(reply::keep_waiting(None, &request(b"a"), at(5_000)), None);
}
