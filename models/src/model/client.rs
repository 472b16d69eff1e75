//! The client: idem-client's retry loop, one attempt out at a time per operation.

use std::time::Duration;

use super::{IdemModel, Tell, op_index};
use crate::message::{Answer, AttemptNumber, Message, OpIndex, ServerIndex};
use crate::model::Action;
use crate::state::{GiveUp, Phase, State};
use crate::story::{StoryEvent, Wait};

impl IdemModel {
    /// The client steps enabled in `state`: start an operation, wake from a wait, time out.
    pub(super) fn offer_client_steps(&self, state: &State, actions: &mut Vec<Action>) {
        let servers = self.config.servers;
        for (op, progress) in state.ops.iter().enumerate() {
            let op = op_index(op);
            match progress.phase {
                Phase::Idle => actions.extend((0..servers).map(|server| Action::Start { op, server })),
                Phase::Sleeping { until } if self.may_move_to(state, until) => {
                    actions.extend((0..servers).map(|server| Action::Wake { op, server }));
                }
                Phase::Waiting { sent_at } => {
                    if self.may_move_to(state, self.attempt_ends_at(progress, sent_at)) {
                        actions.push(Action::Timeout { op });
                    }
                }
                Phase::Sleeping { .. } | Phase::Done(_) | Phase::GaveUp(_) => {}
            }
        }
    }

    /// A client sends the first attempt of an operation, which sets its deadline.
    pub(super) fn start(&self, state: &mut State, op: OpIndex, server: ServerIndex, tell: &mut Tell<'_>) {
        let deadline_at = state.store.now.saturating_add(self.config.client.deadline);
        state.ops[usize::from(op)].deadline_at = deadline_at;
        tell.tell(|| StoryEvent::Sent { op, deadline_at });
        self.send_attempt(state, op, server, tell);
    }

    /// A client's wait ends: the clock moves to its end and it sends the next attempt.
    pub(super) fn wake(&self, state: &mut State, op: OpIndex, server: ServerIndex, tell: &mut Tell<'_>) {
        let Phase::Sleeping { until } = state.ops[usize::from(op)].phase else {
            unreachable!("a wake is offered only to a sleeping client")
        };
        state.store.now = until;
        tell.tell(|| StoryEvent::Retries { op, at: until });
        self.send_attempt(state, op, server, tell);
    }

    /// A client sends its next attempt at the current time.
    fn send_attempt(&self, state: &mut State, op: OpIndex, server: ServerIndex, tell: &mut Tell<'_>) {
        let now = state.store.now;
        let progress = &mut state.ops[usize::from(op)];
        progress.attempts += 1;
        progress.phase = Phase::Waiting { sent_at: now };
        progress.last = None;
        let attempt = progress.attempts;
        tell.tell(|| StoryEvent::Attempt { attempt, server });
        state.send(Message::Request { op, attempt, server, delayed: false });
    }

    /// The attempt's timer fires: the client closes its connection (answers to it go
    /// nowhere now) and retries after a backoff, or gives up.
    pub(super) fn timeout(&self, state: &mut State, op: OpIndex, tell: &mut Tell<'_>) {
        let progress = state.ops[usize::from(op)];
        let Phase::Waiting { sent_at } = progress.phase else {
            unreachable!("a timeout is offered only to a waiting client")
        };
        let attempt = progress.attempts;
        let at = self.attempt_ends_at(&progress, sent_at);
        let alive = self.attempt_alive(state, op, attempt);
        state.store.now = at;
        state.network.retain(|m| !matches!(m, Message::Reply { op: o, attempt: a, .. } if *o == op && *a == attempt));
        tell.tell(|| StoryEvent::TimedOut { op, attempt, at, alive });
        if at == progress.deadline_at {
            state.ops[usize::from(op)].phase = Phase::GaveUp(GiveUp::Deadline);
            tell.tell(|| StoryEvent::DeadlinePassed { at });
            return;
        }
        let wait = self.config.client.backoff.ceiling(attempt.into());
        self.retry_or_give_up(state, op, wait, Wait::Backoff, tell);
    }

    /// Whether a request, handler or reply of this attempt is still somewhere in the system.
    fn attempt_alive(&self, state: &State, op: OpIndex, attempt: AttemptNumber) -> bool {
        state.network.iter().any(|m| m.op() == op && m.attempt() == attempt)
            || state.handlers().any(|(_, h)| h.op == op && h.attempt == attempt)
    }

    /// After an attempt that failed: wait `wait` and retry, unless the attempts or the
    /// deadline are used up (idem-client's order of checks).
    fn retry_or_give_up(&self, state: &mut State, op: OpIndex, wait: Duration, why: Wait, tell: &mut Tell<'_>) {
        let now = state.store.now;
        let progress = &mut state.ops[usize::from(op)];
        let until = now.saturating_add(wait);
        if u32::from(progress.attempts) >= self.config.client.attempts_max {
            progress.phase = Phase::GaveUp(GiveUp::Exhausted);
            let attempts = progress.attempts;
            tell.tell(|| StoryEvent::AttemptsUsed { attempts });
        } else if until >= progress.deadline_at {
            progress.phase = Phase::GaveUp(GiveUp::Deadline);
            let deadline_at = progress.deadline_at;
            tell.tell(|| StoryEvent::WaitPastDeadline { wait, deadline_at });
        } else {
            progress.phase = Phase::Sleeping { until };
            tell.tell(|| StoryEvent::Sleeps { why, wait, until });
        }
    }

    /// A client receives the answer to the attempt it is waiting for.
    pub(super) fn client_receives(
        &self,
        state: &mut State,
        op: OpIndex,
        attempt: AttemptNumber,
        answer: Answer,
        tell: &mut Tell<'_>,
    ) {
        debug_assert!(
            matches!(state.ops[usize::from(op)].phase, Phase::Waiting { .. })
                && state.ops[usize::from(op)].attempts == attempt,
            "replies travel only to the attempt a client waits for"
        );
        // One answer per attempt: copies of other deliveries of the request go nowhere now.
        state.network.retain(|m| !matches!(m, Message::Reply { op: o, attempt: a, .. } if *o == op && *a == attempt));
        state.ops[usize::from(op)].last = Some(answer);
        tell.tell(|| StoryEvent::Receives { op, attempt, answer });
        if answer.is_final() {
            state.ops[usize::from(op)].phase = Phase::Done(answer);
            tell.tell(|| StoryEvent::Final);
            return;
        }
        match answer.retry_after() {
            Some(wait) => self.retry_or_give_up(state, op, wait, Wait::RetryAfter, tell),
            None => {
                let wait = self.config.client.backoff.ceiling(attempt.into());
                self.retry_or_give_up(state, op, wait, Wait::Backoff, tell);
            }
        }
    }
}
