//! The application: routes, handlers and middleware, built from an [`AppState`] alone (no
//! listener, no concrete store), so the same app runs on TCP, in tests and in simulations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use idem_core::{Clock, Policy, Principal};
use idem_http::{
    ClaimContext, CompletedInTransaction, ConfigError, ConflictPolicy, IdempotencyLayer, Outcome, PrincipalExtractor,
    Problem,
};

use crate::domain::{NewPayment, NewUser, Payment, PaymentStatus, User, ValidationError};
use crate::ids::{IdGenerator, IdKind, fresh_id};
use crate::ledger::{Completion, LIST_LIMIT_MAX, Ledger, LedgerError, Written};
use crate::metrics::Metrics;
use crate::principal::principal_of;

/// The most bytes a `POST /payments` or `POST /users` body may have (SPEC's 1 MiB).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Payments listed by `GET /payments` when `limit` is not given.
pub const LIST_LIMIT_DEFAULT: usize = 20;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A hook that the payment and user handlers await after building their row and before
/// writing it. Test-only: see [`AppState::with_before_write_hook`].
pub type BeforeWriteHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A function applied to the handler routes inside the idempotency layer (so its layers
/// see what the handlers answer before the idempotency layer does). Test-only: see
/// [`crate::AppBuilder::wrap_handlers`].
pub type HandlerWrap<L> = Arc<dyn Fn(Router<AppState<L>>) -> Router<AppState<L>> + Send + Sync>;

/// Everything the handlers use. Cloning is cheap (shared pointers).
pub struct AppState<L> {
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    metrics: Arc<Metrics>,
    policy: Policy,
    conflict: ConflictPolicy,
    before_write: Option<BeforeWriteHook>,
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
        }
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
    let layer = IdempotencyLayer::builder(state.ledger.idempotency_store())
        .lease(state.policy.lease())
        .retention(state.policy.retention())
        .conflict(state.conflict)
        .clock(Arc::clone(&state.clock))
        .principal(move |parts| principal(parts))
        .build()?;
    let handlers = match wrap {
        Some(wrap) => wrap(api_routes()),
        None => api_routes(),
    };
    Ok(assemble(handlers.layer(layer), state))
}

/// The same API and handlers without the idempotency layer (no key needed, nothing
/// replayed): the baseline the load benchmark compares [`app`] with.
pub fn bare_app<L: Ledger>(state: AppState<L>) -> Router {
    assemble(api_routes(), state)
}

fn api_routes<L: Ledger>() -> Router<AppState<L>> {
    Router::new()
        .route("/payments", post(create_payment::<L>).get(list_payments::<L>))
        .route("/payments/{payment_id}", get(get_payment::<L>))
        .route("/users", post(create_user::<L>))
        .route("/users/{user_id}", get(get_user::<L>))
}

/// Adds the routes outside the layer and the middleware around everything. Order, from
/// the outside in: observe (one log line and the metrics per request), validate bodies
/// (so a refused body is never claimed, and so never recorded), the idempotency layer.
fn assemble<L: Ledger>(api: Router<AppState<L>>, state: AppState<L>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    api.route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics::<L>))
        .layer(middleware::from_fn(validate_bodies))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .with_state(state)
}

/// A problem as an axum response.
fn problem(problem: Problem) -> Response {
    problem.into_response().map(axum::body::Body::new)
}

fn invalid(error: &ValidationError) -> Response {
    let (slug, title) = match error {
        ValidationError::MalformedJson(_) => ("malformed-json", "Malformed JSON"),
        _ => ("invalid-request", "Invalid request"),
    };
    let mut response = problem(Problem::new(StatusCode::BAD_REQUEST, slug, title, error.to_string()));
    response.extensions_mut().insert(Outcome::Rejected);
    response
}

fn not_found(what: &str, id: &str) -> Response {
    problem(Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("no {what} {id:?} for this caller")))
}

fn ledger_failed<L>(state: &AppState<L>, error: &LedgerError) -> Response {
    state.metrics.record_ledger_error();
    tracing::error!(%error, "ledger failed");
    let status = match error {
        LedgerError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        LedgerError::Unavailable(_) | LedgerError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut failure = Problem::new(status, "ledger-unavailable", "Ledger unavailable", error.to_string());
    if let Some(retry_after) = error.retry_after() {
        failure = failure.with_retry_after(retry_after);
    }
    problem(failure)
}

/// A validated `POST` body, handed from [`validate_bodies`] to the handler.
#[derive(Clone, Debug)]
struct Valid<T>(T);

/// Reads and validates the bodies of `POST /payments` and `POST /users` before the
/// idempotency layer sees them: SPEC wants a refused body to record nothing, so the client
/// may fix it and reuse the key. The bytes go on unchanged (the layer fingerprints them).
async fn validate_bodies(request: Request, next: Next) -> Response {
    let is_post = request.method() == Method::POST;
    let route = match request.uri().path() {
        "/payments" if is_post => Route::Payments,
        "/users" if is_post => Route::Users,
        _ => return next.run(request).await,
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error.is::<http_body_util::LengthLimitError>();
            let (status, slug, title) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large")
            } else {
                (StatusCode::BAD_REQUEST, "body-unreadable", "Request body unreadable")
            };
            let mut response = problem(Problem::new(status, slug, title, error.to_string()));
            response.extensions_mut().insert(Outcome::Rejected);
            return response;
        }
    };
    let validated = match route {
        Route::Payments => NewPayment::parse(&bytes).map(|new| {
            parts.extensions.insert(Valid(new));
        }),
        Route::Users => NewUser::parse(&bytes).map(|new| {
            parts.extensions.insert(Valid(new));
        }),
    };
    match validated {
        Ok(()) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(error) => invalid(&error),
    }
}

#[derive(Clone, Copy)]
enum Route {
    Payments,
    Users,
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

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, JSON)], "{\"status\":\"ok\"}").into_response()
}

async fn render_metrics<L: Ledger>(State(state): State<AppState<L>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
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
    problem(Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "request body was not validated",
    ))
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

/// `GET /payments?limit=N`.
#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_payments<L: Ledger>(
    State(state): State<AppState<L>>,
    Caller(principal): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(ListQuery { limit: None })) => LIST_LIMIT_DEFAULT,
        Ok(Query(ListQuery { limit: Some(limit) })) if (1..=LIST_LIMIT_MAX).contains(&limit) => limit,
        _ => {
            let detail = format!("limit must be a whole number from 1 to {LIST_LIMIT_MAX}");
            return problem(Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", detail));
        }
    };
    match state.ledger.payments(&principal, limit).await {
        Ok(payments) => {
            let items: Vec<String> = payments.iter().map(Payment::to_json_text).collect();
            json(StatusCode::OK, format!("{{\"payments\":[{}]}}", items.join(",")))
        }
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
