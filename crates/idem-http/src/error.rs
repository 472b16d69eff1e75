//! [`ConfigError`]: why the layer's configuration (or a route's) is refused.

use std::time::Duration;

use idem_core::PolicyError;

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Lease and retention do not make a valid [`Policy`](idem_core::Policy).
    #[error("invalid lease or retention: {0}")]
    Policy(#[from] PolicyError),
    /// A body limit of zero would refuse every request (or every response) with a body.
    #[error("{which} must be at least 1 byte")]
    ZeroBodyLimit {
        /// Which limit.
        which: &'static str,
    },
    /// A try-later status that is not a 4xx status.
    #[error("try-later statuses must be 4xx, got {status}")]
    TryLaterNotClientError {
        /// The status given.
        status: u16,
    },
    /// The wait bound is over `WAIT_MAX` (in `config`).
    #[error("conflict wait of {asked:?} is longer than the {max:?} allowed")]
    WaitTooLong {
        /// The bound asked for.
        asked: Duration,
        /// The longest allowed, `WAIT_MAX` (in `config`).
        max: Duration,
    },
    /// The execution ceiling is shorter than one renewal interval (it would stop renewal
    /// before the first renewal) or longer than `EXECUTION_MAX_LIMIT` (in `route`).
    #[error("execution ceiling of {ceiling:?} must be from one renewal interval ({renew_every:?}) to 24 h")]
    ExecutionMax {
        /// The ceiling asked for.
        ceiling: Duration,
        /// The policy's renewal interval.
        renew_every: Duration,
    },
    /// A route pattern is not `/exact/path` or `/prefix/*`.
    #[error("route pattern {pattern:?} is not an exact path (`/a/b`) or a prefix (`/a/*`)")]
    RoutePattern {
        /// The pattern given.
        pattern: String,
    },
    /// More than `ROUTES_MAX` (in `route`) routes.
    #[error("at most {max} routes")]
    TooManyRoutes {
        /// The most allowed, `ROUTES_MAX` (in `route`).
        max: usize,
    },
}
