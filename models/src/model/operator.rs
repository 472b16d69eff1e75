//! The operator: `idem keys forget` on a record, at any moment (SPEC "Key lifecycle").
//! Forget is fenced: idem-core's `op::Forget` removes the record and moves the fence
//! counter on, so a handler still running under the forgotten claim can never complete,
//! renew or release afterwards (G3). The ghost counts the record id's lives, so a claim
//! granted before a forget is known for what it is without asking the store.

use idem_core::step::{self, op};
use idem_core::usage::UsageDelta;
use idem_core::{Record, RecordState, Write};

use super::store::held;
use super::{IdemModel, Tell, slot_index};
use crate::config::Variant;
use crate::message::Slot;
use crate::model::Action;
use crate::state::{SlotGhost, State};
use crate::story::StoryEvent;

impl IdemModel {
    /// The operator's steps enabled in `state`: forget a held record while forgets are left
    /// and the store is up (a forget that removes nothing changes nothing).
    pub(super) fn offer_operator_steps(&self, state: &State, actions: &mut Vec<Action>) {
        if state.budgets.forgets == 0 || !state.store.up {
            return;
        }
        for slot in 0..self.slots.len() {
            let slot = slot_index(slot);
            if state.store.memory.record(self.slot_id(slot)).is_some() {
                actions.push(Action::Forget { slot });
            }
        }
    }

    /// The operator forgets the record in `slot` through idem-core's store step. Like a
    /// purge it runs off the request path and waits for the disk. Whatever the store did,
    /// the record id starts a new life in the ghost: from now on it may run again, and
    /// nothing granted before may complete, renew or release.
    pub(super) fn forget(&self, state: &mut State, slot: Slot, tell: &mut Tell<'_>) {
        state.budgets.forgets -= 1;
        let id = self.slot_id(slot);
        let before = state.store.memory.record(id).cloned();
        let mut forget = step::step(id, &state.store.memory.view(id), op::Forget)
            .expect("a forget admits nothing, and in memory the fence counter is never behind");
        if self.config.variant == Variant::ForgetKeepsFence {
            // Bug: forget by letting the claim lapse now; the record stays in flight under
            // its fence and the counter stays where it was.
            forget.next_fence = None;
            if let Some(Record { state: RecordState::InFlight { holder, renewals, .. }, .. }) = &before {
                let lapsed_now = RecordState::InFlight {
                    lease_expires_at: state.store.now,
                    holder: holder.clone(),
                    renewals: *renewals,
                };
                let lapsed = Record { state: lapsed_now, ..before.clone().expect("matched above") };
                (forget.write, forget.usage) = (Write::Put(lapsed), UsageDelta::NONE);
            }
        }
        state.store.memory.commit(id, forget);
        state.store.durable = None;
        let ghost = &mut state.ghost.slots[usize::from(slot)];
        *ghost = SlotGhost { lives: ghost.lives.saturating_add(1), ..SlotGhost::default() };
        let next_fence = state.store.memory.counters().next_fence;
        tell.tell(|| StoryEvent::Forgotten {
            slot,
            removed: held(before.as_ref()),
            kept: held(state.store.memory.record(id)),
            next_fence,
        });
    }
}
