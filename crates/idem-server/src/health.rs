//! `/healthz` and `/livez`: what orchestrators ask of the process. Readiness answers from
//! the latch ([`crate::readiness`]) and probes the ledger; liveness only says the process
//! answers. Separate from the API handlers: no key, no caller, no layer.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use idem_http::Problem;
use idem_http::problem::types;

use crate::answers::{JSON, failure_class, problem};
use crate::ledger::Ledger;
use crate::readiness::claim_probe;
use crate::state::AppState;

/// Readiness ([`crate::readiness`]): 200 `{"status":"ok"}` while the latch is up and the
/// ledger commits a write just now; 503 `not-ready` (problem+json) from a failed store write
/// until a real write succeeds. While the latch is down this runs the recovery probe (fresh
/// room in the ledger, a claim in the idempotency store), whose success alone puts it up;
/// the everyday probe can only put it down, as it may fit where new payments cannot.
pub(crate) async fn healthz<L: Ledger>(State(state): State<AppState<L>>) -> Response {
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
pub(crate) async fn livez() -> Response {
    ([(header::CONTENT_TYPE, JSON)], "{\"status\":\"ok\"}").into_response()
}
