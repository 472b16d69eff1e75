//! What an operator sees: one record as JSON ([`KeyView`]) and one page of a listing in
//! Stripe's list shape ([`ListView`]). `idem keys` prints these, and the admin router
//! answers them, so the two never disagree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{Page, Record, RecordId, RecordState, Timestamp};
use serde::Serialize;

use crate::cursor;

/// The `object` of a [`KeyView`].
pub const KEY_OBJECT: &str = "idempotency_key";

/// The `object` of a [`ListView`] (Stripe's).
pub const LIST_OBJECT: &str = "list";

/// One record as an operator sees it, at a given `now`.
///
/// Every field is always present, `null` where it does not apply to the record's state, so
/// a reader (`jq`, a dashboard) sees one shape. Times come twice: RFC 3339 in UTC with
/// milliseconds (`null` past the year 9999, which a saturated time reads as) and Unix
/// milliseconds (`*_ms`). The response body is never shown, only its size.
///
/// ```json
/// {"object":"idempotency_key","id":"616c696365006b31","caller":"alice","key":"k1",
///  "state":"in_flight","expired":false,"fence":7,
///  "created_at":"2026-12-07T21:00:00.000Z","created_at_ms":1796677200000,
///  "expires_at":"…","expires_at_ms":…,"forgettable_at":"…","forgettable_at_ms":…,
///  "lease_expires_at":"…","lease_expires_at_ms":…,"lease_left_ms":8000,"renewals":2,
///  "holder":{"request_id":"req-1","trace_id":"4bf9…"},
///  "replays":null,"tombstone_until":null,"tombstone_until_ms":null,"response":null,
///  "fingerprint":{"version":1,"digest":"9f86…"}}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyView {
    /// Always [`KEY_OBJECT`].
    pub object: &'static str,
    /// The record's opaque id ([`crate::cursor`]): `GET /keys/{id}`, and `starting_after`.
    pub id: String,
    /// The principal; `null` for the anonymous caller (whose name is empty, which no named
    /// principal can have).
    pub caller: Option<String>,
    /// The idempotency key, as the client sent it (unquoted).
    pub key: String,
    /// `in_flight`, `completed` or `tombstone`: the stored state.
    pub state: &'static str,
    /// Whether the record already counts as absent (past `forgettable_at`) and only waits
    /// for a purge: a new request with this key would execute.
    pub expired: bool,
    /// The fence of the claim that made the record what it is.
    pub fence: u64,
    /// When that claim was taken (a take-over restarts it).
    pub created_at: Option<String>,
    /// `created_at` in Unix milliseconds.
    pub created_at_ms: u64,
    /// When retention ends (a tombstone: when the tombstone ends).
    pub expires_at: Option<String>,
    /// `expires_at` in Unix milliseconds.
    pub expires_at_ms: u64,
    /// When the record starts to count as absent ([`Record::forgettable_at`]).
    pub forgettable_at: Option<String>,
    /// `forgettable_at` in Unix milliseconds.
    pub forgettable_at_ms: u64,
    /// In flight: when the lease lapses unless renewed.
    pub lease_expires_at: Option<String>,
    /// `lease_expires_at` in Unix milliseconds.
    pub lease_expires_at_ms: Option<u64>,
    /// In flight: milliseconds until the lease lapses, 0 once it has (a new request may
    /// then take the claim over).
    pub lease_left_ms: Option<u64>,
    /// In flight: how many renewals extended the lease.
    pub renewals: Option<u32>,
    /// In flight: who holds the claim.
    pub holder: Option<HolderView>,
    /// Completed: how many replays were counted (best effort, a lower bound).
    pub replays: Option<u64>,
    /// Completed with a tombstone to come: when that tombstone ends.
    pub tombstone_until: Option<String>,
    /// `tombstone_until` in Unix milliseconds.
    pub tombstone_until_ms: Option<u64>,
    /// Completed: what was recorded, without the body.
    pub response: Option<ResponseView>,
    /// What the first request asked for.
    pub fingerprint: FingerprintView,
}

/// Who holds an in-flight claim: the ids its server saw (`X-Request-Id`, the W3C trace id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HolderView {
    /// The holder's request id, if its request carried one.
    pub request_id: Option<String>,
    /// The holder's trace id, if its request carried one.
    pub trace_id: Option<String>,
}

/// A recorded response, without its body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResponseView {
    /// The HTTP status; 0 for a message consumer's outcome ([`idem_core::StoredOutcome`]).
    pub status: u16,
    /// The body's length in bytes.
    pub body_bytes: usize,
    /// The names of the stored headers, in replay order.
    pub header_names: Vec<String>,
}

/// A fingerprint: its version (1 bytes as sent, 2 semantic) and its SHA-256 digest in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FingerprintView {
    /// [`idem_core::FingerprintVersion::number`].
    pub version: u8,
    /// The 32-byte digest, lower-case hex.
    pub digest: String,
}

/// One page of a listing, in Stripe's list shape plus the cursor for the next page:
/// `{"object":"list","data":[…],"has_more":true,"next_cursor":"…"}`. `next_cursor` is the
/// last record's id when `has_more`, else `null`; pass it as `starting_after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListView {
    /// Always [`LIST_OBJECT`].
    pub object: &'static str,
    /// The records, in (caller, key) order, bytewise.
    pub data: Vec<KeyView>,
    /// Whether more records follow.
    pub has_more: bool,
    /// The id to pass as `starting_after` for the next page, when there is one.
    pub next_cursor: Option<String>,
}

impl ListView {
    /// The page as an operator sees it at `now`.
    #[must_use]
    pub fn new(page: &Page, now: Timestamp) -> ListView {
        let data: Vec<KeyView> = page.records.iter().map(|(id, record)| KeyView::new(id, record, now)).collect();
        let next_cursor = if page.has_more { data.last().map(|view| view.id.clone()) } else { None };
        ListView { object: LIST_OBJECT, data, has_more: page.has_more, next_cursor }
    }
}

impl KeyView {
    /// `id`'s `record` as an operator sees it at `now` (which `expired` and
    /// `lease_left_ms` depend on).
    #[must_use]
    pub fn new(id: &RecordId, record: &Record, now: Timestamp) -> KeyView {
        let forgettable_at = record.forgettable_at();
        let mut view = KeyView {
            object: KEY_OBJECT,
            id: cursor::encode(id),
            caller: (!id.principal.is_anonymous()).then(|| id.principal.as_str().to_owned()),
            key: id.key.as_str().to_owned(),
            state: record.state.name(),
            expired: record.is_expired(now),
            fence: record.fence.get(),
            created_at: rfc3339(record.created_at),
            created_at_ms: record.created_at.unix_ms(),
            expires_at: rfc3339(record.expires_at),
            expires_at_ms: record.expires_at.unix_ms(),
            forgettable_at: rfc3339(forgettable_at),
            forgettable_at_ms: forgettable_at.unix_ms(),
            lease_expires_at: None,
            lease_expires_at_ms: None,
            lease_left_ms: None,
            renewals: None,
            holder: None,
            replays: None,
            tombstone_until: None,
            tombstone_until_ms: None,
            response: None,
            fingerprint: FingerprintView {
                version: record.fingerprint.version().number(),
                digest: hex::encode(record.fingerprint.digest()),
            },
        };
        match &record.state {
            RecordState::InFlight { lease_expires_at, holder, renewals } => {
                view.lease_expires_at = rfc3339(*lease_expires_at);
                view.lease_expires_at_ms = Some(lease_expires_at.unix_ms());
                view.lease_left_ms = Some(millis(now.until(*lease_expires_at)));
                view.renewals = Some(*renewals);
                view.holder = Some(HolderView {
                    request_id: holder.request_id().map(str::to_owned),
                    trace_id: holder.trace_id().map(str::to_owned),
                });
            }
            RecordState::Completed { response, replays, tombstone_until } => {
                view.replays = Some(*replays);
                view.tombstone_until = tombstone_until.and_then(rfc3339);
                view.tombstone_until_ms = tombstone_until.map(Timestamp::unix_ms);
                view.response = Some(ResponseView {
                    status: response.status,
                    body_bytes: response.body.len(),
                    header_names: response.headers.iter().map(|(name, _)| name.clone()).collect(),
                });
            }
            RecordState::Tombstone => {}
        }
        view
    }
}

/// The first second RFC 3339 cannot write (year 10000).
const RFC3339_END_S: u64 = 253_402_300_800;

/// `at` as RFC 3339 in UTC with milliseconds, or `None` past the year 9999 (humantime
/// refuses those, and a time that far out is a saturated "never").
#[must_use]
pub fn rfc3339(at: Timestamp) -> Option<String> {
    if at.unix_ms() / 1000 >= RFC3339_END_S {
        return None;
    }
    let time: SystemTime = UNIX_EPOCH + Duration::from_millis(at.unix_ms());
    Some(humantime::format_rfc3339_millis(time).to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use idem_core::{Fence, Fingerprint, Holder, Key, Principal, StoredResponse};

    use super::*;

    fn id(principal: Principal) -> RecordId {
        RecordId::new(principal, Key::from_chars("k1").expect("valid"))
    }

    fn record(state: RecordState) -> Record {
        Record {
            fingerprint: Fingerprint::of("POST", "/p", b"{}"),
            fence: Fence::new(7),
            created_at: Timestamp::from_unix_ms(1_000),
            expires_at: Timestamp::from_unix_ms(90_000),
            state,
        }
    }

    #[test]
    fn an_in_flight_record_shows_its_lease_holder_and_renewals() {
        // Goal: lease left is counted from `now`, and the holder's ids are shown.
        let state = RecordState::InFlight {
            lease_expires_at: Timestamp::from_unix_ms(11_000),
            holder: Holder::new(Some("req-1"), Some("trace-1")),
            renewals: 2,
        };
        let view =
            KeyView::new(&id(Principal::new("alice").expect("valid")), &record(state), Timestamp::from_unix_ms(3_000));
        assert_eq!(view.caller.as_deref(), Some("alice"));
        assert_eq!((view.state, view.fence, view.expired), ("in_flight", 7, false));
        assert_eq!(view.lease_left_ms, Some(8_000));
        assert_eq!(view.renewals, Some(2));
        let holder = view.holder.expect("in flight has a holder");
        assert_eq!((holder.request_id.as_deref(), holder.trace_id.as_deref()), (Some("req-1"), Some("trace-1")));
        assert_eq!(view.created_at.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!((view.response, view.replays), (None, None));
        assert_eq!(view.fingerprint.version, 1);
        assert_eq!(view.fingerprint.digest.len(), 64);
    }

    #[test]
    fn a_completed_record_shows_the_response_size_never_the_body() {
        // Goal: the body's bytes never appear in the JSON; its length and status do.
        let mut response = StoredResponse::new(201, &b"secret-body-bytes"[..]);
        response.headers.push(("content-type".to_owned(), "application/json".into()));
        let state =
            RecordState::Completed { response, replays: 3, tombstone_until: Some(Timestamp::from_unix_ms(190_000)) };
        let view = KeyView::new(&id(Principal::anonymous()), &record(state), Timestamp::from_unix_ms(100_000));
        assert_eq!(view.caller, None);
        assert_eq!(view.replays, Some(3));
        assert!(!view.expired, "a tombstone to come keeps the record until its end");
        assert_eq!(view.forgettable_at_ms, 190_000);
        assert_eq!(view.tombstone_until_ms, Some(190_000));
        let json = serde_json::to_string(&view).expect("views serialise");
        assert!(!json.contains("secret-body-bytes"), "{json}");
        assert!(
            json.contains(r#""response":{"status":201,"body_bytes":17,"header_names":["content-type"]}"#),
            "{json}"
        );
        assert!(json.contains(r#""caller":null"#) && json.contains(r#""lease_left_ms":null"#), "{json}");
    }

    #[test]
    fn a_lapsed_lease_shows_zero_left_and_an_expired_record_says_so() {
        // Goal: lease left never goes negative; past forgettable_at the record is expired.
        let state = RecordState::InFlight {
            lease_expires_at: Timestamp::from_unix_ms(11_000),
            holder: Holder::NONE,
            renewals: 0,
        };
        let now = Timestamp::from_unix_ms(11_000).saturating_add(Duration::from_secs(200));
        let view = KeyView::new(&id(Principal::anonymous()), &record(state), now);
        assert_eq!(view.lease_left_ms, Some(0));
        assert!(view.expired);
        assert_eq!(view.holder, Some(HolderView { request_id: None, trace_id: None }));
    }

    #[test]
    fn times_past_the_year_9999_are_null_not_a_panic() {
        // Goal: a saturated time serialises as null.
        assert_eq!(rfc3339(Timestamp::from_unix_ms(u64::MAX)), None);
        assert_eq!(
            rfc3339(Timestamp::from_unix_ms(RFC3339_END_S * 1000 - 1)).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339(Timestamp::EPOCH).as_deref(), Some("1970-01-01T00:00:00.000Z"));
    }

    #[test]
    fn a_page_names_its_next_cursor_only_when_more_follow() {
        // Goal: next_cursor is the last id when has_more, else null.
        let record = record(RecordState::Tombstone);
        let first = id(Principal::new("a").expect("valid"));
        let page = Page { records: vec![(first.clone(), record)], has_more: true };
        let view = ListView::new(&page, Timestamp::EPOCH);
        assert_eq!(view.next_cursor, Some(cursor::encode(&first)));
        let last = ListView::new(&Page { has_more: false, ..page }, Timestamp::EPOCH);
        assert_eq!(last.next_cursor, None);
        let json = serde_json::to_value(&last).expect("pages serialise");
        assert_eq!(json["object"], "list");
        assert_eq!(json["data"][0]["state"], "tombstone");
    }
}
