//! The store: idem-core's `MemoryState` changed only by idem-core's store step, whether it
//! can be reached, what its disk holds (for store crashes), and expiry.

use idem_core::step::{self, Operation as StoreOperation, StepError};
use idem_core::{Fence, MemoryState, Record, RecordId, RecordState, Timestamp};

use super::{IdemModel, Tell, slot_index};
use crate::config::{Mode, Variant};
use crate::message::{Message, OpIndex, ServerIndex, Slot};
use crate::model::Action;
use crate::state::{Broken, Durable, SlotGhost, State, Store};
use crate::story::{FenceCounter, Held, StoryEvent};

/// Purge at most this many records per expiry step (the model holds at most 17).
const PURGE_BATCH_MAX: usize = 64;

impl IdemModel {
    /// The store's own steps enabled in `state`: an outage, its end, a crash, a purge.
    pub(super) fn offer_store_steps(&self, state: &State, actions: &mut Vec<Action>) {
        // Whether a store call is still to come: a request or a running handler is out.
        let busy =
            state.network.iter().any(|m| matches!(m, Message::Request { .. })) || state.handlers().next().is_some();
        if !state.store.up {
            if !busy {
                actions.push(Action::StoreUp);
            }
            return;
        }
        // An outage nobody meets changes nothing.
        if state.budgets.outages > 0 && busy {
            actions.push(Action::StoreDown);
        }
        // A store crash with everything on disk loses nothing.
        if state.budgets.store_crashes > 0 && state.store.durable.is_some() {
            actions.push(Action::StoreCrash);
        }
        // The purge races the requests: offered while a record is held (it removes nothing
        // before its time, which is what the property checks).
        if state.budgets.purges > 0 && state.store.memory.records().next().is_some() {
            actions.extend((0..self.config.servers).map(|server| Action::Purge { server }));
        }
        for slot in 0..self.slots.len() {
            let slot = slot_index(slot);
            let Some(record) = state.store.memory.record(self.slot_id(slot)) else { continue };
            let at = record.due_at();
            // The purge visits every record due by then. One it forgets must be settled; one
            // it shrinks to a tombstone need only be quiet: a request still on its way gets
            // 410 from the tombstone, and meeting it is what tombstones are for.
            let ready = (0..self.slots.len()).all(|other| {
                let other = slot_index(other);
                match state.store.memory.record(self.slot_id(other)) {
                    Some(held) if held.due_at() <= at => {
                        self.slot_settled(state, other) || (shrinks(held, at) && self.slot_quiet(state, other))
                    }
                    _ => true,
                }
            });
            if ready && self.may_move_to(state, at) {
                actions.push(Action::Expire { slot });
            }
        }
    }

    /// Runs `operation` on the record in `slot` through idem-core's store step. `believed`
    /// (variant `no-claim`) replaces the record the step reads.
    pub(super) fn store_step<O: StoreOperation>(
        &self,
        state: &mut State,
        slot: Slot,
        believed: Option<&Record>,
        operation: O,
    ) -> Result<O::Answer, StepError> {
        run_on(&mut state.store.memory, self.slot_id(slot), believed, operation)
    }

    /// Whether the store call about to be made fails for an outage. An outage fails one
    /// call and is over: a longer one is several outages.
    pub(super) fn store_call_fails(state: &mut State) -> bool {
        call_fails(&mut state.store)
    }

    /// The current claim of the store's record for `slot`: its fence and lease end.
    pub(super) fn claim_in_flight(&self, state: &State, slot: Slot) -> Option<(Fence, Timestamp)> {
        let record = state.store.memory.record(self.slot_id(slot))?;
        match record.state {
            RecordState::InFlight { lease_expires_at, .. } => Some((record.fence, lease_expires_at)),
            RecordState::Completed { .. } | RecordState::Tombstone => None,
        }
    }

    /// A refused operation must leave the record as it was (G3).
    pub(super) fn check_unchanged(&self, state: &mut State, slot: Slot, before: Option<&Record>) {
        if state.store.memory.record(self.slot_id(slot)) != before {
            state.mark(Broken::RefusedChanged);
        }
    }

    /// Before a write that does not wait for the disk (a claim, renewal or release): keep
    /// the store as its disk holds it, unless that is kept already or no store crash is
    /// left to lose anything.
    pub(super) fn write_unsynced(&self, state: &mut State) {
        if state.budgets.store_crashes == 0 || state.store.durable.is_some() {
            return;
        }
        state.store.durable = Some(Durable {
            memory: state.store.memory.clone(),
            ledger_len: if self.ledger_in_store() { state.store.ledger.len() } else { 0 },
            slots: state.ghost.slots.clone(),
        });
    }

    /// Whether a store crash can take payments back: only when the completion that carries
    /// them in its transaction does not wait for the disk (variant `unsynced-completion`,
    /// atomic mode). Otherwise a payment is durable once it commits: with a completion that
    /// waits for the disk (atomic mode), or outside the store (separate mode).
    fn ledger_in_store(&self) -> bool {
        self.config.mode == Mode::Atomic && self.config.variant == Variant::UnsyncedCompletion
    }

    /// Whether the restarted store moves its fence counter past every fence it issued
    /// before the crash (`MemoryState::with_fences_from`, as idem-redis reseeds from its
    /// clock), so that fences are never reused.
    fn reseeds_fences(&self) -> bool {
        self.config.variant != Variant::NoFenceReseed
    }

    /// Forgets the durable copy once a crash would change nothing: the unsynced writes
    /// since undid one another (a claim released). Keeps equal systems equal states.
    pub(super) fn forget_durable_if_current(&self, state: &mut State) {
        let Some(durable) = &state.store.durable else { return };
        let live = &state.store.memory;
        let same = durable.memory.records().eq(live.records())
            && (self.reseeds_fences() || durable.memory.counters() == live.counters())
            && durable.ledger_len == if self.ledger_in_store() { state.store.ledger.len() } else { 0 }
            && durable
                .slots
                .iter()
                .zip(&state.ghost.slots)
                .all(|(then, now)| (then.current, then.owner) == (now.current, now.owner));
        if same {
            state.store.durable = None;
        }
    }

    /// The store crashes and restarts at once with what its disk holds. Running handlers
    /// keep running; their next store call meets the store as it came back (a claim it lost
    /// is absent, so a completion, renewal or release is refused with `NoRecord`). A
    /// payment that committed stays: with a completion that waited for the disk, or outside
    /// the store (separate mode).
    pub(super) fn store_crash(&self, state: &mut State, tell: &mut Tell<'_>) {
        state.budgets.store_crashes -= 1;
        let durable = state.store.durable.take().expect("a store crash is offered only with writes not on disk");
        let next_fence = state.store.memory.counters().next_fence;
        let changed: Vec<Slot> = (0..self.slots.len())
            .filter(|slot| state.store.memory.record(&self.slots[*slot]) != durable.memory.record(&self.slots[*slot]))
            .map(slot_index)
            .collect();
        tell.tell(|| {
            let lost = changed
                .iter()
                .map(|slot| {
                    let id = self.slot_id(*slot);
                    (*slot, held(state.store.memory.record(id)), held(durable.memory.record(id)))
                })
                .collect();
            let fences = if self.reseeds_fences() {
                FenceCounter::Reseeded(next_fence)
            } else {
                FenceCounter::Back(durable.memory.counters().next_fence)
            };
            StoryEvent::StoreCrashes { lost, fences }
        });
        state.store.memory =
            if self.reseeds_fences() { durable.memory.with_fences_from(next_fence) } else { durable.memory };
        if self.ledger_in_store() {
            state.store.ledger.truncate(durable.ledger_len);
        }
        for (now, then) in state.ghost.slots.iter_mut().zip(durable.slots) {
            // The first recorded response stays history: G2 holds answers to it.
            *now = SlotGhost { first_response: now.first_response, lives: now.lives, ..then };
        }
        for slot in changed {
            let ops: Vec<OpIndex> = self.ops_of_slot(slot).collect();
            for op in ops {
                if !state.ops[usize::from(op)].is_over() {
                    self.met_fault(state, op);
                }
            }
        }
    }

    /// Whether nothing for the record in `slot` is alive any more: every operation filed
    /// under it is over, and no message or handler of theirs remains. Forgetting it then
    /// cannot let anything run again. (A request that outlives the retention runs again:
    /// the model assumes none does, as SPEC's 24 h retention assumes of real ones.)
    fn slot_settled(&self, state: &State, slot: Slot) -> bool {
        self.slot_quiet(state, slot) && self.ops_of_slot(slot).all(|op| !state.network.iter().any(|m| m.op() == op))
    }

    /// Whether every operation filed under `slot` is over and none has a handler left (a
    /// request may still be on its way: a copy the network held back).
    fn slot_quiet(&self, state: &State, slot: Slot) -> bool {
        self.ops_of_slot(slot)
            .all(|op| state.ops[usize::from(op)].is_over() && !state.handlers().any(|(_, h)| h.op == op))
    }

    /// A server runs the store's purge at its own time (`MemoryState::purge_expired`, as
    /// `Store::purge_expired` does): it must remove only records whose time is over, never
    /// a claim whose lease is valid nor a record still retained.
    pub(super) fn purge(&self, state: &mut State, server: ServerIndex, tell: &mut Tell<'_>) {
        state.budgets.purges -= 1;
        let at = self.server_now(state, server);
        let horizon = match self.config.variant {
            // Bug: a horizon a retention and a lease ahead of the server's time.
            Variant::PurgeInFlight => at.saturating_add(self.policy.retention()).saturating_add(self.policy.lease()),
            _ => at,
        };
        let now = state.store.now;
        let before: Vec<Option<Record>> = self.slots.iter().map(|id| state.store.memory.record(id).cloned()).collect();
        let purged = state.store.memory.purge_expired(horizon, PURGE_BATCH_MAX);
        // A purge runs off the request path and waits for the disk.
        state.store.durable = None;
        for (slot, held) in before.iter().enumerate() {
            let Some(record) = held else { continue };
            if state.store.memory.record(&self.slots[slot]).is_some() {
                continue;
            }
            // The model's own reading of retention: a record is kept until its retention
            // is over and, while in flight, until its lease lapsed too.
            let lease_valid =
                matches!(record.state, RecordState::InFlight { lease_expires_at, .. } if lease_expires_at > now);
            if lease_valid || record.expires_at > now {
                state.mark(Broken::PurgedEarly);
            }
            let lives = state.ghost.slots[slot].lives;
            state.ghost.slots[slot] = SlotGhost { lives, ..SlotGhost::default() };
        }
        tell.tell(|| StoryEvent::PurgeRuns { server, at, purged });
    }

    /// Time passes to the record's due time and the store purges what is due: it forgets
    /// the record, or shrinks a completed one to its tombstone at the end of its retention.
    pub(super) fn expire(&self, state: &mut State, slot: Slot, tell: &mut Tell<'_>) {
        let id = self.slot_id(slot);
        let at = state.store.memory.record(id).expect("expiry is offered only for a held record").due_at();
        state.store.now = at;
        let purged = state.store.memory.purge_expired(at, PURGE_BATCH_MAX);
        // A purge runs off the request path and waits for the disk.
        state.store.durable = None;
        // The model's own reading: a record whose tombstone window (noted at its completion)
        // has begun and not ended is a tombstone now; any other due record is gone.
        let ghost = state.ghost.slots[usize::from(slot)];
        let tombstone = ghost.tombstone.filter(|(from, until)| *from <= at && at < *until);
        let kept = state.store.memory.record(id).map(|record| record.state == RecordState::Tombstone);
        if kept != tombstone.map(|_| true) {
            state.mark(Broken::NotForgotten);
        }
        for (slot, held) in self.slots.iter().enumerate() {
            if state.store.memory.record(held).is_none() {
                let lives = state.ghost.slots[slot].lives;
                state.ghost.slots[slot] = SlotGhost { lives, ..SlotGhost::default() };
            }
        }
        let tombstone_until = tombstone.map(|(_, until)| until);
        tell.tell(|| StoryEvent::Purged { at, slot, purged, tombstone_until });
    }
}

/// Runs `operation` on record `id` through idem-core's store step. `believed` (a
/// check-then-act bug) replaces the record the step reads. Shared by both models.
pub(crate) fn run_on<O: StoreOperation>(
    memory: &mut MemoryState,
    id: &RecordId,
    believed: Option<&Record>,
    operation: O,
) -> Result<O::Answer, StepError> {
    match believed {
        None => memory.run(id, operation),
        Some(believed) => {
            let mut view = memory.view(id);
            view.record = Some(believed);
            let step = step::step(id, &view, operation)?;
            Ok(memory.commit(id, step))
        }
    }
}

/// Whether the store call about to be made fails for an outage. An outage fails one call
/// and is over: a longer one is several outages. Shared by both models.
pub(crate) fn call_fails(store: &mut Store) -> bool {
    let down = !store.up;
    store.up = true;
    down
}

/// A record as the story of a store crash tells it.
pub(super) fn held(record: Option<&Record>) -> Held {
    match record {
        None => Held::Absent,
        Some(Record { fence, state: RecordState::InFlight { .. }, .. }) => Held::Claim(*fence),
        Some(Record { fence, state: RecordState::Completed { .. }, .. }) => Held::Completion(*fence),
        Some(Record { fence, state: RecordState::Tombstone, .. }) => Held::Tombstone(*fence),
    }
}

/// Whether a purge at `at` shrinks `record` to its tombstone rather than forgetting it.
fn shrinks(record: &Record, at: Timestamp) -> bool {
    matches!(record.state, RecordState::Completed { tombstone_until: Some(until), .. } if at < until)
}
