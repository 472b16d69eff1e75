//! What the simulation injects through idem-server's composition root (`AppBuilder`'s
//! principal extractor and handler wrap, layers around the router): the scenarios' handler
//! faults and repeated response headers, and the planted bugs. Nothing here is compiled
//! into idem-core, idem-http or idem-server.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request as AxumRequest;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response as AxumResponse};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use idem_core::Principal;
use idem_http::Outcome;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clock::sim_ms;
use crate::history::{Kind, Recorder};

/// The scenario `separate`: each handler's response carries repeated headers, which the
/// layer records and every replay must repeat in order (G2).
pub(crate) async fn repeated_headers(request: AxumRequest, next: Next) -> AxumResponse {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (http::header::LINK, "</payments>; rel=\"collection\""),
        (http::header::LINK, "</docs/payments>; rel=\"help\""),
        (http::header::CACHE_CONTROL, "no-store"),
        (http::header::CACHE_CONTROL, "private"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    response
}

/// The planted bug `replay-drops-header`: a layer in front of the API keeps only the first
/// `Link` of a replayed response.
pub(crate) async fn drop_repeated_on_replay(request: AxumRequest, next: Next) -> AxumResponse {
    let mut response = next.run(request).await;
    let replayed = response.headers().get(idem_http::IDEMPOTENT_REPLAYED).is_some_and(|value| value == "true");
    if replayed && let Some(first) = response.headers().get(http::header::LINK).cloned() {
        response.headers_mut().insert(http::header::LINK, first);
    }
    response
}

/// A handler fault of the scenario `handler-faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ErrorBefore,
    PanicBefore,
    ErrorAfter,
    PanicAfter,
}

impl Fault {
    fn text(self) -> &'static str {
        match self {
            Fault::ErrorBefore => "handler fault: 500 before its write",
            Fault::PanicBefore => "handler fault: panic before its write",
            Fault::ErrorAfter => "handler fault: 500 after its write",
            Fault::PanicAfter => "handler fault: panic after its write",
        }
    }
}

/// The scenario `handler-faults`: until healing, a share of handlers fail, drawn per replica
/// from the seed.
pub(crate) struct HandlerFaults {
    pub(crate) rng: Mutex<ChaCha8Rng>,
    pub(crate) heal_ms: u64,
    pub(crate) recorder: Recorder,
}

impl HandlerFaults {
    fn draw(&self) -> Option<Fault> {
        if sim_ms() >= self.heal_ms {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = match rng.random_range(0..10) {
            0 => Fault::ErrorBefore,
            1 => Fault::PanicBefore,
            2 => Fault::ErrorAfter,
            3 => Fault::PanicAfter,
            _ => return None,
        };
        self.recorder.record(Kind::Fault(fault.text().to_owned()));
        Some(fault)
    }
}

fn fail(fault: Fault) -> AxumResponse {
    if matches!(fault, Fault::PanicBefore | Fault::PanicAfter) {
        // `resume_unwind` unwinds without the panic hook: no message on stderr per fault.
        std::panic::resume_unwind(Box::new(fault.text()));
    }
    (StatusCode::INTERNAL_SERVER_ERROR, "planted handler failure").into_response()
}

/// Inside the idempotency layer: fails before the handler runs, or after it wrote.
pub(crate) async fn handler_fault(faults: Arc<HandlerFaults>, request: AxumRequest, next: Next) -> AxumResponse {
    let fault = faults.draw();
    if let Some(fault @ (Fault::ErrorBefore | Fault::PanicBefore)) = fault {
        return fail(fault);
    }
    let response = next.run(request).await;
    match fault {
        Some(fault) => fail(fault),
        None => response,
    }
}

/// The planted bug `token-case-folded`: the layer's caller is the token in lower case, so
/// `alice` and `Alice` share keys (the handlers and lists still tell them apart).
pub(crate) fn folded_principal(parts: &http::request::Parts) -> Result<Principal, idem_http::Problem> {
    let mut headers = parts.headers.clone();
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let folded = value.to_str().unwrap_or_default().to_ascii_lowercase();
        if let Ok(folded) = http::HeaderValue::try_from(folded) {
            headers.insert(http::header::AUTHORIZATION, folded);
        }
    }
    idem_server::principal::principal_of(&headers)
}

/// The planted bug `rejects-query`: a payment posted with a query string is refused with a
/// 400 before it reaches the API, though the request is valid.
pub(crate) async fn reject_query(request: AxumRequest, next: Next) -> AxumResponse {
    if request.method() == http::Method::POST && request.uri().query().is_some() {
        return (StatusCode::BAD_REQUEST, "query strings are not accepted").into_response();
    }
    next.run(request).await
}

/// The planted bug `stale-answers-own`: a slot for the handler's own response.
#[derive(Clone, Default)]
pub(crate) struct OwnResponse(Arc<Mutex<Option<(StatusCode, HeaderMap, Bytes)>>>);

/// Inside the idempotency layer: keeps a copy of what the handler answered.
pub(crate) async fn capture_own(request: AxumRequest, next: Next) -> AxumResponse {
    let slot = request.extensions().get::<OwnResponse>().cloned();
    let response = next.run(request).await;
    let Some(slot) = slot else { return response };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((parts.status, parts.headers.clone(), bytes.clone()));
    AxumResponse::from_parts(parts, axum::body::Body::from(bytes))
}

/// Outside the idempotency layer: when the layer answers for a superseded execution,
/// answers the execution's own response instead (the bug).
pub(crate) async fn answer_own(mut request: AxumRequest, next: Next) -> AxumResponse {
    let slot = OwnResponse::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    if response.extensions().get::<Outcome>() != Some(&Outcome::Superseded) {
        return response;
    }
    match slot.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
        Some((status, headers, body)) => (status, headers, body).into_response(),
        None => response,
    }
}
