//! One run: build the simulated world from the seed ([`World`]), its hosts (the store host,
//! the replicas, the clients and the auditor), drive it with the fault schedule
//! ([`crate::drive`]), then check the history.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::audit::{Audit, auditor};
use crate::check::check;
use crate::client::client_software;
use crate::drive::{LATENCY_MAX, drive};
use crate::faults::{FaultMix, Node, ms};
use crate::history::Kind;
use crate::host_state::{Disk, HostState};
use crate::plan::{TOKENS, plan};
use crate::replica::replica_software;
use crate::report::{Coverage, RunReport, Trace};
use crate::scenario::Settings;
use crate::store_host;
use crate::store_protocol::STORE_HOST;
use crate::world::World;
use crate::{Scenario, Variant};

/// The host that reads the store as a user would, after healing.
const AUDITOR_HOST: &str = "auditor";

/// Runs `seed` of `scenario` against `variant` and checks the history.
pub(crate) fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    let settings = scenario.settings();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mix = FaultMix::draw(&mut rng, &settings);
    let schedule = mix.schedule(&mut rng, &settings);
    let plans = plan(&mut rng, &settings, scenario == Scenario::ClientDefaults);
    let ops_total = plans.iter().flatten().map(Vec::len).sum();
    let world = Arc::new(World::new(seed, settings, variant, mix.clone(), ops_total, &mut rng));
    world.recorder.record_at(0, Kind::Fault(format!("seed {seed} scenario {scenario} variant {variant}")));
    world.recorder.record_at(0, Kind::Fault(format!("mix {mix}")));

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(settings.duration_max)
        .tick_duration(settings.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(LATENCY_MAX)
        .build();

    let disk: Disk = Arc::new(Mutex::new(HostState::new(0, scenario, world.variant)));
    let disk_at_end = Arc::clone(&disk);
    store_host(&mut sim, &world, disk);
    for replica in 0..settings.replicas {
        let world = Arc::clone(&world);
        sim.host(Node::Replica(replica).name(), move || replica_software(Arc::clone(&world), replica));
    }
    for (client, streams) in plans.into_iter().enumerate() {
        sim.client(Node::Client(client).name(), client_software(Arc::clone(&world), client, streams));
    }
    let audit = Audit {
        // Each caller twice, its scheme spelled two ways: one caller, so one list.
        auths: TOKENS[..settings.clients.min(TOKENS.len())]
            .iter()
            .flat_map(|token| [format!("Bearer {token}"), format!("bearer {token}")])
            .collect(),
        replicas: settings.replicas,
        ops_left: Arc::clone(&world.ops_left),
        not_before_ms: ms(settings.run_for),
        recorder: world.recorder.clone(),
    };
    sim.client(AUDITOR_HOST, auditor(audit));

    let run_error = drive(&mut sim, &world, &schedule, hosts(&settings));
    let simulated = sim.elapsed();
    let events = world.recorder.take();
    let final_epoch = disk_at_end.lock().unwrap_or_else(PoisonError::into_inner).epoch();
    let checked = check(&events, &settings, final_epoch, run_error.as_deref());
    let coverage = Coverage::of(&events, checked.expected.len(), settings.response_body_bytes_max);
    let trace = Trace::new(events.iter().map(ToString::to_string).collect());
    let (violations, expected) = (checked.violations, checked.expected);
    RunReport { seed, scenario, variant, faults: mix, trace, violations, expected, coverage, simulated }
}

/// The store host: a volatile one starts every boot after the first empty.
fn store_host(sim: &mut turmoil::Sim<'_>, world: &Arc<World>, disk: Disk) {
    let world = Arc::clone(world);
    let store_boots = Arc::new(AtomicU32::new(0));
    sim.host(STORE_HOST, move || {
        let boot = store_boots.fetch_add(1, Ordering::SeqCst);
        if !world.settings.durable_store && boot > 0 {
            // A volatile store starts empty: everything it held is lost.
            *disk.lock().unwrap_or_else(PoisonError::into_inner) =
                HostState::new(boot, world.settings.scenario, world.variant);
        }
        store_host::host(Arc::clone(&disk), Arc::clone(&world.mailbox), world.variant, world.recorder.clone())
    });
}

/// Every host of a run, by name.
fn hosts(settings: &Settings) -> Vec<String> {
    let replicas = (0..settings.replicas).map(Node::Replica);
    let clients = (0..settings.clients).map(Node::Client);
    let mut hosts: Vec<String> = replicas.chain(clients).chain([Node::Store]).map(Node::name).collect();
    hosts.push(AUDITOR_HOST.to_owned());
    hosts
}
