//! The composition root: the app built from injected parts (ledger and its store, clock,
//! id generator, purge schedule, principal extractor), with no I/O of its own.
//!
//! [`AppBuilder`] opens no listener, reads no system clock and draws no OS randomness:
//! whoever builds it passes those in. `idem serve` ([`crate::run`]) passes SQLite or
//! memory, [`idem_core::SystemClock`] and ids seeded once from the OS, then adds a TCP
//! listener and runs [`App::purge_forever`]; the simulations (`sims/`, crate `idem-sim`)
//! pass a store reached over a simulated network, a clock reading simulated time and
//! seeded ids, and serve the very same router on turmoil's TCP.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, StatusCode};
//! use idem_core::{ManualClock, MemoryStore, Timestamp};
//! use idem_server::{AppBuilder, MemoryLedger, PurgeSchedule, SeededIds};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let ledger = Arc::new(MemoryLedger::new(Arc::new(MemoryStore::default()), 1_000));
//! let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000)));
//! let app = AppBuilder::new(ledger, clock, Arc::new(SeededIds::new(7)))
//!     .purge(PurgeSchedule::DEFAULT)
//!     .build()
//!     .unwrap();
//! // `app.purge_forever()` is the purge task, for the caller to spawn on its runtime.
//! let pay = Request::post("/payments").header("idempotency-key", "k1")
//!     .body(axum::body::Body::from(r#"{"amount": 1.00, "currency": "EUR", "destination": "m"}"#)).unwrap();
//! assert_eq!(app.router().oneshot(pay).await.unwrap().status(), StatusCode::CREATED);
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use http::{HeaderValue, StatusCode, header};
use idem_admin::{AdminRouter, AdminService, Authorize};
use idem_core::{Clock, KeyAdmin, Policy, Store};
use idem_http::{ConfigError, ConflictPolicy, PrincipalExtractor};
use tower::ServiceExt;

use crate::app::layered_app;
use crate::bodies::RequestLimits;
use crate::fairness::FairnessLimits;
use crate::ids::IdGenerator;
use crate::ledger::Ledger;
use crate::principal::principal_of;
use crate::state::{AppState, BeforeWriteHook, HandlerWrap};

/// How often expired idempotency records are forgotten, in bounded work per round:
/// idem-http's schedule. The app runs the purge itself ([`App::purge_forever`], which the
/// simulations drive on their clock), so its layer's own purge task is off.
pub use idem_http::PurgeSchedule;

/// Where [`AppBuilder::admin`] mounts the key administration API: `GET /admin/keys`,
/// `GET`/`DELETE /admin/keys/{id}` and `/admin/keys/{caller}/{key}` (idem-admin's routes,
/// which see their paths without this prefix).
pub const ADMIN_PATH: &str = "/admin";

/// Builds an [`App`] from its parts; see the module docs.
#[must_use = "a builder does nothing until `build` is called"]
pub struct AppBuilder<L> {
    state: AppState<L>,
    purge: PurgeSchedule,
    principal: PrincipalExtractor,
    wrap: Option<HandlerWrap<L>>,
    admin: Option<AdminService>,
}

impl<L: Ledger> AppBuilder<L> {
    /// An app over `ledger` (and its idempotency store), reading time from `clock` and ids
    /// from `ids`, with [`AppState::new`]'s defaults, [`PurgeSchedule::DEFAULT`] and the
    /// `Authorization: Bearer` principal ([`principal_of`]).
    pub fn new(ledger: Arc<L>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGenerator>) -> AppBuilder<L> {
        AppBuilder::from_state(AppState::new(ledger, clock, ids))
    }

    /// An app over a state already configured.
    pub fn from_state(state: AppState<L>) -> AppBuilder<L> {
        AppBuilder {
            state,
            purge: PurgeSchedule::DEFAULT,
            principal: Arc::new(|parts: &http::request::Parts| principal_of(&parts.headers)),
            wrap: None,
            admin: None,
        }
    }

    /// Lease and retention of idempotency records.
    pub fn policy(mut self, policy: Policy) -> AppBuilder<L> {
        self.state = self.state.with_policy(policy);
        self
    }

    /// Limits on request bodies: read timeout, bytes buffered at once.
    pub fn request_limits(mut self, limits: RequestLimits) -> AppBuilder<L> {
        self.state = self.state.with_request_limits(limits);
        self
    }

    /// The longest handler response the idempotency layer keeps for replay (default 1 MiB);
    /// see [`AppState::with_response_body_bytes_max`]. The layer refuses 0 at [`Self::build`].
    pub fn response_body_bytes_max(mut self, bytes_max: usize) -> AppBuilder<L> {
        self.state = self.state.with_response_body_bytes_max(bytes_max);
        self
    }

    /// The execution ceiling; see [`AppState::with_execution_max`]. Tombstones come with
    /// the policy ([`idem_core::Policy::with_tombstone`], see [`Self::policy`]).
    pub fn execution_max(mut self, ceiling: std::time::Duration) -> AppBuilder<L> {
        self.state = self.state.with_execution_max(ceiling);
        self
    }

    /// Mounts idem-admin's key administration API (list, show, forget; SPEC "Key
    /// lifecycle") at [`ADMIN_PATH`], over this ledger's idempotency store and the app's
    /// clock, admitting what `authorize` admits (off unless set). It sits beside the API,
    /// not inside it: no idempotency layer, no fairness limit, no body validation and no
    /// request log line of the app's; the HTTP server's connection limits and timeouts
    /// still apply. A 401 carries `WWW-Authenticate: Bearer` (RFC 9110, section 11.6.1).
    pub fn admin(mut self, authorize: impl Authorize) -> AppBuilder<L>
    where
        L::Store: KeyAdmin,
    {
        let store = self.state.ledger().idempotency_store();
        let clock = Arc::clone(self.state.clock());
        self.admin = Some(AdminRouter::new(store, authorize).clock(clock).into_service());
        self
    }

    /// Limits how fast each principal may create new keys (off unless set).
    pub fn fairness(mut self, limits: FairnessLimits) -> AppBuilder<L> {
        self.state = self.state.with_fairness(limits);
        self
    }

    /// What a request gets while the same key is in flight.
    pub fn conflict(mut self, conflict: ConflictPolicy) -> AppBuilder<L> {
        self.state = self.state.with_conflict(conflict);
        self
    }

    /// How [`App::purge_forever`] purges.
    pub fn purge(mut self, purge: PurgeSchedule) -> AppBuilder<L> {
        self.purge = purge;
        self
    }

    /// Who the idempotency layer says is asking (default: [`principal_of`]). Keys are scoped
    /// by it (G4); the simulations' planted bug `unscoped-keys` passes one that ignores the caller.
    pub fn principal(mut self, principal: PrincipalExtractor) -> AppBuilder<L> {
        self.principal = principal;
        self
    }

    /// **Test knob**: the payment handler waits `delay` inside its claim, before its write;
    /// see [`AppState::with_handler_delay`] (zero, the default, waits not at all).
    pub fn handler_delay(mut self, delay: std::time::Duration) -> AppBuilder<L> {
        self.state = self.state.with_handler_delay(delay);
        self
    }

    /// **Test hook**, see [`AppState::with_before_write_hook`].
    pub fn before_write(mut self, hook: BeforeWriteHook) -> AppBuilder<L> {
        self.state = self.state.with_before_write_hook(hook);
        self
    }

    /// **Test hook.** Applies `wrap` to each keyed handler inside the idempotency layer, so
    /// its layers see each handler's own response. `idem serve` never sets it; the
    /// simulations use it to plant an HTTP-layer bug from outside idem-http.
    pub fn wrap_handlers(mut self, wrap: HandlerWrap<L>) -> AppBuilder<L> {
        self.wrap = Some(wrap);
        self
    }

    /// The app.
    ///
    /// # Errors
    /// [`ConfigError`] if the idempotency layer refuses the configuration.
    pub fn build(self) -> Result<App<L>, ConfigError> {
        // A full store frees room at the next purge: that is the store-full 503's Retry-After.
        let state = self.state.with_store_full_retry_after(self.purge.every);
        let mut router = layered_app(state.clone(), self.principal, self.wrap)?;
        if let Some(admin) = self.admin {
            // Added after the app's own layers, so none of them wraps it (axum layers only
            // the routes that exist when `layer` is called). `nest_service` strips the
            // prefix: idem-admin routes `/keys`, and `/admin` alone reaches its 404.
            router = router
                .nest_service(ADMIN_PATH, ServiceExt::<axum::extract::Request>::map_response(admin, challenge_bearer));
        }
        Ok(App { router, state, purge: self.purge })
    }
}

/// Adds `WWW-Authenticate: Bearer` to the admin API's 401s, which a 401 must carry (RFC
/// 9110, section 15.5.2); the hook's problem cannot set headers.
fn challenge_bearer<B>(mut response: http::Response<B>) -> http::Response<B> {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The app built from its parts: the router to serve and the purge task to run.
pub struct App<L> {
    router: Router,
    state: AppState<L>,
    purge: PurgeSchedule,
}

impl<L: Ledger> App<L> {
    /// The router: the API, the idempotency layer, metrics. Serve it on any listener.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The state the handlers share (ledger, clock, metrics).
    #[must_use]
    pub fn state(&self) -> &AppState<L> {
        &self.state
    }

    /// Forgets expired idempotency records every [`PurgeSchedule::every`] on the runtime's
    /// timer, at the app's clock's time, in bounded batches; never returns. Spawn it.
    pub fn purge_forever(&self) -> impl Future<Output = ()> + Send + 'static {
        purge_forever(self.state.ledger().idempotency_store(), Arc::clone(self.state.clock()), self.purge)
    }
}

async fn purge_forever<St: Store>(store: Arc<St>, clock: Arc<dyn Clock>, schedule: PurgeSchedule) {
    let mut every = tokio::time::interval(schedule.every);
    loop {
        every.tick().await;
        idem_http::purge::purge_round(&*store, &*clock, schedule).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use idem_core::{ManualClock, Timestamp};
    use idem_sqlite::{SqliteOptions, SqliteStore};
    use tower::ServiceExt;

    use super::AppBuilder;
    use crate::{SeededIds, SqliteLedger};

    /// A payment request whose 201 body (it echoes the destination) is longer than 300 bytes.
    const LONG: &str = r#"{"amount": 1.00, "currency": "EUR", "destination": "m-LONG"}"#;

    async fn send(router: &axum::Router, request: Request<axum::body::Body>) -> (StatusCode, bool, String) {
        let response = router.clone().oneshot(request).await.expect("the router answers");
        let (status, replayed) = (response.status(), response.headers().contains_key("idempotent-replayed"));
        let body = response.into_body().collect().await.expect("a whole body").to_bytes();
        (status, replayed, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_payment_over_the_recording_limit_is_answered_whole_once_and_stored_once() {
        // Goal: `response_body_bytes_max` reaches the layer, and the shipped atomic ledger
        // (SQLite: the row and the completion in one transaction) keeps SPEC's rule for a
        // response over it: the first answer is the payment, whole; the retry is a
        // response-not-kept problem with the same 201; one payment is stored.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("app.db"))).await.expect("opens"));
        let ledger = Arc::new(SqliteLedger::open(store).await.expect("tables are created"));
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000)));
        let app = AppBuilder::new(ledger, clock, Arc::new(SeededIds::new(7)))
            .response_body_bytes_max(300)
            .build()
            .expect("a valid configuration");
        let router = app.router();
        let body = LONG.replace("LONG", &"x".repeat(250));
        let pay = || {
            Request::post("/payments")
                .header("idempotency-key", "k1")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.clone()))
                .expect("a valid request")
        };

        let (status, replayed, first) = send(&router, pay()).await;
        let (retry_status, retry_replayed, retry) = send(&router, pay()).await;
        let list = Request::get("/payments").body(axum::body::Body::empty()).expect("a valid request");
        let (_, _, listed) = send(&router, list).await;

        assert_eq!((status, replayed), (StatusCode::CREATED, false));
        assert!(first.len() > 300 && first.contains(&"x".repeat(250)), "the payment, whole: {first}");
        assert_eq!((retry_status, retry_replayed), (StatusCode::CREATED, true), "{retry}");
        assert!(retry.contains("response-not-kept"), "the retry is the problem, not the payment: {retry}");
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("a JSON list");
        assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "one payment: {listed}");
    }
}
