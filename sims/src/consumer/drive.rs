//! The driver of one consumer run: steps the simulation to its end, striking the fault
//! schedule's actions as they come due, and the crashes armed to strike in a handler or
//! between a completion's commit and its ack, each recorded in the history.

use std::sync::atomic::Ordering;

use crate::consumer::broker_host::BROKER_HOST;
use crate::consumer::faults::{Action, Peer, Scheduled};
use crate::consumer::handler::Shared;
use crate::faults::ms;
use crate::history::{Kind, Recorder, StoreOp};
use crate::hosts::Links;
use crate::store_protocol::STORE_HOST;

/// A consumer host's name.
pub(crate) fn consumer_name(consumer: usize) -> String {
    format!("consumer-{consumer}")
}

/// Steps the simulation to its end, applying the schedule to the links between `hosts` (every
/// host of the run, by name); returns turmoil's error, if any. `shared` tells which
/// consumers are in a handler; the history, which completions the store committed.
pub(crate) fn drive(
    sim: &mut turmoil::Sim<'_>,
    recorder: &Recorder,
    shared: &Shared,
    schedule: &[Scheduled],
    hosts: Vec<String>,
) -> Option<String> {
    let consumers = shared.in_handler.len();
    let mut driver = Driver {
        recorder,
        shared,
        links: Links::new(hosts),
        arms: vec![Arms::default(); consumers],
        down: Down::default(),
    };
    let mut next = 0;
    let mut scanned = 0;
    loop {
        let now = ms(sim.elapsed());
        while let Some(scheduled) = schedule.get(next).filter(|scheduled| scheduled.at_ms <= now) {
            next += 1;
            driver.strike(sim, &scheduled.action);
        }
        // The store's completions since the last step, by consumer: an armed crash after
        // commit strikes now, before the answer (and so the ack) can leave the store.
        let mut committed = vec![false; consumers];
        scanned = recorder.scan_from(scanned, |event| {
            if let Kind::Store(store) = &event.kind
                && store.applied
                && matches!(store.op, StoreOp::Complete | StoreOp::CompleteInTransaction)
                && let Some(flag) = committed.get_mut(store.replica)
            {
                *flag = true;
            }
        });
        for (consumer, committed) in committed.into_iter().enumerate() {
            driver.watch(sim, consumer, now, committed);
        }
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(error) => return Some(error.to_string()),
        }
    }
}

/// Per consumer: an armed crash (until, downtime) and when a crashed one restarts.
#[derive(Default, Clone, Copy)]
struct Arms {
    in_handler: Option<(u64, u64)>,
    after_commit: Option<(u64, u64)>,
    down_until: Option<u64>,
}

/// Which of the broker and the store host are down.
#[derive(Default)]
struct Down {
    broker: bool,
    store: bool,
}

/// What the driver keeps between steps: the links, and the consumers' and hosts' faults in
/// progress.
struct Driver<'w> {
    recorder: &'w Recorder,
    shared: &'w Shared,
    links: Links,
    arms: Vec<Arms>,
    down: Down,
}

impl Driver<'_> {
    /// Strikes one action of the schedule.
    fn strike(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) {
        let peer_name = |peer: Peer| match peer {
            Peer::Broker => BROKER_HOST,
            Peer::Store => STORE_HOST,
        };
        match *action {
            Action::Partition { consumer, peer } => {
                self.links.partition(sim, &consumer_name(consumer), peer_name(peer));
                record(self.recorder, sim, format!("partition consumer-{consumer} <-> {}", peer_name(peer)));
            }
            Action::Repair { consumer, peer } => {
                self.links.repair(sim, &consumer_name(consumer), peer_name(peer));
                record(self.recorder, sim, format!("repair consumer-{consumer} <-> {}", peer_name(peer)));
            }
            Action::ArmCrashInHandler { consumer, until_ms, downtime_ms } => {
                self.arms[consumer].in_handler = Some((until_ms, downtime_ms));
            }
            Action::ArmCrashAfterCommit { consumer, until_ms, downtime_ms } => {
                self.arms[consumer].after_commit = Some((until_ms, downtime_ms));
            }
            Action::Bounce { consumer } if self.arms[consumer].down_until.is_none() => {
                self.links.bounce(sim, &consumer_name(consumer));
                record(self.recorder, sim, format!("bounce consumer-{consumer}"));
            }
            Action::Bounce { .. } => {}
            Action::CrashBroker | Action::CrashStore => {
                let (host, down) = if *action == Action::CrashBroker {
                    (BROKER_HOST, &mut self.down.broker)
                } else {
                    (STORE_HOST, &mut self.down.store)
                };
                if !*down {
                    self.links.crash(sim, host);
                    *down = true;
                    record(self.recorder, sim, format!("crash {host}"));
                }
            }
            Action::RestartBroker | Action::RestartStore => {
                let (host, down) = if *action == Action::RestartBroker {
                    (BROKER_HOST, &mut self.down.broker)
                } else {
                    (STORE_HOST, &mut self.down.store)
                };
                if *down {
                    self.links.bounce(sim, host);
                    *down = false;
                    record(self.recorder, sim, format!("restart {host}"));
                }
            }
            Action::Heal => self.heal(sim),
        }
    }

    /// Heals: every consumer's links repaired and its crashes disarmed, every host up.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>) {
        for (consumer, arm) in self.arms.iter_mut().enumerate() {
            let name = consumer_name(consumer);
            self.links.repair(sim, &name, BROKER_HOST);
            self.links.repair(sim, &name, STORE_HOST);
            arm.in_handler = None;
            arm.after_commit = None;
            if arm.down_until.take().is_some() {
                self.links.bounce(sim, &name);
            }
        }
        for (host, down) in [(BROKER_HOST, &mut self.down.broker), (STORE_HOST, &mut self.down.store)] {
            if std::mem::take(down) {
                self.links.bounce(sim, host);
            }
        }
        record(self.recorder, sim, "heal: every link repaired, every host up".to_owned());
    }

    /// The crashes armed for `consumer`, at `now`: one strikes in a handler, or after the
    /// store `committed` one of its completions, or lapses; a crashed consumer restarts.
    fn watch(&mut self, sim: &mut turmoil::Sim<'_>, consumer: usize, now: u64, committed: bool) {
        let name = consumer_name(consumer);
        let arm = &mut self.arms[consumer];
        let in_handler = self.shared.in_handler[consumer].load(Ordering::SeqCst) > 0;
        let strike = [
            (&mut arm.in_handler, in_handler, "in a handler"),
            (&mut arm.after_commit, committed, "between commit and ack"),
        ];
        for (armed, now_true, what) in strike {
            let Some((until_ms, downtime_ms)) = *armed else { continue };
            if now > until_ms {
                *armed = None;
            } else if now_true && arm.down_until.is_none() {
                self.links.crash(sim, &name);
                *armed = None;
                arm.down_until = Some(now + downtime_ms);
                record(self.recorder, sim, format!("crash {name} {what}"));
            }
        }
        if arm.down_until.is_some_and(|until| now >= until) {
            arm.down_until = None;
            self.links.bounce(sim, &name);
            record(self.recorder, sim, format!("restart {name}"));
        }
    }
}

/// Records a fault at the simulation's time.
fn record(recorder: &Recorder, sim: &turmoil::Sim<'_>, text: String) {
    recorder.record_at(ms(sim.elapsed()), Kind::Fault(text));
}
