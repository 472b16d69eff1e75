//! The admin router: an authorisation hook in front of three routes over a [`KeyAdmin`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, header};
use http_body::Body as HttpBody;
use idem_core::{Clock, Key, KeyAdmin, Principal, RecordId, StoreError, SystemClock};
use idem_http::{Body, BoxError, Problem};
use tower::{Service, ServiceExt as _};

use crate::cursor;
use crate::params::{ListParams, ParamError};
use crate::problems;
use crate::view::{KeyView, ListView};

/// The longest query string the router reads, in bytes: a longest cursor (1,022
/// characters) and every filter fit with room to spare.
pub const QUERY_BYTES_MAX: usize = 4096;

/// Who may use the admin API: called with every request's head before anything else
/// (routing included, so an unauthorised caller learns nothing, not even which paths
/// exist). Answer `Err` with the problem to send: 401 for no or bad credentials, 403 for
/// a caller who may not administer keys ([`problems::unauthorized`], [`problems::forbidden`]).
///
/// Any `Fn(&http::request::Parts) -> Result<(), Problem> + Send + Sync + 'static` is one.
/// There is no default and no constructor without one: an admin API that forgets to
/// authenticate would let anyone read every caller's keys and forget them.
pub trait Authorize: Send + Sync + 'static {
    /// Admits the request (`Ok`) or refuses it with a problem.
    ///
    /// # Errors
    /// The problem to answer instead of serving the request.
    fn authorize(&self, request: &http::request::Parts) -> Result<(), Problem>;
}

impl<F> Authorize for F
where
    F: Fn(&http::request::Parts) -> Result<(), Problem> + Send + Sync + 'static,
{
    fn authorize(&self, request: &http::request::Parts) -> Result<(), Problem> {
        self(request)
    }
}

/// The admin router's configuration: the store, the authorisation hook, the clock.
/// [`AdminRouter::into_service`] makes the [`AdminService`].
pub struct AdminRouter<S> {
    store: Arc<S>,
    authorize: Arc<dyn Authorize>,
    clock: Arc<dyn Clock>,
}

impl<S: KeyAdmin + 'static> AdminRouter<S> {
    /// The router over `store`, admitting the requests `authorize` admits, with the
    /// system clock.
    pub fn new(store: Arc<S>, authorize: impl Authorize) -> AdminRouter<S> {
        AdminRouter { store, authorize: Arc::new(authorize), clock: Arc::new(SystemClock) }
    }

    /// Where `now` comes from: what `lease_left_ms`, `expired` and the age filters count
    /// from. Tests pass a [`idem_core::ManualClock`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> AdminRouter<S> {
        self.clock = clock;
        self
    }

    /// The service.
    #[must_use]
    pub fn into_service(self) -> AdminService {
        let state = AdminState { store: self.store, clock: self.clock };
        let router = Router::new()
            .route("/keys", get(list::<S>))
            .route("/keys/{id}", get(show_id::<S>).delete(forget_id::<S>))
            .route("/keys/{caller}/{key}", get(show::<S>).delete(forget::<S>))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state);
        AdminService { authorize: self.authorize, router }
    }
}

/// [`AdminRouter::new`] then [`AdminRouter::into_service`].
pub fn admin_service<S: KeyAdmin + 'static>(store: Arc<S>, authorize: impl Authorize) -> AdminService {
    AdminRouter::new(store, authorize).into_service()
}

/// The admin API as a tower service over any request body (hyper's, axum's): it answers
/// with idem-http's [`Body`] and never fails (every error is a problem response).
///
/// Each request is, in order: authorised ([`Authorize`]); refused with 413 if it declares
/// a body (the API takes none; an undeclared one is never read); refused with 414 if its
/// query string is over [`QUERY_BYTES_MAX`]; then routed. Paths are relative to where the
/// service is mounted (with axum: `Router::nest_service("/admin", service)`).
#[derive(Clone)]
pub struct AdminService {
    authorize: Arc<dyn Authorize>,
    router: Router,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for AdminService
where
    B: HttpBody<Data = idem_core::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; it is cloned per request below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let refused = self.authorize.authorize(&parts).err().or_else(|| {
            if body.size_hint().lower() > 0 {
                return Some(problems::body_not_accepted());
            }
            let query_bytes = parts.uri.query().map_or(0, str::len);
            (query_bytes > QUERY_BYTES_MAX).then(|| problems::query_too_long(query_bytes))
        });
        if let Some(problem) = refused {
            return Box::pin(std::future::ready(Ok(problem.into_response())));
        }
        let request = Request::from_parts(parts, axum::body::Body::new(body));
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(Body::new))
        })
    }
}

/// What the handlers share.
struct AdminState<S> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
}

impl<S> Clone for AdminState<S> {
    fn clone(&self) -> AdminState<S> {
        AdminState { store: Arc::clone(&self.store), clock: Arc::clone(&self.clock) }
    }
}

async fn list<S: KeyAdmin>(
    State(state): State<AdminState<S>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return problem(problems::invalid_request(rejection.body_text())),
    };
    let now = state.clock.now();
    let query = match params.to_query(now) {
        Ok(query) => query,
        Err(ParamError::Cursor(error)) => return problem(problems::invalid_cursor(&error)),
        Err(error) => return problem(problems::invalid_request(error.to_string())),
    };
    match state.store.list(&query).await {
        Ok(page) => json_response(&ListView::new(&page, now)),
        Err(error) => problem(store_problem(&error)),
    }
}

async fn show<S: KeyAdmin>(
    State(state): State<AdminState<S>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match named_id(path) {
        Ok(id) => show_record(&state, &id).await,
        Err(refused) => problem(refused),
    }
}

async fn show_id<S: KeyAdmin>(
    State(state): State<AdminState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    match opaque_id(path) {
        Ok(id) => show_record(&state, &id).await,
        Err(refused) => problem(refused),
    }
}

async fn forget<S: KeyAdmin>(
    State(state): State<AdminState<S>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match named_id(path) {
        Ok(id) => forget_record(&state, &id).await,
        Err(refused) => problem(refused),
    }
}

async fn forget_id<S: KeyAdmin>(
    State(state): State<AdminState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    match opaque_id(path) {
        Ok(id) => forget_record(&state, &id).await,
        Err(refused) => problem(refused),
    }
}

async fn show_record<S: KeyAdmin>(state: &AdminState<S>, id: &RecordId) -> Response {
    match state.store.get(id).await {
        Ok(Some(record)) => json_response(&KeyView::new(id, &record, state.clock.now())),
        Ok(None) => problem(problems::no_record(id)),
        Err(error) => problem(store_problem(&error)),
    }
}

/// Forgets through [`KeyAdmin::forget`], which moves the fence on (SPEC "Key lifecycle"),
/// and answers the record as it was. Each forget that removed a record is logged (target
/// `idem_admin`, level info: caller, key, state and fence), an operator's audit trail of
/// keys that will run again.
async fn forget_record<S: KeyAdmin>(state: &AdminState<S>, id: &RecordId) -> Response {
    match state.store.forget(id).await {
        Ok(Some(record)) => {
            tracing::info!(
                target: "idem_admin",
                caller = id.principal.as_str(),
                key = id.key.as_str(),
                state = record.state.name(),
                fence = record.fence.get(),
                "forgot a record: the key runs again on its next request"
            );
            json_response(&KeyView::new(id, &record, state.clock.now()))
        }
        Ok(None) => problem(problems::no_record(id)),
        Err(error) => problem(store_problem(&error)),
    }
}

/// `/keys/{caller}/{key}`, each segment percent-decoded by the router.
fn named_id(path: Result<Path<(String, String)>, PathRejection>) -> Result<RecordId, Problem> {
    let Path((caller, key)) = path.map_err(|rejection| problems::invalid_request(rejection.body_text()))?;
    let principal =
        Principal::new(&caller).map_err(|error| problems::invalid_request(format!("caller {caller:?}: {error}")))?;
    let key = Key::from_chars(&key).map_err(|error| problems::invalid_request(format!("key {key:?}: {error}")))?;
    Ok(RecordId::new(principal, key))
}

/// `/keys/{id}`: a record's opaque id, the only address of an anonymous caller's record.
fn opaque_id(path: Result<Path<String>, PathRejection>) -> Result<RecordId, Problem> {
    let Path(id) = path.map_err(|rejection| problems::invalid_request(rejection.body_text()))?;
    cursor::decode(&id).map_err(|error| problems::invalid_id(&error))
}

fn store_problem(error: &StoreError) -> Problem {
    match error {
        StoreError::Unavailable { retry_after, .. } => problems::store_unavailable(*retry_after),
        StoreError::Full { .. } => problems::store_unavailable(None),
        StoreError::Corrupt { detail } => problems::store_corrupt(detail),
    }
}

async fn not_found(request: axum::extract::Request) -> Response {
    problem(problems::not_found(request.uri().path()))
}

async fn method_not_allowed(request: axum::extract::Request) -> Response {
    problem(problems::method_not_allowed(request.method(), request.uri().path()))
}

fn problem(problem: Problem) -> Response {
    problem.into_response().map(axum::body::Body::new)
}

/// `value` as `application/json`, not to be cached (it shows live records).
fn json_response(value: &impl serde::Serialize) -> Response {
    let Ok(json) = serde_json::to_vec(value) else {
        // The views hold strings, numbers and booleans only, which always serialise.
        return problem(problems::internal("a view did not serialise"));
    };
    let mut response = json.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
