//! Counterexamples as numbered, readable stories instead of state dumps.
//!
//! A step tells what happened as [`StoryEvent`]s, plain data, and only when a story is
//! asked for (the checker's steps tell nothing). This module alone turns them into words.

use std::time::Duration;

use idem_core::{Fence, RecordId, StoredResponse, Timestamp};
use stateright::Path;

mod event;

pub use self::event::{Decided, Disk, FenceCounter, Held, StoryEvent, Wait};
use crate::config::{Config, Mode, Variant};
use crate::message::{Answer, Message, OpIndex, ServerIndex, Slot};
use crate::operation::Operation;

/// The steps of `path`, one numbered line each ("1. client 1 (alice) sends ..."), each
/// told by `tell` from the state it starts in and its action; the one shape of every
/// model's story (`story` and `consumer_story`).
pub(crate) fn numbered<S: Clone, A: Clone>(path: &Path<S, A>, mut tell: impl FnMut(&S, A) -> String) -> Vec<String> {
    path.clone()
        .into_vec()
        .into_iter()
        .filter_map(|(state, action)| action.map(|action| (state, action)))
        .enumerate()
        .map(|(index, (state, action))| format!("{}. {}", index + 1, tell(&state, action)))
        .collect()
}

/// What a story names a model's steps with: its operations (clients, keys, amounts), its
/// store slots' record ids and its configuration (`IdemModel::cast`).
#[derive(Clone, Copy, Debug)]
pub struct Cast<'a> {
    /// The operations, by [`OpIndex`].
    pub operations: &'a [Operation],
    /// The record id of each store slot, by [`Slot`].
    pub slots: &'a [RecordId],
    /// The model's configuration.
    pub config: &'a Config,
}

/// The events of one step as one line.
#[must_use]
pub fn line(cast: &Cast<'_>, events: &[StoryEvent]) -> String {
    let words = Words { model: cast };
    events.iter().map(|event| words.event(event)).collect()
}

/// Renders events with the model's names for clients, operations and records.
struct Words<'a> {
    model: &'a Cast<'a>,
}

impl Words<'_> {
    fn event(&self, event: &StoryEvent) -> String {
        match event {
            StoryEvent::Sent { .. }
            | StoryEvent::Retries { .. }
            | StoryEvent::Attempt { .. }
            | StoryEvent::TimedOut { .. }
            | StoryEvent::DeadlinePassed { .. }
            | StoryEvent::AttemptsUsed { .. }
            | StoryEvent::WaitPastDeadline { .. }
            | StoryEvent::Sleeps { .. }
            | StoryEvent::Receives { .. }
            | StoryEvent::Final => self.client(event),
            StoryEvent::HeldBack(_)
            | StoryEvent::Duplicated
            | StoryEvent::Lost(_)
            | StoryEvent::Answered
            | StoryEvent::Arrives { .. }
            | StoryEvent::FailsOpen
            | StoryEvent::StoreDownAtClaim
            | StoryEvent::ClaimRefused(_)
            | StoryEvent::Decided(_) => self.server(event),
            StoryEvent::Wrote { .. }
            | StoryEvent::Completing { .. }
            | StoryEvent::CompletionStoreDown { .. }
            | StoryEvent::CompletionAccepted { .. }
            | StoryEvent::CompletionRefused { .. }
            | StoryEvent::AnswersRecorded(_)
            | StoryEvent::AnswersConflict(_)
            | StoryEvent::AnswersMismatch
            | StoryEvent::AnswersGone
            | StoryEvent::Fails { .. }
            | StoryEvent::NothingToRelease
            | StoryEvent::ReleaseStoreDown
            | StoryEvent::Released(_)
            | StoryEvent::ReleaseRefusedNoRecord(_)
            | StoryEvent::ReleaseRefused { .. }
            | StoryEvent::Renewed { .. }
            | StoryEvent::RenewalRefused { .. } => self.handler(event),
            _ => self.fault(event),
        }
    }

    fn client(&self, event: &StoryEvent) -> String {
        match *event {
            StoryEvent::Sent { op, deadline_at } => {
                format!("{} sends {} (deadline {})", self.client_name(op), self.request(op), time(deadline_at))
            }
            StoryEvent::Retries { op, at } => format!("at {} {} retries", time(at), self.client_name(op)),
            StoryEvent::Attempt { attempt, server } => {
                format!(": attempt {attempt} of {} to server {}", self.model.config.client.attempts_max, server + 1)
            }
            StoryEvent::TimedOut { op, attempt, at, alive } => {
                let why = if alive { "while it is still on its way or running" } else { "without an answer" };
                format!("at {} {}'s attempt {attempt} times out {why}", time(at), self.client_name(op))
            }
            StoryEvent::DeadlinePassed { at } => format!("; its deadline {} has passed: it gives up", time(at)),
            StoryEvent::AttemptsUsed { attempts } => format!("; all {attempts} attempts are used: it gives up"),
            StoryEvent::WaitPastDeadline { wait, deadline_at } => {
                format!("; waiting {} would end past its deadline {}: it gives up", seconds(wait), time(deadline_at))
            }
            StoryEvent::Sleeps { why, wait, until } => {
                let how = match why {
                    Wait::Backoff => "backs off",
                    Wait::RetryAfter => "waits the Retry-After",
                };
                format!("; it {how} {} until {}", seconds(wait), time(until))
            }
            StoryEvent::Receives { op, attempt, answer } => {
                format!("{} receives {} for attempt {attempt}", self.client_name(op), tell_answer(answer))
            }
            StoryEvent::Final => ", final".to_owned(),
            _ => unreachable!("client events only"),
        }
    }

    fn server(&self, event: &StoryEvent) -> String {
        match event {
            StoryEvent::HeldBack(message) => {
                format!("the network holds back {} (a slow network)", self.message(*message))
            }
            StoryEvent::Duplicated => "the network duplicates a request; one copy arrives: ".to_owned(),
            StoryEvent::Lost(message) => format!("the network loses {}", self.message(*message)),
            StoryEvent::Answered => ". ".to_owned(),
            StoryEvent::Arrives { server, op, attempt } => {
                format!("server {} receives {} (attempt {attempt}); ", server + 1, self.request_from(*op))
            }
            StoryEvent::FailsOpen => {
                "the store is down, and the server runs the handler anyway, without a claim".to_owned()
            }
            StoryEvent::StoreDownAtClaim => "the store is down: 503, the handler does not run".to_owned(),
            StoryEvent::ClaimRefused(error) => format!("the store refuses ({error}): 503"),
            StoryEvent::Decided(decided) => decision(decided),
            _ => unreachable!("network and server events only"),
        }
    }

    fn handler(&self, event: &StoryEvent) -> String {
        match event {
            StoryEvent::Wrote { server, op, payments: Some(payments) } => format!(
                "server {} runs the side effect of {} on its own ({}): the ledger now holds {payments} payment(s) \
                 for {}",
                server + 1,
                self.who(*op),
                match self.model.config.mode {
                    Mode::Separate => "separate mode",
                    Mode::Atomic => "outside the claim's transaction",
                },
                self.record_name(*op)
            ),
            StoryEvent::Wrote { server, op, payments: None } => format!(
                "server {} writes the payment of {} in its open transaction (pending until the completion commits)",
                server + 1,
                self.who(*op)
            ),
            StoryEvent::Completing { server, op, fence, presented, pending } => {
                self.completion(*server, *op, (*fence, *presented), *pending)
            }
            StoryEvent::CompletionStoreDown { unrecorded: None } => {
                ": the store is down, the transaction rolls back with its side effect; answers 503 (the claim stays \
                 until its lease lapses)"
                    .to_owned()
            }
            StoryEvent::CompletionStoreDown { unrecorded: Some(response) } => format!(
                ": the store is down; answers {} unrecorded (the claim stays until its lease lapses)",
                tell_response(response)
            ),
            StoryEvent::CompletionAccepted { disk, response } => {
                let disk = match disk {
                    Disk::Synced => "",
                    Disk::PaymentOnly => " (the payment is on disk, the completion not yet)",
                    Disk::Nothing => " (not on disk yet)",
                };
                format!(": accepted{disk}, answers {}", tell_response(response))
            }
            StoryEvent::CompletionRefused { refusal, rolled_back } => {
                let rollback = if *rolled_back { ", the transaction rolls back with its side effect" } else { "" };
                format!(": refused ({refusal}){rollback}; ")
            }
            StoryEvent::AnswersRecorded(response) => {
                format!("answers the recorded {} as a replay", tell_response(response))
            }
            StoryEvent::AnswersConflict(answer) => format!("answers {}", tell_answer(*answer)),
            StoryEvent::AnswersMismatch => "answers 422".to_owned(),
            StoryEvent::AnswersGone => "answers 410 (key expired)".to_owned(),
            StoryEvent::Fails { server, op, written, rolled_back } => {
                let when = match (written, rolled_back) {
                    (false, _) => "before its side effect (503)",
                    (true, true) => "after its write (503), and its open transaction rolls back",
                    (true, false) => "after its side effect committed (503)",
                };
                format!("server {}'s handler for {} fails {when}: ", server + 1, self.who(*op))
            }
            StoryEvent::NothingToRelease => "nothing to release; answers 503".to_owned(),
            StoryEvent::ReleaseStoreDown => {
                "the store is down, the release fails (the claim lapses); answers 503".to_owned()
            }
            StoryEvent::Released(fence) => format!("releases fence {}; answers 503", fence_name(*fence)),
            StoryEvent::ReleaseRefusedNoRecord(fence) => {
                format!("release of {} refused (no record); answers 503", fence_name(*fence))
            }
            StoryEvent::ReleaseRefused { fence, refusal } => {
                format!("release of {} refused ({refusal}); ", fence_name(*fence))
            }
            StoryEvent::Renewed { server, op, fence, at, lease_expires_at } => format!(
                "{} at {}: the lease now ends at {}",
                self.renews(*server, *op, *fence),
                time(*at),
                time(*lease_expires_at)
            ),
            StoryEvent::RenewalRefused { server, op, fence, at, refusal } => format!(
                "{} at {}: refused ({refusal}), so it was taken over and stops; ",
                self.renews(*server, *op, *fence),
                time(*at)
            ),
            _ => unreachable!("handler events only"),
        }
    }

    fn fault(&self, event: &StoryEvent) -> String {
        match event {
            StoryEvent::TurnsSlow { server, op, started_at, until } => format!(
                "server {}'s handler for {} (started at {}) turns out slow: it may run until {}, renewing its lease",
                server + 1,
                self.who(*op),
                time(*started_at),
                time(*until)
            ),
            StoryEvent::Stalls { server, op, fence, lease_end } => {
                let until = lease_end.map_or(String::new(), |end| format!("; its lease ends at {}", time(end)));
                format!(
                    "server {}'s handler for {} (fence {}) stalls and stops renewing{until}",
                    server + 1,
                    self.who(*op),
                    fence_name(*fence)
                )
            }
            StoryEvent::Crashes { server, lost } => {
                let lost: Vec<String> = lost
                    .iter()
                    .map(|(op, fence)| format!("{} under fence {}", self.who(*op), fence_name(*fence)))
                    .collect();
                format!("server {} crashes and restarts, losing its handler for {}", server + 1, lost.join(" and "))
            }
            StoryEvent::StoreDown => {
                "the store becomes unreachable (an outage, which fails the next store call)".to_owned()
            }
            StoryEvent::StoreUp => "the store is reachable again before anyone called it".to_owned(),
            StoryEvent::StoreCrashes { lost, fences } => {
                let lost: Vec<String> = lost
                    .iter()
                    .map(|(slot, from, to)| {
                        format!("{} goes back from {} to {}", self.slot_name(*slot), held(*from), held(*to))
                    })
                    .collect();
                let fences = match fences {
                    FenceCounter::Reseeded(next) => format!("its fences go on from {}", fence_name(*next)),
                    FenceCounter::Back(next) => format!("its fence counter goes back to {}", fence_name(*next)),
                };
                format!(
                    "the store crashes and restarts, losing the writes not yet on disk: {}; {fences}",
                    if lost.is_empty() { "no record changes".to_owned() } else { lost.join(", ") }
                )
            }
            StoryEvent::PurgeRuns { server, at, purged } => format!(
                "server {} runs the store's purge of expired records at {} (its clock): {purged} record(s) removed",
                server + 1,
                time(*at)
            ),
            StoryEvent::Purged { at, slot, purged, tombstone_until: None } => format!(
                "time passes to {}, when the record of {} may be forgotten; the store purges {purged} expired record(s)",
                time(*at),
                self.slot_name(*slot)
            ),
            StoryEvent::Purged { at, slot, purged, tombstone_until: Some(until) } => format!(
                "time passes to {}, when the retention of {} ends; the store's purge ({purged} record(s)) shrinks it \
                 to a tombstone until {}",
                time(*at),
                self.slot_name(*slot),
                time(*until)
            ),
            StoryEvent::Forgotten { slot, removed, kept, next_fence } => format!(
                "an operator forgets {} ({}): the store now holds {}; the next claim gets {}",
                self.slot_name(*slot),
                held(*removed),
                held(*kept),
                fence_name(*next_fence)
            ),
            _ => unreachable!("fault and store events only"),
        }
    }

    fn client_name(&self, op: OpIndex) -> String {
        let operation = &self.model.operations[usize::from(op)];
        format!("client {} ({})", operation.client + 1, operation.principal.as_str())
    }

    fn who(&self, op: OpIndex) -> String {
        let operation = &self.model.operations[usize::from(op)];
        format!("{}'s {} (amount={})", operation.principal.as_str(), operation.key.as_str(), operation.amount)
    }

    fn record_name(&self, op: OpIndex) -> String {
        let operation = &self.model.operations[usize::from(op)];
        format!("{}/{}", operation.principal.as_str(), operation.key.as_str())
    }

    fn slot_name(&self, slot: Slot) -> String {
        let id = &self.model.slots[usize::from(slot)];
        if id.principal.is_anonymous() {
            format!("key {} (unscoped)", id.key.as_str())
        } else {
            format!("{}/{}", id.principal.as_str(), id.key.as_str())
        }
    }

    fn request(&self, op: OpIndex) -> String {
        let operation = &self.model.operations[usize::from(op)];
        format!("POST /payments key={} amount={}", operation.key.as_str(), operation.amount)
    }

    fn request_from(&self, op: OpIndex) -> String {
        format!("{} from {}", self.request(op), self.client_name(op))
    }

    fn renews(&self, server: ServerIndex, op: OpIndex, fence: Fence) -> String {
        format!("server {}'s handler for {} renews fence {}", server + 1, self.who(op), fence_name(fence))
    }

    fn completion(
        &self,
        server: ServerIndex,
        op: OpIndex,
        (fence, presented): (Fence, Fence),
        pending: bool,
    ) -> String {
        let presented = if presented == fence {
            fence_name(presented)
        } else {
            format!("{} (its own claim's fence is {})", fence_name(presented), fence_name(fence))
        };
        if pending {
            format!(
                "server {} completes {} under fence {}, committing its payment in the same transaction",
                server + 1,
                self.who(op),
                presented
            )
        } else {
            format!("server {} completes {} under fence {}", server + 1, self.who(op), presented)
        }
    }

    fn message(&self, message: Message) -> String {
        match message {
            Message::Request { op, attempt, server, .. } => {
                format!("the request {} (attempt {attempt}) to server {}", self.request_from(op), server + 1)
            }
            Message::Reply { op, attempt, server, answer, .. } => format!(
                "the {} reply from server {} to {}'s attempt {attempt}",
                tell_answer(answer),
                server + 1,
                self.client_name(op)
            ),
        }
    }
}

fn decision(decided: &Decided) -> String {
    match decided {
        Decided::Replay(response) => format!("the store decides: replay {}", tell_response(response)),
        Decided::Conflict(answer) => format!("the store decides: in progress, {}", tell_answer(*answer)),
        Decided::Mismatch => "the store decides: mismatch, 422".to_owned(),
        Decided::Gone { until } => format!("the store decides: gone (a tombstone until {}), 410", time(*until)),
        Decided::Execute { fence, written: false, .. } => format!(
            "the store decides: execute under fence {}, but the claim is never written (check-then-act)",
            fence_name(*fence)
        ),
        Decided::Execute { fence, lease_until, written: true } => format!(
            "the store decides: execute under fence {} (lease until {})",
            fence_name(*fence),
            time(*lease_until)
        ),
        Decided::TakeOver { fence, stale } => format!(
            "the store decides: take over the lapsed claim, execute under fence {} ({} is stale now)",
            fence_name(*fence),
            fence_name(*stale)
        ),
    }
}

fn held(record: Held) -> String {
    match record {
        Held::Absent => "no record".to_owned(),
        Held::Claim(fence) => format!("a claim under {}", fence_name(fence)),
        Held::Completion(fence) => format!("a completion under {}", fence_name(fence)),
        Held::Tombstone(fence) => format!("the tombstone of a completion under {}", fence_name(fence)),
    }
}

pub(crate) fn fence_name(fence: Fence) -> String {
    format!("f{}", fence.get())
}

/// Milliseconds as seconds with no trailing zeros: "10", "10.1", "0.25".
fn decimal_seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        let fraction = format!("{:03}", ms % 1000);
        format!("{}.{}", ms / 1000, fraction.trim_end_matches('0'))
    }
}

pub(crate) fn seconds(duration: Duration) -> String {
    format!("{} s", decimal_seconds(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
}

pub(crate) fn time(at: Timestamp) -> String {
    format!("t={}s", decimal_seconds(at.unix_ms()))
}

fn tell_response(response: &StoredResponse) -> String {
    let location = response
        .headers
        .iter()
        .find(|(name, _)| name == "location")
        .map_or(String::new(), |(_, value)| format!(" location={}", String::from_utf8_lossy(value)));
    format!("{}{location} {:?}", response.status, String::from_utf8_lossy(&response.body))
}

fn tell_answer(answer: Answer) -> String {
    match answer {
        Answer::Created => "201".to_owned(),
        Answer::Unrecorded => "201 (unrecorded)".to_owned(),
        Answer::Replayed => "201 (replayed)".to_owned(),
        Answer::Conflict { retry_after_s } => format!("409 (Retry-After {retry_after_s} s)"),
        Answer::Mismatch => "422".to_owned(),
        Answer::Gone => "410".to_owned(),
        Answer::Failed => "503 (no Retry-After)".to_owned(),
        Answer::Unavailable { retry_after_s } => format!("503 (Retry-After {retry_after_s} s)"),
        Answer::Reset => "a reset connection".to_owned(),
    }
}

/// Variant names the story needs to tell disks apart (kept here so steps stay data).
#[must_use]
pub(crate) fn disk_of(variant: Variant, synced: bool) -> Disk {
    match variant {
        _ if synced => Disk::Synced,
        Variant::CompletionApart => Disk::PaymentOnly,
        _ => Disk::Nothing,
    }
}
