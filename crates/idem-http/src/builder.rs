//! [`IdempotencyBuilder`]: the layer's settings, checked when built
//! ([`IdempotencyBuilder::build`], in `layer.rs`, makes the layer).

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use idem_core::{Clock, Policy, Principal, StatusRules, Store, SystemClock, TryLaterStatuses};
use tokio_util::task::TaskTracker;

use crate::Problem;
use crate::config::{
    CONFLICT_RETRY_AFTER_MAX_DEFAULT, Config, ConflictPolicy, MissingKey, REQUEST_BODY_BYTES_MAX_DEFAULT,
    RESPONSE_BODY_BYTES_MAX_DEFAULT, STORE_FULL_RETRY_AFTER_DEFAULT, WAIT_MAX,
};
use crate::error::ConfigError;
use crate::headers::{HeaderFilter, IDEMPOTENCY_KEY, REQUEST_ID};
use crate::principal::{PrincipalExtractor, authorization_principal};
use crate::problem::PROBLEM_TYPE_BASE;
use crate::purge::{PurgeSchedule, Purger};
use crate::route::{LayerDefaults, ROUTES_MAX, RouteMatch, RoutePolicy};
use crate::semantic::FingerprintRules;

/// Builds an [`crate::IdempotencyLayer`]; start with [`crate::IdempotencyLayer::builder`].
///
/// Defaults: retention 24 h, lease [`idem_core::LEASE_DEFAULT`] (10 s, renewed every third
/// of it while the handler runs), request body limit 1 MiB, recorded response limit
/// 1 MiB, keys required on POST and PATCH, a missing key is a 400, the principal is
/// [`authorization_principal`], conflicts answer 409 at once with `Retry-After` at most
/// 1 s, 2xx and 4xx responses are recorded except 408, 425 and 429, which release the
/// claim like 5xx responses do ([`StatusRules`]'s default), time from [`SystemClock`],
/// problem types under [`PROBLEM_TYPE_BASE`], a task tracker of the layer's own.
#[must_use = "a builder does nothing until `build` is called"]
pub struct IdempotencyBuilder<St> {
    store: Arc<St>,
    lease: Duration,
    retention: Duration,
    tombstone: Option<Duration>,
    execution_max: Option<Duration>,
    fingerprint: FingerprintRules,
    routes: Vec<(Option<Method>, String, RoutePolicy)>,
    key_header: HeaderName,
    request_id_header: HeaderName,
    request_body_bytes_max: usize,
    response_body_bytes_max: usize,
    deny: Vec<HeaderName>,
    methods: Vec<Method>,
    missing_key: MissingKey,
    principal: PrincipalExtractor,
    conflict: ConflictPolicy,
    conflict_retry_after_max: Duration,
    store_full_retry_after: Duration,
    status_rules: StatusRules,
    /// The try-later set asked for, checked at `build`.
    try_later: Result<TryLaterStatuses, u16>,
    purge: Option<PurgeSchedule>,
    clock: Arc<dyn Clock>,
    problem_type_base: String,
    tracker: TaskTracker,
    count_replays: bool,
}

impl<St: Store> IdempotencyBuilder<St> {
    pub(crate) fn new(store: Arc<St>) -> IdempotencyBuilder<St> {
        IdempotencyBuilder {
            store,
            lease: Policy::DEFAULT.lease(),
            retention: Policy::DEFAULT.retention(),
            tombstone: None,
            execution_max: None,
            fingerprint: FingerprintRules::Bytes,
            routes: Vec::new(),
            key_header: IDEMPOTENCY_KEY,
            request_id_header: REQUEST_ID,
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX_DEFAULT,
            response_body_bytes_max: RESPONSE_BODY_BYTES_MAX_DEFAULT,
            deny: Vec::new(),
            methods: vec![Method::POST, Method::PATCH],
            missing_key: MissingKey::Reject,
            principal: Arc::new(authorization_principal),
            conflict: ConflictPolicy::Reject,
            conflict_retry_after_max: CONFLICT_RETRY_AFTER_MAX_DEFAULT,
            store_full_retry_after: STORE_FULL_RETRY_AFTER_DEFAULT,
            status_rules: StatusRules::default(),
            try_later: Ok(TryLaterStatuses::default()),
            purge: Some(PurgeSchedule::DEFAULT),
            clock: Arc::new(SystemClock),
            problem_type_base: PROBLEM_TYPE_BASE.to_owned(),
            tracker: TaskTracker::new(),
            count_replays: true,
        }
    }

    /// How long a completed record is kept (default 24 h).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a claim stays valid without completion or renewal (default
    /// [`idem_core::LEASE_DEFAULT`], 10 s).
    ///
    /// The layer renews the claim every [`Policy::renew_every`] (a third of the lease) on
    /// the runtime's timer while the handler runs, so a slow handler keeps its claim however
    /// long it runs, and the lease only bounds how long a crashed holder blocks its key. It
    /// must outlast a renewal's delay: if two renewals in a row fail (the store is down),
    /// the claim may lapse and a retry take it over. Keep it shorter than a retrying
    /// client's budget (idem-client's defaults outlast the default lease).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Completed records leave a tombstone for `period` after their retention (default:
    /// none; SPEC "Key lifecycle"). A retry of the same request then gets `410 Gone`
    /// (problem `key-expired`) instead of running again, until the tombstone is purged in
    /// turn; a different request under the key is a 422. Tombstones count toward the
    /// store's limits. At most [`idem_core::TOMBSTONE_MAX`] (366 days).
    pub fn tombstone(mut self, period: Duration) -> Self {
        self.tombstone = Some(period);
        self
    }

    /// The execution ceiling (default: none; SPEC "Key lifecycle"): the layer stops
    /// renewing a claim once its handler has run this long, so a hung handler frees its
    /// key within the ceiling plus one lease (a retry then takes the claim over, and the
    /// hung handler's completion is refused, G3). The handler itself is not cancelled.
    /// From one renewal interval (a third of the lease) to 24 h.
    pub fn execution_max(mut self, ceiling: Duration) -> Self {
        self.execution_max = Some(ceiling);
        self
    }

    /// How requests are fingerprinted (default [`FingerprintRules::Bytes`]; see
    /// [`crate::semantic`] for [`FingerprintRules::Semantic`]).
    pub fn fingerprint(mut self, rules: FingerprintRules) -> Self {
        self.fingerprint = rules;
        self
    }

    /// Settings for one route (see [`crate::route`]): requests with `method` (or any keyed
    /// method for `None`) whose path is `pattern` (`/exact` or `/prefix/*`). Routes are
    /// matched in the order added; checked at [`IdempotencyBuilder::build`].
    pub fn route(mut self, method: Option<Method>, pattern: &str, policy: RoutePolicy) -> Self {
        self.routes.push((method, pattern.to_owned(), policy));
        self
    }

    /// The header that carries the key (default `Idempotency-Key`, the IETF draft's name).
    /// Answers echo the key in the same header.
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.key_header = name;
        self
    }

    /// The request header whose value a claim keeps as its holder's request id (default
    /// `X-Request-Id`), shown to operators and named in a duplicate's 409. The trace id
    /// comes from the W3C `traceparent` header. Values that are not short visible ASCII
    /// are not kept ([`idem_core::Holder`]).
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.request_id_header = name;
        self
    }

    /// The longest request body accepted on keyed requests (default 1 MiB); longer is a 413.
    pub fn request_body_bytes_max(mut self, bytes_max: usize) -> Self {
        self.request_body_bytes_max = bytes_max;
        self
    }

    /// The longest response body the layer records (default 1 MiB).
    ///
    /// A longer response still reaches the first client whole (the layer holds at most this
    /// many bytes of it, then streams the rest through), and the record is completed, so the
    /// operation never runs again for the key; retries get a `response-not-kept` problem
    /// with the original status and `Location` (SPEC "HTTP behaviour"; see the crate docs).
    pub fn response_body_bytes_max(mut self, bytes_max: usize) -> Self {
        self.response_body_bytes_max = bytes_max;
        self
    }

    /// Adds a response header that is never recorded (on top of hop-by-hop headers, `Date`,
    /// `Set-Cookie` and the CORS `Access-Control-*` headers, which never are).
    pub fn deny_header(mut self, name: HeaderName) -> Self {
        if !self.deny.contains(&name) {
            self.deny.push(name);
        }
        self
    }

    /// The methods whose requests need a key (default POST and PATCH); others pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Vec::new();
        for method in methods {
            if !self.methods.contains(&method) {
                self.methods.push(method);
            }
        }
        self
    }

    /// What a request without a key gets on a method that needs one (default: 400).
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// How the principal is found (default [`authorization_principal`]). A returned
    /// [`Problem`] is answered before anything is recorded.
    pub fn principal(mut self, extract: impl Fn(&Parts) -> Result<Principal, Problem> + Send + Sync + 'static) -> Self {
        self.principal = Arc::new(extract);
        self
    }

    /// What a request gets while another with the same key is in flight (default: 409 at once).
    pub fn conflict(mut self, conflict: ConflictPolicy) -> Self {
        self.conflict = conflict;
        self
    }

    /// The longest `Retry-After` a 409 in-progress answer carries (default 1 s).
    ///
    /// The store knows when the claim in flight lapses (up to the whole lease), but that is
    /// the worst case, for a crashed holder; a live one usually finishes far sooner. Sending
    /// the whole lease would make a retrying client with a shorter deadline give up at once,
    /// so the hint is the lease left, capped at this ([`idem_core::reply::retry_after`]:
    /// rounded up to whole seconds, at least [`idem_core::reply::RETRY_AFTER_MIN`], 1 s).
    pub fn conflict_retry_after_max(mut self, retry_after_max: Duration) -> Self {
        self.conflict_retry_after_max = retry_after_max;
        self
    }

    /// The `Retry-After` of the 503 `store-full` answer (default
    /// [`STORE_FULL_RETRY_AFTER_DEFAULT`], 60 s). A full store takes new keys again only
    /// once expired records are purged, so set it to the purge's interval.
    pub fn store_full_retry_after(mut self, retry_after: Duration) -> Self {
        self.store_full_retry_after = retry_after;
        self
    }

    /// Records 5xx responses too, instead of releasing the claim (default: false).
    /// Sets [`StatusRules::record_server_errors`].
    pub fn store_server_errors(mut self, store: bool) -> Self {
        self.status_rules.record_server_errors = store;
        self
    }

    /// Records the "try again later" responses 408, 425 and 429 too, instead of releasing
    /// the claim (default: false; SPEC: they release it, like a 5xx, so the retry the
    /// client was told to make runs the handler). Sets [`StatusRules::record_try_later`].
    pub fn store_try_later(mut self, store: bool) -> Self {
        self.status_rules.record_try_later = store;
        self
    }

    /// Whether each replay counts itself in its record, for operators (`replays` in
    /// `idem keys show` and the admin router; default: true). Counting is one more store
    /// write per replay, made after the answer is built and best effort (a failure is
    /// logged and counted in `idem_store_errors_total{operation="count_replay"}`, never answered), so a service
    /// that replays far more than it executes may turn it off.
    pub fn count_replays(mut self, count: bool) -> Self {
        self.count_replays = count;
        self
    }

    /// How the layer forgets expired records by itself (default
    /// [`PurgeSchedule::DEFAULT`]: every minute, bounded batches); see [`crate::purge`].
    pub fn purge_schedule(mut self, schedule: PurgeSchedule) -> Self {
        self.purge = Some(schedule);
        self
    }

    /// No purge task: the application purges itself (calling [`Store::purge_expired`] or
    /// [`crate::purge::purge_round`]), or a test moves time by hand. Without a purge, a
    /// store that reaches its record bound answers `store-full` for good.
    pub fn no_purge(mut self) -> Self {
        self.purge = None;
        self
    }

    /// Which 4xx statuses mean "try again later" and release the claim (default 408, 425
    /// and 429, [`idem_core::reply::TRY_LATER_STATUSES`]). Statuses outside 4xx are refused
    /// by [`IdempotencyBuilder::build`] ([`ConfigError::TryLaterNotClientError`]).
    pub fn try_later_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.try_later = TryLaterStatuses::of(statuses.into_iter().map(|status| status.as_u16()));
        self
    }

    /// The base of the problem type URIs the layer answers with (default
    /// [`PROBLEM_TYPE_BASE`], the project's `docs/problems.md#`): each `type` is this base
    /// plus the problem's slug (RFC 9457 section 3.1.1). Point it at a copy of that page
    /// that your API's clients can read.
    pub fn problem_type_base(mut self, base: impl Into<String>) -> Self {
        self.problem_type_base = base.into();
        self
    }

    /// The tracker that every keyed request's work runs under (default: a tracker of the
    /// layer's own, see [`IdempotencyLayer::task_tracker`](crate::IdempotencyLayer::task_tracker)).
    ///
    /// A keyed request whose client goes away keeps running, on a task spawned on this
    /// tracker, until its handler finishes and its record is completed. A server that
    /// drains at shutdown waits for that work after it stopped accepting requests:
    /// `tracker.close(); tokio::time::timeout(deadline, tracker.wait()).await` (see the
    /// crate docs, "Shutdown"). Passing the server's own tracker lets one `wait` cover
    /// the layer's work and the server's other tasks.
    pub fn task_tracker(mut self, tracker: TaskTracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Where `now` comes from (default [`SystemClock`]); simulations pass their own.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The checked configuration and the store: what [`IdempotencyBuilder::build`] makes
    /// the layer of.
    pub(crate) fn validate(self) -> Result<(Config, Arc<St>), ConfigError> {
        let try_later = self.try_later.map_err(|status| ConfigError::TryLaterNotClientError { status })?;
        let defaults = LayerDefaults {
            lease: self.lease,
            retention: self.retention,
            tombstone: self.tombstone,
            execution_max: self.execution_max,
            fingerprint: self.fingerprint,
            status_rules: StatusRules { try_later, ..self.status_rules },
        };
        let default_route = Arc::new(defaults.resolve(&RoutePolicy::new())?);
        if self.routes.len() > ROUTES_MAX {
            return Err(ConfigError::TooManyRoutes { max: ROUTES_MAX });
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (method, pattern, policy) in &self.routes {
            routes.push((RouteMatch::new(method.clone(), pattern)?, Arc::new(defaults.resolve(policy)?)));
        }
        if self.request_body_bytes_max == 0 {
            return Err(ConfigError::ZeroBodyLimit { which: "request_body_bytes_max" });
        }
        if self.response_body_bytes_max == 0 {
            return Err(ConfigError::ZeroBodyLimit { which: "response_body_bytes_max" });
        }
        if let ConflictPolicy::Wait(asked) = self.conflict
            && asked > WAIT_MAX
        {
            return Err(ConfigError::WaitTooLong { asked, max: WAIT_MAX });
        }
        let config = Config {
            default_route,
            routes,
            key_header: self.key_header,
            request_id_header: self.request_id_header,
            request_body_bytes_max: self.request_body_bytes_max,
            response_body_bytes_max: self.response_body_bytes_max,
            filter: Arc::new(HeaderFilter::new(self.deny)),
            methods: self.methods,
            missing_key: self.missing_key,
            principal: self.principal,
            conflict: self.conflict,
            conflict_retry_after_max: self.conflict_retry_after_max,
            store_full_retry_after: self.store_full_retry_after,
            purger: Purger::new(self.purge),
            clock: self.clock,
            problem_type_base: self.problem_type_base,
            tracker: self.tracker,
            count_replays: self.count_replays,
        };
        Ok((config, self.store))
    }
}

impl<St> std::fmt::Debug for IdempotencyBuilder<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyBuilder")
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("request_body_bytes_max", &self.request_body_bytes_max)
            .field("response_body_bytes_max", &self.response_body_bytes_max)
            .field("deny", &self.deny)
            .field("methods", &self.methods)
            .field("missing_key", &self.missing_key)
            .field("conflict", &self.conflict)
            .field("conflict_retry_after_max", &self.conflict_retry_after_max)
            .field("status_rules", &self.status_rules)
            .field("problem_type_base", &self.problem_type_base)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::{MemoryStore, PolicyError};

    fn builder() -> IdempotencyBuilder<MemoryStore> {
        IdempotencyBuilder::new(Arc::new(MemoryStore::default()))
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        // Goal: each invalid setting is a readable error, not a panic or a silent default.
        let lease_over_retention = builder().lease(Duration::from_secs(10)).retention(Duration::from_secs(5)).build();
        assert!(matches!(
            lease_over_retention,
            Err(ConfigError::Policy(PolicyError::RetentionNotLongerThanLease { .. }))
        ));
        assert_eq!(
            builder().request_body_bytes_max(0).build().err(),
            Some(ConfigError::ZeroBodyLimit { which: "request_body_bytes_max" })
        );
        assert_eq!(
            builder().response_body_bytes_max(0).build().err(),
            Some(ConfigError::ZeroBodyLimit { which: "response_body_bytes_max" })
        );
        let too_long = WAIT_MAX + Duration::from_secs(1);
        assert_eq!(
            builder().conflict(ConflictPolicy::Wait(too_long)).build().err(),
            Some(ConfigError::WaitTooLong { asked: too_long, max: WAIT_MAX })
        );
    }

    #[test]
    fn defaults_follow_the_spec() {
        // Goal: 24 h retention, the core's 10 s lease, 1 MiB body, POST and PATCH keyed,
        // 409 on conflict, 5xx and 408/425/429 release.
        let layer = builder().build().expect("defaults are valid");
        let config = layer.config();
        assert_eq!(config.default_route.policy, Policy::DEFAULT);
        assert_eq!(config.default_route.policy.lease(), idem_core::LEASE_DEFAULT);
        assert_eq!(config.default_route.policy.lease(), Duration::from_secs(10));
        assert_eq!(
            config.default_route.status_rules,
            StatusRules {
                record_server_errors: false,
                record_try_later: false,
                try_later: idem_core::TryLaterStatuses::default()
            }
        );
        assert_eq!(config.request_body_bytes_max, 1024 * 1024);
        assert_eq!(config.methods, [Method::POST, Method::PATCH]);
        assert_eq!(config.missing_key, MissingKey::Reject);
        assert_eq!(config.conflict, ConflictPolicy::Reject);
    }

    #[test]
    fn the_status_switches_set_the_core_rules() {
        // Goal: each builder switch sets its own field of idem-core's StatusRules, and only it.
        let server_errors = builder().store_server_errors(true).build().expect("valid");
        let try_later = builder().store_try_later(true).build().expect("valid");
        assert_eq!(
            server_errors.config().default_route.status_rules,
            StatusRules { record_server_errors: true, ..StatusRules::default() }
        );
        assert_eq!(
            try_later.config().default_route.status_rules,
            StatusRules { record_try_later: true, ..StatusRules::default() }
        );
    }
}
