//! The application's router: the routes, the middleware around them and the idempotency
//! layer on the keyed handlers, built from an [`AppState`] alone (no listener, no concrete
//! store), so the same app runs on TCP, in tests and in simulations. The handlers, the
//! health endpoints and the answers they share live in modules of their own.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::{HeaderValue, StatusCode, header};
use idem_http::problem::{Origin, PROBLEM_TYPE_BASE, types};
use idem_http::problem_docs::PROBLEM_DOCS_PATH;
use idem_http::{ConfigError, IdempotencyLayer, Outcome, PrincipalExtractor, Problem, ProblemDocs};

use crate::answers::{echo_key, problem};
use crate::bodies::validate_bodies;
use crate::fairness::limit_new_keys;
use crate::handlers::{create_payment, create_user, get_payment, get_user, list_payments, list_users};
use crate::health::{healthz, livez};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::principal::principal_of;
use crate::readiness::Readiness;

pub use crate::bodies::{BODY_BYTES_MAX, RequestLimits};
pub use crate::handlers::LIST_LIMIT_DEFAULT;
pub use crate::state::{AppState, BeforeWriteHook, HANDLER_DELAY_MAX, HandlerWrap};

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

/// `/metrics`: the app's counters, then what the process's Prometheus recorder holds.
async fn render_metrics<L: Ledger>(State(state): State<AppState<L>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut text = state.metrics.render();
    if let Some(prometheus) = &state.prometheus {
        text.push_str(&prometheus.render());
    }
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
