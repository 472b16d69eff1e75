//! The layer's configuration and its builder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::IdempotentRetryLayer;
use crate::backoff::Backoff;
use crate::keys::{KeyGenerator, SeededKeys, UuidV4Keys};

/// Default attempts per request, the first included. Chosen so that a client retrying
/// on 409s outlasts a crashed holder's lease even after the crash and the server's
/// restart have used up attempts of their own (see the relation checked below).
pub const ATTEMPTS_MAX_DEFAULT: u32 = 20;
/// Attempts the default budget sets aside for failures that are retried after a jittered
/// backoff, which may be near zero, instead of a server's `Retry-After`: the attempt a
/// server crash cuts off and the connections refused while the server restarts. Eight
/// covers a restart of several seconds (the expected backoff before the eighth retry is
/// about 5.6 s, and a longer restart uses up as much of the orphaned lease).
pub const FAST_FAILURES_ALLOWED: u32 = 8;
/// The most attempts a configuration may allow.
pub const ATTEMPTS_MAX_LIMIT: u32 = 100;
/// Default ceiling of the first retry's jittered wait.
pub const BACKOFF_BASE_DEFAULT: Duration = Duration::from_millis(100);
/// Default ceiling of any retry's jittered wait.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// Default time one attempt may take until the response headers arrive.
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time all attempts and waits of one request may take together.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(30);
/// The longest overall deadline a configuration may set.
pub const DEADLINE_LIMIT: Duration = Duration::from_secs(60 * 60);
/// Default limit of a request body the layer buffers for resending: 1 MiB, the server's default.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Statuses that are final whatever the configuration says: a malformed request (400),
/// a body over the server's limit (413), a key reused for a different request or content
/// the server cannot process (422).
pub const NEVER_RETRIED: [StatusCode; 3] =
    [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNPROCESSABLE_ENTITY];

const _: () = assert!(ATTEMPTS_MAX_DEFAULT >= 1 && ATTEMPTS_MAX_DEFAULT <= ATTEMPTS_MAX_LIMIT);
const _: () = assert!(DEADLINE_DEFAULT.as_nanos() <= DEADLINE_LIMIT.as_nanos());

// G6 with the shipped defaults: a holder that crashed blocks its key for at most
// `idem_core::LEASE_DEFAULT` (10 s). A server answers 409 with a `Retry-After` of at least
// `idem_core::reply::RETRY_AFTER_MIN` (1 s), which this client waits exactly. Of the
// default attempts, the first (cut off by the crash) and up to FAST_FAILURES_ALLOWED - 1
// connection failures while the server restarts wait only a jittered backoff; the other
// retries, at least (ATTEMPTS_MAX_DEFAULT - 1 - FAST_FAILURES_ALLOWED) = 11 of them, each
// wait at least 1 s on a 409, 11 s in all, past the lease. The deadline (30 s) leaves room
// for the lease, the wait that crosses its end, and one whole attempt after it
// (10 s + 1 s + 10 s).
const _: () = assert!(FAST_FAILURES_ALLOWED < ATTEMPTS_MAX_DEFAULT);
const _: () = assert!(
    (ATTEMPTS_MAX_DEFAULT - 1 - FAST_FAILURES_ALLOWED) as u128 * idem_core::reply::RETRY_AFTER_MIN.as_nanos()
        > idem_core::LEASE_DEFAULT.as_nanos()
);
const _: () = assert!(
    DEADLINE_DEFAULT.as_nanos()
        > idem_core::LEASE_DEFAULT.as_nanos()
            + idem_core::reply::RETRY_AFTER_MIN.as_nanos()
            + ATTEMPT_TIMEOUT_DEFAULT.as_nanos()
);
const _: () = assert!(BACKOFF_BASE_DEFAULT.as_nanos() <= BACKOFF_MAX_DEFAULT.as_nanos());

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The attempt count is 0 or over [`ATTEMPTS_MAX_LIMIT`].
    #[error("attempts_max must be 1 to {ATTEMPTS_MAX_LIMIT}, not {asked}")]
    Attempts {
        /// The count asked for.
        asked: u32,
    },
    /// A duration that must be positive is zero.
    #[error("{which} must be longer than zero")]
    ZeroDuration {
        /// Which setting.
        which: &'static str,
    },
    /// The backoff's first ceiling is above its overall ceiling.
    #[error("backoff base {base:?} is above backoff max {max:?}")]
    BackoffBaseOverMax {
        /// The base asked for.
        base: Duration,
        /// The max asked for.
        max: Duration,
    },
    /// The overall deadline is over [`DEADLINE_LIMIT`].
    #[error("deadline of {asked:?} is longer than the {DEADLINE_LIMIT:?} allowed")]
    DeadlineTooLong {
        /// The deadline asked for.
        asked: Duration,
    },
    /// A body limit of zero would refuse every request with a body.
    #[error("body_bytes_max must be at least 1 byte")]
    ZeroBodyLimit,
    /// A status was listed as retryable that must never be retried (see [`NEVER_RETRIED`]),
    /// or that is not an error.
    #[error("status {status} cannot be retried")]
    NotRetryable {
        /// The status.
        status: StatusCode,
    },
}

/// Everything the service needs per request; built once, shared by every clone.
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) attempts_max: u32,
    pub(crate) backoff: Backoff,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Duration,
    pub(crate) body_bytes_max: usize,
    pub(crate) retry_statuses: Vec<StatusCode>,
    pub(crate) keys: Arc<dyn KeyGenerator>,
    /// The jitter source; locked only to draw one number.
    pub(crate) rng: Mutex<Box<dyn RngCore + Send>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("methods", &self.methods)
            .field("attempts_max", &self.attempts_max)
            .field("backoff", &self.backoff)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("body_bytes_max", &self.body_bytes_max)
            .field("retry_statuses", &self.retry_statuses)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IdempotentRetryLayer`]; start with [`IdempotentRetryLayer::builder`].
///
/// Defaults: keys on POST and PATCH, [`ATTEMPTS_MAX_DEFAULT`] attempts, backoff ceilings
/// from [`BACKOFF_BASE_DEFAULT`] doubling up to [`BACKOFF_MAX_DEFAULT`], a per-attempt
/// timeout of [`ATTEMPT_TIMEOUT_DEFAULT`], an overall deadline of [`DEADLINE_DEFAULT`],
/// bodies up to [`BODY_BYTES_MAX_DEFAULT`], retries on 409, 429 and 503, keys from
/// [`UuidV4Keys`], jitter from a generator seeded once by the operating system.
#[must_use = "a builder does nothing until `build` is called"]
pub struct IdempotentRetryBuilder {
    methods: Vec<Method>,
    attempts_max: u32,
    backoff: Backoff,
    attempt_timeout: Duration,
    deadline: Duration,
    body_bytes_max: usize,
    retry_statuses: Vec<StatusCode>,
    keys: Option<Arc<dyn KeyGenerator>>,
    rng: Option<Box<dyn RngCore + Send>>,
}

impl Default for IdempotentRetryBuilder {
    fn default() -> Self {
        IdempotentRetryBuilder {
            methods: vec![Method::POST, Method::PATCH],
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff: Backoff { base: BACKOFF_BASE_DEFAULT, max: BACKOFF_MAX_DEFAULT },
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            deadline: DEADLINE_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            retry_statuses: vec![StatusCode::CONFLICT, StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE],
            keys: None,
            rng: None,
        }
    }
}

impl IdempotentRetryBuilder {
    /// The methods whose requests get a key and retries (default POST and PATCH). Other
    /// methods pass through: one attempt, no key, no timeout.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Vec::new();
        for method in methods {
            if !self.methods.contains(&method) {
                self.methods.push(method);
            }
        }
        self
    }

    /// Attempts per request, the first included (1 to [`ATTEMPTS_MAX_LIMIT`]).
    pub fn attempts_max(mut self, attempts_max: u32) -> Self {
        self.attempts_max = attempts_max;
        self
    }

    /// The jittered wait before retry `n` is at most `min(max, base * 2^(n-1))`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff { base, max };
        self
    }

    /// How long one attempt may wait for the response headers before it counts as failed.
    pub fn attempt_timeout(mut self, attempt_timeout: Duration) -> Self {
        self.attempt_timeout = attempt_timeout;
        self
    }

    /// How long all attempts and waits of one request may take together (at most
    /// [`DEADLINE_LIMIT`]). A wait that would end past it is not started.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The longest request body buffered for resending; a longer one is refused before
    /// anything is sent ([`crate::RetryError::BodyTooLarge`]).
    pub fn body_bytes_max(mut self, body_bytes_max: usize) -> Self {
        self.body_bytes_max = body_bytes_max;
        self
    }

    /// The statuses that are retried with the same key (default 409, 429, 503). Errors only
    /// (4xx, 5xx); [`NEVER_RETRIED`] is refused by [`build`](Self::build).
    pub fn retry_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.retry_statuses = Vec::new();
        for status in statuses {
            if !self.retry_statuses.contains(&status) {
                self.retry_statuses.push(status);
            }
        }
        self
    }

    /// Where keys come from (default [`UuidV4Keys`]).
    pub fn keys(mut self, keys: impl KeyGenerator + 'static) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Where the backoff's jitter comes from (default: a generator seeded once from the
    /// operating system when the layer is built).
    pub fn rng(mut self, rng: impl RngCore + Send + 'static) -> Self {
        self.rng = Some(Box::new(rng));
        self
    }

    /// Deterministic keys and jitter from one seed: [`SeededKeys`] and a ChaCha8 generator,
    /// both fixed by `seed`. For tests and simulations.
    pub fn seed(self, seed: u64) -> Self {
        // A different stream for jitter, so the jitter and the keys are not the same bytes.
        let jitter_seed = seed ^ 0x9E37_79B9_7F4A_7C15;
        self.keys(SeededKeys::new(seed)).rng(ChaCha8Rng::seed_from_u64(jitter_seed))
    }

    /// The layer.
    ///
    /// # Errors
    /// [`ConfigError`] when a count, duration or limit is out of range, or a status that
    /// must not be retried is listed as retryable.
    pub fn build(self) -> Result<IdempotentRetryLayer, ConfigError> {
        if !(1..=ATTEMPTS_MAX_LIMIT).contains(&self.attempts_max) {
            return Err(ConfigError::Attempts { asked: self.attempts_max });
        }
        for (which, duration) in [
            ("backoff base", self.backoff.base),
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
        ] {
            if duration.is_zero() {
                return Err(ConfigError::ZeroDuration { which });
            }
        }
        if self.backoff.base > self.backoff.max {
            return Err(ConfigError::BackoffBaseOverMax { base: self.backoff.base, max: self.backoff.max });
        }
        if self.deadline > DEADLINE_LIMIT {
            return Err(ConfigError::DeadlineTooLong { asked: self.deadline });
        }
        if self.body_bytes_max == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        if let Some(&status) = self
            .retry_statuses
            .iter()
            .find(|status| NEVER_RETRIED.contains(status) || !(status.is_client_error() || status.is_server_error()))
        {
            return Err(ConfigError::NotRetryable { status });
        }
        let config = Config {
            methods: self.methods,
            attempts_max: self.attempts_max,
            backoff: self.backoff,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            body_bytes_max: self.body_bytes_max,
            retry_statuses: self.retry_statuses,
            keys: self.keys.unwrap_or_else(|| Arc::new(UuidV4Keys)),
            rng: Mutex::new(self.rng.unwrap_or_else(|| Box::new(StdRng::from_os_rng()))),
        };
        Ok(IdempotentRetryLayer::from_config(Arc::new(config)))
    }
}

impl std::fmt::Debug for IdempotentRetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentRetryBuilder")
            .field("methods", &self.methods)
            .field("attempts_max", &self.attempts_max)
            .field("backoff", &self.backoff)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("body_bytes_max", &self.body_bytes_max)
            .field("retry_statuses", &self.retry_statuses)
            .field("keys_injected", &self.keys.is_some())
            .field("rng_injected", &self.rng.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> IdempotentRetryBuilder {
        IdempotentRetryBuilder::default()
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        // Goal: every out-of-range setting is a readable error, never a silent default or a panic.
        assert_eq!(builder().attempts_max(0).build().err(), Some(ConfigError::Attempts { asked: 0 }));
        assert_eq!(builder().attempts_max(101).build().err(), Some(ConfigError::Attempts { asked: 101 }));
        assert_eq!(
            builder().attempt_timeout(Duration::ZERO).build().err(),
            Some(ConfigError::ZeroDuration { which: "attempt_timeout" })
        );
        assert_eq!(
            builder().backoff(Duration::ZERO, Duration::from_secs(1)).build().err(),
            Some(ConfigError::ZeroDuration { which: "backoff base" })
        );
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(builder().backoff(base, max).build().err(), Some(ConfigError::BackoffBaseOverMax { base, max }));
        let long = DEADLINE_LIMIT + Duration::from_secs(1);
        assert_eq!(builder().deadline(long).build().err(), Some(ConfigError::DeadlineTooLong { asked: long }));
        assert_eq!(builder().body_bytes_max(0).build().err(), Some(ConfigError::ZeroBodyLimit));
        for status in [StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_REQUEST, StatusCode::OK] {
            assert_eq!(
                builder().retry_statuses([StatusCode::SERVICE_UNAVAILABLE, status]).build().err(),
                Some(ConfigError::NotRetryable { status })
            );
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        // Goal: POST and PATCH keyed; 409, 429 and 503 retried; bounded attempts, deadline and body.
        let layer = builder().build().expect("the defaults are valid");
        let config = layer.config();
        assert_eq!(config.methods, [Method::POST, Method::PATCH]);
        assert_eq!(
            config.retry_statuses,
            [StatusCode::CONFLICT, StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE]
        );
        assert_eq!(config.attempts_max, ATTEMPTS_MAX_DEFAULT);
        assert_eq!(config.deadline, DEADLINE_DEFAULT);
        assert_eq!(config.body_bytes_max, BODY_BYTES_MAX_DEFAULT);
    }
}
