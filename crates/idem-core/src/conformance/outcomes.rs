//! Cases of message outcomes (SPEC "Message consumers"): stored through the ordinary codec
//! and replayed equal.

use super::steps::{at, ok, policy, record};
use super::{CASES, Harness};
use crate::consume::{self, Handle, Redelivery, Settle};
use crate::outcome::{ContentType, StoredOutcome};
use crate::{Decision, Fenced, Fingerprint, Key, Limits, Principal, RecordId, RecordState, Store, StoredResponse};

/// Bytes of the largest outcome the outcome cases store: 1 MiB, the default body limit.
pub const OUTCOME_BYTES_MAX: usize = 1 << 20;

fn message_id(key: &str) -> RecordId {
    let principal = Principal::new("nats:orders/billing").expect("suite principals are valid");
    RecordId::new(principal, Key::from_chars(key).expect("suite message ids are valid keys"))
}

/// The outcomes a message handler may record: nothing, every byte value, 1 MiB, and a
/// content type with a parameter and a space.
fn outcomes() -> Vec<StoredOutcome> {
    let every_byte: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..OUTCOME_BYTES_MAX).map(|n| u8::try_from(n % 251).expect("below 251")).collect();
    let text = ContentType::new("text/plain; charset=utf-8").expect("a valid content type");
    vec![
        StoredOutcome::empty(),
        StoredOutcome::bytes(every_byte.repeat(4)),
        StoredOutcome::bytes(large),
        StoredOutcome::new(text, "paid \u{2713}"),
    ]
}

pub(super) async fn outcomes_are_stored_byte_for_byte<H: Harness>(harness: &H) {
    // Goal: a message's outcome, stored as status 0 with one content-type header, comes back
    // from the store exactly: empty, every byte value, 1 MiB, its content type kept (G2), with
    // no change to the store's codec.
    let case = CASES[20];
    let store = harness.open(Limits::default()).await;
    for (n, outcome) in outcomes().into_iter().enumerate() {
        let id = message_id(&format!("\"msg-{n}\""));
        let fingerprint = Fingerprint::of_message("orders.created", format!("order {n}").as_bytes());
        let Decision::Execute(claim) = ok(case, store.claim(&id, &fingerprint, at(0), &policy()).await) else {
            panic!("conformance case `{case}`: a new message id must execute")
        };
        let stored = StoredResponse::from(outcome.clone());
        let completed = ok(case, store.complete(&id, claim.fence, stored.clone(), at(1), &policy()).await);
        assert_eq!(completed, Fenced::Applied, "conformance case `{case}`");
        let Some(record) = record(case, &store, &id).await else {
            panic!("conformance case `{case}`: the completed record is gone")
        };
        let RecordState::Completed { response, .. } = &record.state else {
            panic!("conformance case `{case}`: the record is not completed: {:?}", record.state)
        };
        assert!(
            *response == stored,
            "conformance case `{case}`: outcome {n} came back changed (status {})",
            response.status
        );
        let back = StoredOutcome::try_from(response.clone());
        assert!(back.as_ref() == Ok(&outcome), "conformance case `{case}`: outcome {n} does not map back");
    }
}

pub(super) async fn a_completed_outcome_replays_equal<H: Harness>(harness: &H) {
    // Goal: the redelivery of a completed message replays the recorded outcome, equal byte for
    // byte, and the consumer acks it without running; another payload, or an HTTP request,
    // under the same record id is a mismatch (G5), never a replay across transports.
    let case = CASES[21];
    let store = harness.open(Limits::default()).await;
    let id = message_id("msg-1");
    let fingerprint = Fingerprint::of_message("orders.created", b"{\"order\":1}");
    let Decision::Execute(claim) = ok(case, store.claim(&id, &fingerprint, at(0), &policy()).await) else {
        panic!("conformance case `{case}`: a new message id must execute")
    };
    let outcome = StoredOutcome::new(ContentType::new("application/json").expect("valid"), &b"{\"paid\":1}"[..]);
    let completed = store.complete(&id, claim.fence, outcome.clone().into(), at(1), &policy()).await;
    assert_eq!(ok(case, completed), Fenced::Applied, "conformance case `{case}`");
    for now in [at(2), at(50), at(3000)] {
        let decision = ok(case, store.claim(&id, &fingerprint, now, &policy()).await);
        let expected = Handle::Settle(Settle::Ack(outcome.clone()));
        assert_eq!(consume::handle(decision, &Redelivery::DEFAULT), expected, "conformance case `{case}`");
    }
    let other_payload = Fingerprint::of_message("orders.created", b"{\"order\":2}");
    let decision = ok(case, store.claim(&id, &other_payload, at(3), &policy()).await);
    let mismatch = Decision::Mismatch { expires_at: at(3601) };
    assert_eq!(decision, mismatch, "conformance case `{case}`: another payload under the key");
    let request = Fingerprint::of("POST", "orders.created", b"{\"order\":1}");
    let decision = ok(case, store.claim(&id, &request, at(4), &policy()).await);
    assert_eq!(decision, mismatch, "conformance case `{case}`: an HTTP request under the key");
}
