//! The application: routes, handlers and middleware, built from an [`AppState`] alone (no
//! listener, no concrete store), so the same app runs on TCP, in tests and in simulations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use idem_core::{Clock, Key, Policy, Principal};
use idem_http::problem::{Origin, PROBLEM_TYPE_BASE, types};
use idem_http::problem_docs::PROBLEM_DOCS_PATH;
use idem_http::{
    ClaimContext, CompletedInTransaction, ConfigError, ConflictPolicy, IDEMPOTENCY_KEY, IdempotencyLayer, Outcome,
    PrincipalExtractor, Problem, ProblemDocs,
};

use crate::bodies::{BodyBudget, Valid, validate_bodies};
use crate::domain::{NewPayment, NewUser, Payment, PaymentStatus, User, ValidationError};
use crate::fairness::{Fairness, FairnessLimits, limit_new_keys};
use crate::ids::{IdGenerator, IdKind, fresh_id};
use crate::ledger::{Completion, LIST_LIMIT_MAX, Ledger, LedgerError, Page, PageRequest, Written};
use crate::metrics::Metrics;
use crate::principal::principal_of;
use crate::readiness::{Readiness, claim_probe};

pub use crate::bodies::{BODY_BYTES_MAX, RequestLimits};
/// Payments listed by `GET /payments` when `limit` is not given.
pub const LIST_LIMIT_DEFAULT: usize = 20;

/// The longest [`AppState::with_handler_delay`] (`idem serve --handler-delay`): a test knob
/// holds a claim for a test's fault to land in, never for minutes.
pub const HANDLER_DELAY_MAX: Duration = Duration::from_secs(60);

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A hook that the payment and user handlers await after building their row and before
/// writing it. Test-only: see [`AppState::with_before_write_hook`].
pub type BeforeWriteHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A function applied to each keyed handler inside the idempotency layer (so its layers
/// see what the handler answers before the idempotency layer does). Test-only: see
/// [`crate::AppBuilder::wrap_handlers`].
pub type HandlerWrap<L> = Arc<dyn Fn(MethodRouter<AppState<L>>) -> MethodRouter<AppState<L>> + Send + Sync>;

/// Everything the handlers use. Cloning is cheap (shared pointers).
pub struct AppState<L> {
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    metrics: Arc<Metrics>,
    policy: Policy,
    conflict: ConflictPolicy,
    before_write: Option<BeforeWriteHook>,
    /// How long the payment handler waits inside its claim before its write (test knob).
    handler_delay: Duration,
    bodies: BodyBudget,
    fairness: Option<Fairness>,
    /// Every keyed request's work, also after its client went away: awaited at shutdown.
    tracker: tokio_util::task::TaskTracker,
    /// The store-full 503's `Retry-After`: when the next purge may free room.
    store_full_retry_after: Duration,
    /// The layer's recording limit on handler responses (`None`: idem-http's default).
    response_body_bytes_max: Option<usize>,
    /// The layer's execution ceiling (`None`: renew for as long as the handler runs).
    execution_max: Option<Duration>,
    /// What the `metrics` facade recorded (idem-http's own metrics), if a Prometheus
    /// recorder is installed in this process.
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Down from a failed store write until a real write succeeds ([`crate::readiness`]).
    readiness: Arc<Readiness>,
}

impl<L> Clone for AppState<L> {
    fn clone(&self) -> Self {
        AppState {
            ledger: Arc::clone(&self.ledger),
            clock: Arc::clone(&self.clock),
            ids: Arc::clone(&self.ids),
            metrics: Arc::clone(&self.metrics),
            policy: self.policy,
            conflict: self.conflict,
            before_write: self.before_write.clone(),
            handler_delay: self.handler_delay,
            bodies: self.bodies.clone(),
            fairness: self.fairness.clone(),
            tracker: self.tracker.clone(),
            store_full_retry_after: self.store_full_retry_after,
            response_body_bytes_max: self.response_body_bytes_max,
            execution_max: self.execution_max,
            prometheus: self.prometheus.clone(),
            readiness: Arc::clone(&self.readiness),
        }
    }
}

impl<L: Ledger> AppState<L> {
    /// State with SPEC's defaults ([`Policy::DEFAULT`]: a 10 s lease, renewed by the layer
    /// while a handler runs, and 24 h retention), 409 on conflicts, fresh metrics.
    /// Time comes from `clock` and ids from `ids`, for the layer and the handlers alike.
    #[must_use]
    pub fn new(ledger: Arc<L>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGenerator>) -> AppState<L> {
        AppState {
            ledger,
            clock,
            ids,
            metrics: Arc::new(Metrics::default()),
            policy: Policy::DEFAULT,
            conflict: ConflictPolicy::Reject,
            before_write: None,
            handler_delay: Duration::ZERO,
            bodies: BodyBudget::new(RequestLimits::DEFAULT),
            fairness: None,
            tracker: tokio_util::task::TaskTracker::new(),
            store_full_retry_after: idem_http::config::STORE_FULL_RETRY_AFTER_DEFAULT,
            response_body_bytes_max: None,
            execution_max: None,
            prometheus: None,
            readiness: Arc::new(Readiness::new()),
        }
    }

    /// Renders what the process's Prometheus recorder holds (idem-http's
    /// `idem_requests_total`, `idem_request_duration_seconds`, `idem_store_errors_total`)
    /// on `/metrics`, after the app's own counters.
    #[must_use]
    pub fn with_prometheus(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> AppState<L> {
        self.prometheus = Some(handle);
        self
    }

    /// Sets the store-full 503's `Retry-After` (the purge's interval).
    #[must_use]
    pub fn with_store_full_retry_after(mut self, retry_after: Duration) -> AppState<L> {
        self.store_full_retry_after = retry_after;
        self
    }

    /// The tracker of the layer's work: after the server stopped accepting, `close()` it and
    /// await `wait()` within the drain deadline, so work whose client went away finishes.
    #[must_use]
    pub fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.tracker
    }

    /// Limits how fast each principal may create new keys ([`crate::fairness`]); off unless set.
    #[must_use]
    pub fn with_fairness(mut self, limits: FairnessLimits) -> AppState<L> {
        self.fairness = Some(Fairness::new(limits));
        self
    }

    /// Sets the idempotency layer's recording limit: the longest handler response body
    /// kept for replay ([`idem_http::IdempotencyBuilder::response_body_bytes_max`], 1 MiB by
    /// default). A longer response reaches its first client whole, the key never runs
    /// again, and retries get a `response-not-kept` problem with the original status and
    /// `Location` (SPEC "HTTP behaviour"), in atomic and separate mode alike.
    #[must_use]
    pub fn with_response_body_bytes_max(mut self, bytes_max: usize) -> AppState<L> {
        self.response_body_bytes_max = Some(bytes_max);
        self
    }

    /// Sets the idempotency layer's execution ceiling
    /// ([`idem_http::IdempotencyBuilder::execution_max`], SPEC "Key lifecycle"): a hung
    /// handler frees its key within the ceiling plus one lease.
    #[must_use]
    pub fn with_execution_max(mut self, ceiling: Duration) -> AppState<L> {
        self.execution_max = Some(ceiling);
        self
    }

    /// Sets the limits on request bodies (a fresh budget of buffered bytes).
    #[must_use]
    pub fn with_request_limits(mut self, limits: RequestLimits) -> AppState<L> {
        self.bodies = BodyBudget::new(limits);
        self
    }

    /// Sets the lease and retention of idempotency records.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> AppState<L> {
        self.policy = policy;
        self
    }

    /// Sets what a request gets while the same key is in flight.
    #[must_use]
    pub fn with_conflict(mut self, conflict: ConflictPolicy) -> AppState<L> {
        self.conflict = conflict;
        self
    }

    /// **Test hook.** Makes the payment and user handlers await `hook` after they built
    /// their row and before they write it, which lets a test hold an execution past its
    /// lease. `idem serve` never sets it, and no request can: it exists only for callers
    /// of this library, like the clock and the id generator.
    #[must_use]
    pub fn with_before_write_hook(mut self, hook: BeforeWriteHook) -> AppState<L> {
        self.before_write = Some(hook);
        self
    }

    /// **Test knob** (`idem serve --handler-delay`). Makes the payment handler wait `delay`
    /// after the layer claimed the key and the handler built its row, and before it writes
    /// the row (with the completion, in atomic mode): a window for a test harness to kill
    /// or pause the process inside the handler, or to send a duplicate that meets the claim
    /// in flight. The wait is on the runtime's timer (simulated time under turmoil); zero,
    /// the default, awaits nothing. At most [`HANDLER_DELAY_MAX`]; longer is cut to it.
    #[must_use]
    pub fn with_handler_delay(mut self, delay: Duration) -> AppState<L> {
        self.handler_delay = delay.min(HANDLER_DELAY_MAX);
        self
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> &Arc<L> {
        &self.ledger
    }

    /// The metrics the app counts into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The clock the layer and the handlers read.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The lease and retention of idempotency records.
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The readiness latch `/healthz` answers from ([`crate::readiness`]).
    #[must_use]
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }
}

/// The API with the idempotency layer: what `idem serve` runs.
///
/// `POST` requests need an `Idempotency-Key`. `/healthz` and `/metrics` are outside the layer.
///
/// # Errors
/// [`ConfigError`] if the conflict wait is longer than the layer allows.
///
/// The same as [`crate::AppBuilder::from_state`]`(state).build()` without the purge task;
/// the builder also takes a principal extractor and a handler wrap.
pub fn app<L: Ledger>(state: AppState<L>) -> Result<Router, ConfigError> {
    layered_app(state, Arc::new(|parts: &http::request::Parts| principal_of(&parts.headers)), None)
}

/// The API with the idempotency layer, whose principal comes from `principal`, and with
/// `wrap` applied to the handler routes inside the layer: what [`crate::AppBuilder`] builds.
pub(crate) fn layered_app<L: Ledger>(
    state: AppState<L>,
    principal: PrincipalExtractor,
    wrap: Option<HandlerWrap<L>>,
) -> Result<Router, ConfigError> {
    let mut layer = IdempotencyLayer::builder(state.ledger.idempotency_store());
    if let Some(bytes_max) = state.response_body_bytes_max {
        layer = layer.response_body_bytes_max(bytes_max);
    }
    if let Some(period) = state.policy.tombstone() {
        layer = layer.tombstone(period);
    }
    if let Some(ceiling) = state.execution_max {
        layer = layer.execution_max(ceiling);
    }
    let layer = layer
        .lease(state.policy.lease())
        .retention(state.policy.retention())
        .conflict(state.conflict)
        .clock(Arc::clone(&state.clock))
        .task_tracker(state.tracker.clone())
        // The app purges itself (`App::purge_forever`), on a schedule its owner controls.
        .no_purge()
        .store_full_retry_after(state.store_full_retry_after)
        // Every type resolves on this server: `assemble` mounts the page at PROBLEM_DOCS_PATH.
        .problem_type_base(PROBLEM_TYPE_BASE)
        .principal(move |parts| principal(parts))
        .build()?;
    // The layer wraps each keyed handler alone (`MethodRouter::route_layer`), not the router:
    // only a request that reaches a handler is claimed. A 404 for a mistyped path or a 405
    // for a wrong method records nothing, so the corrected request can use the same key.
    let fairness = state.fairness.clone();
    let keyed = move |handler: MethodRouter<AppState<L>>| {
        let handler = match &wrap {
            Some(wrap) => wrap(handler),
            None => handler,
        };
        // Inside the layer: only executions count against a caller's rate, and a 429 from
        // here releases the claim.
        let handler = match &fairness {
            Some(fairness) => handler.route_layer(middleware::from_fn_with_state(fairness.clone(), limit_new_keys)),
            None => handler,
        };
        handler.route_layer(layer.clone())
    };
    Ok(assemble(api_routes(keyed), state))
}

/// The same API and handlers without the idempotency layer (no key needed, nothing
/// replayed): the baseline the load benchmark compares [`app`] with.
pub fn bare_app<L: Ledger>(state: AppState<L>) -> Router {
    assemble(api_routes(|handler| handler), state)
}

/// The routes; `keyed` wraps the handlers that take an `Idempotency-Key`.
fn api_routes<L: Ledger>(
    keyed: impl Fn(MethodRouter<AppState<L>>) -> MethodRouter<AppState<L>>,
) -> Router<AppState<L>> {
    Router::new()
        .route("/payments", keyed(post(create_payment::<L>)).get(list_payments::<L>))
        .route("/payments/{payment_id}", get(get_payment::<L>))
        .route("/users", keyed(post(create_user::<L>)).get(list_users::<L>))
        .route("/users/{user_id}", get(get_user::<L>))
}

/// Adds the routes outside the layer and the middleware around everything. Order, from
/// the outside in: observe (one log line and the metrics per request), track store writes
/// (the readiness latch), validate bodies (so a refused body is never claimed, and so never
/// recorded), the idempotency layer. `/problems` is the page every problem type resolves
/// to, the layer's and the server's (docs/problems.md).
fn assemble<L: Ledger>(api: Router<AppState<L>>, state: AppState<L>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let bodies = state.bodies.clone();
    let readiness = Arc::clone(&state.readiness);
    api.route("/healthz", get(healthz::<L>))
        .route("/livez", get(livez))
        .route("/metrics", get(render_metrics::<L>))
        .route_service(PROBLEM_DOCS_PATH, ProblemDocs::of(&[Origin::Layer, Origin::DemoServer, Origin::Admin]))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(bodies, validate_bodies))
        .layer(middleware::from_fn_with_state(readiness, track_store_writes))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .with_state(state)
}

/// Moves the readiness latch by what the idempotency layer did with the store: a claim and
/// its completion that succeeded put it up; a store call that failed (503) or a completion
/// that could not be recorded put it down. Other outcomes wrote nothing, or failed in a way
/// that says nothing about writes (an unreadable record, 500).
async fn track_store_writes(State(readiness): State<Arc<Readiness>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match response.extensions().get::<Outcome>() {
        Some(Outcome::Executed | Outcome::ResponseTooLarge) => readiness.write_succeeded(),
        Some(Outcome::StoreFailed) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
            readiness.write_failed();
        }
        Some(Outcome::Unrecorded) => readiness.write_failed(),
        _ => {}
    }
    response
}

/// 404 for a path no route matches (problem+json; nothing is claimed or recorded).
async fn unknown_route(request: Request) -> Response {
    let detail = format!("no route for {} {}", request.method(), request.uri().path());
    let mut response = problem(Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, detail));
    echo_key(request.headers(), &mut response);
    response
}

/// 405 for a route that exists without this method (axum adds `Allow`; nothing recorded).
async fn method_not_allowed(request: Request) -> Response {
    let detail = format!("{} is not allowed on {}", request.method(), request.uri().path());
    let mut response = problem(Problem::of(types::METHOD_NOT_ALLOWED, StatusCode::METHOD_NOT_ALLOWED, detail));
    echo_key(request.headers(), &mut response);
    response
}

/// Puts the request's `Idempotency-Key` on an answer given before the layer saw the
/// request, when the key is valid (the layer echoes it on its own answers).
pub(crate) fn echo_key(request: &HeaderMap, response: &mut Response) {
    if let Some(value) = request.get(IDEMPOTENCY_KEY).filter(|value| Key::parse(value.as_bytes()).is_ok()) {
        response.headers_mut().insert(IDEMPOTENCY_KEY, value.clone());
    }
}

/// A problem as an axum response.
pub(crate) fn problem(problem: Problem) -> Response {
    problem.into_response().map(axum::body::Body::new)
}

pub(crate) fn invalid(error: &ValidationError) -> Response {
    let kind = match error {
        ValidationError::MalformedJson(_) => types::MALFORMED_JSON,
        _ => types::INVALID_REQUEST,
    };
    let mut response = problem(Problem::of(kind, StatusCode::BAD_REQUEST, error.to_string()));
    response.extensions_mut().insert(Outcome::Rejected);
    response
}

fn not_found(what: &str, id: &str) -> Response {
    problem(Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, format!("no {what} {id:?} for this caller")))
}

/// What kind of failure a ledger error is, in words for clients: never the driver's text
/// (which names files, SQL and error codes); the log keeps that.
fn failure_class(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::Unavailable(idem_core::StoreError::Corrupt { .. }) | LedgerError::Corrupt(_) => {
            "the database holds a row it cannot read"
        }
        LedgerError::Unavailable(idem_core::StoreError::Full { .. }) | LedgerError::Full { .. } => {
            "the database is at its size limit"
        }
        LedgerError::Unavailable(_) => {
            "the database is unavailable or cannot write (busy, unreachable, or out of disk space)"
        }
    }
}

fn ledger_failed<L>(state: &AppState<L>, error: &LedgerError) -> Response {
    state.metrics.record_ledger_error();
    tracing::error!(%error, "ledger failed");
    let status = match error {
        LedgerError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        LedgerError::Unavailable(_) | LedgerError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut failure = Problem::of(types::LEDGER_UNAVAILABLE, status, failure_class(error));
    if let Some(retry_after) = error.retry_after() {
        failure = failure.with_retry_after(retry_after);
    }
    problem(failure)
}

/// Counts every request and writes its one log line, with what the layer did.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    // tokio's clock, which paused-time tests and turmoil drive; used for latency only.
    let started = tokio::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let latency = started.elapsed();
    let outcome = response.extensions().get::<Outcome>().copied();
    metrics.record(outcome, latency);
    let key = response.headers().get(idem_http::IDEMPOTENCY_KEY).and_then(|value| value.to_str().ok());
    tracing::info!(
        target: "idem_server::request",
        %method,
        path,
        status = response.status().as_u16(),
        outcome = outcome.map_or("none", Outcome::as_str),
        key,
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// Readiness ([`crate::readiness`]): 200 `{"status":"ok"}` while the latch is up and the
/// ledger commits a write just now; 503 `not-ready` (problem+json) from a failed store write
/// until a real write succeeds. While the latch is down this runs the recovery probe (fresh
/// room in the ledger, a claim in the idempotency store), whose success alone puts it up;
/// the everyday probe can only put it down, as it may fit where new payments cannot.
async fn healthz<L: Ledger>(State(state): State<AppState<L>>) -> Response {
    let readiness = &state.readiness;
    let probed = if readiness.is_ready() {
        state.ledger.check_writable().await
    } else {
        let recovered = async {
            state.ledger.check_room().await?;
            claim_probe(&*state.ledger.idempotency_store(), &readiness.probe_id(), state.clock.now()).await
        };
        let recovered = recovered.await;
        if recovered.is_ok() {
            readiness.write_succeeded();
        }
        recovered
    };
    match probed {
        Ok(()) if readiness.is_ready() => ([(header::CONTENT_TYPE, JSON)], "{\"status\":\"ok\"}").into_response(),
        // A request's write failed between the probe and now: the latch wins.
        Ok(()) => not_ready("a request's store write failed during the probe"),
        Err(error) => {
            tracing::warn!(%error, "health check: the ledger cannot take a write");
            readiness.write_failed();
            state.metrics.record_ledger_error();
            not_ready(failure_class(&error))
        }
    }
}

/// `/healthz`'s 503.
fn not_ready(class: &str) -> Response {
    problem(Problem::of(
        types::NOT_READY,
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: a store write failed and none has succeeded since ({class})"),
    ))
}

/// Liveness: the process answers HTTP (whatever its store says).
async fn livez() -> Response {
    ([(header::CONTENT_TYPE, JSON)], "{\"status\":\"ok\"}").into_response()
}

async fn render_metrics<L: Ledger>(State(state): State<AppState<L>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut text = state.metrics.render();
    if let Some(prometheus) = &state.prometheus {
        text.push_str(&prometheus.render());
    }
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// The principal: the claim's when running under one (the layer found it), else the header's.
fn caller(claim: Option<&ClaimContext>, headers: &HeaderMap) -> Result<idem_core::Principal, Problem> {
    match claim {
        Some(claim) => Ok(claim.id().principal.clone()),
        None => principal_of(headers),
    }
}

async fn before_write<L>(state: &AppState<L>) {
    if let Some(hook) = &state.before_write {
        hook().await;
    }
}

/// The payment handler's wait inside its claim ([`AppState::with_handler_delay`]). Zero
/// touches no timer, so an app without the knob runs exactly as before it existed.
async fn handler_delay<L>(state: &AppState<L>) {
    if !state.handler_delay.is_zero() {
        tokio::time::sleep(state.handler_delay).await;
    }
}

/// The response for a created row, and the ledger's write with the completion if the
/// handler runs under a claim.
struct Created {
    headers: HeaderMap,
    body: Bytes,
}

impl Created {
    fn new(location: String, body: String) -> Created {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, JSON);
        let location = HeaderValue::try_from(location).expect("ids are ASCII letters, digits and `_`");
        headers.insert(header::LOCATION, location);
        Created { headers, body: Bytes::from(body) }
    }

    /// The response as the layer stores it, if the ledger completes the claim itself.
    fn stored<L: Ledger>(&self, ledger: &L, claim: Option<&ClaimContext>) -> Option<idem_core::StoredResponse> {
        let claim = claim.filter(|_| ledger.completes_in_transaction())?;
        Some(claim.stored_response(StatusCode::CREATED, &self.headers, &self.body))
    }

    /// The answer once the ledger wrote (or refused).
    fn answer<L>(self, state: &AppState<L>, written: Result<Written, LedgerError>) -> Response {
        match &written {
            Ok(Written::Alone | Written::Completed) => state.readiness.write_succeeded(),
            // Refused by its fence: nothing was written, nothing learnt about writes.
            Ok(Written::Superseded(_)) => {}
            Err(_) => state.readiness.write_failed(),
        }
        let marker = match written {
            Ok(Written::Alone) => None,
            Ok(Written::Completed) => Some(CompletedInTransaction(idem_core::Fenced::Applied)),
            Ok(Written::Superseded(fenced)) => Some(CompletedInTransaction(fenced)),
            Err(error) => return ledger_failed(state, &error),
        };
        let mut response = (StatusCode::CREATED, self.headers, self.body).into_response();
        if let Some(marker) = marker {
            response.extensions_mut().insert(marker);
        }
        response
    }
}

fn missing_validation() -> Response {
    // A 500 releases the claim: nothing was written. Reaching it means the router was
    // assembled without `validate_bodies`, a bug in this file.
    problem(Problem::of(types::INTERNAL, StatusCode::INTERNAL_SERVER_ERROR, "request body was not validated"))
}

async fn create_payment<L: Ledger>(
    State(state): State<AppState<L>>,
    claim: Option<Extension<ClaimContext>>,
    valid: Option<Extension<Valid<NewPayment>>>,
    headers: HeaderMap,
) -> Response {
    let claim = claim.as_ref().map(|Extension(claim)| claim);
    let Some(Extension(Valid(request))) = valid else { return missing_validation() };
    let principal = match caller(claim, &headers) {
        Ok(principal) => principal,
        Err(refused) => return problem(refused),
    };
    let payment = Payment {
        payment_id: fresh_id(&*state.ids, IdKind::Payment),
        principal,
        request,
        status: PaymentStatus::Pending,
        created_at: state.clock.now(),
    };
    let created = Created::new(format!("/payments/{}", payment.payment_id), payment.to_json_text());
    handler_delay(&state).await;
    before_write(&state).await;
    let stored = created.stored(&*state.ledger, claim);
    let completion = claim.zip(stored.as_ref()).map(|(claim, response)| Completion { claim, response });
    let written = state.ledger.insert_payment(&payment, completion).await;
    created.answer(&state, written)
}

async fn create_user<L: Ledger>(
    State(state): State<AppState<L>>,
    claim: Option<Extension<ClaimContext>>,
    valid: Option<Extension<Valid<NewUser>>>,
    headers: HeaderMap,
) -> Response {
    let claim = claim.as_ref().map(|Extension(claim)| claim);
    let Some(Extension(Valid(request))) = valid else { return missing_validation() };
    let principal = match caller(claim, &headers) {
        Ok(principal) => principal,
        Err(refused) => return problem(refused),
    };
    let user = User { user_id: fresh_id(&*state.ids, IdKind::User), principal, request, created_at: state.clock.now() };
    let created = Created::new(format!("/users/{}", user.user_id), user.to_json_text());
    before_write(&state).await;
    let stored = created.stored(&*state.ledger, claim);
    let completion = claim.zip(stored.as_ref()).map(|(claim, response)| Completion { claim, response });
    let written = state.ledger.insert_user(&user, completion).await;
    created.answer(&state, written)
}

/// The caller of a read endpoint, from `Authorization` (see [`principal_of`]); a bad
/// header is answered with its 401 problem before the handler runs.
struct Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &S) -> Result<Caller, Response> {
        principal_of(&parts.headers).map(Caller).map_err(problem)
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

async fn get_payment<L: Ledger>(
    State(state): State<AppState<L>>,
    Path(payment_id): Path<String>,
    Caller(principal): Caller,
) -> Response {
    match state.ledger.payment(&principal, &payment_id).await {
        Ok(Some(payment)) => json(StatusCode::OK, payment.to_json_text()),
        Ok(None) => not_found("payment", &payment_id),
        Err(error) => ledger_failed(&state, &error),
    }
}

/// `GET /payments` and `GET /users`: Stripe's list parameters.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    starting_after: Option<String>,
}

/// The page a list request asks for, or its 400.
fn page_request(
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<PageRequest, Problem> {
    let invalid = |detail: String| Problem::of(types::INVALID_REQUEST, StatusCode::BAD_REQUEST, detail);
    let Ok(Query(query)) = query else {
        return Err(invalid(format!(
            "the query takes limit (a whole number from 1 to {LIST_LIMIT_MAX}) and starting_after (an id)"
        )));
    };
    let limit = query.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(invalid(format!("limit must be a whole number from 1 to {LIST_LIMIT_MAX}")));
    }
    Ok(PageRequest { limit, starting_after: query.starting_after })
}

/// A page as Stripe writes a list: `{"object":"list","data":[…],"has_more":…}`.
fn list_answer<T>(page: Option<Page<T>>, request: &PageRequest, url: &str, to_json: fn(&T) -> String) -> Response {
    let Some(page) = page else {
        let cursor = request.starting_after.as_deref().unwrap_or_default();
        let detail = format!("starting_after {cursor:?} names nothing this caller created");
        return problem(Problem::of(types::UNKNOWN_CURSOR, StatusCode::BAD_REQUEST, detail));
    };
    let items: Vec<String> = page.items.iter().map(to_json).collect();
    let body = format!(
        "{{\"object\":\"list\",\"url\":\"{url}\",\"has_more\":{},\"data\":[{}]}}",
        page.has_more,
        items.join(",")
    );
    json(StatusCode::OK, body)
}

async fn list_payments<L: Ledger>(
    State(state): State<AppState<L>>,
    Caller(principal): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let request = match page_request(query) {
        Ok(request) => request,
        Err(refused) => return problem(refused),
    };
    match state.ledger.payments(&principal, &request).await {
        Ok(page) => list_answer(page, &request, "/payments", Payment::to_json_text),
        Err(error) => ledger_failed(&state, &error),
    }
}

async fn list_users<L: Ledger>(
    State(state): State<AppState<L>>,
    Caller(principal): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let request = match page_request(query) {
        Ok(request) => request,
        Err(refused) => return problem(refused),
    };
    match state.ledger.users(&principal, &request).await {
        Ok(page) => list_answer(page, &request, "/users", User::to_json_text),
        Err(error) => ledger_failed(&state, &error),
    }
}

async fn get_user<L: Ledger>(
    State(state): State<AppState<L>>,
    Path(user_id): Path<String>,
    Caller(principal): Caller,
) -> Response {
    match state.ledger.user(&principal, &user_id).await {
        Ok(Some(user)) => json(StatusCode::OK, user.to_json_text()),
        Ok(None) => not_found("user", &user_id),
        Err(error) => ledger_failed(&state, &error),
    }
}
