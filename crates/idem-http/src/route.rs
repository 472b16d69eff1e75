//! Per-route policy (one layer, several routes): retention, lease, tombstone, execution
//! ceiling, fingerprint rules and try-later statuses, each falling back to the layer's.
//!
//! A route is a method (or every keyed method) and a path pattern: an exact path
//! (`/payments`) or a prefix (`/payments/*` covers `/payments/` and everything below
//! it). The first route added that matches a request decides for it; a request that no
//! route matches gets the layer's own settings.
//!
//! ```
//! use std::time::Duration;
//! use idem_http::{IdempotencyLayer, RoutePolicy, SemanticRules, FingerprintRules};
//! use idem_core::MemoryStore;
//!
//! let refunds = RoutePolicy::new()
//!     .retention(Duration::from_secs(7 * 24 * 3600))
//!     .tombstone(Duration::from_secs(30 * 24 * 3600))
//!     .fingerprint(FingerprintRules::Semantic(SemanticRules::new().ignore("/sent_at")?));
//! let layer = IdempotencyLayer::builder(MemoryStore::default())
//!     .route(None, "/refunds/*", refunds)
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use http::{Method, StatusCode};
use idem_core::{Policy, StatusRules, TryLaterStatuses};

use crate::error::ConfigError;
use crate::semantic::FingerprintRules;

/// The most routes one layer holds: matching walks them in order.
pub const ROUTES_MAX: usize = 256;

/// The longest execution ceiling accepted: a day.
pub const EXECUTION_MAX_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// What a route sets differently from the layer; every setting left out is the layer's.
#[derive(Clone, Debug, Default)]
pub struct RoutePolicy {
    pub(crate) lease: Option<Duration>,
    pub(crate) retention: Option<Duration>,
    pub(crate) tombstone: Option<Option<Duration>>,
    pub(crate) execution_max: Option<Option<Duration>>,
    pub(crate) fingerprint: Option<FingerprintRules>,
    pub(crate) try_later: Option<Vec<StatusCode>>,
}

impl RoutePolicy {
    /// Everything as the layer has it.
    #[must_use]
    pub fn new() -> RoutePolicy {
        RoutePolicy::default()
    }

    /// The route's lease (see [`crate::IdempotencyBuilder::lease`]).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The route's retention (see [`crate::IdempotencyBuilder::retention`]).
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The route's tombstone period (see [`crate::IdempotencyBuilder::tombstone`]).
    #[must_use]
    pub fn tombstone(mut self, period: Duration) -> Self {
        self.tombstone = Some(Some(period));
        self
    }

    /// No tombstone on this route, whatever the layer has.
    #[must_use]
    pub fn no_tombstone(mut self) -> Self {
        self.tombstone = Some(None);
        self
    }

    /// The route's execution ceiling (see [`crate::IdempotencyBuilder::execution_max`]).
    #[must_use]
    pub fn execution_max(mut self, ceiling: Duration) -> Self {
        self.execution_max = Some(Some(ceiling));
        self
    }

    /// How the route fingerprints requests (see [`crate::IdempotencyBuilder::fingerprint`]).
    #[must_use]
    pub fn fingerprint(mut self, rules: FingerprintRules) -> Self {
        self.fingerprint = Some(rules);
        self
    }

    /// The route's try-later statuses (see [`crate::IdempotencyBuilder::try_later_statuses`]).
    #[must_use]
    pub fn try_later_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.try_later = Some(statuses.into_iter().collect());
        self
    }
}

/// What one request is decided under: the layer's settings with its route's on top.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) policy: Policy,
    pub(crate) execution_max: Option<Duration>,
    pub(crate) fingerprint: FingerprintRules,
    pub(crate) status_rules: StatusRules,
}

/// The layer's settings a route falls back to.
#[derive(Clone, Debug)]
pub(crate) struct LayerDefaults {
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) tombstone: Option<Duration>,
    pub(crate) execution_max: Option<Duration>,
    pub(crate) fingerprint: FingerprintRules,
    pub(crate) status_rules: StatusRules,
}

impl LayerDefaults {
    /// The route `policy` resolves to, checked as the layer's own settings are.
    pub(crate) fn resolve(&self, policy: &RoutePolicy) -> Result<Route, ConfigError> {
        let lease = policy.lease.unwrap_or(self.lease);
        let retention = policy.retention.unwrap_or(self.retention);
        let mut resolved = Policy::new(lease, retention)?;
        if let Some(period) = policy.tombstone.unwrap_or(self.tombstone) {
            resolved = resolved.with_tombstone(period)?;
        }
        let execution_max = policy.execution_max.unwrap_or(self.execution_max);
        if let Some(ceiling) = execution_max
            && (ceiling < resolved.renew_every() || ceiling > EXECUTION_MAX_LIMIT)
        {
            return Err(ConfigError::ExecutionMax { ceiling, renew_every: resolved.renew_every() });
        }
        let status_rules = match &policy.try_later {
            None => self.status_rules,
            Some(statuses) => {
                let try_later = TryLaterStatuses::of(statuses.iter().map(StatusCode::as_u16))
                    .map_err(|status| ConfigError::TryLaterNotClientError { status })?;
                StatusRules { try_later, ..self.status_rules }
            }
        };
        let fingerprint = policy.fingerprint.clone().unwrap_or_else(|| self.fingerprint.clone());
        Ok(Route { policy: resolved, execution_max, fingerprint, status_rules })
    }
}

/// Which requests a route covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    method: Option<Method>,
    path: PathPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl RouteMatch {
    /// `method` (or any) and `pattern`: `/a/b` exactly, or `/a/*` for `/a/` and below.
    pub(crate) fn new(method: Option<Method>, pattern: &str) -> Result<RouteMatch, ConfigError> {
        if !pattern.starts_with('/') || pattern[..pattern.len().saturating_sub(1)].contains('*') {
            return Err(ConfigError::RoutePattern { pattern: pattern.to_owned() });
        }
        let path = match pattern.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
            None => PathPattern::Exact(pattern.to_owned()),
        };
        Ok(RouteMatch { method, path })
    }

    /// Whether a request with `method` and `path` is the route's.
    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
        let method_matches = self.method.as_ref().is_none_or(|own| own == method);
        method_matches
            && match &self.path {
                PathPattern::Exact(exact) => path == exact,
                PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix_and_bad_ones_are_refused() {
        // Goal: the two pattern forms, the method filter, and refusal of anything else.
        let exact = RouteMatch::new(None, "/payments").expect("valid");
        assert!(exact.matches(&Method::POST, "/payments") && !exact.matches(&Method::POST, "/payments/1"));
        let prefix = RouteMatch::new(Some(Method::PATCH), "/users/*").expect("valid");
        assert!(prefix.matches(&Method::PATCH, "/users/7") && prefix.matches(&Method::PATCH, "/users/"));
        assert!(!prefix.matches(&Method::POST, "/users/7") && !prefix.matches(&Method::PATCH, "/users"));
        for bad in ["payments", "/a*/b", "*", ""] {
            assert!(RouteMatch::new(None, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_route_falls_back_to_the_layer_and_is_checked_like_it() {
        // Goal: unset settings are the layer's; a route's lease/retention/ceiling/try-later are validated.
        let defaults = LayerDefaults {
            lease: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
            tombstone: None,
            execution_max: None,
            fingerprint: FingerprintRules::Bytes,
            status_rules: StatusRules::default(),
        };
        let route = defaults.resolve(&RoutePolicy::new().retention(Duration::from_secs(60))).expect("valid");
        assert_eq!(
            (route.policy.lease(), route.policy.retention()),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
        let short = RoutePolicy::new().retention(Duration::from_secs(5));
        assert!(matches!(defaults.resolve(&short), Err(ConfigError::Policy(_))));
        let ceiling = RoutePolicy::new().execution_max(Duration::from_millis(10));
        assert!(matches!(defaults.resolve(&ceiling), Err(ConfigError::ExecutionMax { .. })));
        let bad = RoutePolicy::new().try_later_statuses([StatusCode::INTERNAL_SERVER_ERROR]);
        assert!(matches!(defaults.resolve(&bad), Err(ConfigError::TryLaterNotClientError { status: 500 })));
        let tombstone = defaults.resolve(&RoutePolicy::new().tombstone(Duration::from_secs(60))).expect("valid");
        assert_eq!(tombstone.policy.tombstone(), Some(Duration::from_secs(60)));
    }
}
