//! The consumer scenarios' coverage counters, read from the history (the common ones,
//! take-over and crash during a handler, come from `Coverage::of`).

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer::events::MsgEvent;
use crate::history::{Event, Kind, StoreOp};
use crate::report::Coverage;

/// What the consumer paths reached in one run.
pub(crate) fn of(events: &[Event]) -> Coverage {
    let mut coverage = Coverage::default();
    // Deliveries whose consumer replayed the record, and the (consumer, id) of each
    // delivery with its latest claim's answer: a nak after a Conflict is a conflict naked.
    let mut replayed: BTreeSet<u64> = BTreeSet::new();
    let mut delivered: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    let mut last_claim: BTreeMap<(usize, String), bool> = BTreeMap::new();
    let mut published: BTreeMap<(String, String), u64> = BTreeMap::new();
    // Handlers running now, by delivery: a copy that comes back meanwhile came back while
    // its handler was alive (a lost progress, a channel closed under it).
    let mut running: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    for event in events {
        match &event.kind {
            Kind::Store(store) if store.op == StoreOp::Claim => {
                let conflict = store.answer.starts_with("Conflict");
                last_claim.insert((store.replica, store.id.key.as_str().to_owned()), conflict);
            }
            Kind::Fault(text) if text.contains("between commit and ack") => coverage.crash_after_commit += 1,
            // A crashed consumer's handlers never return.
            Kind::Fault(text) if text.starts_with("crash consumer-") || text.starts_with("bounce consumer-") => {
                let crashed = text.split_whitespace().nth(1).and_then(|name| name.strip_prefix("consumer-"));
                let crashed = crashed.and_then(|index| index.parse::<usize>().ok());
                running.retain(|_, run| Some(run.0) != crashed);
            }
            Kind::Msg(event) => match event.as_ref() {
                MsgEvent::Published { id, payload, .. } => {
                    *published.entry((id.clone(), payload.clone())).or_default() += 1;
                }
                MsgEvent::Delivered { delivery, id, consumer, .. } => {
                    delivered.insert(*delivery, (*consumer, id.clone()));
                }
                MsgEvent::Handling { delivery, consumer, id, .. } => {
                    running.insert(*delivery, (*consumer, id.clone()));
                }
                MsgEvent::Handled { delivery, result, .. } => {
                    running.remove(delivery);
                    coverage.handler_failed += u64::from(result == "failed");
                }
                MsgEvent::AckWaitLapsed { delivery, .. } => {
                    coverage.redelivered_after_ack_wait += 1;
                    coverage.redelivered_while_running += u64::from(running.contains_key(delivery));
                }
                MsgEvent::ChannelClosed { consumer, requeued, .. } => {
                    coverage.redelivered_after_channel_close += requeued.len() as u64;
                    let alive = |id: &String| running.values().any(|run| run.0 == *consumer && &run.1 == id);
                    coverage.redelivered_while_running += requeued.iter().filter(|id| alive(id)).count() as u64;
                }
                MsgEvent::Replayed { delivery, .. } => {
                    replayed.insert(*delivery);
                }
                MsgEvent::Settle { delivery, what, applied: "applied", .. } => {
                    if what == "ack" && replayed.contains(delivery) {
                        coverage.replay_acked += 1;
                    }
                    if what.starts_with("dead-letter") {
                        coverage.dead_lettered += 1;
                    }
                    if what == "progress" {
                        coverage.progress_sent += 1;
                    }
                    let conflicted = delivered.get(delivery).and_then(|key| last_claim.get(key)) == Some(&true);
                    if what.starts_with("nak") && conflicted {
                        coverage.conflict_naked += 1;
                    }
                }
                // An ack the broker refused (stale, channel closed) is lost too.
                MsgEvent::Settle { what, .. } if what == "ack" => coverage.ack_lost += 1,
                MsgEvent::CallFailed { op: "ack", .. } => coverage.ack_lost += 1,
                _ => {}
            },
            _ => {}
        }
    }
    coverage.duplicate_publish = published.values().map(|count| count - 1).sum();
    coverage
}
