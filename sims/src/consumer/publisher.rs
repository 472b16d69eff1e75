//! The publisher: its plan, drawn from the seed and printed at the start of the trace, is
//! the checker's only oracle for what each message id should do.
//!
//! Each id is published 1-3 times with one payload (some copies later than others, some
//! after healing); some ids are published once more with another payload, a mismatch, and
//! only once a copy of the first payload was acked, so "the first payload" is the plan's
//! and not a race's. A publish that fails on the network is sent again (at least once:
//! the broker may then hold one more copy, a duplicate no dedup window catches).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clock::sim_ms;
use crate::consumer::broker_host::{self, Answer, Request, SharedMailbox};
use crate::consumer::events::MsgEvent;
use crate::history::{Kind, Recorder};

/// The publisher's host name.
pub(crate) const PUBLISHER_HOST: &str = "publisher";
/// How often the publisher asks again (a failed publish, an ack it waits for).
const RETRY_EVERY: Duration = Duration::from_millis(250);
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

/// One message id's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) id: String,
    /// The payload every copy but the mismatch carries.
    pub(crate) payload: String,
    /// When each copy of `payload` is published (ms; the first is the earliest).
    pub(crate) copies_ms: Vec<u64>,
    /// Another payload under the same id, published once a copy of `payload` was acked and
    /// not before the time given.
    pub(crate) mismatch: Option<(String, u64)>,
}

impl Planned {
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("{} x{} at {:?} ms", self.payload, self.copies_ms.len(), self.copies_ms);
        if let Some((payload, at)) = &self.mismatch {
            text.push_str(&format!("; mismatch {payload} once acked, not before {at} ms"));
        }
        text
    }
}

/// Draws the plan: `ids` message ids, first copies before `first_by_ms`, later copies and
/// mismatches before `last_by_ms`.
pub(crate) fn plan(rng: &mut ChaCha8Rng, ids: usize, first_by_ms: u64, last_by_ms: u64) -> Vec<Planned> {
    (0..ids)
        .map(|index| {
            let id = format!("m{index:02}");
            let first = rng.random_range(0..first_by_ms);
            let mut copies_ms = vec![first];
            for _ in 0..rng.random_range(0..=2) {
                // Some copies close behind (two consumers race), some much later.
                let later = if rng.random_bool(0.5) {
                    first + rng.random_range(0..300)
                } else {
                    rng.random_range(first..last_by_ms)
                };
                copies_ms.push(later);
            }
            copies_ms.sort_unstable();
            let mismatch = rng.random_bool(0.25).then(|| (format!("{id}-other"), rng.random_range(first..last_by_ms)));
            Planned { payload: format!("{id}-pay{}", rng.random_range(100..1_000)), id, copies_ms, mismatch }
        })
        .collect()
}

/// The publisher's software: every planned publish as its own task, then a wait (up to
/// `until_ms`) for every copy to be settled, so the run ends when the broker is done.
pub(crate) async fn publisher(
    plan: Vec<Planned>,
    mailbox: SharedMailbox,
    recorder: Recorder,
    until_ms: u64,
) -> turmoil::Result {
    let mut tasks = Vec::new();
    for planned in plan {
        for (index, at_ms) in planned.copies_ms.iter().enumerate() {
            let request =
                Request::Publish { id: planned.id.clone(), payload: planned.payload.clone(), duplicate: index > 0 };
            tasks.push(tokio::spawn(publish_at(*at_ms, None, request, Arc::clone(&mailbox), until_ms)));
        }
        if let Some((payload, at_ms)) = planned.mismatch {
            let request = Request::Publish { id: planned.id.clone(), payload, duplicate: false };
            let after = Some(planned.id.clone());
            tasks.push(tokio::spawn(publish_at(at_ms, after, request, Arc::clone(&mailbox), until_ms)));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    while sim_ms() < until_ms {
        if let Ok(Answer::Yes(true)) = broker_host::call(&mailbox, Request::AllSettled, CALL_TIMEOUT).await {
            recorder.record(Kind::Fault("publisher: every copy is settled".to_owned()));
            return Ok(());
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    recorder.record(Kind::Fault("publisher: gave up waiting for every copy to be settled".to_owned()));
    Ok(())
}

/// Publishes `request` at `at_ms`, after a copy of `after_acked` was acked if given,
/// retrying until the broker took it (or `until_ms`).
async fn publish_at(at_ms: u64, after_acked: Option<String>, request: Request, mailbox: SharedMailbox, until_ms: u64) {
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(sim_ms()))).await;
    if let Some(id) = after_acked {
        loop {
            if sim_ms() >= until_ms {
                return;
            }
            let asked = broker_host::call(&mailbox, Request::Acked { id: id.clone() }, CALL_TIMEOUT).await;
            if let Ok(Answer::Yes(true)) = asked {
                break;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
    while sim_ms() < until_ms {
        if let Ok(Answer::Done) = broker_host::call(&mailbox, request.clone(), CALL_TIMEOUT).await {
            return;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Records the plan at the start of the trace.
pub(crate) fn record_plan(plan: &[Planned], recorder: &Recorder) {
    for planned in plan {
        recorder
            .record_at(0, Kind::Msg(Box::new(MsgEvent::Planned { id: planned.id.clone(), text: planned.describe() })));
    }
}
