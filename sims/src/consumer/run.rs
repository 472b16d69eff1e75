//! One consumer run: build the world from the seed, drive it with the fault schedule,
//! check the history and the broker's final state.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_consumer::{Consumer, OnConflict};
use idem_core::{Policy, Redelivery};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::messages;
use crate::clock::SkewedClock;
use crate::consumer::broker::Broker;
use crate::consumer::broker_host::{self, BROKER_HOST, BrokerDisk};
use crate::consumer::drive::{consumer_name, drive};
use crate::consumer::faults::ConsumerMix;
use crate::consumer::handler::{Shared, SimHandler};
use crate::consumer::publisher::{self, PUBLISHER_HOST};
use crate::consumer::transport::{BrokerLink, SimTransport};
use crate::consumer::{Mode, Settings, coverage};
use crate::faults::{FaultMix, ms};
use crate::history::{Kind, Recorder};
use crate::host_state::{Disk, HostState};
use crate::remote::{Remote, RemoteStore};
use crate::report::{Coverage, RunReport, Trace};
use crate::store_host;
use crate::store_protocol::{STORE_HOST, SharedMailbox};
use crate::{Scenario, Variant};

/// turmoil's latency for every link.
const LATENCY_MAX: Duration = Duration::from_millis(10);
/// How many records a consumer handles at once.
const IN_FLIGHT_MAX: usize = 4;
/// Retention: far beyond a run, so a mismatch always meets the first payload's record.
const RETENTION: Duration = Duration::from_secs(3_600);

/// Everything the hosts share, for one run.
struct World {
    settings: Settings,
    variant: Variant,
    mix: ConsumerMix,
    recorder: Recorder,
    store_mailbox: SharedMailbox,
    broker_mailbox: broker_host::SharedMailbox,
    shared: Arc<Shared>,
    policy: Policy,
}

/// Runs `seed` of the consumer `scenario` against `variant` and checks it.
pub(crate) fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    let settings = Settings::of(scenario);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let skew_max = i64::try_from(settings.skew_max.as_millis()).unwrap_or(0);
    let mix = ConsumerMix::draw(&mut rng, settings.consumers, skew_max);
    let schedule = mix.schedule(&mut rng, settings.consumers, ms(settings.heal_at));
    let plan = publisher::plan(&mut rng, settings.ids, ms(settings.first_by), ms(settings.last_by));
    let recorder = Recorder::default();
    recorder.record_at(0, Kind::Fault(format!("seed {seed} scenario {scenario} variant {variant}")));
    recorder.record_at(0, Kind::Fault(format!("mix {mix}")));
    publisher::record_plan(&plan, &recorder);
    let policy = Policy::new(settings.lease, RETENTION).expect("a lease shorter than the retention");
    let shared = Arc::new(Shared {
        recorder: recorder.clone(),
        variant,
        heal_ms: ms(settings.heal_at),
        lease_ms: ms(settings.lease),
        slow_percent: mix.slow_handler_percent,
        failure_percent: mix.handler_failure_percent,
        executions: AtomicU64::new(0),
        in_handler: (0..settings.consumers).map(|_| AtomicU32::new(0)).collect(),
        rng: (0..settings.consumers)
            .map(|c| Mutex::new(ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ c as u64)))
            .collect(),
    });
    let world = Arc::new(World {
        settings,
        variant,
        mix: mix.clone(),
        recorder: recorder.clone(),
        store_mailbox: SharedMailbox::default(),
        broker_mailbox: broker_host::SharedMailbox::default(),
        shared,
        policy,
    });

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(settings.duration_max)
        .tick_duration(settings.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(LATENCY_MAX)
        .build();
    let broker_at_end = store_and_broker(&mut sim, &world, scenario);
    for consumer in 0..settings.consumers {
        let world = Arc::clone(&world);
        sim.host(consumer_name(consumer), move || consumer_software(Arc::clone(&world), consumer));
    }
    let until_ms = ms(settings.run_for);
    sim.client(
        PUBLISHER_HOST,
        publisher::publisher(plan.clone(), Arc::clone(&world.broker_mailbox), recorder.clone(), until_ms),
    );

    let mut hosts: Vec<String> = (0..settings.consumers).map(consumer_name).collect();
    hosts.extend([BROKER_HOST, STORE_HOST, PUBLISHER_HOST].map(str::to_owned));
    let run_error = drive(&mut sim, &world.recorder, &world.shared, &schedule, hosts);
    let simulated = sim.elapsed();
    let events = recorder.take();
    let copies = broker_at_end.lock().unwrap_or_else(std::sync::PoisonError::into_inner).copies.clone();
    let checked = messages::check(&events, &plan, &copies, &settings, run_error.as_deref());
    let coverage = Coverage::of(&events, checked.expected.len(), None) + coverage::of(&events);
    let trace = Trace::new(events.iter().map(ToString::to_string).collect());
    RunReport {
        seed,
        scenario,
        variant,
        faults: FaultMix::of_consumers(mix),
        trace,
        violations: checked.violations,
        expected: checked.expected,
        coverage,
        simulated,
    }
}

/// The store host and the broker's host; returns the broker's state, which outlives its
/// host's boots, for the checker.
fn store_and_broker(sim: &mut turmoil::Sim<'_>, world: &Arc<World>, scenario: Scenario) -> BrokerDisk {
    let settings = &world.settings;
    let store_disk: Disk = Arc::new(Mutex::new(HostState::new(0, scenario, world.variant)));
    {
        let world = Arc::clone(world);
        sim.host(STORE_HOST, move || {
            store_host::host(
                Arc::clone(&store_disk),
                Arc::clone(&world.store_mailbox),
                world.variant,
                world.recorder.clone(),
            )
        });
    }
    let broker_disk: BrokerDisk =
        Arc::new(Mutex::new(Broker::new(settings.mode, ms(settings.ack_wait()), ms(settings.heartbeat_timeout))));
    let broker_at_end = Arc::clone(&broker_disk);
    {
        let world = Arc::clone(world);
        let boots = Arc::new(AtomicU32::new(0));
        sim.host(BROKER_HOST, move || {
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            broker_host::host(Arc::clone(&broker_disk), Arc::clone(&world.broker_mailbox), world.recorder.clone(), boot)
        });
    }
    broker_at_end
}

/// A consumer host's software: the real consumer over the simulated broker and store.
async fn consumer_software(world: Arc<World>, consumer: usize) -> turmoil::Result {
    let settings = &world.settings;
    let remote = Remote {
        replica: consumer,
        mailbox: Arc::clone(&world.store_mailbox),
        timeout: settings.store_call_timeout,
        recorder: world.recorder.clone(),
    };
    let store = RemoteStore(remote);
    let link = BrokerLink::new(consumer, settings.mode, Arc::clone(&world.broker_mailbox), world.recorder.clone());
    let transport = SimTransport::new(Arc::clone(&link), settings.ack_wait());
    let handler = SimHandler { consumer, shared: Arc::clone(&world.shared), store: store.clone(), link };
    let redelivery = Redelivery { conflict_after_max: settings.lease, ..Redelivery::DEFAULT };
    let on_conflict = match settings.mode {
        Mode::AckWait => OnConflict::Redeliver,
        Mode::ChannelClose => OnConflict::Wait { max: settings.lease },
    };
    let clock = SkewedClock { skew_ms: world.mix.skew_ms.get(consumer).copied().unwrap_or(0) };
    let builder = Consumer::builder(Arc::new(store), transport)
        .policy(world.policy)
        .in_flight_max(IN_FLIGHT_MAX)
        .redelivery(redelivery)
        .on_conflict(on_conflict)
        .clock(Arc::new(clock));
    if settings.separate {
        builder.handler(handler)?.run_until(std::future::pending()).await;
    } else {
        builder.atomic(handler)?.run_until(std::future::pending()).await;
    }
    Ok(())
}
