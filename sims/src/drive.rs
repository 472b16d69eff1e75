//! The driver of one run: steps the simulation to its end, striking the fault schedule's
//! actions as they come due, and the faults that wait on the replicas' handlers (armed
//! crashes, isolations from the store host), each recorded in the history.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::faults::{Action, Node, Scheduled, ms};
use crate::history::Kind;
use crate::hosts::Links;
use crate::store_protocol::STORE_HOST;
use crate::world::World;

/// turmoil's latency for every link outside a spike.
pub(crate) const LATENCY_MAX: Duration = Duration::from_millis(10);

/// Steps the simulation to its end, applying the schedule to the links between `hosts` (every
/// host of the run, by name); returns turmoil's error, if any.
pub(crate) fn drive(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    schedule: &[Scheduled],
    hosts: Vec<String>,
) -> Option<String> {
    let mut driver = Driver::new(world, hosts);
    let mut next = 0;
    loop {
        let now = ms(sim.elapsed());
        while let Some(scheduled) = schedule.get(next).filter(|scheduled| scheduled.at_ms <= now) {
            next += 1;
            driver.strike(sim, &scheduled.action);
        }
        for replica in 0..world.settings.replicas {
            driver.watch(sim, replica, now);
        }
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(error) => return Some(error.to_string()),
        }
    }
}

/// What the driver keeps between steps: the links, and each replica's and the store host's
/// faults in progress.
struct Driver<'w> {
    world: &'w World,
    links: Links,
    /// Per replica: an armed crash (until when it is armed, how long the replica stays down).
    armed: Vec<Option<(u64, u64)>>,
    /// Per replica: until when a crashed replica stays down.
    down_until: Vec<Option<u64>>,
    store_down: bool,
    /// Per replica: until when its isolation from the store host lasts.
    isolated_until: Vec<Option<u64>>,
    /// Per replica: when an armed isolation is disarmed if no handler took it.
    isolation_expires: Vec<u64>,
}

impl<'w> Driver<'w> {
    fn new(world: &'w World, hosts: Vec<String>) -> Driver<'w> {
        let replicas = world.settings.replicas;
        Driver {
            world,
            links: Links::new(hosts),
            armed: vec![None; replicas],
            down_until: vec![None; replicas],
            store_down: false,
            isolated_until: vec![None; replicas],
            isolation_expires: vec![0; replicas],
        }
    }

    fn record(&self, sim: &turmoil::Sim<'_>, text: String) {
        self.world.recorder.record_at(ms(sim.elapsed()), Kind::Fault(text));
    }

    /// Strikes one action of the schedule.
    fn strike(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) {
        match action {
            Action::ArmCrash { replica, until_ms, downtime_ms } => {
                if self.down_until[*replica].is_none() {
                    self.armed[*replica] = Some((*until_ms, *downtime_ms));
                }
            }
            Action::ArmIsolation { replica, until_ms, length_ms } => {
                self.world.isolation_armed[*replica].store(*length_ms, Ordering::SeqCst);
                self.isolation_expires[*replica] = *until_ms;
            }
            Action::Bounce { replica } => {
                if self.down_until[*replica].is_none() {
                    self.links.bounce(sim, &Node::Replica(*replica).name());
                    self.record(sim, format!("bounce replica-{replica}"));
                }
            }
            Action::CrashStore => {
                if !self.store_down {
                    self.links.crash(sim, STORE_HOST);
                    self.store_down = true;
                    self.record(sim, "crash store".to_owned());
                }
            }
            Action::RestartStore => {
                if self.store_down {
                    self.links.bounce(sim, STORE_HOST);
                    self.store_down = false;
                    self.record(sim, "restart store".to_owned());
                }
            }
            Action::Heal => self.heal(sim),
            link => self.strike_link(sim, link),
        }
    }

    /// Strikes an action on a link: partitions, holds and latency spikes, and their ends.
    fn strike_link(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) {
        let text = match action {
            Action::Partition { a, b, one_way: None } => {
                self.links.partition(sim, &a.name(), &b.name());
                format!("partition {} <-> {}", a.name(), b.name())
            }
            Action::Partition { one_way: Some((from, to)), .. } => {
                self.links.partition_oneway(sim, &from.name(), &to.name());
                format!("partition {} -> {}", from.name(), to.name())
            }
            Action::Repair { a, b, one_way: None } => {
                self.links.repair(sim, &a.name(), &b.name());
                format!("repair {} <-> {}", a.name(), b.name())
            }
            Action::Repair { one_way: Some((from, to)), .. } => {
                self.links.repair_oneway(sim, &from.name(), &to.name());
                format!("repair {} -> {}", from.name(), to.name())
            }
            Action::Hold { a, b } => {
                self.links.hold(sim, &a.name(), &b.name());
                format!("hold {} <-> {}", a.name(), b.name())
            }
            Action::Release { a, b } => {
                self.links.release(sim, &a.name(), &b.name());
                format!("release {} <-> {}", a.name(), b.name())
            }
            Action::Spike { a, b, max_ms } => {
                sim.set_link_max_message_latency(a.name(), b.name(), Duration::from_millis(*max_ms));
                format!("latency {} <-> {} up to {max_ms} ms", a.name(), b.name())
            }
            Action::Unspike { a, b } => {
                sim.set_link_max_message_latency(a.name(), b.name(), LATENCY_MAX);
                format!("latency {} <-> {} normal", a.name(), b.name())
            }
            // The hosts' actions are `strike`'s.
            _ => return,
        };
        self.record(sim, text);
    }

    /// Heals: every replica's links repaired and its faults disarmed, every host up.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>) {
        let settings = &self.world.settings;
        for replica in 0..settings.replicas {
            let r = Node::Replica(replica).name();
            for peer in (0..settings.clients).map(Node::Client).chain([Node::Store]) {
                self.links.release(sim, &r, &peer.name());
                self.links.repair(sim, &r, &peer.name());
                sim.set_link_max_message_latency(&*r, peer.name(), LATENCY_MAX);
            }
            self.armed[replica] = None;
            self.world.isolation_armed[replica].store(0, Ordering::SeqCst);
            self.world.isolation_due[replica].store(0, Ordering::SeqCst);
            self.isolated_until[replica] = None;
            if self.down_until[replica].take().is_some() {
                self.links.bounce(sim, &r);
            }
        }
        if self.store_down {
            self.links.bounce(sim, STORE_HOST);
            self.store_down = false;
        }
        self.record(sim, "heal: every link repaired, every host up".to_owned());
    }

    /// The faults that wait on `replica`'s handlers, at `now`: an isolation a handler asked
    /// for starts or ends, an armed crash strikes in a handler or lapses, a crashed replica
    /// restarts.
    fn watch(&mut self, sim: &mut turmoil::Sim<'_>, replica: usize, now: u64) {
        let world = self.world;
        let name = Node::Replica(replica).name();
        if now > self.isolation_expires[replica] {
            world.isolation_armed[replica].store(0, Ordering::SeqCst);
        }
        let due = world.isolation_due[replica].swap(0, Ordering::SeqCst);
        if due > 0 && self.isolated_until[replica].is_none() {
            self.links.partition(sim, &name, STORE_HOST);
            self.isolated_until[replica] = Some(now + due);
            self.record(sim, format!("partition {name} <-> store for {due} ms, from a handler's start"));
        }
        if self.isolated_until[replica].is_some_and(|until| now >= until) {
            self.isolated_until[replica] = None;
            self.links.repair(sim, &name, STORE_HOST);
            self.record(sim, format!("repair {name} <-> store"));
        }
        if let Some((until_ms, downtime_ms)) = self.armed[replica] {
            if now > until_ms {
                self.armed[replica] = None;
            } else if world.in_handler[replica].load(Ordering::SeqCst) > 0 {
                self.links.crash(sim, &name);
                self.armed[replica] = None;
                self.down_until[replica] = Some(now + downtime_ms);
                self.record(sim, format!("crash replica-{replica} in a handler"));
            }
        }
        if self.down_until[replica].is_some_and(|until| now >= until) {
            self.down_until[replica] = None;
            self.links.bounce(sim, &name);
            self.record(sim, format!("restart replica-{replica}"));
        }
    }
}
