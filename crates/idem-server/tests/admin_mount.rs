//! The key administration API as `idem serve --admin-token-file` mounts it
//! ([`AppBuilder::admin`] with an [`AdminToken`]): under `/admin` with the prefix stripped,
//! for exactly one matching `Authorization: Bearer` header, beside the API and outside its
//! idempotency layer. In process (the router itself) on a memory store and a manual clock;
//! crates/idem-cli/tests/serve_lifecycle.rs drives the same over real HTTP.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use idem_core::{ManualClock, MemoryStore, Timestamp};
use idem_server::serve::AdminToken;
use idem_server::{AppBuilder, MemoryLedger, SeededIds};
use tower::ServiceExt as _;

const OPERATOR: &str = "operator-token-0123";
const PAYMENT: &str = r#"{"amount": 1.00, "currency": "EUR", "destination": "m"}"#;

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: serde_json::Value,
}

fn app(with_admin: bool) -> axum::Router {
    let ledger = Arc::new(MemoryLedger::new(Arc::new(MemoryStore::default()), 1_000));
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000)));
    let builder = AppBuilder::new(ledger, clock, Arc::new(SeededIds::new(7)));
    let builder = if with_admin {
        let token = AdminToken::new(OPERATOR.as_bytes());
        builder.admin(move |request: &http::request::Parts| token.admit(request))
    } else {
        builder
    };
    builder.build().expect("a valid configuration").router()
}

async fn send(router: &axum::Router, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(axum::body::Body::from(body.to_owned())).expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.expect("a whole body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, headers, body }
}

async fn pay(router: &axum::Router, key: &str) -> Answer {
    let headers = [("idempotency-key", key), ("authorization", "Bearer alice"), ("content-type", "application/json")];
    send(router, Method::POST, "/payments", &headers, PAYMENT).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn admin_routes_answer_under_admin_with_the_prefix_stripped() {
    // Goal: `nest_service("/admin", ..)` hands idem-admin its own paths: /admin/keys lists,
    // /admin/keys/{id} and /admin/keys/{caller}/{key} show, /admin and /admin/other reach
    // the admin API's own 404, and a path that only starts with "/admin" is the app's.
    let router = app(true);
    assert_eq!(pay(&router, "k1").await.status, StatusCode::CREATED);
    let operator = bearer(OPERATOR);
    let auth = [("authorization", operator.as_str())];

    let listed = send(&router, Method::GET, "/admin/keys", &auth, "").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let data = listed.body["data"].as_array().expect("a list");
    assert_eq!(data.len(), 1, "{}", listed.body);
    assert_eq!(data[0]["key"], "k1");
    let (id, caller) = (data[0]["id"].as_str().expect("an id"), data[0]["caller"].as_str().expect("a named caller"));

    let by_id = send(&router, Method::GET, &format!("/admin/keys/{id}"), &auth, "").await;
    let by_name = send(&router, Method::GET, &format!("/admin/keys/{caller}/k1"), &auth, "").await;
    assert_eq!((by_id.status, by_name.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!((&by_id.body["key"], &by_id.body["state"]), (&"k1".into(), &"completed".into()));
    assert_eq!(by_id.body, by_name.body);

    for path in ["/admin", "/admin/", "/admin/other"] {
        let missing = send(&router, Method::GET, path, &auth, "").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        let detail = missing.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("the admin API serves /keys"), "{path}: idem-admin's own 404: {}", missing.body);
    }
    let not_admin = send(&router, Method::GET, "/administrator/keys", &auth, "").await;
    assert_eq!(not_admin.status, StatusCode::NOT_FOUND);
    let detail = not_admin.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no route for GET /administrator/keys"), "the app's 404: {}", not_admin.body);
}

#[tokio::test]
async fn admin_requires_exactly_one_bearer_header_with_the_token() {
    // Goal: only one `Authorization: Bearer <token>` with the operator's token is admitted
    // (the scheme's case aside, RFC 9110); anything else is a 401 `unauthorized` problem
    // with `WWW-Authenticate: Bearer`, whose detail never echoes what was sent.
    let router = app(true);
    let longer = bearer(&format!("{OPERATOR}x"));
    let shorter = bearer(&OPERATOR[..OPERATOR.len() - 1]);
    let right = bearer(OPERATOR);
    let refused: [&[(&str, &str)]; 6] = [
        &[],
        &[("authorization", longer.as_str())],
        &[("authorization", shorter.as_str())],
        &[("authorization", "Basic b3BlcmF0b3I6dG9rZW4=")],
        &[("authorization", "Bearer")],
        &[("authorization", right.as_str()), ("authorization", right.as_str())],
    ];
    for headers in refused {
        let answer = send(&router, Method::GET, "/admin/keys", headers, "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(answer.headers.get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]), "{headers:?}");
        assert_eq!(answer.headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/problem+json"[..]));
        let kind = answer.body["type"].as_str().unwrap_or_default();
        assert!(kind.ends_with("unauthorized"), "{headers:?}: {}", answer.body);
        assert!(!answer.body.to_string().contains(OPERATOR), "{}", answer.body);
    }
    let lower_scheme = format!("bearer {OPERATOR}");
    for admitted in [right.as_str(), lower_scheme.as_str()] {
        let answer = send(&router, Method::GET, "/admin/keys", &[("authorization", admitted)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{admitted}: {}", answer.body);
        assert!(answer.headers.get("www-authenticate").is_none());
    }
}

#[tokio::test]
async fn a_forget_with_a_key_header_passes_no_idempotency_layer_and_frees_the_key() {
    // Goal: admin requests are outside the idempotency layer (an `Idempotency-Key` on a
    // DELETE records nothing and gets no expiry header), and a forget frees the key: the
    // same payment then runs again as a new one.
    let router = app(true);
    let first = pay(&router, "k1").await;
    let operator = bearer(OPERATOR);
    let listed = send(&router, Method::GET, "/admin/keys", &[("authorization", &operator)], "").await;
    let id = listed.body["data"][0]["id"].as_str().expect("one record").to_owned();

    let headers = [("authorization", operator.as_str()), ("idempotency-key", "admin-delete")];
    let forgot = send(&router, Method::DELETE, &format!("/admin/keys/{id}"), &headers, "").await;
    assert_eq!(forgot.status, StatusCode::OK, "{}", forgot.body);
    assert!(forgot.headers.get("idempotency-expires").is_none(), "not a keyed answer: {:?}", forgot.headers);
    let after = send(&router, Method::GET, "/admin/keys", &[("authorization", &operator)], "").await;
    assert_eq!(after.body["data"].as_array().map(Vec::len), Some(0), "nothing recorded: {}", after.body);

    let again = pay(&router, "k1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.headers.get("idempotent-replayed").is_none(), "a new execution");
    assert_ne!(first.body["payment_id"], again.body["payment_id"], "a second payment");
}

#[tokio::test]
async fn without_admin_nothing_is_mounted() {
    // Goal: an app built without `admin` answers /admin/keys with its ordinary 404, even
    // to a bearer token.
    let router = app(false);
    let answer = send(&router, Method::GET, "/admin/keys", &[("authorization", &bearer(OPERATOR))], "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no route for GET /admin/keys"), "{}", answer.body);
}
