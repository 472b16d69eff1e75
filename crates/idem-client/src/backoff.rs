//! How long to wait before a retry: exponential backoff with full jitter, or the server's
//! `Retry-After` when it sent one.

use std::time::Duration;

use http::{HeaderMap, header};
use rand::{Rng, RngCore};

/// The longest `Retry-After` read, in seconds; a larger value is read as this (the overall
/// deadline ends the wait long before anyway).
pub const RETRY_AFTER_S_MAX: u64 = 24 * 60 * 60;

/// Exponential backoff with full jitter: before retry `n` (1 for the first retry) wait a
/// uniformly random time in `0..=min(max, base * 2^(n-1))`.
///
/// Full jitter spreads the retries of many clients that failed together, so they do not
/// come back in lockstep (the "thundering herd").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// The ceiling no retry's wait exceeds.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of retry `retry`'s wait (retry 1 is the first retry): `base * 2^(retry-1)`,
    /// at most `max`.
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1);
        let factor = 1_u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `retry`, drawn from `rng` (uniform over `0..=ceiling`, to the nanosecond).
    pub fn delay(&self, retry: u32, rng: &mut dyn RngCore) -> Duration {
        let ceiling_ns = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling_ns))
    }
}

/// The server's `Retry-After`, when it is given in seconds (`Retry-After: 3`).
///
/// The HTTP-date form is not read: turning it into a wait needs the wall clock, which the
/// retry path never reads (so that simulations stay deterministic); the computed backoff
/// applies instead. A missing or unreadable value is `None`.
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Only digits: parsing fails only on overflow, which is "very long".
    let seconds = value.parse::<u64>().unwrap_or(u64::MAX).min(RETRY_AFTER_S_MAX);
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const BACKOFF: Backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2) };

    #[test]
    fn ceiling_doubles_from_base_and_stops_at_max() {
        // Goal: the exponential part of the schedule, including far-out retries that would overflow.
        let ceilings: Vec<u64> = (1..=7).map(|retry| BACKOFF.ceiling(retry).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(BACKOFF.ceiling(u32::MAX), BACKOFF.max);
        assert_eq!(BACKOFF.ceiling(0), BACKOFF.base, "retry 0 is treated as the first retry");
    }

    #[test]
    fn jittered_delays_stay_under_the_ceiling_and_spread_out() {
        // Goal: full jitter draws within 0..=ceiling and actually varies (not a fixed fraction).
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let delays: Vec<Duration> = (0..200).map(|_| BACKOFF.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|delay| *delay <= BACKOFF.ceiling(3)));
        assert!(delays.iter().any(|delay| *delay < BACKOFF.ceiling(3) / 4));
        assert!(delays.iter().any(|delay| *delay > BACKOFF.ceiling(3) * 3 / 4));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        // Goal: with an injected seeded source the schedule is reproducible (simulations replay it).
        let schedule = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=5).map(|retry| BACKOFF.delay(retry, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(5), schedule(5));
        assert_ne!(schedule(5), schedule(6));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        // Goal: delta-seconds are honoured; dates, junk and absence fall back to backoff (None).
        let read = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(value));
            retry_after(&headers)
        };
        assert_eq!(read("3"), Some(Duration::from_secs(3)));
        assert_eq!(read(" 0 "), Some(Duration::ZERO));
        assert_eq!(read("99999999999999999999999"), Some(Duration::from_secs(RETRY_AFTER_S_MAX)));
        assert_eq!(read("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(read("-1"), None);
        assert_eq!(read("1.5"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
