//! The consumer model's counterexamples as numbered, readable stories: one line per step,
//! rendered from the [`ConsumerEvent`]s the step told (the same way as [`crate::story()`]).

use stateright::Path;

use super::event::{Applied, ConsumerEvent, Decided, Sent, Why};
use super::state::{ConsumerIndex, ConsumerState, CopyIndex};
use super::{ConsumerAction, ConsumerModel};
use crate::config::Mode;
use crate::story::{fence_name, seconds, time};

/// The steps of `path`, one numbered line each ("1. the broker delivers ...").
#[must_use]
pub fn consumer_story(model: &ConsumerModel, path: &Path<ConsumerState, ConsumerAction>) -> Vec<String> {
    crate::story::numbered(path, |state, action| {
        // Every action on a discovered path was enabled in its state, so it applies.
        let events = model.events(state, action).unwrap_or_default();
        line(model, &events)
    })
}

/// The events of one step as one line.
#[must_use]
pub(crate) fn line(model: &ConsumerModel, events: &[ConsumerEvent]) -> String {
    let words = Words { model };
    let mut line = String::new();
    for event in events {
        let text = words.event(event);
        if !line.is_empty() && !text.starts_with(':') {
            line.push_str("; ");
        }
        line.push_str(&text);
    }
    line
}

struct Words<'m> {
    model: &'m ConsumerModel,
}

impl Words<'_> {
    fn copy(&self, copy: CopyIndex) -> String {
        format!("copy {} ({})", copy + 1, self.model.published()[usize::from(copy)].label)
    }

    fn message(&self, copy: CopyIndex) -> String {
        self.model.published()[usize::from(copy)].label.clone()
    }

    fn id(&self, copy: CopyIndex) -> String {
        format!("m{}", self.model.published()[usize::from(copy)].message + 1)
    }

    fn copies(&self, copies: &[CopyIndex]) -> String {
        let named: Vec<String> = copies.iter().map(|copy| format!("copy {}", copy + 1)).collect();
        if named.is_empty() { "nothing".to_owned() } else { named.join(" and ") }
    }

    fn event(&self, event: &ConsumerEvent) -> String {
        match event {
            ConsumerEvent::Delivered { copy, consumer, delivery, at, why } => {
                let to = consumer_name(*consumer);
                match why {
                    Why::First => format!("the broker delivers {} to {to} (delivery {delivery})", self.copy(*copy)),
                    Why::Again => format!(
                        "at {} the broker delivers {} again, to {to} (delivery {delivery})",
                        time(*at),
                        self.copy(*copy)
                    ),
                    Why::AckTimeout => format!(
                        "at {} the ack deadline of {} passes: the broker redelivers it to {to} (delivery {delivery})",
                        time(*at),
                        self.copy(*copy)
                    ),
                }
            }
            ConsumerEvent::StoreDownAtClaim => "the store is down at the claim, nothing runs".to_owned(),
            ConsumerEvent::Decided(decided) => decision(*decided),
            ConsumerEvent::Settles { consumer, copy, sent, applied } => {
                let (verb, why) = match sent {
                    Sent::Ack => ("acks", String::new()),
                    Sent::Nak(after) => ("naks", format!(" with a delay of {}", seconds(*after))),
                    Sent::DeadLetter(reason) => ("dead-letters", format!(" ({reason})")),
                };
                let outcome = match applied {
                    Applied::Current => "",
                    Applied::StaleApplied => " (an earlier delivery's; the broker applies it anyway)",
                    Applied::StaleIgnored => " (an earlier delivery's; the broker ignores it)",
                    Applied::AlreadySettled => " (settled already; nothing changes)",
                };
                format!("{} {verb} {}{why}{outcome}", consumer_name(*consumer), self.copy(*copy))
            }
            ConsumerEvent::AckLost { consumer, copy, requeued } => {
                let lost = format!("{}'s ack of {} is lost", consumer_name(*consumer), self.copy(*copy));
                match requeued {
                    None => lost,
                    Some(copies) => format!(
                        "{lost} with its connection: the channel closes and the broker requeues {}",
                        self.copies(copies)
                    ),
                }
            }
            ConsumerEvent::Wrote { consumer, copy, effects: Some(effects) } => format!(
                "{} runs the side effect of {} on its own ({}): the ledger now holds {effects} side effect(s) for {}",
                consumer_name(*consumer),
                self.message(*copy),
                match self.model.config().mode {
                    Mode::Separate => "separate mode",
                    Mode::Atomic => "outside the claim's transaction",
                },
                self.id(*copy)
            ),
            ConsumerEvent::Wrote { consumer, copy, effects: None } => format!(
                "{} writes the side effect of {} in its open transaction (pending until the completion commits)",
                consumer_name(*consumer),
                self.message(*copy)
            ),
            ConsumerEvent::Completing { consumer, copy, fence, pending } => format!(
                "{} completes {} under fence {}{}",
                consumer_name(*consumer),
                self.message(*copy),
                fence_name(*fence),
                if *pending { ", committing its side effect in the same transaction" } else { "" }
            ),
            ConsumerEvent::CompletionAccepted => ": accepted (the ack is next)".to_owned(),
            ConsumerEvent::CompletionRefused { refusal, rolled_back } => format!(
                ": refused ({refusal}){}",
                if *rolled_back { ", the transaction rolls back with its side effect" } else { "" }
            ),
            ConsumerEvent::CompletionStoreDown { rolled_back } => format!(
                ": the store is down{}",
                if *rolled_back { ", the transaction rolls back with its side effect" } else { "" }
            ),
            ConsumerEvent::Fails { consumer, copy, written, rolled_back } => {
                let when = match (written, rolled_back) {
                    (false, _) => "before its side effect",
                    (true, true) => "after its write, and its open transaction rolls back",
                    (true, false) => "after its side effect committed",
                };
                format!("{}'s handler for {} fails {when}", consumer_name(*consumer), self.message(*copy))
            }
            ConsumerEvent::Released(fence) => format!("it releases fence {}", fence_name(*fence)),
            ConsumerEvent::ReleaseRefused { fence, refusal } => {
                format!("the release of {} is refused ({refusal})", fence_name(*fence))
            }
            ConsumerEvent::ReleaseStoreDown => "the store is down, the release fails (the claim lapses)".to_owned(),
            ConsumerEvent::NothingToRelease => "nothing to release".to_owned(),
            ConsumerEvent::Renewed { consumer, copy, at, lease_until, deadline } => {
                let progress = deadline.map_or(String::new(), |deadline| {
                    format!(" and sends progress: the ack deadline moves to {}", time(deadline))
                });
                format!(
                    "at {} {} renews the lease of {} until {}{progress}",
                    time(*at),
                    consumer_name(*consumer),
                    self.id(*copy),
                    time(*lease_until)
                )
            }
            ConsumerEvent::RenewalStoreDown { consumer, at } => {
                format!(
                    "at {} {}'s renewal fails (the store is down): no progress",
                    time(*at),
                    consumer_name(*consumer)
                )
            }
            ConsumerEvent::RenewalRefused { consumer, copy, at, refusal } => format!(
                "at {} {}'s renewal for {} is refused ({refusal}): it was taken over and stops",
                time(*at),
                consumer_name(*consumer),
                self.id(*copy)
            ),
            ConsumerEvent::Stalls { consumer, copy, fence } => format!(
                "{}'s handler for {} (fence {}) stalls: no more renewals or progress",
                consumer_name(*consumer),
                self.message(*copy),
                fence_name(*fence)
            ),
            ConsumerEvent::Crashes { consumer, lost, requeued } => {
                let lost: Vec<String> = lost
                    .iter()
                    .map(|(copy, committed)| {
                        let when = if *committed { " (completed, its ack not sent)" } else { "" };
                        format!("{}{when}", self.message(*copy))
                    })
                    .collect();
                let requeue = if requeued.is_empty() {
                    String::new()
                } else {
                    format!("; its channel closes and the broker requeues {}", self.copies(requeued))
                };
                format!(
                    "{} crashes and restarts, losing its handler(s) for {}{requeue}",
                    consumer_name(*consumer),
                    lost.join(" and ")
                )
            }
            ConsumerEvent::TimedOut { copy } => format!(
                "the ack deadline of {} runs out under its live handler (a progress was lost): it is ready again",
                self.copy(*copy)
            ),
            ConsumerEvent::ChannelClosed { consumer, requeued } => format!(
                "{}'s channel closes under its live handlers (consumer timeout): the broker requeues {}",
                consumer_name(*consumer),
                self.copies(requeued)
            ),
            ConsumerEvent::StoreDown => "the store becomes unreachable (its next call fails)".to_owned(),
        }
    }
}

fn consumer_name(consumer: ConsumerIndex) -> String {
    format!("consumer {}", consumer + 1)
}

fn decision(decided: Decided) -> String {
    match decided {
        Decided::Execute { fence, written: false, .. } => format!(
            "the store decides: execute under fence {}, but the claim is never written (check-then-act)",
            fence_name(fence)
        ),
        Decided::Execute { fence, lease_until, written: true } => {
            format!("the store decides: execute under fence {} (lease until {})", fence_name(fence), time(lease_until))
        }
        Decided::TakeOver { fence, stale } => format!(
            "the store decides: take over the lapsed claim, execute under fence {} ({} is stale now)",
            fence_name(fence),
            fence_name(stale)
        ),
        Decided::Replay => "the store decides: replay (the record is completed)".to_owned(),
        Decided::Conflict => "the store decides: in flight elsewhere".to_owned(),
        Decided::Mismatch => "the store decides: mismatch (the key holds another payload)".to_owned(),
        Decided::Gone => "the store decides: gone (only a tombstone is left)".to_owned(),
    }
}
