//! Simulated time: what the replicas' clocks read.

use idem_core::{Clock, Timestamp};

/// Simulated time zero as a Unix time (any fixed time: only differences matter).
pub(crate) const EPOCH_MS: u64 = 1_700_000_000_000;

/// Milliseconds since the simulation started, from turmoil (0 outside a simulated host).
pub(crate) fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// A replica's clock: simulated time plus a fixed skew (either way), so leases lapse
/// early or late as another replica sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SkewedClock {
    pub(crate) skew_ms: i64,
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms((EPOCH_MS + sim_ms()).saturating_add_signed(self.skew_ms))
    }
}
