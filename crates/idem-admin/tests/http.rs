//! The admin API over real HTTP (hyper on loopback), on idem-core's MemoryStore and on a
//! real SQLite file: paging, filters, show, fenced forget, authorisation, bad input.
//! Every expectation is derived from the records the test put in, never from the API.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use idem_core::{Fenced, Holder, KeyAdmin, ManualClock, MemoryStore, Renewal, Store, Timestamp};
use idem_sqlite::{SqliteOptions, SqliteStore};
use support::{
    READ_ONLY_TOKEN, START, TOKEN, claim, complete, delete, fingerprint, get, id, policy, segment, send_with, serve,
};

fn at(seconds: i64) -> Timestamp {
    let ms = START.unix_ms().saturating_add_signed(seconds * 1000);
    Timestamp::from_unix_ms(ms)
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let options = SqliteOptions::new(dir.path().join("idem.db"));
    Arc::new(SqliteStore::open(options).await.expect("a SQLite store opens in a temporary directory"))
}

/// (caller, key) of each record of a JSON page, in the page's order.
fn ids_of(page: &serde_json::Value) -> Vec<(String, String)> {
    let data = page["data"].as_array().expect("a page has data");
    data.iter()
        .map(|view| (view["caller"].as_str().unwrap_or("").to_owned(), view["key"].as_str().expect("a key").to_owned()))
        .collect()
}

fn pairs(ids: &[(&str, &str)]) -> Vec<(String, String)> {
    ids.iter().map(|(caller, key)| ((*caller).to_owned(), (*key).to_owned())).collect()
}

// ---- paging -------------------------------------------------------------------------

async fn paging_walks_every_record_once_in_order<S: KeyAdmin + 'static>(store: Arc<S>) {
    let callers = ["", "alice", "bob"];
    let keys = ["k1", "k10", "k2", "K3", "k-4", "k_5", "k~6", "k.7"];
    let mut expected = Vec::new();
    for caller in callers {
        for key in keys.iter().take(if caller == "bob" { 9 } else { 8 }) {
            claim(&*store, &id(caller, key), START, Holder::NONE).await;
            expected.push((caller.to_owned(), (*key).to_owned()));
        }
    }
    // The order is (principal, key) bytewise, the anonymous caller (empty name) first.
    expected.sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes())));
    let addr = serve(store, ManualClock::new(START)).await;

    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        pages += 1;
        assert!(pages <= 4, "24 records in pages of 10 take 3 pages");
        let path = match &cursor {
            Some(cursor) => format!("/keys?limit=10&starting_after={cursor}"),
            None => "/keys?limit=10".to_owned(),
        };
        let page = get(addr, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_eq!(page.content_type, "application/json");
        assert_eq!(page.json["object"], "list");
        let data = page.json["data"].as_array().expect("data").clone();
        seen.extend(ids_of(&page.json));
        if page.json["has_more"] == true {
            assert_eq!(data.len(), 10);
            assert_eq!(page.json["next_cursor"], data[9]["id"], "the cursor is the last record's id");
            cursor = Some(page.json["next_cursor"].as_str().expect("a cursor").to_owned());
        } else {
            assert!(page.json["next_cursor"].is_null(), "{:?}", page.json);
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "every record once, in order");

    let default_page = get(addr, "/keys").await;
    assert_eq!(ids_of(&default_page.json), expected[..10].to_vec(), "the default limit is 10");
    let anonymous = get(addr, "/keys?caller=&limit=100").await;
    assert_eq!(ids_of(&anonymous.json), expected[..8].to_vec(), "caller= (empty) is the anonymous caller");
    assert!(anonymous.json["data"][0]["caller"].is_null(), "the anonymous caller shows as null");
}

#[tokio::test]
async fn paging_walks_every_record_once_in_order_memory() {
    // Goal: cursors walk a listing longer than a page without loss, repeat or reorder.
    paging_walks_every_record_once_in_order(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn paging_walks_every_record_once_in_order_sqlite() {
    // Goal: the same over a real SQLite file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite(&dir).await;
    paging_walks_every_record_once_in_order(Arc::clone(&store)).await;
    store.close().await;
}

// ---- filters ------------------------------------------------------------------------

async fn each_filter_selects_only_its_records<S: KeyAdmin + 'static>(store: Arc<S>) {
    // bob/b1: completed two hours before START with a day of tombstone, shrunk at START.
    let tombstoning = policy().with_tombstone(Duration::from_secs(24 * 3600)).expect("valid");
    complete(&*store, &id("bob", "b1"), at(-7200), &tombstoning, "{}").await;
    assert_eq!(store.purge_expired(START, 10).await.expect("purge"), 1, "b1 shrinks to its tombstone");
    claim(&*store, &id("alice", "a1"), START, Holder::NONE).await;
    complete(&*store, &id("alice", "a2"), at(60), &policy(), "{}").await;
    claim(&*store, &id("", "n1"), at(120), Holder::NONE).await;
    let addr = serve(store, ManualClock::new(at(180))).await;

    let listed = async |query: &str| {
        let page = get(addr, &format!("/keys?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {page:?}");
        ids_of(&page.json)
    };
    let (a1, a2, b1, n1) = (("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("", "n1"));
    assert_eq!(listed("").await, pairs(&[n1, a1, a2, b1]));
    assert_eq!(listed("state=in_flight").await, pairs(&[n1, a1]));
    assert_eq!(listed("state=completed").await, pairs(&[a2]));
    assert_eq!(listed("state=tombstone").await, pairs(&[b1]));
    assert_eq!(listed("caller=alice").await, pairs(&[a1, a2]));
    assert_eq!(listed("caller=").await, pairs(&[n1]));
    assert_eq!(listed("caller=bob&state=completed").await, pairs(&[]));
    // Ages count back from the admin clock (START + 180 s): 150 s ago is START + 30 s.
    assert_eq!(listed("older_than=150s").await, pairs(&[a1, b1]));
    assert_eq!(listed("newer_than=150s").await, pairs(&[n1, a2]));
    assert_eq!(listed("older_than=150s&newer_than=3h").await, pairs(&[a1, b1]));
    assert_eq!(listed("older_than=150s&newer_than=1h").await, pairs(&[a1]));
    // Absolute bounds: before is exclusive, after inclusive; RFC 3339 or Unix ms.
    assert_eq!(listed("created_before=2026-12-07T21:01:00Z").await, pairs(&[a1, b1]));
    assert_eq!(listed(&format!("created_after={}", at(60).unix_ms())).await, pairs(&[n1, a2]));
    assert_eq!(listed("state=in_flight&limit=1").await, pairs(&[n1]));
}

#[tokio::test]
async fn each_filter_selects_only_its_records_memory() {
    // Goal: caller, state and age filters each admit exactly the records they name.
    each_filter_selects_only_its_records(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn each_filter_selects_only_its_records_sqlite() {
    // Goal: the same over a real SQLite file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite(&dir).await;
    each_filter_selects_only_its_records(Arc::clone(&store)).await;
    store.close().await;
}

// ---- show ---------------------------------------------------------------------------

async fn show_names_holder_renewals_lease_and_replays<S: KeyAdmin + 'static>(store: Arc<S>) {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let odd = id("team/a b", "k?1/x");
    let fence = claim(&*store, &odd, START, Holder::new(Some("req-42"), Some(trace))).await;
    for renewed_at in [3, 6] {
        let renewal = store.renew(&odd, fence, at(renewed_at), &policy()).await.expect("renew");
        assert!(matches!(renewal, Renewal::Renewed { .. }), "{renewal:?}");
    }
    complete(&*store, &id("", "paid"), START, &policy(), "{\"payment_id\":\"pay_1\"}").await;
    for _ in 0..2 {
        assert!(store.count_replay(&id("", "paid"), at(1)).await.expect("count"), "a replay is counted");
    }
    let addr = serve(store, ManualClock::new(at(10))).await;

    let shown = get(addr, &format!("/keys/{}/{}", segment("team/a b"), segment("k?1/x"))).await;
    assert_eq!(shown.status, StatusCode::OK, "{shown:?}");
    assert_eq!(shown.headers["cache-control"], "no-store");
    let view = &shown.json;
    assert_eq!(
        (view["object"].as_str(), view["caller"].as_str(), view["key"].as_str()),
        (Some("idempotency_key"), Some("team/a b"), Some("k?1/x"))
    );
    assert_eq!(
        (view["state"].as_str(), view["fence"].as_u64(), view["expired"].as_bool()),
        (Some("in_flight"), Some(fence.get()), Some(false))
    );
    assert_eq!(view["holder"], serde_json::json!({"request_id": "req-42", "trace_id": trace}));
    assert_eq!(view["renewals"], 2);
    // The last renewal at START + 6 s runs the 10 s lease to START + 16 s; the clock says START + 10 s.
    assert_eq!(view["lease_expires_at_ms"], at(16).unix_ms());
    assert_eq!(view["lease_left_ms"], 6_000);
    assert_eq!(view["created_at"], "2026-12-07T21:00:00.000Z");
    assert_eq!(view["created_at_ms"], START.unix_ms());
    assert_eq!(view["fingerprint"]["version"], 1);
    assert_eq!(view["fingerprint"]["digest"], hex::encode(fingerprint().digest()));
    assert!(view["response"].is_null() && view["replays"].is_null());

    // The anonymous caller's record is reached by its id, taken from the listing.
    let listed = get(addr, "/keys?caller=").await;
    let record_id = listed.json["data"][0]["id"].as_str().expect("an id").to_owned();
    let paid = get(addr, &format!("/keys/{record_id}")).await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    assert!(paid.json["caller"].is_null());
    assert_eq!((paid.json["state"].as_str(), paid.json["replays"].as_u64()), (Some("completed"), Some(2)));
    assert_eq!(paid.json["response"], serde_json::json!({"status": 201, "body_bytes": 22, "header_names": []}));
    assert!(paid.json["holder"].is_null() && paid.json["lease_left_ms"].is_null());
    assert_eq!(paid.json["expires_at_ms"], at(3600).unix_ms(), "retention runs from the completion");

    let absent = get(addr, "/keys/alice/nothing").await;
    assert_eq!((absent.status, absent.slug()), (StatusCode::NOT_FOUND, "not-found"));
}

#[tokio::test]
async fn show_names_holder_renewals_lease_and_replays_memory() {
    // Goal: show gives state, fence, lease left, renewals, replays, expiry and the holder's ids.
    show_names_holder_renewals_lease_and_replays(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn show_names_holder_renewals_lease_and_replays_sqlite() {
    // Goal: the same over a real SQLite file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite(&dir).await;
    show_names_holder_renewals_lease_and_replays(Arc::clone(&store)).await;
    store.close().await;
}

// ---- forget -------------------------------------------------------------------------

async fn forget_moves_the_fence_so_the_old_claim_cannot_complete<S: KeyAdmin + 'static>(store: Arc<S>) {
    let running = id("alice", "k-forget");
    let fence = claim(&*store, &running, START, Holder::new(Some("req-7"), None)).await;
    complete(&*store, &id("", "anon"), START, &policy(), "{}").await;
    let addr = serve(Arc::clone(&store), ManualClock::new(at(1))).await;

    let refused = send_with(addr, Method::DELETE, "/keys/alice/k-forget", Some(READ_ONLY_TOKEN), "").await;
    assert_eq!((refused.status, refused.slug()), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(store.get(&running).await.expect("get").is_some(), "a refused forget removes nothing");

    let forgotten = delete(addr, "/keys/alice/k-forget").await;
    assert_eq!(forgotten.status, StatusCode::OK, "{forgotten:?}");
    assert_eq!(
        (forgotten.json["state"].as_str(), forgotten.json["fence"].as_u64()),
        (Some("in_flight"), Some(fence.get()))
    );
    assert_eq!(forgotten.json["holder"]["request_id"], "req-7", "the answer is the record removed");
    assert_eq!(get(addr, "/keys/alice/k-forget").await.status, StatusCode::NOT_FOUND);

    // G3: the handler still running under the forgotten claim cannot complete.
    let late = store.complete(&running, fence, idem_core::StoredResponse::new(201, "late"), at(2), &policy()).await;
    assert!(matches!(late, Ok(Fenced::Refused(_))), "{late:?}");
    assert!(store.get(&running).await.expect("get").is_none(), "the refused completion wrote nothing");
    let retried = claim(&*store, &running, at(3), Holder::NONE).await;
    assert!(retried > fence, "the next claim's fence {retried:?} is past the forgotten one {fence:?}");

    let again = delete(addr, "/keys/alice/nothing-here").await;
    assert_eq!((again.status, again.slug()), (StatusCode::NOT_FOUND, "not-found"));

    // The anonymous caller's record is forgotten by its id.
    let listed = get(addr, "/keys?caller=").await;
    let anon_id = listed.json["data"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(delete(addr, &format!("/keys/{anon_id}")).await.json["state"], "completed");
    assert_eq!(delete(addr, &format!("/keys/{anon_id}")).await.status, StatusCode::NOT_FOUND);
    assert!(store.get(&id("", "anon")).await.expect("get").is_none());
}

#[tokio::test]
async fn forget_moves_the_fence_so_the_old_claim_cannot_complete_memory() {
    // Goal: DELETE forgets through KeyAdmin::forget, so the old claim's completion is refused (G3).
    forget_moves_the_fence_so_the_old_claim_cannot_complete(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn forget_moves_the_fence_so_the_old_claim_cannot_complete_sqlite() {
    // Goal: the same over a real SQLite file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite(&dir).await;
    forget_moves_the_fence_so_the_old_claim_cannot_complete(Arc::clone(&store)).await;
    store.close().await;
}

// ---- authorisation and bad input ----------------------------------------------------

#[tokio::test]
async fn unauthorised_requests_are_refused_before_routing() {
    // Goal: without the hook's consent nothing is read, nothing is forgotten, and not even
    // the routes are revealed.
    let store = Arc::new(MemoryStore::default());
    claim(&*store, &id("alice", "k1"), START, Holder::NONE).await;
    let addr = serve(Arc::clone(&store), ManualClock::new(START)).await;
    for (method, path, token) in [
        (Method::GET, "/keys", None),
        (Method::GET, "/keys/alice/k1", Some("Bearer guess")),
        (Method::DELETE, "/keys/alice/k1", None),
        (Method::DELETE, "/keys/alice/k1", Some("Bearer guess")),
        (Method::GET, "/no-such-route", None),
        (Method::POST, "/keys", None),
    ] {
        let answer = send_with(addr, method.clone(), path, token, "").await;
        assert_eq!((answer.status, answer.slug()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{method} {path}");
        assert_eq!(answer.json["status"], 401);
    }
    assert!(store.get(&id("alice", "k1")).await.expect("get").is_some(), "nothing was forgotten");
    let read_only = send_with(addr, Method::GET, "/keys/alice/k1", Some(READ_ONLY_TOKEN), "").await;
    assert_eq!(read_only.status, StatusCode::OK, "the hook decides per request");
}

#[tokio::test]
async fn bad_cursors_limits_and_filters_are_400_problems() {
    // Goal: every malformed request is a problem+json naming what is wrong, never a 500,
    // a panic or a silently ignored filter.
    let store = Arc::new(MemoryStore::default());
    claim(&*store, &id("alice", "k1"), START, Holder::NONE).await;
    let addr = serve(store, ManualClock::new(START)).await;
    let no_separator = hex::encode("alicek1");
    for (path, slug) in [
        ("/keys?starting_after=zz".to_owned(), "invalid-cursor"),
        (format!("/keys?starting_after={no_separator}"), "invalid-cursor"),
        ("/keys?limit=0".to_owned(), "invalid-request"),
        ("/keys?limit=101".to_owned(), "invalid-request"),
        ("/keys?limit=ten".to_owned(), "invalid-request"),
        ("/keys?stat=completed".to_owned(), "invalid-request"),
        ("/keys?state=done".to_owned(), "invalid-request"),
        ("/keys?older_than=soon".to_owned(), "invalid-request"),
        ("/keys?older_than=1s&created_before=5".to_owned(), "invalid-request"),
        ("/keys?caller=a%07b".to_owned(), "invalid-request"),
        ("/keys/zz".to_owned(), "invalid-request"),
        ("/keys/a%07b/k1".to_owned(), "invalid-request"),
        ("/keys/alice/k%201".to_owned(), "invalid-request"),
    ] {
        let answer = get(addr, &path).await;
        assert_eq!((answer.status, answer.slug()), (StatusCode::BAD_REQUEST, slug), "{path}: {:?}", answer.json);
    }
    let limit = get(addr, "/keys?limit=101").await;
    assert!(limit.json["detail"].as_str().expect("a detail").contains("limit"), "{:?}", limit.json);

    let with_body = send_with(addr, Method::GET, "/keys", Some(TOKEN), "{}").await;
    assert_eq!((with_body.status, with_body.slug()), (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large"));
    let long = get(addr, &format!("/keys?caller={}", "a".repeat(idem_admin::QUERY_BYTES_MAX))).await;
    assert_eq!((long.status, long.slug()), (StatusCode::URI_TOO_LONG, "invalid-request"));
    let post = send_with(addr, Method::POST, "/keys", Some(TOKEN), "").await;
    assert_eq!((post.status, post.slug()), (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"));
    let nowhere = get(addr, "/keys/a/b/c").await;
    assert_eq!((nowhere.status, nowhere.slug()), (StatusCode::NOT_FOUND, "not-found"));
}

#[tokio::test]
async fn an_unreachable_store_is_a_503_with_retry_after() {
    // Goal: a store failure is 503 store-unavailable with Retry-After, not a 500 or a hang.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite(&dir).await;
    store.close().await;
    let addr = serve(store, ManualClock::new(START)).await;
    for answer in [get(addr, "/keys").await, get(addr, "/keys/alice/k1").await, delete(addr, "/keys/alice/k1").await] {
        assert_eq!(
            (answer.status, answer.slug()),
            (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            "{answer:?}"
        );
        assert!(answer.headers.contains_key("retry-after"));
    }
}
