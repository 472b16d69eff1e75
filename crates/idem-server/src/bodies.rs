//! Request bodies of the keyed `POST`s, read before the idempotency layer sees them: the
//! JSON-only check (415), the size limit (413), the shared budget of buffered bytes (503),
//! the body-read timeout (408) and field validation (400). A refused body records nothing,
//! so the client may fix it and reuse the key (SPEC); every refusal echoes a valid key.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use idem_http::problem::types;
use idem_http::{Outcome, Problem};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::answers::{echo_key, invalid, problem};
use crate::domain::{NewPayment, NewUser};

/// The most bytes a `POST /payments` or `POST /users` body may have (SPEC's 1 MiB).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// Limits on request bodies that are answered with a problem (the connection-level limits
/// are [`crate::ServerLimits`]). Every field has a flag in `idem serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// How long a client may take to send a whole `POST` body, from when the handler
    /// starts reading it: past it, 408 and nothing recorded.
    pub body_read_timeout: Duration,
    /// Request-body bytes held in memory across all requests at once. A `POST` reserves
    /// each chunk of its body as it arrives; when a chunk does not fit, 503 with
    /// `Retry-After` and nothing recorded. Released when the request's answer is ready.
    pub body_bytes_buffered_max: usize,
}

impl RequestLimits {
    /// 10 s to send a body; 64 MiB of bodies in memory at once (64 full-size bodies).
    pub const DEFAULT: RequestLimits =
        RequestLimits { body_read_timeout: Duration::from_secs(10), body_bytes_buffered_max: 64 * 1024 * 1024 };
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits::DEFAULT
    }
}

/// [`RequestLimits`] in force: the limits and the shared budget of body bytes.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    limits: RequestLimits,
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub(crate) fn new(limits: RequestLimits) -> BodyBudget {
        let permits = limits.body_bytes_buffered_max.min(Semaphore::MAX_PERMITS);
        BodyBudget { limits, bytes: Arc::new(Semaphore::new(permits)) }
    }

    /// Reserves `bytes` of the budget, or says the server is too busy to buffer them now.
    fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Refused> {
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        match Arc::clone(&self.bytes).try_acquire_many_owned(permits) {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(Refused::keep(
                Problem::of(
                    types::SERVER_BUSY,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies are being received at once; try again shortly",
                )
                .with_retry_after(Duration::from_secs(1)),
            )),
        }
    }
}

/// A validated `POST` body, handed from [`validate_bodies`] to the handler.
#[derive(Clone, Debug)]
pub(crate) struct Valid<T>(pub(crate) T);

/// Why a body was refused, and whether the connection must close (the rest of the body may
/// still be on its way).
struct Refused {
    problem: Problem,
    close: bool,
}

impl Refused {
    fn keep(problem: Problem) -> Refused {
        Refused { problem, close: false }
    }

    fn into_response(self, request: &HeaderMap) -> Response {
        let mut response = problem(self.problem);
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        echo_key(request, &mut response);
        response.extensions_mut().insert(Outcome::Rejected);
        response
    }
}

/// Reads and validates the bodies of `POST /payments` and `POST /users` before the
/// idempotency layer sees them: SPEC wants a refused body to record nothing, so the client
/// may fix it and reuse the key. The bytes go on unchanged (the layer fingerprints them).
///
/// In order: a declared type other than JSON is 415; a declared length over
/// [`BODY_BYTES_MAX`] is 413 before anything is read; the body's bytes are reserved in the
/// shared budget as they arrive (503 when it is spent) and read within the body-read
/// timeout (408); then
/// the fields are validated (400). Every refusal echoes a valid `Idempotency-Key`.
pub(crate) async fn validate_bodies(State(bodies): State<BodyBudget>, request: Request, next: Next) -> Response {
    let is_post = request.method() == Method::POST;
    let route = match request.uri().path() {
        "/payments" if is_post => Route::Payments,
        "/users" if is_post => Route::Users,
        _ => return next.run(request).await,
    };
    let (mut parts, body) = request.into_parts();
    let (bytes, reserved) = match read_body(&bodies, &parts.headers, body).await {
        Ok(read) => read,
        Err(refused) => return refused.into_response(&parts.headers),
    };
    let validated = match route {
        Route::Payments => NewPayment::parse(&bytes).map(|new| {
            parts.extensions.insert(Valid(new));
        }),
        Route::Users => NewUser::parse(&bytes).map(|new| {
            parts.extensions.insert(Valid(new));
        }),
    };
    if let Err(error) = validated {
        let mut refused = invalid(&error);
        echo_key(&parts.headers, &mut refused);
        return refused;
    }
    let response = next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    // The body's bytes were held until now (the layer and the handler share them).
    drop(reserved);
    response
}

/// The body of a JSON `POST`, within the limits; or the problem that refuses it.
async fn read_body(
    bodies: &BodyBudget,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refused> {
    if !is_json(headers) {
        return Err(Refused::keep(Problem::of(
            types::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON: send Content-Type: application/json",
        )));
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_BYTES_MAX as u64) {
        return Err(body_too_large());
    }
    match tokio::time::timeout(bodies.limits.body_read_timeout, collect_within_budget(bodies, body)).await {
        Ok(read) => read,
        Err(_) => {
            let detail = format!("the body did not arrive within {:?}", bodies.limits.body_read_timeout);
            let timed_out = Problem::of(types::BODY_READ_TIMEOUT, StatusCode::REQUEST_TIMEOUT, detail);
            // The rest of the body may still be on its way: the connection cannot be reused.
            Err(Refused { problem: timed_out, close: true })
        }
    }
}

/// Reads a body whole, reserving each frame's bytes in the shared budget as it arrives, so
/// what the budget counts is what is held in memory: a client that declares a large body
/// and stalls holds only what it sent.
async fn collect_within_budget(
    bodies: &BodyBudget,
    body: axum::body::Body,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refused> {
    let mut body = Limited::new(body, BODY_BYTES_MAX);
    let mut buffered = bytes::BytesMut::new();
    let mut reserved: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(body_too_large()),
            Err(error) => {
                let detail = error.to_string();
                return Err(Refused::keep(Problem::of(types::BODY_UNREADABLE, StatusCode::BAD_REQUEST, detail)));
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        let permit = bodies.reserve(data.len())?;
        match &mut reserved {
            Some(held) => held.merge(permit),
            None => reserved = Some(permit),
        }
        buffered.extend_from_slice(&data);
    }
    Ok((buffered.freeze(), reserved))
}

fn body_too_large() -> Refused {
    let detail = format!("the body must be at most {BODY_BYTES_MAX} bytes");
    Refused::keep(Problem::of(types::BODY_TOO_LARGE, StatusCode::PAYLOAD_TOO_LARGE, detail))
}

/// Whether the declared body type is JSON: `application/json` or `application/…+json`, with
/// any parameters. A body with no `Content-Type` is read as JSON (RFC 9110 §8.3 leaves
/// the type to the recipient then); any other declared type is refused with 415.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(text) = value.to_str() else { return false };
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[derive(Clone, Copy)]
enum Route {
    Payments,
    Users,
}
