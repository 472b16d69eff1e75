//! Time in the consumer model: how far the clock may move, and when a renewal is due.
//! See the module docs, "Time".

use idem_core::Timestamp;

use super::state::{ConsumerState, CopyPhase, Run, RunPhase};
use super::{ConsumerModel, HANDLER_TIME};

impl ConsumerModel {
    /// The latest time the clock may move to now: not past a ready copy's delivery while a
    /// consumer is free to take it, nor a completed run's ack (both happen before the clock
    /// moves), nor past a healthy handler's return or its next renewal.
    pub(super) fn time_limit(&self, state: &ConsumerState) -> Timestamp {
        let now = state.store.now;
        let free = state.consumers.iter().any(|held| held.runs.len() < usize::from(self.config.in_flight_max));
        let ready_now =
            free && state.copies.iter().any(|copy| matches!(copy.phase, CopyPhase::Ready { at } if at <= now));
        if ready_now || state.runs().any(|(_, run)| run.phase == RunPhase::Acking) {
            return now;
        }
        let mut limit = Timestamp::from_unix_ms(u64::MAX);
        for (_, run) in state.runs() {
            if run.stalled {
                continue;
            }
            limit = limit.min(run.started_at.saturating_add(HANDLER_TIME));
            if run.believed.is_none() {
                limit = limit.min(run.renewed_at.saturating_add(self.policy.renew_every()));
            }
        }
        limit
    }

    /// Whether the clock may be at `target` (or later, if it is already) now.
    pub(super) fn may_reach(&self, state: &ConsumerState, target: Timestamp) -> bool {
        target.max(state.store.now) <= self.time_limit(state)
    }

    /// When `run` renews next: a third of a lease after its last renewal, or now if past.
    pub(super) fn renewal_due(&self, run: &Run, now: Timestamp) -> Timestamp {
        run.renewed_at.saturating_add(self.policy.renew_every()).max(now)
    }
}
