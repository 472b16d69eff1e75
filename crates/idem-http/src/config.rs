//! The layer's configuration as every request reads it (`Config`, built once by
//! [`crate::IdempotencyBuilder`]), its defaults, and the choices it offers
//! ([`ConflictPolicy`], [`MissingKey`]).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use idem_core::Clock;
use tokio_util::task::TaskTracker;

use crate::Problem;
use crate::headers::HeaderFilter;
use crate::principal::PrincipalExtractor;
use crate::purge::Purger;
use crate::route::{Route, RouteMatch};

/// Default request body limit: 1 MiB (SPEC).
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default limit of a response body the layer records: 1 MiB.
pub const RESPONSE_BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// The longest [`ConflictPolicy::Wait`] bound accepted: a request should not hang longer.
pub const WAIT_MAX: Duration = Duration::from_secs(120);

/// What to do when a request finds another request with the same key in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Answer 409 with `Retry-After` at once (the default).
    #[default]
    Reject,
    /// Wait up to this long for the in-flight request to finish, polling the store with
    /// backoff (on the runtime's timer), then answer with its recorded response; if it has
    /// not finished by then, answer 409. If it failed and gave its claim back, this request
    /// claims and runs the handler itself.
    Wait(Duration),
}

/// What to do with a request that should carry a key but carries none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Answer 400 (the default).
    #[default]
    Reject,
    /// Pass it to the handler untouched, as if the method needed no key.
    PassThrough,
}

/// Default cap on a 409's `Retry-After`: most requests in flight finish within a second.
pub const CONFLICT_RETRY_AFTER_MAX_DEFAULT: Duration = Duration::from_secs(1);

/// Default `Retry-After` of the store-full 503: a full store frees room only when expired
/// records are purged, which a purge on a one-minute schedule does at most this late.
pub const STORE_FULL_RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// Everything the service needs per request; built once, shared by every clone.
pub(crate) struct Config {
    /// What a request no route matches is decided under.
    pub(crate) default_route: Arc<Route>,
    /// The routes, first match wins.
    pub(crate) routes: Vec<(RouteMatch, Arc<Route>)>,
    /// The header that carries the key (default `Idempotency-Key`).
    pub(crate) key_header: HeaderName,
    /// The header whose value a claim keeps as its holder's request id.
    pub(crate) request_id_header: HeaderName,
    pub(crate) request_body_bytes_max: usize,
    pub(crate) response_body_bytes_max: usize,
    pub(crate) filter: Arc<HeaderFilter>,
    pub(crate) methods: Vec<Method>,
    pub(crate) missing_key: MissingKey,
    pub(crate) principal: PrincipalExtractor,
    pub(crate) conflict: ConflictPolicy,
    /// The cap of a 409 in-progress answer's `Retry-After` ([`idem_core::reply::retry_after`]).
    pub(crate) conflict_retry_after_max: Duration,
    /// The `Retry-After` of a 503 when the store is full.
    pub(crate) store_full_retry_after: Duration,
    /// The purge task, started on the first request, stopped when this is dropped.
    pub(crate) purger: Purger,
    pub(crate) clock: Arc<dyn Clock>,
    /// The base of problem type URIs.
    pub(crate) problem_type_base: String,
    /// Tracks every keyed request's work, also after its client went away.
    pub(crate) tracker: TaskTracker,
    /// Whether a replay counts itself in its record ([`idem_core::Store::count_replay`]).
    pub(crate) count_replays: bool,
}

impl Config {
    /// What a request with `method` and `path` is decided under: its route's settings.
    pub(crate) fn route_for(&self, method: &Method, path: &str) -> Arc<Route> {
        let matched = self.routes.iter().find(|(route, _)| route.matches(method, path));
        Arc::clone(matched.map_or(&self.default_route, |(_, route)| route))
    }

    /// `problem` as a response, its type under the configured base.
    pub(crate) fn answer(&self, problem: Problem) -> http::Response<crate::Body> {
        problem.into_response_at(&self.problem_type_base)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("default_route", &self.default_route)
            .field("routes", &self.routes)
            .field("key_header", &self.key_header)
            .field("request_body_bytes_max", &self.request_body_bytes_max)
            .field("response_body_bytes_max", &self.response_body_bytes_max)
            .field("filter", &self.filter)
            .field("methods", &self.methods)
            .field("missing_key", &self.missing_key)
            .field("conflict", &self.conflict)
            .field("conflict_retry_after_max", &self.conflict_retry_after_max)
            .field("problem_type_base", &self.problem_type_base)
            .finish_non_exhaustive()
    }
}
