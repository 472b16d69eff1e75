//! The fault schedule's hands on turmoil: link faults, and crashes and restarts of hosts.
//!
//! **A crash is silent.** A host that crashes or bounces vanishes from the network, as after
//! a power loss or a kernel panic: what it had on the wire is lost and its peers are not
//! told (no FIN, no RST); they find out by their own timeouts, or by a reset when they
//! next write to the restarted host. Why not a FIN per socket, as a crashed *process*
//! would send? turmoil sends one from each socket's `Drop`, while it drops the host's tokio
//! runtime, and tokio shuts a runtime's tasks down in an order keyed by its process-wide
//! task numbering. Each FIN draws its latency from the simulation's random stream, so the
//! trace would depend on how many tasks the process had spawned before the run: on the
//! seeds a thread ran earlier and on the sweep's other threads (`sims/tests/
//! determinism_side_by_side.rs` pins it). So the host is cut off from every peer while
//! its runtime is dropped, and its links are put back as the schedule had them.
//!
//! [`Links`] is also where every link fault goes through, so that it knows the state to
//! put back.

use std::collections::BTreeMap;

/// The state of one direction of a link, as the schedule set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// `partition` or `partition_oneway`: messages are dropped.
    Partitioned,
    /// `hold`: messages wait on the link until `release`.
    Held,
}

/// Every host of the run, and the faults on their links (by direction, `from -> to`).
pub(crate) struct Links {
    hosts: Vec<String>,
    cuts: BTreeMap<(String, String), Cut>,
}

impl Links {
    pub(crate) fn new(hosts: Vec<String>) -> Self {
        Links { hosts, cuts: BTreeMap::new() }
    }

    pub(crate) fn partition(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        sim.partition(a, b);
        self.set_both(a, b, Some(Cut::Partitioned));
    }

    pub(crate) fn partition_oneway(&mut self, sim: &mut turmoil::Sim<'_>, from: &str, to: &str) {
        sim.partition_oneway(from, to);
        self.set(from, to, Some(Cut::Partitioned));
    }

    pub(crate) fn repair(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        sim.repair(a, b);
        self.set_both(a, b, None);
    }

    pub(crate) fn repair_oneway(&mut self, sim: &mut turmoil::Sim<'_>, from: &str, to: &str) {
        sim.repair_oneway(from, to);
        self.set(from, to, None);
    }

    pub(crate) fn hold(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        sim.hold(a, b);
        self.set_both(a, b, Some(Cut::Held));
    }

    pub(crate) fn release(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        sim.release(a, b);
        self.set_both(a, b, None);
    }

    /// Crashes `host`'s software, silently (see the module docs); it stays down.
    pub(crate) fn crash(&mut self, sim: &mut turmoil::Sim<'_>, host: &str) {
        self.cut_off_while(sim, host, |sim| sim.crash(host));
    }

    /// Restarts `host`'s software (after a crash, or at once), silently.
    pub(crate) fn bounce(&mut self, sim: &mut turmoil::Sim<'_>, host: &str) {
        self.cut_off_while(sim, host, |sim| sim.bounce(host));
    }

    /// Runs `drop_runtime` with `host` partitioned from every peer, then puts each of its
    /// links back as the schedule left it.
    fn cut_off_while(&self, sim: &mut turmoil::Sim<'_>, host: &str, drop_runtime: impl FnOnce(&mut turmoil::Sim<'_>)) {
        let peers: Vec<&str> = self.hosts.iter().map(String::as_str).filter(|peer| *peer != host).collect();
        for peer in &peers {
            sim.partition(host, *peer);
        }
        drop_runtime(sim);
        for peer in peers {
            sim.repair(host, peer);
            self.restore(sim, host, peer);
        }
    }

    /// Sets the link between `a` and `b` back to what the schedule made it.
    fn restore(&self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        let (there, back) = (self.get(a, b), self.get(b, a));
        if there == Some(Cut::Held) || back == Some(Cut::Held) {
            sim.hold(a, b);
            return;
        }
        if there == Some(Cut::Partitioned) {
            sim.partition_oneway(a, b);
        }
        if back == Some(Cut::Partitioned) {
            sim.partition_oneway(b, a);
        }
    }

    fn get(&self, from: &str, to: &str) -> Option<Cut> {
        self.cuts.get(&(from.to_owned(), to.to_owned())).copied()
    }

    fn set(&mut self, from: &str, to: &str, cut: Option<Cut>) {
        let direction = (from.to_owned(), to.to_owned());
        match cut {
            Some(cut) => self.cuts.insert(direction, cut),
            None => self.cuts.remove(&direction),
        };
    }

    fn set_both(&mut self, a: &str, b: &str, cut: Option<Cut>) {
        self.set(a, b, cut);
        self.set(b, a, cut);
    }
}
