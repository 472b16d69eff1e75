//! Faults, each spending a budget (which keeps the model finite): server crashes, stalls,
//! slow handlers, store outages. Network faults are the network's ([`super::network`]),
//! store crashes the store's ([`super::store`]).

use super::{IdemModel, Tell};
use crate::config::NetworkKind;
use crate::message::{Answer, OpIndex, Serial, ServerIndex};
use crate::model::Action;
use crate::state::{Budgets, Handler, Pace, State};
use crate::story::StoryEvent;

use super::server::ReplyTo;

impl IdemModel {
    /// The fault budgets a run starts with.
    pub(super) fn budgets(&self) -> Budgets {
        let config = &self.config;
        Budgets {
            crashes: config.crashes,
            lapses: if config.renewals { config.lapses } else { 0 },
            slow: config.slow,
            failures: config.failures,
            network_faults: match config.network {
                NetworkKind::Ordered => 0,
                NetworkKind::Duplicating | NetworkKind::Lossy => config.network_faults,
            },
            delays: config.delays,
            outages: config.outages,
            store_crashes: config.store_crashes,
            purges: config.purges,
            forgets: config.forgets,
        }
    }

    /// The faults a running handler may meet now: turning slow, stalling.
    pub(super) fn offer_handler_faults(
        &self,
        state: &State,
        server: ServerIndex,
        handler: &Handler,
        actions: &mut Vec<Action>,
    ) {
        let serial = handler.serial;
        if state.budgets.slow > 0 && handler.pace == Pace::Healthy {
            actions.push(Action::Slow { server, serial });
        }
        // Only a holder of the current claim has a lease that a stall lets lapse.
        if state.budgets.lapses > 0
            && handler.pace != Pace::Stalled
            && self.claim_in_flight(state, self.op(handler.op).slot).is_some_and(|(fence, _)| fence == handler.fence)
        {
            actions.push(Action::Stall { server, serial });
        }
    }

    /// A handler turns out slow: it may run until the slow handler time, renewing.
    pub(super) fn slow(&self, state: &mut State, server: ServerIndex, serial: Serial, tell: &mut Tell<'_>) {
        state.budgets.slow -= 1;
        let index = Self::handler_index(state, server, serial);
        let handler = &mut state.servers[usize::from(server)].handlers[index];
        handler.pace = Pace::Slow;
        let (op, started_at) = (handler.op, handler.started_at);
        self.met_fault(state, op);
        let until = started_at.saturating_add(self.config.slow_handler_time);
        tell.tell(|| StoryEvent::TurnsSlow { server, op, started_at, until });
    }

    /// A handler stalls: it stops renewing, so its lease may lapse while it runs.
    pub(super) fn stall(&self, state: &mut State, server: ServerIndex, serial: Serial, tell: &mut Tell<'_>) {
        state.budgets.lapses -= 1;
        let index = Self::handler_index(state, server, serial);
        let handler = &mut state.servers[usize::from(server)].handlers[index];
        handler.pace = Pace::Stalled;
        let (op, fence) = (handler.op, handler.fence);
        self.met_fault(state, op);
        tell.tell(|| {
            let lease_end = self.claim_in_flight(state, self.op(op).slot).map(|(_, end)| end);
            StoryEvent::Stalls { server, op, fence, lease_end }
        });
    }

    /// A server crashes and restarts at once: its handlers are gone, their claims stay in
    /// the store, and the clients waiting on them see their connections reset.
    pub(super) fn crash(&self, state: &mut State, server: ServerIndex, tell: &mut Tell<'_>) {
        state.budgets.crashes -= 1;
        let lost = std::mem::take(&mut state.servers[usize::from(server)].handlers);
        tell.tell(|| StoryEvent::Crashes { server, lost: lost.iter().map(|h| (h.op, h.fence)).collect() });
        let mut met: Vec<OpIndex> = lost.iter().map(|h| h.op).collect();
        met.sort_unstable();
        met.dedup();
        for op in met {
            self.met_fault(state, op);
        }
        for handler in &lost {
            let to = ReplyTo { op: handler.op, attempt: handler.attempt, server };
            self.answer(state, to, Answer::Reset, None, tell);
        }
    }

    /// The store becomes unreachable: the next store call fails.
    pub(super) fn store_down(&self, state: &mut State, tell: &mut Tell<'_>) {
        state.budgets.outages -= 1;
        state.store.up = false;
        tell.tell(|| StoryEvent::StoreDown);
    }

    /// The store is reachable again although nobody called it.
    pub(super) fn store_up(&self, state: &mut State, tell: &mut Tell<'_>) {
        state.store.up = true;
        tell.tell(|| StoryEvent::StoreUp);
    }
}
