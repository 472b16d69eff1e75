//! The demo payments/users API behind `idem serve`, built on idem-http and the stores
//! (idem-sqlite, idem-postgres, idem-redis).
//!
//! | route | does |
//! |---|---|
//! | `POST /payments` | `{"amount": 100.00, "currency": "USD", "destination": "…"}` → 201, the payment and `Location` |
//! | `GET /payments/{id}` | the caller's payment, or 404 |
//! | `GET /payments?limit=N&starting_after=ID` | a page of the caller's payments, newest first, in Stripe's list shape (`limit` 1..=100, default 20; `has_more`) |
//! | `POST /users` | `{"name": "…", "email": "…"}` → 201, the user and `Location` |
//! | `GET /users/{id}` | the caller's user, or 404 |
//! | `GET /users?limit=N&starting_after=ID` | a page of the caller's users, like payments |
//! | `GET /healthz` | readiness: `{"status":"ok"}` after committing a small write; 503 `not-ready` (problem+json) from a failed store write until a real write succeeds ([`readiness`]) |
//! | `GET /livez` | `{"status":"ok"}` while the process answers |
//! | `GET /metrics` | Prometheus text: executions, replays, conflicts, mismatches, store errors, latency by outcome |
//! | `GET /problems` | the documentation of every problem type, one HTML section per slug: each problem's `type` (`/problems#<slug>`) resolves here ([`idem_http::ProblemDocs`], docs/problems.md) |
//!
//! `POST` requests need an `Idempotency-Key` ([`idem_http::IdempotencyLayer`]). The caller
//! is the `Authorization: Bearer <token>` value ([`principal::principal_of`]); keys,
//! payments and users are scoped to it. A body that fails validation is refused with a
//! 400 problem before the key is claimed, so nothing is recorded and the key stays usable;
//! so are a non-JSON body (415), a slow one (408), one past the shared buffer budget (503),
//! a path no route matches (404) and a method the route does not take (405)
//! ([`bodies`], [`mod@app`]). A caller creating new keys past its rate gets 429 ([`fairness`]).
//! The HTTP server's own limits (connections, header-read and idle timeout, drain deadline,
//! HTTP/1.1 only) are [`http_server`]'s.
//!
//! # Which guarantees hold with which store (SPEC "Modes")
//!
//! | store | mode | G1 at most once | G2-G6, G8 | G7 durability |
//! |---|---|---|---|---|
//! | `sqlite://PATH` ([`SqliteLedger`]) | atomic: the payment row and the completion commit in one SQLite transaction | yes, also when a slow handler's lease lapses: its transaction fails the fence check and rolls back | yes | yes (WAL, `synchronous=FULL`) |
//! | `postgres://…[?schema=NAME]` ([`PostgresLedger`]) | atomic: the payment row and the completion commit in one PostgreSQL transaction, for any number of replicas on the database | yes, also across replicas and lapsed leases | yes | yes (PostgreSQL's default `fsync`, `synchronous_commit=on`) |
//! | `redis://…[?prefix=NAME]` with `--db sqlite://…` or `postgres://…` ([`SeparateLedger`]) | separate: payments in the database, records in Redis, the layer completes after the handler | only while each holder keeps its lease and does not crash between payment and completion, and Redis keeps its records | yes | only with Redis persistence (`appendonly yes`, `appendfsync always`); without it a Redis restart forgets every record and retries execute again |
//! | `memory://` ([`MemoryLedger`]) | separate: the layer completes after the handler | only while handlers finish within their lease: a lapsed lease lets a retry run the handler again (its stale completion is refused, G3) | yes | no: a restart forgets everything |
//!
//! # Ready for simulation: the composition root
//!
//! [`AppBuilder`] ([`compose`]) builds the [`App`] (router and purge task) from injected
//! parts: a [`Ledger`] and its store, a clock, an id generator, a purge schedule, a principal
//! extractor. No listener ([`serve()`] takes any axum listener), no system clock, no OS
//! seeding inside: [`run`] (what `idem serve` calls) adds those, and the simulations
//! (`idem-sim`) add turmoil's TCP and simulated time, so a simulated replica is the shipped
//! router and layer. [`app()`] is the same router from an [`AppState`]. On the request path, time comes
//! from the state's [`idem_core::Clock`] and ids from its [`IdGenerator`]; nothing reads
//! `std::time` or OS randomness (latency metrics use tokio's clock, which turmoil
//! drives), and no behaviour depends on a hash map's iteration order.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, StatusCode};
//! use idem_core::{ManualClock, MemoryStore, Timestamp};
//! use idem_server::{AppState, MemoryLedger, SeededIds, app};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let ledger = Arc::new(MemoryLedger::new(Arc::new(MemoryStore::default()), 1_000));
//! let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000)));
//! let router = app(AppState::new(ledger, clock, Arc::new(SeededIds::new(1)))).unwrap();
//!
//! let pay = || Request::post("/payments").header("idempotency-key", "k1")
//!     .body(axum::body::Body::from(r#"{"amount": 100.00, "currency": "USD", "destination": "m"}"#)).unwrap();
//! let first = router.clone().oneshot(pay()).await.unwrap();
//! let retry = router.oneshot(pay()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(first.headers()["location"], retry.headers()["location"]);
//! # });
//! ```
//!
//! # Feature flags
//!
//! None: idem-server has no cargo features. Every store it can run on (SQLite, PostgreSQL,
//! Redis) is always compiled in; which one runs is chosen at run time ([`StoreSpec`],
//! [`DbSpec`]).
//!
//! # Contents
//!
//! * [`compose`]: [`AppBuilder`], [`App`], [`PurgeSchedule`]: the composition root.
//! * [`app`](mod@app): [`app()`], [`bare_app`], [`AppState`]: the router; its handlers, health
//!   endpoints and shared answers are private modules beside it. [`bodies`]: `POST` bodies.
//! * [`ledger`]: [`Ledger`], [`LedgerError`], [`Page`]; [`sqlite_ledger`]: [`SqliteLedger`];
//!   [`memory_ledger`]: [`MemoryLedger`]; [`postgres_ledger`]: [`PostgresLedger`];
//!   [`separate_ledger`]: [`SeparateLedger`].
//! * [`domain`]: request validation and the JSON answered.
//! * [`ids`]: [`IdGenerator`], [`SeededIds`]. [`time`]: RFC 3339 from a timestamp.
//! * [`principal`]: the caller. [`metrics`]: [`Metrics`]. [`readiness`]: [`Readiness`], what `/healthz` answers.
//! * [`serve`](mod@serve): [`run`], [`ServerConfig`], [`StoreSpec`], [`DbSpec`], [`serve::AdminToken`].
//!   [`http_server`]: [`serve()`], [`ServerLimits`].

mod admin_token;
mod answers;
pub mod app;
pub mod bodies;
pub mod compose;
pub mod domain;
pub mod fairness;
mod handlers;
mod health;
pub mod http_server;
pub mod ids;
pub mod ledger;
mod ledger_error;
pub mod memory_ledger;
pub mod metrics;
mod page;
pub mod postgres_ledger;
pub mod principal;
pub mod readiness;
mod rows;
pub mod separate_ledger;
pub mod serve;
mod serve_error;
mod server_config;
pub mod sqlite_ledger;
mod state;
mod store_spec;
pub mod time;

pub use app::{AppState, BeforeWriteHook, HANDLER_DELAY_MAX, HandlerWrap, RequestLimits, app, bare_app};
pub use compose::{App, AppBuilder, PurgeSchedule};
pub use fairness::FairnessLimits;
pub use http_server::{Drained, ServerLimits, serve, serve_with_limits};
/// The bugs `idem serve --plant-bug` can plant in the PostgreSQL store (idem-postgres's).
pub use idem_postgres::{PlantedBug, UnknownPlantedBug};
pub use ids::{IdGenerator, SeededIds};
pub use ledger::{Ledger, LedgerError, Page, PageRequest};
pub use memory_ledger::MemoryLedger;
pub use metrics::Metrics;
pub use postgres_ledger::PostgresLedger;
pub use readiness::Readiness;
pub use separate_ledger::SeparateLedger;
pub use serve::{DbSpec, PostgresUrl, ServeError, ServerConfig, SqliteTuning, StoreSpec, StoreSpecError, run};
pub use sqlite_ledger::SqliteLedger;
