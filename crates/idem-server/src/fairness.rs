//! Per-caller fairness: how fast one principal may create new idempotency records.
//!
//! The store's record bound is shared by every caller, and a record lives for the
//! retention (24 h by default), so one caller creating keys fast could fill the bound and
//! lock everyone out until its records expire. The limit counts **executions** only (a
//! request that the layer runs under a fresh claim): replays, conflicts and reads are free.
//! Past it the caller gets 429 with `Retry-After`; the layer treats a handler's 429 as "try
//! again later" and releases the claim, so a refused request leaves no record.
//!
//! At the defaults (10 new keys per second, bursts of 100) one principal holds at most
//! 10 × 86,400 + 100 = 864,100 live records at 24 h retention, under the default bound of
//! 1,000,000. Principals are only as trustworthy as the principal extractor: with the demo's
//! bearer-token principal a client that invents tokens is many callers.
//!
//! The token buckets are governor's keyed rate limiter (GCRA), on governor's monotonic
//! clock. Bounded: at most [`FairnessLimits::principals_tracked_max`] callers are tracked;
//! past it the idle ones are forgotten, and if all are active, new callers wait.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::StatusCode;
use idem_core::Principal;
use idem_http::{ClaimContext, Problem};

/// Per-principal limits on new keys. Every field has a flag in `idem serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairnessLimits {
    /// Sustained new keys per second per principal (at least 1).
    pub new_keys_per_second: u32,
    /// New keys a principal may create at once after being idle (at least 1).
    pub burst: u32,
    /// Principals whose buckets are kept at once.
    pub principals_tracked_max: usize,
}

impl FairnessLimits {
    /// 10 new keys per second, bursts of 100, 100,000 callers tracked.
    pub const DEFAULT: FairnessLimits =
        FairnessLimits { new_keys_per_second: 10, burst: 100, principals_tracked_max: 100_000 };
}

impl Default for FairnessLimits {
    fn default() -> Self {
        FairnessLimits::DEFAULT
    }
}

/// The limiter in force, shared by the keyed handlers.
#[derive(Clone)]
pub(crate) struct Fairness {
    limiter: Arc<DefaultKeyedRateLimiter<Principal>>,
    principals_tracked_max: usize,
}

impl std::fmt::Debug for Fairness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fairness").field("tracked", &self.limiter.len()).finish_non_exhaustive()
    }
}

impl Fairness {
    pub(crate) fn new(limits: FairnessLimits) -> Fairness {
        let rate = std::num::NonZeroU32::new(limits.new_keys_per_second).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(limits.burst).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Fairness { limiter: Arc::new(RateLimiter::keyed(quota)), principals_tracked_max: limits.principals_tracked_max }
    }

    /// `Ok` if `principal` may create a key now, else how long until it may.
    fn admit(&self, principal: &Principal) -> Result<(), Duration> {
        if self.limiter.len() >= self.principals_tracked_max {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= self.principals_tracked_max {
                return Err(Duration::from_secs(1));
            }
        }
        self.limiter.check_key(principal).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// `Retry-After` for a caller told to wait `wait`: whole seconds (RFC 9110 §10.2.3),
/// rounded up so a retry never comes early, and at least 1.
fn retry_after_of(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

/// Middleware on the keyed handlers, inside the idempotency layer: an execution (the request
/// carries a [`ClaimContext`]) by a principal over its rate gets 429 and the claim is released.
pub(crate) async fn limit_new_keys(State(fairness): State<Fairness>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<ClaimContext>().map(|claim| claim.id().principal.clone()) else {
        return next.run(request).await;
    };
    match fairness.admit(&principal) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let retry_after = retry_after_of(wait);
            let detail = "this caller is creating new idempotency keys faster than its share allows; retry with the same key later";
            Problem::of(idem_http::problem::types::RATE_LIMITED, StatusCode::TOO_MANY_REQUESTS, detail)
                .with_retry_after(retry_after)
                .into_response()
                .map(axum::body::Body::new)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_after_of;

    #[test]
    fn retry_after_is_the_wait_in_whole_seconds_rounded_up_and_at_least_one() {
        let cases = [(0, 1), (200, 1), (1_000, 1), (1_001, 2), (1_500, 2), (2_000, 2), (2_999, 3)];
        for (wait_ms, seconds) in cases {
            assert_eq!(retry_after_of(Duration::from_millis(wait_ms)), Duration::from_secs(seconds), "{wait_ms} ms");
        }
    }
}
