//! The API's handlers: create, read and list payments and users. A create runs under the
//! idempotency layer's claim and hands the ledger its completion (atomic mode); reads and
//! lists take the caller from `Authorization`. Separate from the router ([`mod@crate::app`]),
//! which decides which handler is keyed and what wraps it.

use axum::Extension;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use idem_core::Principal;
use idem_http::problem::types;
use idem_http::{ClaimContext, CompletedInTransaction, Problem};

use crate::answers::{JSON, failure_class, json, problem};
use crate::bodies::Valid;
use crate::domain::{NewPayment, NewUser, Payment, PaymentStatus, User};
use crate::ids::{IdKind, fresh_id};
use crate::ledger::{Completion, Ledger, Written};
use crate::ledger_error::LedgerError;
use crate::page::{LIST_LIMIT_MAX, Page, PageRequest};
use crate::principal::principal_of;
use crate::state::AppState;

/// Payments listed by `GET /payments` when `limit` is not given.
pub const LIST_LIMIT_DEFAULT: usize = 20;

/// The 404 for an id this caller has no row for (another caller's ids look the same).
fn not_found(what: &str, id: &str) -> Response {
    problem(Problem::of(types::NOT_FOUND, StatusCode::NOT_FOUND, format!("no {what} {id:?} for this caller")))
}

/// The answer for a ledger failure (503, or 500 for a corrupt row), counted and logged.
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

pub(crate) async fn create_payment<L: Ledger>(
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

pub(crate) async fn create_user<L: Ledger>(
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
pub(crate) struct Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &S) -> Result<Caller, Response> {
        principal_of(&parts.headers).map(Caller).map_err(problem)
    }
}

pub(crate) async fn get_payment<L: Ledger>(
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
pub(crate) struct ListQuery {
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

/// A page as Stripe writes a list: `{"object":"list","data":[…],"has_more":…}`; a 400 for
/// a cursor that names nothing of the caller's, the ledger's failure as it answers them.
fn list_answer<L: Ledger, T>(
    state: &AppState<L>,
    page: Result<Option<Page<T>>, LedgerError>,
    request: &PageRequest,
    url: &str,
    to_json: fn(&T) -> String,
) -> Response {
    let page = match page {
        Ok(page) => page,
        Err(error) => return ledger_failed(state, &error),
    };
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

pub(crate) async fn list_payments<L: Ledger>(
    State(state): State<AppState<L>>,
    Caller(principal): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let request = match page_request(query) {
        Ok(request) => request,
        Err(refused) => return problem(refused),
    };
    let page = state.ledger.payments(&principal, &request).await;
    list_answer(&state, page, &request, "/payments", Payment::to_json_text)
}

pub(crate) async fn list_users<L: Ledger>(
    State(state): State<AppState<L>>,
    Caller(principal): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let request = match page_request(query) {
        Ok(request) => request,
        Err(refused) => return problem(refused),
    };
    let page = state.ledger.users(&principal, &request).await;
    list_answer(&state, page, &request, "/users", User::to_json_text)
}

pub(crate) async fn get_user<L: Ledger>(
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
