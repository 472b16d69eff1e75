//! Time as a value: the core is handed `now`, it never reads a clock.

use std::fmt;
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch.
///
/// Milliseconds are fine-grained enough for leases (seconds) and retention (hours) and
/// fit every store's integer column. Arithmetic saturates: a lease added to a time near
/// the end of `u64` stays at the end instead of wrapping into the past.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A time `unix_ms` milliseconds after the Unix epoch.
    #[must_use]
    pub const fn from_unix_ms(unix_ms: u64) -> Timestamp {
        Timestamp(unix_ms)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn unix_ms(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(duration_ms))
    }

    /// How long from `self` until `later`; zero if `later` is not later.
    #[must_use]
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}ms", self.0)
    }
}
