//! Key administration (SPEC "Key lifecycle", issue 22 item 5): what an operator sees of
//! idempotency records, and an opt-in HTTP API to list, show and forget them.
//!
//! Everything here goes through a store's [`idem_core::KeyAdmin`] (list, forget) and
//! [`idem_core::Store::get`] (show); the rules of a listing (filters, order, cursor) are
//! idem-core's [`idem_core::ListQuery`]. Forgetting is fenced: the store moves the fence
//! on, so a handler still running under the forgotten claim can never complete (G3).
//! `idem keys list|show|forget` prints the same JSON as this API answers.
//!
//! # Contents
//!
//! * [`view`]: [`KeyView`] (one record as JSON) and [`ListView`] (a page, Stripe's list shape).
//! * [`params`]: [`ListParams`], a listing's filters as text, and the [`idem_core::ListQuery`] they make.
//! * [`cursor`]: a record's opaque id (`id`, `next_cursor`, `starting_after`).
//! * [`service`]: [`AdminRouter`] / [`admin_service`], the HTTP API, and [`Authorize`], its
//!   required authorisation hook.
//! * [`problems`]: the problems it answers, and [`problems::unauthorized`] /
//!   [`problems::forbidden`] for hooks.
//!
//! # The HTTP API
//!
//! | request | answer |
//! |---|---|
//! | `GET /keys?caller=&state=&older_than=&newer_than=&created_before=&created_after=&limit=&starting_after=` | 200, a [`ListView`] (filters: [`ListParams`]) |
//! | `GET /keys/{caller}/{key}` | 200, a [`KeyView`]; 404 `not-found` if there is no record |
//! | `GET /keys/{id}` | the same, by the record's `id` (the only path for the anonymous caller, whose name is empty) |
//! | `DELETE /keys/{caller}/{key}`, `DELETE /keys/{id}` | forgets the record (fenced): 200 with the [`KeyView`] of the record removed; 404 `not-found` if there was none |
//!
//! Path segments are percent-encoded (`/keys/team%2Fa/k%3F1`). Errors are
//! `application/problem+json` (RFC 9457): 401/403 from the [`Authorize`] hook, 400
//! `invalid-request` (a bad filter, limit outside 1..=100, a bad caller or key),
//! 400 `invalid-cursor` (a `starting_after` this API did not give), 404 `not-found`, 405
//! `method-not-allowed`, 413 `body-too-large` (any declared request body), 414
//! `invalid-request` (a query over [`QUERY_BYTES_MAX`] bytes), 503 `store-unavailable` with
//! `Retry-After`, 500 `store-corrupt`. Answers carry `Cache-Control: no-store`.
//!
//! **There is no router without an authorisation hook.** [`AdminRouter::new`] takes one,
//! and it runs before routing on every request. An API that lists every caller's keys and
//! forgets them must not be reachable by accident; a deployment that truly wants it open
//! writes `|_| Ok(())` where a reviewer can see it.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, StatusCode};
//! use idem_admin::{AdminRouter, problems};
//! use idem_core::{Fingerprint, Key, MemoryStore, Policy, Principal, RecordId, Store, Timestamp};
//! use tower::ServiceExt as _;
//!
//! # futures::executor::block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let id = RecordId::new(Principal::new("alice").unwrap(), Key::from_chars("k1").unwrap());
//! let fingerprint = Fingerprint::of("POST", "/payments", b"{}");
//! store.claim(&id, &fingerprint, Timestamp::from_unix_ms(0), &Policy::default()).await.unwrap();
//!
//! let admin = AdminRouter::new(Arc::clone(&store), |request: &http::request::Parts| {
//!     match request.headers.get("authorization") {
//!         Some(value) if value == "Bearer operator-token" => Ok(()),
//!         _ => Err(problems::unauthorized("the admin API needs the operator's bearer token")),
//!     }
//! })
//! .into_service();
//!
//! let get = |token: &str| {
//!     Request::get("/keys/alice/k1").header("authorization", token).body(String::new()).unwrap()
//! };
//! let refused = admin.clone().oneshot(get("Bearer guess")).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
//! let shown = admin.oneshot(get("Bearer operator-token")).await.unwrap();
//! assert_eq!(shown.status(), StatusCode::OK);
//! # });
//! ```

pub mod cursor;
pub mod params;
pub mod problems;
pub mod service;
pub mod view;

pub use params::{LIMIT_DEFAULT, ListParams, ParamError};
pub use service::{AdminRouter, AdminService, Authorize, QUERY_BYTES_MAX, admin_service};
pub use view::{FingerprintView, HolderView, KeyView, ListView, ResponseView};
