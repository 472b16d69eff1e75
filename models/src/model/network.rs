//! The network between clients and servers: delivers, duplicates, loses or holds back
//! messages, as its kind and the fault budgets allow.

use super::{IdemModel, Tell};
use crate::config::NetworkKind;
use crate::message::{Message, ServerIndex};
use crate::model::Action;
use crate::state::State;
use crate::story::StoryEvent;

impl IdemModel {
    /// The network steps enabled in `state`: each deliverable message may arrive, and
    /// (within the budgets) be held back, duplicated or lost.
    pub(super) fn offer_network_steps(&self, state: &State, actions: &mut Vec<Action>) {
        for (index, message) in state.network.iter().enumerate() {
            if !self.deliverable(state, index) {
                continue;
            }
            actions.push(Action::Deliver(*message));
            if state.budgets.delays > 0 && !message.delayed() {
                actions.push(Action::Delay(*message));
            }
            if state.budgets.network_faults > 0 {
                match (self.config.network, message) {
                    (NetworkKind::Duplicating, Message::Request { .. }) => actions.push(Action::Duplicate(*message)),
                    (NetworkKind::Lossy, _) => actions.push(Action::Lose(*message)),
                    _ => {}
                }
            }
        }
    }

    /// Requests and replies travel on one channel per (client, server) and direction.
    fn channel(&self, message: Message) -> (u8, ServerIndex, bool) {
        let client = self.op(message.op()).client;
        (client, message.server(), matches!(message, Message::Request { .. }))
    }

    fn deliverable(&self, state: &State, index: usize) -> bool {
        let message = state.network[index];
        if state.ordered {
            let channel = self.channel(message);
            !state.network[..index].iter().any(|earlier| self.channel(*earlier) == channel)
        } else {
            // Equal messages sit side by side; offer each distinct message once.
            index == 0 || state.network[index - 1] != message
        }
    }

    /// The network holds a message back: the clock may move before it arrives.
    pub(super) fn delay(&self, state: &mut State, message: Message, tell: &mut Tell<'_>) -> Option<()> {
        let index = state.network.iter().position(|m| *m == message)?;
        state.budgets.delays -= 1;
        self.met_fault(state, message.op());
        state.network.remove(index);
        state.send(message.held_back());
        tell.tell(|| StoryEvent::HeldBack(message));
        Some(())
    }

    /// The network delivers a message and forgets it.
    pub(super) fn deliver(&self, state: &mut State, message: Message, tell: &mut Tell<'_>) -> Option<()> {
        let index = state.network.iter().position(|m| *m == message)?;
        state.network.remove(index);
        self.arrive(state, message, tell);
        Some(())
    }

    /// The network delivers a copy of a request and keeps it for a second delivery.
    pub(super) fn duplicate(&self, state: &mut State, message: Message, tell: &mut Tell<'_>) -> Option<()> {
        state.network.iter().position(|m| *m == message)?;
        state.budgets.network_faults -= 1;
        self.met_fault(state, message.op());
        tell.tell(|| StoryEvent::Duplicated);
        self.arrive(state, message, tell);
        Some(())
    }

    /// The network loses a message.
    pub(super) fn lose(&self, state: &mut State, message: Message, tell: &mut Tell<'_>) -> Option<()> {
        let index = state.network.iter().position(|m| *m == message)?;
        state.network.remove(index);
        state.budgets.network_faults -= 1;
        self.met_fault(state, message.op());
        tell.tell(|| StoryEvent::Lost(message));
        Some(())
    }

    /// A message reaches its end: a request its server, a reply its client.
    fn arrive(&self, state: &mut State, message: Message, tell: &mut Tell<'_>) {
        match message {
            Message::Request { op, attempt, server, .. } => self.receive(state, op, attempt, server, tell),
            Message::Reply { op, attempt, answer, .. } => self.client_receives(state, op, attempt, answer, tell),
        }
    }
}
