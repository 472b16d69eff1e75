//! Time: how far the clock may move in a state, and when timers are due.
//!
//! The clock moves only when someone waits, and then to the end of the wait; see the crate
//! docs, "Time".

use std::time::Duration;

use idem_core::Timestamp;

use super::IdemModel;
use crate::config::Variant;
use crate::message::ServerIndex;
use crate::state::{Handler, OpState, Pace, Phase, State};

impl IdemModel {
    /// When the attempt sent at `sent_at` times out: after the attempt timeout, or at the
    /// deadline if that comes first (idem-client's `attempt_at`).
    pub(super) fn attempt_ends_at(&self, progress: &OpState, sent_at: Timestamp) -> Timestamp {
        sent_at.saturating_add(self.config.client.attempt_timeout).min(progress.deadline_at)
    }

    /// The latest time the clock may move to now: every operation has begun, no client
    /// timer may be skipped (each fires at its time), a message arrives before the clock
    /// moves unless the network holds it back, a healthy handler answers within the handler
    /// time (a slow one within the slow handler time), a running handler renews on
    /// schedule unless it stalled (so its lease cannot lapse), and no time passes while the
    /// store is down.
    pub(super) fn time_limit(&self, state: &State) -> Timestamp {
        if !state.store.up || state.network.iter().any(|m| !m.delayed()) {
            return state.store.now;
        }
        let mut limit = Timestamp::from_unix_ms(u64::MAX);
        for progress in &state.ops {
            match progress.phase {
                // Every operation begins before the clock first moves.
                Phase::Idle => return state.store.now,
                Phase::Waiting { sent_at } => limit = limit.min(self.attempt_ends_at(progress, sent_at)),
                Phase::Sleeping { until } => limit = limit.min(until),
                Phase::Done(_) | Phase::GaveUp(_) => {}
            }
        }
        for (_, handler) in state.handlers() {
            limit = limit.min(self.handler_time_limit(handler));
        }
        limit
    }

    /// How far one running handler lets the clock move: to the end of its running time
    /// (unless it stalled) and to its next heartbeat (if it renews).
    fn handler_time_limit(&self, handler: &Handler) -> Timestamp {
        let mut limit = Timestamp::from_unix_ms(u64::MAX);
        let runs_for = match handler.pace {
            Pace::Healthy => Some(self.config.handler_time),
            Pace::Slow => Some(self.config.slow_handler_time),
            Pace::Stalled => None,
        };
        if let Some(runs_for) = runs_for {
            limit = limit.min(handler.started_at.saturating_add(runs_for));
        }
        let renews = self.config.renewals && handler.pace != Pace::Stalled && handler.believed.is_none();
        let heartbeat = handler.renewed_at.saturating_add(self.renew_every());
        if renews && self.renews_at(handler, heartbeat) {
            // The heartbeat fires on schedule, before the lease could lapse.
            limit = limit.min(heartbeat);
        }
        limit
    }

    /// Whether the layer still renews `handler`'s claim at `at`: only before the execution
    /// ceiling (idem-once stops renewing once the execution has run that long, so the
    /// claim lapses at most one lease later). Variant `renews-past-ceiling` renews on.
    pub(super) fn renews_at(&self, handler: &Handler, at: Timestamp) -> bool {
        match self.config.ceiling {
            Some(ceiling) if self.config.variant != Variant::RenewsPastCeiling => {
                at < handler.started_at.saturating_add(ceiling)
            }
            _ => true,
        }
    }

    /// Whether the clock may move to `target` now.
    pub(super) fn may_move_to(&self, state: &State, target: Timestamp) -> bool {
        state.store.now <= target && target <= self.time_limit(state)
    }

    /// When `handler` renews next: a third of a lease after its last renewal, or now if
    /// that is past.
    pub(super) fn renewal_due(&self, handler: &Handler, now: Timestamp) -> Timestamp {
        handler.renewed_at.saturating_add(self.renew_every()).max(now)
    }

    /// The heartbeat's period: idem-core's `Policy::renew_every` (a third of a lease), or
    /// the whole lease under variant `renews-every-lease`.
    fn renew_every(&self) -> Duration {
        match self.config.variant {
            Variant::RenewsEveryLease => self.policy.lease(),
            _ => self.policy.renew_every(),
        }
    }

    /// How far `server`'s clock runs ahead of the store's: server 1 is exact, every other
    /// server runs `skew` ahead (the largest offset between two servers is what matters).
    /// Variant `skewed-lease` puts them a whole lease ahead, past the bound a renewing
    /// holder's claim survives (see docs/model.md, "Clock skew").
    pub(super) fn clock_offset(&self, server: ServerIndex) -> Duration {
        match (server, self.config.variant) {
            (0, _) => Duration::ZERO,
            (_, Variant::SkewedLease) => self.policy.lease(),
            _ => self.config.skew,
        }
    }

    /// The time `server` reads on its own clock, which it passes to the store's step.
    pub(super) fn server_now(&self, state: &State, server: ServerIndex) -> Timestamp {
        state.store.now.saturating_add(self.clock_offset(server))
    }

    /// Whether servers' clocks differ (then server replicas are not interchangeable).
    pub(super) fn clocks_differ(&self) -> bool {
        self.config.servers > 1 && (0..self.config.servers).any(|server| self.clock_offset(server) != Duration::ZERO)
    }
}
