//! The harness's own test network: each replica a host of its own, in a network namespace,
//! with two links, as a deployment has a front network and a back one.
//!
//! ```text
//!   root namespace                              namespace idem<N>r<i> (replica i)
//!   clients ── bridge idemf<N> 10.77.N.1 ── veth idf<N>r<i> ── front 10.77.N.(10+i)  idem serve
//!   stores  ── bridge idemb<N> 10.78.N.1 ── veth idb<N>r<i> ── back  10.78.N.(10+i)
//! ```
//!
//! The clients reach a replica only on its front link, a replica reaches the stores only on
//! its back link (the private PostgreSQL and Redis listen on `10.78.N.1`), so one link
//! down is a partition between a replica and its clients or between a replica and the
//! store, and both down is a host that vanished. A link goes down on its root-namespace end:
//! what either side sends is dropped (a veth whose peer is down drops its packets), with no
//! FIN or RST to tell anyone. A slow link is a token bucket (`tc qdisc … tbf`) on both ends:
//! this machine's kernel has no `netem`, so delay comes from bandwidth (a 1,500-byte packet
//! takes about 190 ms at 64 kbit/s, an ACK 8 ms), and a queue over its latency budget drops.
//!
//! `N` is the first number from the process id upwards whose front bridge could be created
//! (creating a link is atomic), so harnesses side by side get disjoint subnets. Only the
//! harness's own addresses (10.77.N.0/24, 10.78.N.0/24) and links are made; dropping the
//! [`Network`] deletes its namespaces (which deletes their veths) and its bridges. Needs
//! root (CI runs as root) and iproute2's `ip` and `tc`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::ChaosError;
use crate::process::run_to_end;

/// How long one `ip` or `tc` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Subnet numbers tried before giving up: 1 to 250.
const SUBNETS: u32 = 250;

/// A replica's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// To the clients.
    Front,
    /// To the stores.
    Back,
}

impl Link {
    const BOTH: [Link; 2] = [Link::Front, Link::Back];

    fn octet(self) -> u8 {
        match self {
            Link::Front => 77,
            Link::Back => 78,
        }
    }

    fn letter(self) -> char {
        match self {
            Link::Front => 'f',
            Link::Back => 'b',
        }
    }

    fn inner_name(self) -> &'static str {
        match self {
            Link::Front => "front",
            Link::Back => "back",
        }
    }
}

/// The harness's namespaces, links and bridges; deleted when dropped.
#[derive(Debug)]
pub(crate) struct Network {
    subnet: u8,
    hosts: usize,
}

impl Network {
    /// Creates the bridges and `hosts` namespaces with their two links each.
    pub(crate) fn create(hosts: usize) -> Result<Network, ChaosError> {
        if !crate::services::is_root() {
            return Err(ChaosError::Missing(
                "root, for the harness's network namespaces (ip netns, veth, tc); CI runs as root".into(),
            ));
        }
        let first = std::process::id() % SUBNETS;
        let subnet = (0..SUBNETS)
            .map(|step| u8::try_from((first + step) % SUBNETS + 1).unwrap_or(1))
            .find(|&subnet| ip(&["link", "add", &bridge(Link::Front, subnet), "type", "bridge"]).is_ok())
            .ok_or_else(|| ChaosError::Io("no free test subnet 10.77.1-250.0/24 (stale bridges idemf*?)".into()))?;
        // From here on, a failure deletes what was made.
        let mut network = Network { subnet, hosts: 0 };
        let back = bridge(Link::Back, subnet);
        let _ = ip(&["link", "del", &back]); // a stale one, left by a harness that was killed
        ip(&["link", "add", &back, "type", "bridge"])?;
        for link in Link::BOTH {
            let name = bridge(link, subnet);
            ip(&["addr", "add", &format!("{}/24", network.gateway(link)), "dev", &name])?;
            ip(&["link", "set", &name, "up"])?;
        }
        for host in 0..hosts {
            network.add_host(host)?;
        }
        Ok(network)
    }

    fn add_host(&mut self, host: usize) -> Result<(), ChaosError> {
        let ns = self.namespace(host);
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        self.hosts = host + 1;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for link in Link::BOTH {
            let outer = self.outer(host, link);
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", link.inner_name(), "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge(link, self.subnet), "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.address(host, link)), "dev", link.inner_name()])?;
            ip(&["-n", &ns, "link", "set", link.inner_name(), "up"])?;
        }
        Ok(())
    }

    /// What it made, for a person: subnets, bridges, namespaces.
    pub(crate) fn describe(&self) -> String {
        let last = self.hosts.saturating_sub(1);
        format!(
            "subnets 10.77.{n}.0/24 and 10.78.{n}.0/24, bridges idemf{n} and idemb{n}, namespaces idem{n}r0..idem{n}r{last}",
            n = self.subnet
        )
    }

    fn namespace(&self, host: usize) -> String {
        format!("idem{}r{host}", self.subnet)
    }

    fn outer(&self, host: usize, link: Link) -> String {
        format!("id{}{}r{host}", link.letter(), self.subnet)
    }

    /// The root namespace's address on `link`'s bridge: the stores listen on the back one.
    pub(crate) fn gateway(&self, link: Link) -> Ipv4Addr {
        Ipv4Addr::new(10, link.octet(), self.subnet, 1)
    }

    /// Host `host`'s address on `link`.
    pub(crate) fn address(&self, host: usize, link: Link) -> Ipv4Addr {
        Ipv4Addr::new(10, link.octet(), self.subnet, 10 + u8::try_from(host).unwrap_or(0))
    }

    /// How to start `program` on host `host`: `ip netns exec`, which execs it, so the pid
    /// is the program's own and signals reach it.
    pub(crate) fn launch(&self, host: usize, program: std::path::PathBuf) -> crate::replica::Launch {
        let namespace = self.namespace(host);
        Box::new(move || {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &namespace]).arg(&program);
            command
        })
    }

    /// Takes `link` of `host` down (a partition: both directions dropped) or up again.
    pub(crate) fn set_link(&self, host: usize, link: Link, up: bool) -> Result<(), ChaosError> {
        ip(&["link", "set", &self.outer(host, link), if up { "up" } else { "down" }])
    }

    /// Limits both ends of `link` of `host` to `kbit` per second (`Some`), or lifts it.
    pub(crate) fn set_rate(&self, host: usize, link: Link, kbit: Option<u32>) -> Result<(), ChaosError> {
        let ns = self.namespace(host);
        let outer = self.outer(host, link);
        let ends: [(&[&str], &str); 2] = [(&[], &outer), (&["-n", &ns], link.inner_name())];
        for (prefix, device) in ends {
            let mut args: Vec<String> = prefix.iter().map(|&arg| arg.to_owned()).collect();
            match kbit {
                Some(kbit) => args.extend(
                    ["qdisc", "replace", "dev", device, "root", "tbf", "rate", &format!("{kbit}kbit")]
                        .into_iter()
                        .chain(["burst", "3000", "latency", "2s"])
                        .map(str::to_owned),
                ),
                None => args.extend(["qdisc", "del", "dev", device, "root"].map(str::to_owned)),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let done = tc(&args);
            // Lifting a limit that is not there is not an error.
            if kbit.is_some() {
                done?;
            }
        }
        Ok(())
    }

    /// Every link up and unlimited.
    pub(crate) fn heal(&self) -> Result<(), ChaosError> {
        for host in 0..self.hosts {
            for link in Link::BOTH {
                self.set_rate(host, link, None)?;
                self.set_link(host, link, true)?;
            }
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.namespace(host)]);
        }
        for link in Link::BOTH {
            let _ = ip(&["link", "del", &bridge(link, self.subnet)]);
        }
    }
}

fn bridge(link: Link, subnet: u8) -> String {
    format!("idem{}{subnet}", link.letter())
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    let mut command = Command::new("ip");
    command.args(args);
    run_to_end(&format!("ip {}", args.join(" ")), command, COMMAND_TIMEOUT)
}

fn tc(args: &[&str]) -> Result<(), ChaosError> {
    let mut command = Command::new("tc");
    command.args(args);
    run_to_end(&format!("tc {}", args.join(" ")), command, COMMAND_TIMEOUT)
}
