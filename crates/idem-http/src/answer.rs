//! What the layer answers without running the handler, or around its response: replays,
//! the 409 for a claim in flight, refusals, store failures, and the marks every answer
//! leaves on its way out (the `Idempotency-Expires` header, the echoed key, the outcome,
//! the request's one log event). Plain functions of the configuration and the store's
//! decision, used by `service.rs` (before a claim), `execute.rs`, `settle.rs` and
//! `keyed.rs` (around one) and the `Claim` extractor.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use idem_core::reply;
use idem_core::{Holder, Key, StoreError, StoredResponse, Timestamp};
use tokio::time::Instant;
use tracing::Span;

use crate::body::{Body, full};
use crate::config::Config;
use crate::headers::{IDEMPOTENCY_EXPIRES, IDEMPOTENT_REPLAYED};
use crate::problem::{kinds, types};
use crate::{Outcome, Problem, observe};

/// A response and how the layer classifies it.
pub(crate) type Answer = (Response<Body>, Outcome);

/// Marks `response` with when its record expires ([`IDEMPOTENCY_EXPIRES`], an HTTP-date).
pub(crate) fn expiring(mut response: Response<Body>, expires_at: Timestamp) -> Response<Body> {
    mark_expiry(response.headers_mut(), expires_at);
    response
}

/// Sets [`IDEMPOTENCY_EXPIRES`] to `expires_at`, rounded down to the second.
pub(crate) fn mark_expiry(headers: &mut http::HeaderMap, expires_at: Timestamp) {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(expires_at.unix_ms());
    let date = httpdate::fmt_http_date(time);
    headers.insert(IDEMPOTENCY_EXPIRES, HeaderValue::try_from(date).expect("an HTTP-date is visible ASCII"));
}

/// The 409 for a claim in flight that holds `lease_left` more; its `Retry-After` is
/// [`reply::retry_after`] with the configured cap. Its detail names the holder's request
/// id and trace id, where the claim keeps them, so a duplicate can be traced to the
/// execution it waits for.
pub(crate) fn in_progress(config: &Config, lease_left: Duration, holder: &Holder) -> Response<Body> {
    let retry_after = reply::retry_after(lease_left, config.conflict_retry_after_max);
    let problem = kinds::in_progress(retry_after);
    let (request_id, trace_id) = (holder.request_id(), holder.trace_id());
    if request_id.is_none() && trace_id.is_none() {
        return config.answer(problem);
    }
    // In the detail for people, and as an extension member (RFC 9457 section 3.2) for
    // programs: `holder: {request_id, trace_id}`, each a string or null.
    let named = format!(
        "{} (held by request {}, trace {})",
        problem.detail(),
        request_id.unwrap_or("unknown"),
        trace_id.unwrap_or("unknown")
    );
    let holder = serde_json::json!({ "request_id": request_id, "trace_id": trace_id });
    let problem = crate::Problem::of(types::IN_PROGRESS, problem.status(), named).with_retry_after(retry_after);
    config.answer(problem.with_extension("holder", holder))
}

/// The recorded response, marked `Idempotent-Replayed: true`.
pub(crate) fn replay(config: &Config, stored: StoredResponse) -> Response<Body> {
    let Ok(status) = StatusCode::from_u16(stored.status) else {
        tracing::error!(status = stored.status, "recorded status is not an HTTP status");
        return config.answer(kinds::store_corrupt());
    };
    let mut response = Response::new(full(stored.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        match (HeaderName::try_from(name.as_str()), HeaderValue::from_maybe_shared(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                tracing::error!(header = ?name, "recorded header is not a valid header");
                return config.answer(kinds::store_corrupt());
            }
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

pub(crate) fn rejected(config: &Config, problem: Problem) -> Answer {
    (config.answer(problem), Outcome::Rejected)
}

/// G8: the store could not decide, so the handler does not run.
/// The problem for a store failure names its class only; the driver's text (file names,
/// SQL, error codes) stays in the log.
pub(crate) fn store_failed(config: &Config, error: &StoreError) -> Answer {
    tracing::warn!(%error, "idempotency store failed");
    let problem = match error {
        StoreError::Unavailable { retry_after, .. } => {
            kinds::store_unavailable(retry_after.unwrap_or(reply::RETRY_AFTER_MIN))
        }
        StoreError::Full { what } => kinds::store_full(what, config.store_full_retry_after),
        StoreError::Corrupt { .. } => kinds::store_corrupt(),
    };
    (config.answer(problem), Outcome::StoreFailed)
}

/// Marks a response on its way out: the outcome in its extensions, the validated key
/// echoed (as a structured-field string; SPEC "HTTP behaviour": every answer after a valid
/// key, whichever path produced it), the outcome and status on the request's span, the
/// metrics ([`observe`]), and the one `tracing` event for the request.
pub(crate) fn finish(
    response: &mut Response<Body>,
    outcome: Outcome,
    key: Option<(&Key, &HeaderName)>,
    span: Option<&Span>,
    started: Instant,
) {
    response.extensions_mut().insert(outcome);
    if let Some((key, header)) = key {
        let echoed = HeaderValue::try_from(key.to_sf_string()).expect("a key's sf-string is visible ASCII");
        response.headers_mut().insert(header.clone(), echoed);
    }
    let key = key.map(|(key, _)| key);
    let status = response.status().as_u16();
    observe::answered(span, outcome, Some(status), started);
    span.unwrap_or(&Span::none()).in_scope(|| {
        tracing::info!(target: "idem_http", outcome = outcome.as_str(), status, key = key.map(Key::as_str), "idempotency");
    });
}
